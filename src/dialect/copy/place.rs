//! Where a tenant is, as the file system or the server itself says it, so
//! that one place spelled two ways is one place: a SQLite file by device
//! and inode (or, while it does not exist, by its absolute path with `..`
//! and links resolved), a PostgreSQL database or schema by the server's
//! system identifier, the database and the schema, a MySQL/MariaDB database
//! by the server's identity (`@@hostname:@@port:@@datadir`, and
//! `@@server_uuid` where the server has one) and the database's name.
//!
//! A move is refused when its target overlaps its source or any tenant of
//! the fleet (`Place::overlaps`): a PostgreSQL database tenant owns every
//! schema of its database.

use crate::error::FailureKind;
use std::path::{Component, Path, PathBuf};

use sqlx::{Connection, Row};

use crate::dialect::connect;
use crate::error::TenantError;
use crate::options::Settings;
use crate::tenant::{Dialect, Locator};

/// One place a tenant can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// What names the server (or the disk); two places on one server share
    /// at least one token, whoever asked.
    pub server: Vec<String>,
    /// The database (PostgreSQL, MySQL), or the file (SQLite).
    pub database: String,
    /// A PostgreSQL schema tenant's schema; `None`: the whole database.
    pub schema: Option<String>,
    /// Whether the database (or file, or schema) exists now.
    pub exists: bool,
    /// Whether the database (or file) exists now, its schema or not.
    pub database_exists: bool,
    /// A stable text for this place, the same before and after it exists
    /// (the state store's claim on a target).
    pub key: String,
}

impl Place {
    /// Whether the two are, or contain, one another.
    pub fn overlaps(&self, other: &Place) -> bool {
        self.server.iter().any(|s| other.server.contains(s))
            && self.database == other.database
            && match (&self.schema, &other.schema) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// The key of a server place: its first token, the database, the schema.
fn server_key(server: &[String], database: &str, schema: Option<&str>) -> String {
    let mut k = format!(
        "{}/{database}",
        server.first().map(String::as_str).unwrap_or("")
    );
    if let Some(s) = schema {
        k.push('/');
        k.push_str(s);
    }
    k
}

/// The place of `locator`, asking its server where it has one.
pub async fn place(settings: &Settings, locator: &Locator) -> Result<Place, TenantError> {
    match locator {
        Locator::Sqlite { path } => Ok(sqlite_place(path)),
        Locator::Postgres { url, schema } => pg_place(settings, url, schema.as_deref()).await,
        Locator::Mysql { url } => mysql_place(settings, url).await,
        Locator::Row { .. } => Err(TenantError::permanent(
            FailureKind::Unsupported,
            "a row tenant has no place of its own: it shares its tables".to_string(),
        )),
    }
}

/// Whether `locator` could be `target` at all, by the names alone (the
/// database's name, the file's name): only those are asked their server.
pub fn may_be(locator: &Locator, target: &Place) -> bool {
    match locator {
        Locator::Sqlite { .. } => target.server.iter().any(|s| s.starts_with("sqlite")),
        Locator::Postgres { url, .. } => crate::dialect::postgres::connect_options(url)
            .map(|o| pg_database_name(&o) == target.database)
            .unwrap_or(true),
        Locator::Mysql { url } => {
            mysql_name(url).is_none_or(|n| n.eq_ignore_ascii_case(&target.database))
        }
        Locator::Row { .. } => false,
    }
}

fn sqlite_place(path: &Path) -> Place {
    use std::os::unix::fs::MetadataExt;
    let key = format!("sqlite:{}", resolved(path).display());
    match std::fs::metadata(path) {
        Ok(m) => Place {
            server: vec![format!("sqlite:dev={}", m.dev())],
            database: format!("ino={}", m.ino()),
            schema: None,
            exists: true,
            database_exists: true,
            key,
        },
        Err(_) => Place {
            server: vec!["sqlite:path".into()],
            database: resolved(path).display().to_string(),
            schema: None,
            exists: false,
            database_exists: false,
            key,
        },
    }
}

/// `path` made absolute, its longest existing ancestor canonicalised
/// (links resolved) and the rest with `.` and `..` taken lexically.
pub fn resolved(path: &Path) -> PathBuf {
    let abs = std::env::current_dir()
        .map(|d| d.join(path))
        .unwrap_or_else(|_| path.to_path_buf());
    let mut lexical = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            c => lexical.push(c),
        }
    }
    let mut base = lexical.clone();
    let mut rest = Vec::new();
    while !base.exists() {
        match base.file_name() {
            Some(n) => rest.push(n.to_os_string()),
            None => break,
        }
        base.pop();
    }
    let mut out = std::fs::canonicalize(&base).unwrap_or(base);
    for n in rest.into_iter().rev() {
        out.push(n);
    }
    out
}

fn pg_database_name(o: &sqlx::postgres::PgConnectOptions) -> String {
    o.get_database()
        .unwrap_or_else(|| o.get_username())
        .to_string()
}

async fn pg_place(
    settings: &Settings,
    url: &str,
    schema: Option<&str>,
) -> Result<Place, TenantError> {
    let opts = crate::dialect::postgres::connect_options(url)
        .map_err(|e| crate::dialect::connect_error(Dialect::Postgres, url, &e))?;
    let name = pg_database_name(&opts);
    let open = |o: sqlx::postgres::PgConnectOptions| async move {
        connect(
            Dialect::Postgres,
            url,
            settings.connect_timeout,
            sqlx::PgConnection::connect_with(&o),
        )
        .await
    };
    let (mut conn, exists) = match open(opts.clone()).await {
        Ok(c) => (c, true),
        Err(e) if e.code.as_deref() == Some("3D000") => {
            (open(opts.clone().database("postgres")).await?, false)
        }
        Err(e) => return Err(e),
    };
    let r = pg_identity(&mut conn, schema.filter(|_| exists)).await;
    let _ = conn.close().await;
    let (server, schema_exists) = r.map_err(|e| {
        crate::dialect::copy::failed(Dialect::Postgres, "identifying the server", e)
    })?;
    Ok(Place {
        key: server_key(&server, &name, schema),
        server,
        database: name,
        schema: schema.map(str::to_string),
        exists: exists && schema_exists,
        database_exists: exists,
    })
}

/// The server's tokens: its system identifier (where this role may read
/// it) and its start time with its port (which every role may read).
async fn pg_identity(
    conn: &mut sqlx::PgConnection,
    schema: Option<&str>,
) -> Result<(Vec<String>, bool), sqlx::Error> {
    let mut server = Vec::new();
    if let Ok(id) =
        sqlx::query_scalar::<_, String>("SELECT system_identifier::text FROM pg_control_system()")
            .fetch_one(&mut *conn)
            .await
    {
        server.push(format!("pg:{id}"));
    }
    let start: String = sqlx::query_scalar(
        "SELECT pg_postmaster_start_time()::text || ' port ' || current_setting('port')",
    )
    .fetch_one(&mut *conn)
    .await?;
    server.push(format!("pg-start:{start}"));
    let schema_exists = match schema {
        Some(s) => sqlx::query("SELECT 1 FROM pg_namespace WHERE nspname = $1")
            .bind(s)
            .fetch_optional(&mut *conn)
            .await?
            .is_some(),
        None => true,
    };
    Ok((server, schema_exists))
}

fn mysql_name(url: &str) -> Option<String> {
    use std::str::FromStr;
    sqlx::mysql::MySqlConnectOptions::from_str(url)
        .ok()
        .and_then(|o| o.get_database().map(str::to_string))
}

async fn mysql_place(settings: &Settings, url: &str) -> Result<Place, TenantError> {
    use std::str::FromStr;
    let opts = sqlx::mysql::MySqlConnectOptions::from_str(url)
        .map_err(|e| crate::dialect::connect_error(Dialect::Mysql, url, &e))?;
    let name = opts.get_database().unwrap_or_default().to_string();
    let server = opts.clone().database("information_schema");
    let mut conn = connect(
        Dialect::Mysql,
        url,
        settings.connect_timeout,
        sqlx::MySqlConnection::connect_with(&server),
    )
    .await?;
    let r = mysql_identity(&mut conn, &name).await;
    let _ = conn.close().await;
    let (server, folded, exists) =
        r.map_err(|e| crate::dialect::copy::failed(Dialect::Mysql, "identifying the server", e))?;
    let database = if folded { name.to_lowercase() } else { name };
    Ok(Place {
        key: server_key(&server, &database, None),
        server,
        database,
        schema: None,
        exists,
        database_exists: exists,
    })
}

/// The server's tokens, whether it folds database names to lower case, and
/// whether database `name` exists.
async fn mysql_identity(
    conn: &mut sqlx::MySqlConnection,
    name: &str,
) -> Result<(Vec<String>, bool, bool), sqlx::Error> {
    let r = sqlx::query(
        "SELECT CAST(@@hostname AS CHAR), CAST(@@port AS SIGNED), CAST(@@datadir AS CHAR), \
         CAST(@@lower_case_table_names AS SIGNED)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let (host, port, datadir, lower): (String, i64, String, i64) =
        (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
    let mut server = vec![format!("mysql:{host}:{port}:{datadir}")];
    // MySQL's own identity; MariaDB has none
    if let Ok(uuid) = sqlx::query_scalar::<_, String>("SELECT CAST(@@server_uuid AS CHAR)")
        .fetch_one(&mut *conn)
        .await
    {
        server.insert(0, format!("mysql-uuid:{uuid}"));
    }
    let exists = sqlx::query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    Ok((server, lower != 0, exists))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(db: &str, schema: Option<&str>) -> Place {
        Place {
            server: vec!["pg:1".into(), "pg-start:x".into()],
            database: db.into(),
            schema: schema.map(str::to_string),
            exists: true,
            database_exists: true,
            key: String::new(),
        }
    }

    #[test]
    fn a_database_tenant_owns_every_schema_of_its_database() {
        assert!(pg("app", None).overlaps(&pg("app", Some("public"))));
        assert!(pg("app", Some("t1")).overlaps(&pg("app", Some("t1"))));
        assert!(!pg("app", Some("t1")).overlaps(&pg("app", Some("t2"))));
        assert!(!pg("app", None).overlaps(&pg("other", None)));
        // one token in common is one server (a role that may not read the
        // system identifier still shares the start time)
        let mut partial = pg("app", None);
        partial.server = vec!["pg-start:x".into()];
        assert!(partial.overlaps(&pg("app", None)));
        partial.server = vec!["pg-start:y".into()];
        assert!(!partial.overlaps(&pg("app", None)));
    }

    #[test]
    fn a_file_spelled_two_ways_is_one_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let a = dir.path().join("d/x.db");
        std::fs::write(&a, b"").unwrap();
        let b = dir.path().join("d/../d/./x.db");
        assert!(sqlite_place(&a).overlaps(&sqlite_place(&b)));
        std::os::unix::fs::symlink(&a, dir.path().join("link.db")).unwrap();
        assert!(sqlite_place(&a).overlaps(&sqlite_place(&dir.path().join("link.db"))));
        // not there yet: by the resolved path
        let c = dir.path().join("d/new.db");
        let d = dir.path().join("d/../d/new.db");
        assert!(!sqlite_place(&c).exists);
        assert!(sqlite_place(&c).overlaps(&sqlite_place(&d)));
        assert!(!sqlite_place(&c).overlaps(&sqlite_place(&a)));
    }
}
