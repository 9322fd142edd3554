//! SQLite tenants: one file each. There is no server lock to take, so every
//! migration runs under `BEGIN IMMEDIATE` (the database's write lock), and the
//! history is re-checked inside that transaction: a second process that read
//! the same history waits for the lock, then sees the row and skips the
//! version. The busy timeout is the lock timeout; `SQLITE_BUSY` past it is a
//! transient error that the executor retries with backoff.

use std::path::Path;
use std::time::Instant;

use sqlx::migrate::{Migrate, MigrateError, MigrationType};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

use super::{Access, AppliedStep, Conn, Connector, Fail, Session, Step, sqlx_migration};
use crate::error::TenantError;
use crate::tenant::Dialect;

const TABLE: &str = "_sqlx_migrations";

pub(crate) async fn open(
    c: &Connector,
    path: &Path,
    access: Access,
) -> Result<Session, TenantError> {
    let session = |conn| Session {
        conn,
        dialect: Dialect::Sqlite,
        table: TABLE.to_string(),
        schema: None,
        locked: false,
        history_ready: false,
        fresh: false,
        url: None,
        lock_wait: c.settings.lock_timeout,
        exists_hint: None,
        setup: String::new(),
        broken: false,
        pg_history: Default::default(),
        lock_key: String::new(),
    };
    if !path.exists() {
        if access == Access::Read {
            return Ok(session(Conn::SqliteMissing));
        }
        if !c.settings.create_missing {
            return Err(TenantError::permanent(
                "cannot_open",
                format!(
                    "tenant file {} does not exist (pass --create-missing to create missing SQLite tenants)",
                    path.display()
                ),
            ));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                TenantError::permanent(
                    "cannot_open",
                    format!("cannot create {}: {e}", parent.display()),
                )
            })?;
        }
    }
    // No journal_mode is set: it is persistent and belongs to the application.
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(access == Access::Write)
        .read_only(access == Access::Read)
        .busy_timeout(c.settings.lock_timeout)
        .disable_statement_logging();
    match opts.connect().await {
        Ok(conn) => Ok(session(Conn::Sqlite(conn))),
        Err(e) => {
            let mut t = super::classify(&e, Dialect::Sqlite);
            t.message = format!("cannot open {}: {}", path.display(), t.message);
            Err(t)
        }
    }
}

pub(crate) async fn history_exists(c: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(c)
    .await?;
    Ok(n > 0)
}

pub(crate) async fn apply(
    s: &mut Session,
    steps: &[Step<'_>],
) -> Result<Vec<AppliedStep>, TenantError> {
    if let [step] = steps
        && step.script.no_tx
    {
        return apply_no_tx(s, *step).await;
    }
    let Conn::Sqlite(conn) = &mut s.conn else {
        unreachable!("sqlite session without a sqlite connection")
    };
    let result: Result<Vec<AppliedStep>, (Fail, Option<i64>)> = async {
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| (Fail::Db(e.into()), None))?;
        if !s.history_ready {
            // Created inside the first write transaction: one fsync fewer per tenant.
            tx.ensure_migrations_table(TABLE)
                .await
                .map_err(|e| (Fail::Db(e), None))?;
        }
        let mut out = Vec::with_capacity(steps.len());
        for step in steps {
            let v = step.migration.version;
            let present: Option<i64> =
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE version = ?1")
                    .bind(v)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| (Fail::Db(e.into()), Some(v)))?;
            if present.is_some() {
                out.push(AppliedStep {
                    version: v,
                    duration: Default::default(),
                    already_applied: true,
                });
                continue;
            }
            // The same statements sqlx's `Migrate::apply` runs (script, then
            // the history row in sqlx's layout), minus its savepoint and its
            // separate execution_time UPDATE: we are already inside our own
            // transaction, and the elapsed time is known before the insert.
            let t0 = Instant::now();
            (&mut *tx)
                .execute(sqlx::AssertSqlSafe(step.script.sql.clone()))
                .await
                .map_err(|e| (Fail::Db(MigrateError::ExecuteMigration(e, v)), Some(v)))?;
            let duration = t0.elapsed();
            if let Some((file, vsql)) = &step.script.verify {
                let rows: Vec<Vec<String>> = sqlx::raw_sql(sqlx::AssertSqlSafe(vsql.clone()))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| (Fail::Db(MigrateError::ExecuteMigration(e, v)), Some(v)))?
                    .iter()
                    .map(super::render_row)
                    .collect();
                if let Some(why) = super::verdict(&rows) {
                    return Err((Fail::Verify(super::verify_failed(file, &why, true)), Some(v)));
                }
            }
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (?1, ?2, TRUE, ?3, ?4)",
            )
            .bind(v)
            .bind(step.migration.description.as_str())
            .bind(step.script.checksum.as_slice())
            .bind(duration.as_nanos() as i64)
            .execute(&mut *tx)
            .await
            .map_err(|e| (Fail::Db(e.into()), Some(v)))?;
            out.push(AppliedStep {
                version: v,
                duration,
                already_applied: false,
            });
        }
        tx.commit().await.map_err(|e| (Fail::Db(e.into()), None))?;
        Ok(out)
    }
    .await;
    match result {
        Ok(out) => {
            s.history_ready = true;
            Ok(out)
        }
        Err((f, v)) => Err(s.fail(f, v)),
    }
}

/// A `-- no-transaction` migration (e.g. `VACUUM`): run as is. If it fails for
/// good, the history gets a dirty row, since part of it may have run.
async fn apply_no_tx(s: &mut Session, step: Step<'_>) -> Result<Vec<AppliedStep>, TenantError> {
    s.ensure_history().await?;
    let Conn::Sqlite(conn) = &mut s.conn else {
        unreachable!()
    };
    let m = sqlx_migration(step.migration, step.script, MigrationType::Simple);
    match conn.apply(TABLE, &m).await {
        Ok(d) => Ok(vec![AppliedStep {
            version: m.version,
            duration: d,
            already_applied: false,
        }]),
        Err(e) => {
            let t = s.migrate_err(e).at_version(m.version);
            if !t.is_transient() {
                let _ = s.mark_dirty(step).await;
            }
            Err(t)
        }
    }
}
