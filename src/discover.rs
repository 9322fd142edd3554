//! Discovery: turns a fleet spec into the list of tenants, sorted by id: the
//! `*.db` files of a folder, the rows of a registry, the schemas or databases
//! of a server. The SQL that lists names lives in `dialect/`; this module
//! decides what a tenant is.

use std::path::Path;

use crate::tenant::{
    DiscoverOptions, FleetSpec, Locator, Tenant, TenantId, read_registry, validate_identifier,
};
use crate::dialect;
use crate::error::Error;

/// Lists the fleet's tenants, sorted by id.
pub async fn discover(spec: &FleetSpec, opts: &DiscoverOptions) -> Result<Vec<Tenant>, Error> {
    let fail = |message: String| Error::Discovery {
        fleet: spec.to_string(),
        message,
    };
    let mut tenants = match spec {
        FleetSpec::SqliteDir(dir) => sqlite_dir(dir).map_err(fail)?,
        FleetSpec::Registry(path) => read_registry(path)?,
        FleetSpec::PostgresSchemas(url) => {
            let names = dialect::postgres::list_schemas(url, opts)
                .await
                .map_err(fail)?;
            named(names, spec, |name| Locator::Postgres {
                url: url.clone(),
                schema: Some(name.to_string()),
            })?
        }
        FleetSpec::PostgresDatabases(url) => {
            let names = dialect::postgres::list_databases(url, opts)
                .await
                .map_err(fail)?;
            named(names, spec, |name| Locator::Postgres {
                url: dialect::with_database(url, name),
                schema: None,
            })?
        }
        FleetSpec::MysqlDatabases(url) => {
            let names = dialect::mysql::list_databases(url, opts)
                .await
                .map_err(fail)?;
            named(names, spec, |name| Locator::Mysql {
                url: dialect::with_database(url, name),
            })?
        }
    };
    tenants.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(tenants)
}

/// Schema/database names become tenants whose id is the name. A hostile name is
/// refused here, before it could reach any SQL.
fn named(
    names: Vec<String>,
    spec: &FleetSpec,
    locator: impl Fn(&str) -> Locator,
) -> Result<Vec<Tenant>, Error> {
    names
        .into_iter()
        .map(|name| {
            let check = validate_identifier(&name).and_then(|_| TenantId::new(&name));
            let id = check.map_err(|m| Error::Discovery {
                fleet: spec.to_string(),
                message: format!("refusing tenant name: {m}"),
            })?;
            Ok(Tenant {
                id,
                locator: locator(&name),
                tags: Default::default(),
            })
        })
        .collect()
}

fn sqlite_dir(dir: &Path) -> Result<Vec<Tenant>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut tenants = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("db") || !path.is_file() {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("{}: file name is not UTF-8", path.display()))?;
        let id = TenantId::new(stem).map_err(|m| format!("{}: {m}", path.display()))?;
        tenants.push(Tenant {
            id,
            locator: Locator::Sqlite { path },
            tags: Default::default(),
        });
    }
    Ok(tenants)
}
