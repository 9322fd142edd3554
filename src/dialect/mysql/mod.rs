//! MySQL/MariaDB tenants: one database each, on a connection to itself
//! alone while its session lasts (kept for the server's next tenant after,
//! reset: `reuse.rs`). The tenant lock is `GET_LOCK('fleetmig:<database>',
//! timeout)` (the name hashed past 64 characters: `text::lock_name`).
//! MySQL commits DDL implicitly, so a migration runs statement by
//! statement, its progress kept in its own history row, written unfinished
//! before its first statement (`resume.rs`): an interrupted attempt is
//! resumed after the last statement that completed; a permanent failure in the middle leaves the tenant
//! dirty, which is the truth. `transactional_ddl` is false: the executor
//! never groups migrations here.

mod apply;
mod resume;
mod reuse;
mod send;
mod text;

pub(crate) use reuse::Idle;
use text::{SQL_MODE_ADDED, lock_name, session_setup};
pub use text::{bytes_literal, literal, quote_ident};

use crate::error::FailureKind;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::migrate::{Migrate, MigrationType};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow};
use sqlx::{ConnectOptions, Connection, Executor, Row};

use super::classify::{migrate_error, tenant_error};
use super::history::{self, BatchFail, HistoryTable, Params};
use super::{
    AppliedStep, BatchOutcome, PreflightLimits, Session, Settings, Step, preflight_summary,
    too_few_connections,
};
use crate::error::TenantError;
use crate::migration::{Applied, Migration, Script};
use crate::tenant::{Dialect, DiscoverOptions, scrub_secrets};

/// sqlx's history table of MySQL, with `ENGINE=InnoDB`: a migration's
/// progress commits in one transaction with a row change (`apply.rs`).
const HISTORY_DDL: &str = "(version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
     installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
     checksum BLOB NOT NULL, execution_time BIGINT NOT NULL) ENGINE=InnoDB";

fn connect_options(url: &str) -> Result<MySqlConnectOptions, sqlx::Error> {
    Ok(MySqlConnectOptions::from_str(url)?.disable_statement_logging())
}

/// The server's error number of `e`.
fn error_number(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()?
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .map(|d| d.number())
}

/// Whether `e` is a server's error of SQLSTATE `state`.
fn is_code(e: &sqlx::Error, state: &str) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == state)
}

/// An open MySQL/MariaDB tenant.
pub struct MySqlSession {
    conn: MySqlConnection,
    /// Where `conn` goes back when the session closes (`reuse.rs`), with
    /// what it was like when new (`None`: not to be kept).
    idle: std::sync::Arc<Idle>,
    fresh: Option<reuse::Fresh>,
    /// An error was met: the connection is not kept (`reuse.rs`).
    failed: std::sync::atomic::AtomicBool,
    url: String,
    /// The tenant's database.
    database: String,
    /// The tenant lock's name, as SQL (`lock_name`).
    lock_key: String,
    lock_wait: Duration,
    locked: bool,
    history_ready: bool,
    /// Whether the tenant has the `_fleetmig_statements` of an earlier
    /// fleetmig, once looked up (the session holds the tenant's lock: no
    /// one else makes or drops it meanwhile).
    statements_known: Option<bool>,
    /// The history has been read (`unfinished` is known).
    history_read: bool,
    /// The migrations interrupted attempts left unfinished with their
    /// progress, taken out of the history `history` returns (they are
    /// pending, resumed by `apply`).
    unfinished: Vec<apply::Unfinished>,
    /// Whether the history table rolls back (InnoDB), once known: only
    /// then does a row change commit in one transaction with its progress.
    history_rolls_back: Option<bool>,
    table: HistoryTable,
    /// The session's statement time limit in seconds (0: none), to put back
    /// after a migration that sets its own.
    statement_secs: f64,
}

impl MySqlSession {
    pub(crate) async fn open(
        settings: &Settings,
        idle: &std::sync::Arc<Idle>,
        url: &str,
    ) -> Result<MySqlSession, TenantError> {
        let opts =
            connect_options(url).map_err(|e| super::connect_error(Dialect::Mysql, url, &e))?;
        let secs = settings.lock_timeout.as_secs().max(1);
        let setup = session_setup(url, &opts, secs);
        // sqlx's own set-up goes in `setup`, one round trip with fleetmig's
        let opts = opts
            .pipes_as_concat(false)
            .no_engine_substitution(false)
            .timezone(None)
            .set_names(false);
        let database = opts.get_database().unwrap_or_default().to_string();
        let reused = match database.is_empty() {
            true => None,
            false => {
                idle.take(url, &database, &setup, settings.connect_timeout)
                    .await
            }
        };
        let mut s = match reused {
            Some((conn, fresh)) => {
                MySqlSession::new(settings, idle, conn, Some(fresh), url, database)
            }
            None => {
                let connecting = MySqlConnection::connect_with(&opts);
                let conn =
                    super::connect(Dialect::Mysql, url, settings.connect_timeout, connecting)
                        .await?;
                let mut s = MySqlSession::new(settings, idle, conn, None, url, database);
                let setup = format!("SET {SQL_MODE_ADDED}, {setup}");
                if let Err(e) = s.conn.execute(sqlx::AssertSqlSafe(setup)).await {
                    let t = s.err(e);
                    let _ = s.conn.close().await;
                    return Err(t);
                }
                if !s.database.is_empty() {
                    s.fresh = idle.fresh(url, &mut s.conn).await;
                }
                s
            }
        };
        if let Some(st) = settings.statement_timeout {
            // MariaDB's name; MySQL's max_execution_time only covers SELECT.
            let setup = format!("SET SESSION max_statement_time = {}", st.as_secs_f64());
            let _ = s.conn.execute(sqlx::AssertSqlSafe(setup)).await;
        }
        Ok(s)
    }

    fn new(
        settings: &Settings,
        idle: &std::sync::Arc<Idle>,
        conn: MySqlConnection,
        fresh: Option<reuse::Fresh>,
        url: &str,
        database: String,
    ) -> MySqlSession {
        MySqlSession {
            conn,
            idle: idle.clone(),
            fresh,
            failed: Default::default(),
            url: url.to_string(),
            lock_key: lock_name(&database),
            lock_wait: settings.lock_timeout,
            locked: false,
            history_ready: false,
            statements_known: None,
            history_read: false,
            unfinished: Vec::new(),
            history_rolls_back: None,
            // named with its database: a `USE` in a migration does not
            // send its progress elsewhere
            table: HistoryTable::new(
                match database.is_empty() {
                    true => "`_sqlx_migrations`".to_string(),
                    false => format!("{}.`_sqlx_migrations`", quote_ident(&database)),
                },
                Params::Question,
            ),
            database,
            statement_secs: settings
                .statement_timeout
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        }
    }

    fn err(&self, e: sqlx::Error) -> TenantError {
        self.failed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tenant_error(&e, Dialect::Mysql, Some(&self.url))
    }

    fn migrate_err(&self, e: sqlx::migrate::MigrateError) -> TenantError {
        self.failed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        migrate_error(e, Dialect::Mysql, Some(&self.url))
    }

    /// Whether the history table rolls back: as `history` read it, else
    /// read now.
    async fn history_rolls_back(&mut self) -> Result<bool, TenantError> {
        if let Some(known) = self.history_rolls_back {
            return Ok(known);
        }
        let rows = self
            .text_rows(format!(
                "SELECT CAST(e.transactions AS CHAR) FROM information_schema.tables t \
                 JOIN information_schema.engines e ON e.engine = t.engine \
                 WHERE t.table_schema = {} AND t.table_name = '_sqlx_migrations'",
                literal(&self.database)
            ))
            .await?;
        let yes: Option<String> = match rows.first() {
            Some(r) => r.try_get(0).map_err(|e| self.err(e))?,
            None => None,
        };
        let known = yes.is_some_and(|y| y == "YES");
        self.history_rolls_back = Some(known);
        Ok(known)
    }

    /// The rows of `sql`, a query with its values written in
    /// (`literal`), sent as text: each tenant has a connection of its own,
    /// on which a prepared statement would first cost a round trip of its
    /// own.
    async fn text_rows(&mut self, sql: String) -> Result<Vec<MySqlRow>, TenantError> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| self.err(e))
    }

    async fn ensure_history(&mut self) -> Result<(), TenantError> {
        if self.history_ready {
            return Ok(());
        }
        // read and found absent (else `history_ready`): made here, it is
        // InnoDB (`NO_ENGINE_SUBSTITUTION` is in the session's sql_mode), so
        // its engine need not be read; made meanwhile by someone else, it is
        // read when needed
        let absent = self.history_read;
        let create = format!(
            "CREATE TABLE {}{} {HISTORY_DDL}",
            if absent { "" } else { "IF NOT EXISTS " },
            self.table.name
        );
        match sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut self.conn)
            .await
        {
            Ok(_) if absent => self.history_rolls_back = Some(true),
            Ok(_) => {}
            Err(e) if absent && is_code(&e, "42S01") => {}
            Err(e) => return Err(self.err(e)),
        }
        self.history_ready = true;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Session for MySqlSession {
    fn dialect(&self) -> Dialect {
        Dialect::Mysql
    }

    fn transactional_ddl(&self) -> bool {
        false
    }

    async fn lock(&mut self) -> Result<(), TenantError> {
        let timeout = self.lock_wait.as_secs().max(1) as i64;
        let rows = self
            .text_rows(format!("SELECT GET_LOCK({}, {timeout})", self.lock_key))
            .await?;
        let got: Option<i64> = match rows.first() {
            Some(r) => r.try_get(0).map_err(|e| self.err(e))?,
            None => None,
        };
        match got {
            Some(1) => {
                self.locked = true;
                Ok(())
            }
            _ => Err(TenantError::transient(
                FailureKind::TenantLocked,
                "another session holds this tenant's migration lock (GET_LOCK timed out)",
            )),
        }
    }

    async fn interrupted(&mut self, _pending: &[Step<'_>]) -> Result<Option<i64>, TenantError> {
        if !self.history_read {
            self.history().await?;
        }
        if let Some(v) = self.unfinished.iter().map(|u| u.version).min() {
            return Ok(Some(v));
        }
        self.legacy_interrupted().await
    }

    /// The history, but for the migrations interrupted attempts left
    /// unfinished with their progress (`resume.rs`): those are kept back
    /// for `apply` to resume, and so are pending (sqlx's dirty `-1` stays
    /// dirty). The same round trip says whether the history table rolls
    /// back and whether an earlier fleetmig's `_fleetmig_statements` is
    /// there.
    async fn history(&mut self) -> Result<Vec<Applied>, TenantError> {
        let tables = self
            .text_rows(
                "SELECT CAST(t.table_name AS CHAR), CAST(COALESCE(e.transactions, 'NO') AS CHAR) \
                 FROM information_schema.tables t LEFT JOIN information_schema.engines e ON e.engine = t.engine \
                 WHERE t.table_schema = DATABASE() AND t.table_name IN ('_sqlx_migrations', '_fleetmig_statements')"
                    .to_string(),
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
            .collect::<Result<Vec<(String, String)>, sqlx::Error>>()
            .map_err(|e| self.err(e))?;
        let has = |name: &str| tables.iter().find(|(t, _)| t == name);
        self.statements_known = Some(has("_fleetmig_statements").is_some());
        self.history_read = true;
        self.unfinished.clear();
        let Some((_, rolls_back)) = has("_sqlx_migrations") else {
            // `ensure_history` makes it InnoDB, but a server may substitute
            // another engine: read once it is there
            self.history_rolls_back = None;
            return Ok(Vec::new());
        };
        self.history_rolls_back = Some(rolls_back == "YES");
        self.history_ready = true;
        let rows = self
            .text_rows(format!(
                "SELECT version, description, success, checksum, execution_time \
                 FROM {} ORDER BY version",
                self.table.name
            ))
            .await?;
        let mut applied = Vec::with_capacity(rows.len());
        for r in rows {
            let (version, description, success, checksum, time) =
                <(i64, String, bool, Vec<u8>, i64) as sqlx::FromRow<MySqlRow>>::from_row(&r)
                    .map_err(|e| self.err(e))?;
            match (success, resume::Progress::decode(time)) {
                (false, Some(progress)) => self.unfinished.push(apply::Unfinished {
                    version,
                    checksum,
                    progress,
                }),
                _ => applied.push((version, description, success, checksum)),
            }
        }
        Ok(history::applied(applied))
    }

    async fn apply(&mut self, steps: &[Step<'_>]) -> Result<Vec<AppliedStep>, TenantError> {
        let mut out = Vec::with_capacity(steps.len());
        for s in steps {
            out.push(self.apply_one(*s).await?);
        }
        Ok(out)
    }

    async fn backfill_batch(
        &mut self,
        step: Step<'_>,
        size: u64,
        started: Instant,
    ) -> Result<BatchOutcome, TenantError> {
        if !self.history_read {
            self.history().await?;
        }
        self.ensure_history().await?;
        self.check_not_unfinished(step)?;
        let row = self.row_up_to_time(step, true);
        history::backfill_batch(
            &mut self.conn,
            "BEGIN",
            history::RowWrite::Text(Box::new(move |time| format!("{row}{time})"))),
            step,
            size,
            started,
        )
        .await
        .map_err(|f| match f {
            BatchFail::Db(e) => self.err(e),
            BatchFail::Verify(t) => t,
        })
    }

    /// The tenant's size and largest tables; a transaction older than the
    /// limit open on its database defers it (any of them may hold the
    /// metadata lock the DDL needs), as do too few free connections.
    async fn preflight(
        &mut self,
        _tables: &[String],
        limits: PreflightLimits,
    ) -> Result<Option<String>, TenantError> {
        let sizes: Vec<(String, i64)> = sqlx::query_as(
            "SELECT CAST(table_name AS CHAR), CAST(COALESCE(data_length, 0) + COALESCE(index_length, 0) AS SIGNED) \
             FROM information_schema.tables WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' \
             ORDER BY 2 DESC, 1",
        )
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| self.err(e))?;
        let old: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT CAST(t.trx_mysql_thread_id AS SIGNED), CAST(TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) AS SIGNED) \
             FROM information_schema.innodb_trx t JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id \
             WHERE p.db = DATABASE() AND t.trx_mysql_thread_id <> CONNECTION_ID() \
             AND t.trx_started < NOW() - INTERVAL ? SECOND ORDER BY 2 DESC",
        )
        .bind(limits.max_xact_age.as_secs() as i64)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| self.err(e))?;
        let free: i64 = sqlx::query_scalar(
            "SELECT CAST(@@max_connections - (SELECT COUNT(*) FROM information_schema.processlist) AS SIGNED)",
        )
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| self.err(e))?;
        if let Some((thread, age)) = old.first() {
            return Err(TenantError::transient(
                FailureKind::PreflightDeferred,
                format!(
                    "connection {thread} has had a transaction open on this database for {age}s: \
                     DDL would wait for its metadata lock and every query behind the DDL; deferred"
                ),
            ));
        }
        if free < limits.min_free_connections {
            return Err(too_few_connections(free, limits.min_free_connections));
        }
        Ok(Some(preflight_summary(&sizes, free)))
    }

    async fn fingerprint(&mut self) -> Result<Vec<String>, TenantError> {
        let mut items: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(CONCAT('column ', table_name, '.', column_name, ' ', column_type, \
             IF(is_nullable = 'NO', ' not null', ''), COALESCE(CONCAT(' default ', column_default), '')) AS CHAR) \
             FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name <> '_sqlx_migrations' AND table_name NOT LIKE '\\_fleetmig\\_%' \
             UNION ALL SELECT CAST(CONCAT('index ', table_name, '.', index_name, IF(non_unique = 0, ' unique', ''), ': ', \
             GROUP_CONCAT(column_name ORDER BY seq_in_index)) AS CHAR) \
             FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name <> '_sqlx_migrations' AND table_name NOT LIKE '\\_fleetmig\\_%' \
             GROUP BY table_name, index_name, non_unique",
        )
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| self.err(e))?;
        for i in &mut items {
            *i = super::one_line(i);
        }
        items.sort();
        Ok(items)
    }

    /// In a read-only transaction: a gate that writes fails, naming why.
    async fn check(&mut self, sql: &str) -> Result<Option<String>, TenantError> {
        let r = async {
            sqlx::raw_sql("START TRANSACTION READ ONLY")
                .execute(&mut self.conn)
                .await?;
            history::check(&mut self.conn, sql).await
        }
        .await;
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut self.conn).await;
        r.map_err(|e| {
            let mut t = self.err(e);
            t.kind = FailureKind::GateQueryFailed;
            t
        })
    }

    async fn analyze(&mut self, tables: &[String]) -> Vec<String> {
        let mut done = Vec::new();
        for t in tables {
            let sql = sqlx::AssertSqlSafe(format!("ANALYZE TABLE {}", quote_ident(t)));
            match sqlx::raw_sql(sql).execute(&mut self.conn).await {
                Ok(_) => done.push(t.clone()),
                Err(e) => super::analyze_skipped(t, &e),
            }
        }
        done
    }

    async fn skip(&mut self, step: Step<'_>) -> Result<(), TenantError> {
        self.ensure_history().await?;
        let m = super::sqlx_migration(step.migration, step.script, MigrationType::Simple);
        if self.unfinished.iter().any(|u| u.version == m.version)
            || self.legacy_recorded(m.version).await?
        {
            // (baseline refuses such a tenant before it skips anything,
            // when it is the lowest part-applied version)
            return Err(TenantError::permanent(
                FailureKind::Dirty,
                format!("migration {} is unfinished on this tenant", m.version),
            )
            .at_version(m.version));
        }
        let table = self.table.name.clone();
        let r = self.conn.skip(&table, &m).await;
        r.map_err(|e| self.migrate_err(e).at_version(m.version))?;
        self.forget_statements(m.version).await;
        Ok(())
    }

    async fn revert(&mut self, m: &Migration, down: &Script) -> Result<Duration, TenantError> {
        let mig = super::sqlx_migration(m, down, MigrationType::ReversibleDown);
        let table = self.table.name.clone();
        let r = self.conn.revert(&table, &mig).await;
        let statements = crate::migration::split::split_for(&down.sql, Dialect::Mysql);
        self.use_own_database(&statements).await?;
        let took = r.map_err(|e| self.migrate_err(e).at_version(m.version))?;
        self.forget_statements(m.version).await;
        Ok(took)
    }

    async fn backup(&mut self, path: &Path) -> Result<(), TenantError> {
        super::backup::mysql_dump(&self.url, path).await
    }

    async fn close(self: Box<Self>) {
        // reset (its locks released) and kept for the next tenant of its
        // server, or given back by a server without the reset (`reuse.rs`)
        let s = *self;
        let fresh = s.fresh.filter(|_| !s.failed.into_inner());
        if let Err(mut conn) = s.idle.put(&s.url, s.conn, fresh, s.lock_wait).await {
            if s.locked {
                let release = format!("SELECT RELEASE_LOCK({})", s.lock_key);
                let _ = conn.execute(sqlx::AssertSqlSafe(release)).await;
            }
            let _ = conn.close().await;
        }
    }
}

/// Databases of the server at `url` matching the pattern, or returned by the
/// query (run in a read-only transaction, so a query that writes fails
/// instead of writing).
pub async fn list_databases(url: &str, opts: &DiscoverOptions) -> Result<Vec<String>, String> {
    let o = connect_options(url).map_err(|e| scrub_secrets(&e.to_string(), [url]))?;
    let mut conn = super::connect(
        Dialect::Mysql,
        url,
        opts.connect_timeout,
        MySqlConnection::connect_with(&o),
    )
    .await
    .map_err(|e| e.message)?;
    let scrub = |e: sqlx::Error| scrub_secrets(&e.to_string(), [url]);
    let r = match &opts.query {
        Some(q) => {
            async {
                let mut tx = conn
                    .begin_with("START TRANSACTION READ ONLY")
                    .await
                    .map_err(scrub)?;
                let names = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(q.clone()))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| format!("--tenant-query failed: {}", scrub(e)));
                let _ = tx.rollback().await;
                names
            }
            .await
        }
        None => sqlx::query_scalar::<_, String>(
            // never the server's own databases or fleetmig's scratch ones
            "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata \
             WHERE schema_name LIKE ? ESCAPE CHAR(92) \
               AND schema_name NOT IN ('mysql', 'sys', 'performance_schema', 'information_schema') \
               AND schema_name NOT LIKE '\\_fleetmig\\_%' ORDER BY 1",
        )
        .bind(&opts.pattern)
        .fetch_all(&mut conn)
        .await
        .map_err(scrub),
    };
    let _ = conn.close().await;
    r
}
