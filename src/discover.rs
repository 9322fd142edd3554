//! Discovery: turns a fleet spec into the list of tenants, sorted by id: the
//! `*.db` files of a folder, the rows of a registry, the schemas or databases
//! of a server. The SQL that lists names lives in `dialect/`; this module
//! decides what a tenant is. A name fleetmig will not touch (a hostile schema
//! name, a stray file) is refused on its own (`Refused`, reported as a failed
//! tenant that no SQL ever reached), never a failed fleet; an empty fleet is an
//! error unless it is expected (`--allow-empty`), so a mistyped pattern never
//! passes for a fleet with nothing to do.

use std::path::Path;

use crate::dialect;
use crate::error::Error;
use crate::tenant::{
    DiscoverOptions, FleetSpec, Locator, Tenant, TenantId, read_registry, shown_name,
    validate_identifier,
};

/// A name that discovery found and fleetmig will not touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The name as found, made printable (escaped, at most 128 characters).
    pub name: String,
    pub reason: String,
}

/// What discovery found.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// The tenants, sorted by id.
    pub tenants: Vec<Tenant>,
    /// The names refused, sorted.
    pub refused: Vec<Refused>,
}

/// Lists the fleet's tenants.
pub async fn discover(spec: &FleetSpec, opts: &DiscoverOptions) -> Result<Fleet, Error> {
    let fail = |message: String| Error::Discovery {
        fleet: spec.to_string(),
        message,
    };
    let mut fleet = match spec {
        FleetSpec::SqliteDir(dir) => sqlite_dir(dir).map_err(fail)?,
        FleetSpec::Registry(path) => Fleet {
            tenants: read_registry(path)?,
            refused: Vec::new(),
        },
        FleetSpec::PostgresSchemas(url) => {
            let names = dialect::postgres::list_schemas(url, opts)
                .await
                .map_err(fail)?;
            named(names, |name| Locator::Postgres {
                url: url.clone(),
                schema: Some(name.to_string()),
            })
        }
        FleetSpec::PostgresDatabases(url) => {
            let names = dialect::postgres::list_databases(url, opts)
                .await
                .map_err(fail)?;
            named(names, |name| Locator::Postgres {
                url: dialect::with_database(url, name),
                schema: None,
            })
        }
        FleetSpec::PostgresRows(url) => rows(
            Locator::Postgres {
                url: url.clone(),
                schema: None,
            },
            opts,
        )
        .await
        .map_err(fail)?,
        FleetSpec::MysqlRows(url) => rows(Locator::Mysql { url: url.clone() }, opts)
            .await
            .map_err(fail)?,
        FleetSpec::SqliteRows(path) => rows(Locator::Sqlite { path: path.clone() }, opts)
            .await
            .map_err(fail)?,
        FleetSpec::MysqlDatabases(url) => {
            let names = dialect::mysql::list_databases(url, opts)
                .await
                .map_err(fail)?;
            named(names, |name| Locator::Mysql {
                url: dialect::with_database(url, name),
            })
        }
    };
    fleet.tenants.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(dup) = fleet.tenants.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(fail(format!(
            "tenant {} is listed twice (a --tenant-query must return each name once)",
            dup[0].id
        )));
    }
    if fleet.tenants.is_empty() && fleet.refused.is_empty() && !opts.allow_empty {
        let hint = match spec {
            FleetSpec::SqliteDir(_) => "the folder has no *.db file".to_string(),
            FleetSpec::Registry(_) => "the registry has no rows".to_string(),
            _ => match &opts.query {
                Some(_) => "--tenant-query returned no names".to_string(),
                None => format!("no name matches --tenant-pattern {:?}", opts.pattern),
            },
        };
        return Err(fail(format!(
            "no tenants: {hint}. A nightly job must not pass on an empty fleet; \
             pass --allow-empty if this fleet is meant to be empty"
        )));
    }
    Ok(fleet)
}

/// The row tenants of database `db`, listed by `--tenant-query` (id, and
/// tags in the registry's `a=b;c` form); an id that is not a safe name is
/// refused like any other.
async fn rows(db: Locator, opts: &DiscoverOptions) -> Result<Fleet, String> {
    let query = opts.query.as_deref().ok_or_else(|| {
        "a fleet of row tenants needs --tenant-query, e.g. 'SELECT id::text, tags FROM organizations' \
         (the tenant's id, and optional tags like tier=pro;canary)"
            .to_string()
    })?;
    let found = dialect::rows::list(&db, query, opts.connect_timeout).await?;
    let mut fleet = Fleet::default();
    for (id, tags) in found {
        match TenantId::new(&id).and_then(|tid| Ok((tid, crate::tenant::parse_tags(&tags)?))) {
            Ok((tid, tags)) => fleet.tenants.push(Tenant {
                id: tid,
                locator: Locator::Row {
                    db: Box::new(db.clone()),
                    tenant_id: id,
                },
                tags,
            }),
            Err(reason) => fleet.refused.push(Refused {
                name: shown_name(&id),
                reason,
            }),
        }
    }
    fleet.refused.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(fleet)
}

/// Schema/database names become tenants whose id is the name; a name that
/// is not a safe identifier is refused here, before it could reach any SQL.
fn named(mut names: Vec<String>, locator: impl Fn(&str) -> Locator) -> Fleet {
    names.sort();
    let mut fleet = Fleet::default();
    for name in names {
        match validate_identifier(&name).and_then(|_| TenantId::new(&name)) {
            Ok(id) => fleet.tenants.push(Tenant {
                id,
                locator: locator(&name),
                tags: Default::default(),
            }),
            Err(reason) => fleet.refused.push(Refused {
                name: shown_name(&name),
                reason,
            }),
        }
    }
    fleet
}

/// Every `*.db` file of `dir`; a file whose name is not a tenant id is
/// refused (a hidden file, a space, an over-long name).
fn sqlite_dir(dir: &Path) -> Result<Fleet, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut fleet = Fleet::default();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("db") || !path.is_file() {
            continue;
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        match TenantId::new(&stem) {
            Ok(id) => fleet.tenants.push(Tenant {
                id,
                locator: Locator::Sqlite { path },
                tags: Default::default(),
            }),
            Err(reason) => fleet.refused.push(Refused {
                name: shown_name(&stem),
                reason: format!("{}: {reason}", shown_name(&path.display().to_string())),
            }),
        }
    }
    fleet.refused.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(fleet)
}
