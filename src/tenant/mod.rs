//! Tenants: what one isolated unit of schema is (`Tenant`: id, locator, tags),
//! how its id and database identifiers are validated, how a locator is printed
//! without its credentials, and how a fleet spec (`--fleet KIND:WHERE`) names
//! the way tenants are discovered (the crate's `discover` does it).

mod registry;
pub(crate) use registry::locator_from;

pub use registry::read_registry;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;

use crate::error::Error;

/// A tenant's id: letters, digits, `_`, `-` and `$`, at most 128 characters,
/// so it is safe in file names, CSV cells, log lines and metric labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    pub fn new(id: &str) -> Result<Self, String> {
        if id.is_empty() {
            return Err("tenant id is empty".into());
        }
        if id.len() > 128 {
            return Err(format!(
                "tenant id {} is longer than 128 characters",
                shown_name(id)
            ));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$')))
        {
            return Err(format!(
                "tenant id {} contains {c:?}; ids are letters, digits, '_', '-' and '$'",
                shown_name(id)
            ));
        }
        Ok(TenantId(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates a schema or database name before it is ever put into SQL: ASCII
/// letters, digits, `_`, `$` and `-`, not starting with a digit or `-`, at most
/// 63 bytes (PostgreSQL's limit; MySQL's is 64). Quotes, semicolons, spaces and
/// unicode look-alikes are rejected outright; names that pass are still quoted.
pub fn validate_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("identifier is empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "identifier {} is longer than 63 bytes",
            shown_name(name)
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '-')))
    {
        return Err(format!(
            "identifier {} contains {c:?}; only ASCII letters, digits, '_', '$' and '-' are accepted",
            shown_name(name)
        ));
    }
    if name.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        return Err(format!(
            "identifier {} starts with a digit or '-'",
            shown_name(name)
        ));
    }
    Ok(())
}

/// A name as it may be shown in a message or a report: quoted, with control
/// and non-ASCII characters escaped once, and cut at 128 characters (a
/// 100 KB name is not echoed in full).
pub fn shown_name(name: &str) -> String {
    let escaped: String = name.escape_debug().collect();
    let cut: String = escaped.chars().take(128).collect();
    if cut.len() < escaped.len() {
        format!("\"{cut}…\" ({} bytes)", name.len())
    } else {
        format!("\"{cut}\"")
    }
}

pub use fleetmig_parse::Dialect;
pub use fleetmig_parse::secrets::{
    check_server_url, redact_loose, redact_text, redact_url, redact_userinfo, scrub_secrets,
};

/// Where a tenant lives. URLs may carry credentials: print them only through
/// `redacted()` / `Display`, which never shows a password.
#[derive(Clone, PartialEq, Eq)]
pub enum Locator {
    /// One SQLite file.
    Sqlite { path: PathBuf },
    /// A PostgreSQL database (`schema: None`) or one schema in it.
    Postgres { url: String, schema: Option<String> },
    /// A MySQL/MariaDB database; the URL names it.
    Mysql { url: String },
    /// A row tenant: the rows of `tenant_id` in tables that the tenants of
    /// database `db` share (see `dialect::rows`).
    Row { db: Box<Locator>, tenant_id: String },
}

/// The server of a database URL: `scheme://host:port`, without
/// credentials, database or options.
pub fn server_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or("localhost"),
            u.port().map(|p| p.to_string()).unwrap_or_default()
        ),
        Err(_) => redact_url(url),
    }
}

impl Locator {
    pub fn dialect(&self) -> Dialect {
        match self {
            Locator::Sqlite { .. } => Dialect::Sqlite,
            Locator::Postgres { .. } => Dialect::Postgres,
            Locator::Mysql { .. } => Dialect::Mysql,
            Locator::Row { db, .. } => db.dialect(),
        }
    }

    /// The server this tenant lives on (`scheme://host:port`, no credentials,
    /// no database): the key of the per-server concurrency limit. All SQLite
    /// files share the local disk.
    pub fn server_key(&self) -> String {
        match self {
            Locator::Sqlite { .. } => "sqlite://local-disk".to_string(),
            Locator::Postgres { url, .. } | Locator::Mysql { url } => server_of(url),
            Locator::Row { db, .. } => db.server_key(),
        }
    }

    /// The locator as text with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            Locator::Sqlite { path } => format!("sqlite://{}", path.display()),
            Locator::Postgres { url, schema } => match schema {
                Some(s) => format!("{} schema {s}", redact_url(url)),
                None => redact_url(url),
            },
            Locator::Mysql { url } => redact_url(url),
            Locator::Row { db, tenant_id } => format!("{} tenant_id {tenant_id}", db.redacted()),
        }
    }
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Locator({})", self.redacted())
    }
}

/// One tenant of the fleet.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub locator: Locator,
    /// `key=value` tags; a bare word `canary` is stored as `("canary", "")`.
    pub tags: BTreeMap<String, String>,
}

impl Tenant {
    pub fn has_tag(&self, key: &str) -> bool {
        self.tags.contains_key(key)
    }

    /// Tags as `a=b;c` (the registry format).
    pub fn tags_string(&self) -> String {
        self.tags
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Parses `a=b;c;region=eu` into tags.
pub fn parse_tags(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut tags = BTreeMap::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!("tag {part:?} is not `key=value` or a bare word"));
        }
        tags.insert(k.to_string(), v.to_string());
    }
    Ok(tags)
}

/// How database fleets pick their tenants.
#[derive(Debug, Clone)]
pub struct DiscoverOptions {
    /// A LIKE pattern over schema or database names: `%` matches any run of
    /// characters, `_` any one character, and `\_` / `\%` themselves. The
    /// default, `tenant\_%`, matches the names that start with `tenant_`.
    pub pattern: String,
    /// A query returning one text column of schema or database names; wins
    /// over the pattern when set. It runs in a read-only transaction.
    pub query: Option<String>,
    /// An empty fleet is expected (otherwise it is an error).
    pub allow_empty: bool,
    /// How long connecting to the server that lists the fleet may take.
    pub connect_timeout: std::time::Duration,
}

/// The default `--tenant-pattern`: names that start with `tenant_`.
pub const DEFAULT_PATTERN: &str = "tenant\\_%";

impl Default for DiscoverOptions {
    fn default() -> Self {
        DiscoverOptions {
            pattern: DEFAULT_PATTERN.to_string(),
            query: None,
            allow_empty: false,
            connect_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// How the fleet is found: `--fleet KIND:WHERE`.
#[derive(Clone, PartialEq, Eq)]
pub enum FleetSpec {
    /// Every `*.db` file in a folder; id = file stem.
    SqliteDir(PathBuf),
    /// A CSV file `id,url,schema,tags`.
    Registry(PathBuf),
    /// Schemas of one PostgreSQL database.
    PostgresSchemas(String),
    /// Databases of one PostgreSQL server (the URL names a maintenance database).
    PostgresDatabases(String),
    /// Databases of one MySQL/MariaDB server.
    MysqlDatabases(String),
    /// Row tenants of one database, listed by `--tenant-query` (`id[, tags]`):
    /// a PostgreSQL or MySQL/MariaDB database, or a SQLite file.
    PostgresRows(String),
    MysqlRows(String),
    SqliteRows(PathBuf),
}

impl FromStr for FleetSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| {
            Error::flag_value(
                "--fleet",
                redact_url(s),
                "expected KIND:WHERE, e.g. sqlite-dir:PATH, registry:FILE.csv, \
                 postgres-schemas:URL, postgres-databases:URL, mysql-databases:URL, \
                 postgres-rows:URL, mysql-rows:URL, sqlite-rows:FILE",
            )
        })?;
        if rest.is_empty() {
            return Err(Error::flag_value("--fleet", kind, "nothing after the ':'"));
        }
        Ok(match kind {
            "sqlite-dir" => FleetSpec::SqliteDir(PathBuf::from(rest)),
            "registry" => FleetSpec::Registry(PathBuf::from(rest)),
            "sqlite-rows" => FleetSpec::SqliteRows(PathBuf::from(rest)),
            "postgres-schemas" | "postgres-databases" | "postgres-rows" => {
                if Dialect::from_url(rest) != Some(Dialect::Postgres) {
                    let m = format!("{} is not a postgres:// URL", redact_url(rest));
                    return Err(Error::flag_value("--fleet", kind, m));
                }
                check_server_url(rest).map_err(|e| Error::flag_value("--fleet", kind, e))?;
                match kind {
                    "postgres-schemas" => FleetSpec::PostgresSchemas(rest.to_string()),
                    "postgres-rows" => FleetSpec::PostgresRows(rest.to_string()),
                    _ => FleetSpec::PostgresDatabases(rest.to_string()),
                }
            }
            "mysql-databases" | "mysql-rows" => {
                if Dialect::from_url(rest) != Some(Dialect::Mysql) {
                    let m = format!("{} is not a mysql:// URL", redact_url(rest));
                    return Err(Error::flag_value("--fleet", kind, m));
                }
                check_server_url(rest).map_err(|e| Error::flag_value("--fleet", kind, e))?;
                match kind {
                    "mysql-rows" => FleetSpec::MysqlRows(rest.to_string()),
                    _ => FleetSpec::MysqlDatabases(rest.to_string()),
                }
            }
            other => {
                return Err(Error::flag(
                    "--fleet",
                    format!(
                        "unknown fleet kind {other:?}; expected sqlite-dir, registry, \
                         postgres-schemas, postgres-databases, mysql-databases, postgres-rows, \
                         mysql-rows or sqlite-rows"
                    ),
                ));
            }
        })
    }
}

impl FleetSpec {
    /// The fleet as a rollout records it: folders and files made absolute
    /// (so that a rollout resumes from anywhere), URLs without their
    /// password.
    pub fn recorded(&self) -> String {
        let abs = |p: &PathBuf| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string()
        };
        match self {
            FleetSpec::SqliteDir(p) => format!("sqlite-dir:{}", abs(p)),
            FleetSpec::Registry(p) => format!("registry:{}", abs(p)),
            FleetSpec::SqliteRows(p) => format!("sqlite-rows:{}", abs(p)),
            other => other.to_string(),
        }
    }

    /// Whether a rollout recorded with `recorded` is of this fleet (also as
    /// earlier versions recorded it, without making paths absolute).
    pub fn is(&self, recorded: &str) -> bool {
        self.recorded() == recorded || self.to_string() == recorded
    }

    /// The fleet of a record, when it can be rebuilt from it: not when its
    /// URL had a password, which the record does not keep.
    pub fn from_record(recorded: &str) -> Option<FleetSpec> {
        if recorded.contains(":***@") || recorded.contains("=***") {
            return None;
        }
        recorded.parse().ok()
    }
}

impl fmt::Display for FleetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetSpec::SqliteDir(p) => write!(f, "sqlite-dir:{}", p.display()),
            FleetSpec::Registry(p) => write!(f, "registry:{}", p.display()),
            FleetSpec::PostgresSchemas(u) => write!(f, "postgres-schemas:{}", redact_url(u)),
            FleetSpec::PostgresDatabases(u) => write!(f, "postgres-databases:{}", redact_url(u)),
            FleetSpec::MysqlDatabases(u) => write!(f, "mysql-databases:{}", redact_url(u)),
            FleetSpec::PostgresRows(u) => write!(f, "postgres-rows:{}", redact_url(u)),
            FleetSpec::MysqlRows(u) => write!(f, "mysql-rows:{}", redact_url(u)),
            FleetSpec::SqliteRows(p) => write!(f, "sqlite-rows:{}", p.display()),
        }
    }
}

impl fmt::Debug for FleetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests;
