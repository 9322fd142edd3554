//! SQLite tenants: one file each. There is no server lock to take, so every
//! migration runs under `BEGIN IMMEDIATE` (the database's write lock), and the
//! history is re-checked inside that transaction: a second process that read
//! the same history waits for the lock, then sees the row and skips the
//! version. The busy timeout is the lock timeout; `SQLITE_BUSY` past it is a
//! transient error that the executor retries with backoff. A tenant whose
//! file does not exist reads as empty and is never created by a read.

use crate::error::FailureKind;
use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::migrate::{Migrate, MigrationType};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Executor};

use super::classify::{migrate_error, tenant_error};
use super::history::{self, BatchFail, HistoryTable, Params};
use super::{
    Access, AppliedStep, BatchOutcome, PreflightLimits, Session, Settings, Step, quote_ident,
    quote_literal,
};
use crate::error::TenantError;
use crate::migration::{Applied, Migration, Script};
use crate::tenant::Dialect;

const TABLE: &str = "_sqlx_migrations";

/// Statements per piece of a script sent to SQLite at once (see `pieces`).
const PIECE_STATEMENTS: usize = 128;
/// Bytes per piece, at most (a piece ends at the first statement end past it).
const PIECE_BYTES: usize = 64 * 1024;

/// Whether `sql` ends at the end of a complete statement, by SQLite's own
/// rules (`sqlite3_complete`: a trigger body's inner semicolons do not end
/// it, nor do semicolons in strings or comments).
fn complete(sql: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(sql) else {
        return true; // a NUL byte: let SQLite report the script as it is
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // sqlite3_complete only reads it.
    unsafe { libsqlite3_sys::sqlite3_complete(c.as_ptr()) != 0 }
}

/// A script cut into pieces of at most about `PIECE_STATEMENTS` statements
/// or `PIECE_BYTES` bytes, each ending where a statement ends. sqlx keeps
/// every prepared statement of a script it runs at once alive until the end,
/// and SQLite visits every live statement at each schema change, so a large
/// script sent whole takes quadratic time (a 16 MB script took 53 s); in
/// pieces it takes linear time. A small script is one piece.
fn pieces(sql: &str) -> Vec<String> {
    if sql.len() <= PIECE_BYTES {
        return vec![sql.to_string()];
    }
    let mut out = Vec::new();
    let mut piece = String::new();
    let mut count = 0;
    for st in crate::migration::split::split_for(sql, Dialect::Sqlite) {
        piece.push_str(&st.sql);
        piece.push_str(";\n");
        count += 1;
        if (count >= PIECE_STATEMENTS || piece.len() >= PIECE_BYTES) && complete(&piece) {
            out.push(std::mem::take(&mut piece));
            count = 0;
        }
    }
    if !piece.trim().is_empty() {
        out.push(piece);
    }
    out
}

/// An open SQLite tenant.
pub struct SqliteSession {
    /// `None`: the file does not exist (read access only).
    conn: Option<SqliteConnection>,
    /// Whether `_sqlx_migrations` is known to exist.
    history_ready: bool,
    table: HistoryTable,
    /// The busy timeout (the lock timeout), to put back after a group whose
    /// migration sets its own (`-- fleetmig: lock_timeout=...`).
    busy: std::time::Duration,
}

fn missing() -> TenantError {
    TenantError::permanent(FailureKind::CannotOpen, "tenant file does not exist")
}

fn err(e: sqlx::Error) -> TenantError {
    tenant_error(&e, Dialect::Sqlite, None)
}

/// Opens `path`; creates it (and its folder) only for writing with
/// `create_missing`.
impl SqliteSession {
    pub(crate) async fn open(
        settings: &Settings,
        path: &Path,
        access: Access,
    ) -> Result<SqliteSession, TenantError> {
        let session = |conn| SqliteSession {
            conn,
            history_ready: false,
            table: HistoryTable::new(TABLE, Params::Question),
            busy: settings.lock_timeout,
        };
        if !path.exists() {
            if access == Access::Read {
                return Ok(session(None));
            }
            if !settings.create_missing {
                return Err(TenantError::permanent(
                    FailureKind::CannotOpen,
                    format!(
                        "tenant file {} does not exist (pass --create-missing to create missing SQLite tenants)",
                        path.display()
                    ),
                ));
            }
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    TenantError::permanent(
                        FailureKind::CannotOpen,
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
            .busy_timeout(settings.lock_timeout)
            .disable_statement_logging();
        match opts.connect().await {
            Ok(conn) => Ok(session(Some(conn))),
            Err(e) => {
                let mut t = err(e);
                t.message = format!("cannot open {}: {}", path.display(), t.message);
                Err(t)
            }
        }
    }

    async fn busy_timeout(&mut self, t: std::time::Duration) -> Result<(), TenantError> {
        let sql = format!("PRAGMA busy_timeout = {}", t.as_millis());
        self.conn()?
            .execute(sqlx::AssertSqlSafe(sql))
            .await
            .map(|_| ())
            .map_err(err)
    }

    fn conn(&mut self) -> Result<&mut SqliteConnection, TenantError> {
        self.conn.as_mut().ok_or_else(missing)
    }

    async fn ensure_history(&mut self) -> Result<(), TenantError> {
        if self.history_ready {
            return Ok(());
        }
        self.conn()?
            .ensure_migrations_table(TABLE)
            .await
            .map_err(|e| migrate_error(e, Dialect::Sqlite, None))?;
        self.history_ready = true;
        Ok(())
    }

    /// Transactional migrations in one `BEGIN IMMEDIATE` transaction, each
    /// re-checked against the history inside it.
    async fn apply_group(&mut self, steps: &[Step<'_>]) -> Result<Vec<AppliedStep>, TenantError> {
        let create = !self.history_ready;
        let table = self.table.clone();
        let conn = self.conn()?;
        let result: Result<Vec<AppliedStep>, (TenantError, Option<i64>)> = async {
            let db = |v: Option<i64>| move |e: sqlx::Error| (err(e), v);
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(db(None))?;
            if create {
                // Created inside the first write transaction: one fsync fewer per tenant.
                tx.ensure_migrations_table(TABLE)
                    .await
                    .map_err(|e| (migrate_error(e, Dialect::Sqlite, None), None))?;
            }
            let mut out = Vec::with_capacity(steps.len());
            for step in steps {
                let v = step.migration.version;
                let present: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE version = ?1")
                        .bind(v)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db(Some(v)))?;
                if present.is_some() {
                    out.push(AppliedStep {
                        version: v,
                        duration: Duration::ZERO,
                        already_applied: true,
                    });
                    continue;
                }
                // The statements sqlx's `Migrate::apply` runs (script, then the
                // history row), minus its savepoint and its separate
                // execution_time UPDATE: we are inside our own transaction,
                // and the elapsed time is known before the insert.
                let t0 = Instant::now();
                for piece in pieces(&step.script.sql) {
                    (&mut *tx)
                        .execute(sqlx::AssertSqlSafe(piece))
                        .await
                        .map_err(db(Some(v)))?;
                }
                let duration = t0.elapsed();
                if let Some(failed) = history::verify(&mut *tx, step.script, history::ROLLED_BACK)
                    .await
                    .map_err(db(Some(v)))?
                {
                    return Err((failed, Some(v)));
                }
                table
                    .insert(&mut *tx, *step, true, duration.as_nanos() as i64)
                    .await
                    .map_err(db(Some(v)))?;
                out.push(AppliedStep {
                    version: v,
                    duration,
                    already_applied: false,
                });
            }
            tx.commit().await.map_err(db(None))?;
            Ok(out)
        }
        .await;
        match result {
            Ok(out) => {
                self.history_ready = true;
                Ok(out)
            }
            Err((t, Some(v))) => Err(t.at_version(v)),
            Err((t, None)) => Err(t),
        }
    }

    /// A `-- no-transaction` migration (e.g. `VACUUM`): run as is. If it fails
    /// for good, the history gets a dirty row, since part of it may have run.
    async fn apply_no_tx(&mut self, step: Step<'_>) -> Result<Vec<AppliedStep>, TenantError> {
        self.ensure_history().await?;
        let m = super::sqlx_migration(step.migration, step.script, MigrationType::Simple);
        let table = self.table.clone();
        let conn = self.conn()?;
        match conn.apply(TABLE, &m).await {
            Ok(d) => Ok(vec![AppliedStep {
                version: m.version,
                duration: d,
                already_applied: false,
            }]),
            Err(e) => {
                let t = migrate_error(e, Dialect::Sqlite, None).at_version(m.version);
                if !t.is_transient() {
                    let _ = table.insert(&mut *conn, step, false, -1).await;
                }
                Err(t)
            }
        }
    }
}

/// Turns off SQLite's memory statistics for this process, before the library
/// is first used: they put a global mutex around every allocation, which the
/// threads reading tenant files at once (see `peek_histories`) would contend
/// for. fleetmig never reads them. Call once, first thing.
pub fn tune_library() {
    // SAFETY: sqlite3_config is called before any connection exists (first
    // thing in cli::run); if the library were already initialized it would
    // return SQLITE_MISUSE and change nothing.
    unsafe {
        libsqlite3_sys::sqlite3_config(
            libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS,
            0 as std::ffi::c_int,
        );
    }
}

/// Reads the histories of SQLite tenants without a session: each file
/// opened read-only, its `_sqlx_migrations` read, closed, all on this
/// (blocking) thread — the nightly check of an up-to-date fleet at about the
/// speed of reading the files. `None` where a session must decide (the file
/// is missing, busy or unreadable); nothing is ever created or written.
pub(crate) fn peek_histories(paths: &[&Path], busy: Duration) -> Vec<Option<Vec<Applied>>> {
    use rusqlite::{Connection, OpenFlags};
    paths
        .iter()
        .map(|path| {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .ok()?;
            conn.busy_timeout(busy).ok()?;
            let mut st = match conn.prepare(
                "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version",
            ) {
                Ok(st) => st,
                // one statement, not two: a tenant without the table has no history
                Err(e) if e.to_string().contains("no such table") => return Some(Vec::new()),
                Err(_) => return None,
            };
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .ok()?
                .collect::<Result<Vec<history::HistoryRow>, _>>()
                .ok()?;
            Some(history::applied(rows))
        })
        .collect()
}

#[async_trait::async_trait]
impl Session for SqliteSession {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn transactional_ddl(&self) -> bool {
        true
    }

    fn exists(&self) -> bool {
        self.conn.is_some()
    }

    /// SQLite tenants are serialised by `BEGIN IMMEDIATE` around each
    /// migration instead of a lock held for the session.
    async fn lock(&mut self) -> Result<(), TenantError> {
        Ok(())
    }

    async fn history(&mut self) -> Result<Vec<Applied>, TenantError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Vec::new());
        };
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(err)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        self.history_ready = true;
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(self.table.select_sql()))
            .fetch_all(&mut *conn)
            .await
            .map_err(err)?;
        Ok(history::applied(rows))
    }

    /// A group waits for SQLite's write lock as long as the longest
    /// `lock_timeout` directive of its migrations says (the lock is taken
    /// once, by `BEGIN IMMEDIATE`); SQLite has no statement timeout.
    async fn apply(&mut self, steps: &[Step<'_>]) -> Result<Vec<AppliedStep>, TenantError> {
        let own = steps
            .iter()
            .filter_map(|s| s.script.directives.lock_timeout)
            .max();
        if let Some(t) = own {
            self.busy_timeout(t).await?;
        }
        let r = match steps {
            [step] if step.script.no_tx => self.apply_no_tx(*step).await,
            _ => self.apply_group(steps).await,
        };
        if own.is_some() {
            let back = self.busy;
            let _ = self.busy_timeout(back).await;
        }
        r
    }

    async fn backfill_batch(
        &mut self,
        step: Step<'_>,
        size: u64,
        started: Instant,
    ) -> Result<BatchOutcome, TenantError> {
        self.ensure_history().await?;
        let table = self.table.clone();
        let conn = self.conn()?;
        history::backfill_batch(
            conn,
            "BEGIN IMMEDIATE",
            history::RowWrite::Bound(table.insert_sql(true)),
            step,
            size,
            started,
        )
        .await
        .map_err(|f| match f {
            BatchFail::Db(e) => err(e),
            BatchFail::Verify(t) => t,
        })
    }

    async fn preflight(
        &mut self,
        _tables: &[String],
        _limits: PreflightLimits,
    ) -> Result<Option<String>, TenantError> {
        Ok(None)
    }

    async fn fingerprint(&mut self) -> Result<Vec<String>, TenantError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Vec::new());
        };
        let mut items: Vec<String> = sqlx::query_scalar(
            "SELECT type || ' ' || name || ': ' || COALESCE(sql, '') FROM sqlite_master \
             WHERE name NOT LIKE 'sqlite_%' AND tbl_name <> '_sqlx_migrations' \
             AND tbl_name NOT LIKE '\\_fleetmig\\_%' ESCAPE '\\'",
        )
        .fetch_all(conn)
        .await
        .map_err(err)?;
        for i in &mut items {
            *i = super::one_line(i);
        }
        items.sort();
        Ok(items)
    }

    async fn check(&mut self, sql: &str) -> Result<Option<String>, TenantError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        // read only: a gate that writes fails, naming why
        let r = async {
            sqlx::raw_sql("PRAGMA query_only = 1")
                .execute(&mut *conn)
                .await?;
            history::check(&mut *conn, sql).await
        }
        .await;
        let _ = sqlx::raw_sql("PRAGMA query_only = 0")
            .execute(&mut *conn)
            .await;
        r.map_err(|e| {
            let mut t = err(e);
            t.kind = FailureKind::GateQueryFailed;
            t
        })
    }

    async fn analyze(&mut self, tables: &[String]) -> Vec<String> {
        let Some(conn) = self.conn.as_mut() else {
            return Vec::new();
        };
        let mut done = Vec::new();
        for t in tables {
            let sql = sqlx::AssertSqlSafe(format!("ANALYZE {}", quote_ident(t)));
            match sqlx::raw_sql(sql).execute(&mut *conn).await {
                Ok(_) => done.push(t.clone()),
                Err(e) => super::analyze_skipped(t, &e),
            }
        }
        done
    }

    async fn skip(&mut self, step: Step<'_>) -> Result<(), TenantError> {
        self.ensure_history().await?;
        let m = super::sqlx_migration(step.migration, step.script, MigrationType::Simple);
        self.conn()?
            .skip(TABLE, &m)
            .await
            .map_err(|e| migrate_error(e, Dialect::Sqlite, None).at_version(m.version))
    }

    async fn revert(&mut self, m: &Migration, down: &Script) -> Result<Duration, TenantError> {
        let mig = super::sqlx_migration(m, down, MigrationType::ReversibleDown);
        self.conn()?
            .revert(TABLE, &mig)
            .await
            .map_err(|e| migrate_error(e, Dialect::Sqlite, None).at_version(m.version))
    }

    /// `VACUUM INTO` a file beside the target, renamed into place.
    async fn backup(&mut self, path: &Path) -> Result<(), TenantError> {
        let tmp = super::backup::prepare(path)?;
        let sql = format!("VACUUM INTO {}", quote_literal(&tmp.display().to_string()));
        self.conn()?
            .execute(sqlx::AssertSqlSafe(sql))
            .await
            .map_err(err)?;
        super::backup::finish(&tmp, path)
    }

    async fn close(self: Box<Self>) {
        if let Some(c) = self.conn {
            let _ = c.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_scripts_are_cut_at_statement_ends_never_inside_a_trigger() {
        let mut sql = String::new();
        sql.push_str("CREATE TABLE t (x TEXT);\n");
        sql.push_str(
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  INSERT INTO t VALUES ('a;b');\n  DELETE FROM t WHERE x = ';';\nEND;\n",
        );
        for i in 0..20_000 {
            sql.push_str(&format!(
                "INSERT INTO t VALUES ('row {i}; with a semicolon');\n"
            ));
            if i == 9_000 {
                sql.push_str(&format!(
                    "CREATE TRIGGER tr{i} AFTER DELETE ON t BEGIN\n{}END;\n",
                    "  INSERT INTO t VALUES ('x');\n".repeat(300)
                ));
            }
        }
        let p = pieces(&sql);
        assert!(p.len() > 10, "{} pieces", p.len());
        for piece in &p {
            assert!(complete(piece), "a piece ends inside a statement");
            assert!(piece.matches("CREATE TRIGGER").count() == piece.matches("END;").count());
        }
        let joined: usize = p
            .iter()
            .map(|x| x.matches("INSERT INTO t VALUES ('row").count())
            .sum();
        assert_eq!(joined, 20_000);
        assert_eq!(pieces("SELECT 1;"), vec!["SELECT 1;".to_string()]);
    }
}
