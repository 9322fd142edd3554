//! What the row-tenant session stands on: fleetmig's tenant-history table
//! and its SQL per database, the `:tenant_id` binding (found by sqlparser's
//! tokenizer, never in strings or comments), the session settings, one
//! `Any` pool per shared database, and the listing of a fleet's tenants by
//! its `--tenant-query`.

use crate::error::FailureKind;
use std::path::Path;
use std::time::Duration;

use dashmap::{DashMap, DashSet};
use sqlx::{AnyConnection, AnyPool, Connection};

use super::super::history::render_row;
use super::super::{Access, classify};
use crate::error::TenantError;
use crate::options::Settings;
use crate::tenant::{Dialect, Locator};

/// fleetmig's table of tenant-scoped history, in the shared database.
pub const TABLE: &str = "_fleetmig_tenant_migrations";

/// The placeholder a tenant-scoped migration writes for its tenant's id.
/// The database's own history, as portable rows (version, description,
/// `ok`/`dirty`, checksum): read by a session and by the read-ahead alike.
pub(super) const DATABASE_HISTORY: &str = "SELECT version, description, \
     CASE WHEN success THEN 'ok' ELSE 'dirty' END, checksum FROM _sqlx_migrations ORDER BY version";

/// Tenants' history rows where `filter` holds, with the tenant id fifth.
pub(super) fn tenant_history(filter: &str) -> String {
    format!(
        "SELECT version, description, CASE WHEN success = 1 THEN 'ok' ELSE 'dirty' END, checksum, tenant_id \
         FROM {TABLE} WHERE {filter} ORDER BY version"
    )
}

/// One row of `DATABASE_HISTORY` or `tenant_history`.
pub(super) fn applied(r: &sqlx::any::AnyRow) -> Result<crate::migration::Applied, sqlx::Error> {
    use sqlx::Row;
    Ok(crate::migration::Applied {
        version: r.try_get(0)?,
        description: r.try_get(1)?,
        success: r.try_get::<String, _>(2)? == "ok",
        checksum: r.try_get(3)?,
    })
}

pub use fleetmig_parse::bind::bind_tenant;

/// The connection pools of row tenants, one per shared database (its URL
/// and access), with fleetmig's session settings on every connection; the
/// databases whose tenant-scoped history table is known to exist.
#[derive(Default)]
pub(crate) struct Pools {
    pools: DashMap<String, AnyPool>,
    pub(super) tabled: DashSet<String>,
}

impl Pools {
    pub(super) fn get(&self, url: &str, dialect: Dialect, settings: &Settings) -> AnyPool {
        if let Some(p) = self.pools.get(url) {
            return p.clone();
        }
        sqlx::any::install_default_drivers();
        let sets = session_settings(dialect, settings);
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(settings.pool_size.max(1))
            .acquire_timeout(settings.connect_timeout)
            // No maintenance task (no idle timeout, no lifetime): sqlx 0.9's
            // can read a transiently wrapped idle count and spin for ever on
            // a runtime thread (a hung `sync` seen in CI). Connections live
            // as long as the command; the pool is bounded by its size.
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .after_connect(move |conn, _| {
                let sets = sets.clone();
                Box::pin(async move {
                    for set in sets {
                        sqlx::raw_sql(sqlx::AssertSqlSafe(set))
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy(url);
        match pool {
            Ok(pool) => self.pools.entry(url.to_string()).or_insert(pool).clone(),
            // an URL the driver refuses: a pool that fails on first use says so
            Err(_) => sqlx::any::AnyPoolOptions::new()
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_lazy("sqlite::memory:")
                .expect("an in-memory SQLite URL parses"),
        }
    }

    pub(crate) async fn close(&self) {
        let pools: Vec<_> = self.pools.iter().map(|p| p.value().clone()).collect();
        for p in pools {
            p.close().await;
        }
    }
}

/// `sqlx::Any`'s URL of the database at `db`.
pub(super) fn any_url(db: &Locator, access: Access) -> Result<String, TenantError> {
    match db {
        Locator::Postgres { url, schema: None } | Locator::Mysql { url } => Ok(url.clone()),
        Locator::Sqlite { path } => Ok(format!(
            "sqlite://{}?mode={}",
            path.display(),
            if access == Access::Write { "rw" } else { "ro" }
        )),
        other => Err(TenantError::permanent(
            FailureKind::Configuration,
            format!("row tenants live in a database, not in {other}"),
        )),
    }
}

/// A query of `sql` with the tenant's id bound where it says `:tenant_id`.
pub(super) fn bound<'q>(
    sql: &'q str,
    times: usize,
    tenant: &'q str,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for _ in 0..times {
        q = q.bind(tenant);
    }
    q
}

/// `e` pointing at `file`:`line` of the migration.
pub(super) fn at_line(mut e: TenantError, file: &Path, line: usize) -> TenantError {
    e.message = format!("{}:{line}: {}", file.display(), e.message);
    e
}

/// How many tables named by the one bind parameter the database has.
pub(super) fn exists_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => {
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
        Dialect::Mysql => {
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = ?"
        }
        Dialect::Sqlite => "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
    }
}

/// The session settings of a row tenant's connection.
pub(super) fn session_settings(dialect: Dialect, s: &Settings) -> Vec<String> {
    let ms = s.lock_timeout.as_millis();
    match dialect {
        Dialect::Postgres => {
            let mut v = vec![format!("SET lock_timeout = {ms}")];
            if let Some(t) = s.statement_timeout {
                v.push(format!("SET statement_timeout = {}", t.as_millis()));
            }
            v
        }
        Dialect::Mysql => {
            let secs = s.lock_timeout.as_secs().max(1);
            vec![format!(
                "SET SESSION lock_wait_timeout = {secs}, innodb_lock_wait_timeout = {secs}"
            )]
        }
        Dialect::Sqlite => vec![format!("PRAGMA busy_timeout = {ms}")],
    }
}

/// fleetmig's tenant-scoped history table.
pub(super) fn create_table(dialect: Dialect) -> String {
    let (id, blob) = match dialect {
        // ids compared byte for byte: `Acme` and `ACME` are two tenants'
        // histories even where the server's default collation merges them
        Dialect::Postgres => ("TEXT COLLATE \"C\"", "BYTEA"),
        Dialect::Mysql => (
            "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            "BLOB",
        ),
        Dialect::Sqlite => ("TEXT", "BLOB"),
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (\
         tenant_id {id} NOT NULL, version BIGINT NOT NULL, description TEXT NOT NULL, \
         success BIGINT NOT NULL, checksum {blob} NOT NULL, execution_time BIGINT NOT NULL, \
         installed_at BIGINT NOT NULL, PRIMARY KEY (tenant_id, version))"
    )
}

pub(super) fn unsupported(what: &str) -> TenantError {
    TenantError::permanent(
        FailureKind::Unsupported,
        format!("{what} is the database's, not one row tenant's: run it on the database"),
    )
}

/// A lock that was not granted in time: transient, retried later.
pub(super) fn locked(mut e: TenantError, tenant: &str) -> TenantError {
    e.class = crate::error::ErrorClass::Transient;
    e.kind = FailureKind::TenantLocked;
    e.message = format!(
        "row tenant {tenant} is locked by another process: {}",
        e.message
    );
    e
}

/// Lists a database's row tenants with `query` (`id[, tags]`), read-only.
pub async fn list(
    db: &Locator,
    query: &str,
    settings_timeout: Duration,
) -> Result<Vec<(String, String)>, String> {
    let dialect = db.dialect();
    let url = any_url(db, Access::Read).map_err(|e| e.message)?;
    sqlx::any::install_default_drivers();
    let mut conn = super::super::connect(
        dialect,
        &url,
        settings_timeout,
        AnyConnection::connect(&url),
    )
    .await
    .map_err(|e| e.message)?;
    let begin = match dialect {
        Dialect::Postgres => "BEGIN READ ONLY",
        Dialect::Mysql => "START TRANSACTION READ ONLY",
        Dialect::Sqlite => "BEGIN",
    };
    let redacted = db.redacted();
    let fail = |e: sqlx::Error| {
        format!(
            "--tenant-query on {redacted}: {}",
            classify(&e, dialect).message
        )
    };
    let mut tx = conn
        .begin_with(sqlx::AssertSqlSafe(begin))
        .await
        .map_err(fail)?;
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(query.to_string()))
        .fetch_all(&mut *tx)
        .await
        .map_err(fail)?;
    if rows.len() > 1 {
        no_collisions(&mut tx, dialect, query, &rows, &redacted).await?;
    }
    let _ = tx.rollback().await;
    let _ = conn.close().await;
    rows.iter()
        .enumerate()
        .map(|(n, r)| {
            use sqlx::{Row, ValueRef};
            // a NULL id is no tenant (it printed as a tenant named NULL)
            if r.try_get_raw(0).map(|v| v.is_null()).unwrap_or(false) {
                return Err(format!(
                    "--tenant-query returned NULL as the id of row {}: every row needs a tenant id",
                    n + 1
                ));
            }
            let cells = render_row(r);
            match cells.as_slice() {
                [id] => Ok((id.clone(), String::new())),
                [id, tags] => Ok((id.clone(), if tags == "NULL" { String::new() } else { tags.clone() })),
                _ => Err(format!(
                    "--tenant-query must return one column (the tenant's id) or two (id, tags); it returned {}",
                    cells.len()
                )),
            }
        })
        .collect()
}

/// Refuses ids the tenant query returned that its column's collation
/// holds equal (one tenant to the database, two to fleetmig).
async fn no_collisions(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    dialect: Dialect,
    query: &str,
    rows: &[sqlx::any::AnyRow],
    redacted: &str,
) -> Result<(), String> {
    use sqlx::{Column, Row};
    let column = rows[0].columns()[0].name().to_string();
    let sql = collisions_sql(dialect, query, &column);
    let groups: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| {
            format!(
                "--tenant-query on {redacted}: could not check its ids for ones equal under the column's collation: {}",
                classify(&e, dialect).message
            )
        })?;
    let Some(g) = groups.first() else {
        return Ok(());
    };
    let ids: Vec<String> = g.split(',').map(unhex).collect();
    Err(format!(
        "--tenant-query on {redacted} returned ids that are one tenant to the database \
         (equal under the collation of its column {column:?}): {}; a row tenant's \
         migrations would touch the other's rows. Make the ids distinct under that \
         collation, or select them with a binary one",
        ids.iter()
            .map(|i| format!("{i:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Groups of the tenant query's ids that its column's collation holds
/// equal though their bytes differ (`acme`, `ACME` under a case-blind one),
/// each as the ids' UTF-8 bytes in hex, comma separated. GROUP BY compares
/// with the column's own collation; the hex is the bytes.
fn collisions_sql(dialect: Dialect, query: &str, column: &str) -> String {
    let q = query.trim().trim_end_matches(';');
    let (c, hex, agg) = match dialect {
        Dialect::Postgres => {
            let c = format!("q.\"{}\"", column.replace('"', "\"\""));
            let hex = format!("encode(convert_to({c}::text, 'UTF8'), 'hex')");
            let agg = format!("string_agg(DISTINCT {hex}, ',')");
            (c, hex, agg)
        }
        Dialect::Mysql => {
            let c = format!("q.`{}`", column.replace('`', "``"));
            let hex = format!("LOWER(HEX(CONVERT({c} USING utf8mb4)))");
            let agg = format!("CAST(GROUP_CONCAT(DISTINCT {hex} SEPARATOR ',') AS CHAR)");
            (c, hex, agg)
        }
        Dialect::Sqlite => {
            let c = format!("q.\"{}\"", column.replace('"', "\"\""));
            let hex = format!("lower(hex({c}))");
            let agg = format!("group_concat(DISTINCT {hex})");
            (c, hex, agg)
        }
    };
    format!("SELECT {agg} FROM (\n{q}\n) q GROUP BY {c} HAVING count(DISTINCT {hex}) > 1 LIMIT 3")
}

/// Hex of UTF-8 bytes back to text (the bytes shown escaped if they are
/// not UTF-8).
fn unhex(h: &str) -> String {
    let bytes: Vec<u8> = (0..h.len() / 2)
        .filter_map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backslash_in_a_mysql_string_keeps_the_placeholder_outside_it() {
        let (my, n) = bind_tenant(
            "UPDATE t SET a = 'x \\' y' WHERE org = :tenant_id",
            Dialect::Mysql,
        );
        assert_eq!(n, 1, "{my}");
        assert!(my.ends_with("org = ?"), "{my}");
    }

    #[test]
    fn the_tenant_id_is_bound_never_pasted() {
        let sql = "UPDATE t SET a = ':tenant_id' WHERE org = :tenant_id -- :tenant_id\n AND b = :tenant_id";
        let (pg, n) = bind_tenant(sql, Dialect::Postgres);
        assert_eq!(n, 1);
        assert_eq!(
            pg,
            "UPDATE t SET a = ':tenant_id' WHERE org = $1 -- :tenant_id\n AND b = $1"
        );
        let (my, n) = bind_tenant(sql, Dialect::Mysql);
        assert_eq!(n, 2);
        assert_eq!(
            my,
            "UPDATE t SET a = ':tenant_id' WHERE org = ? -- :tenant_id\n AND b = ?"
        );
    }
}
