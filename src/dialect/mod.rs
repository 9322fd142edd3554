//! Per-database work, and the only module that talks to a tenant: connect,
//! take the tenant's lock, read its history, apply or revert one migration (or
//! one group of them, in `--tx-mode tenant`), classify errors, set timeouts.
//!
//! History lives in the tenant in sqlx's `_sqlx_migrations` layout: the rows
//! are exactly what `sqlx migrate` writes, and sqlx reads them as its own.
//! sqlx's `Migrate` trait does `revert`, `skip` and, on SQLite and MySQL,
//! `ensure_migrations_table`; the applies are fleetmig's own, so that a row
//! commits with its migration in as few round trips as possible (PostgreSQL:
//! one simple-query batch per group, the history table created TOAST-less in
//! a short transaction of its own, see `postgres`). What fleetmig adds around
//! it: a lock per tenant (never per database), the re-check of history under
//! that lock (two processes never apply a version twice), and a dirty row
//! when a no-transaction migration fails for good. Batched backfills run here
//! one transaction at a time (`Session::backfill_batch`).

pub mod backup;
mod classify;
pub mod mysql;
pub mod postgres;
pub mod sqlite;

pub use classify::{classify, one_line};

use std::borrow::Cow;
use std::time::Duration;

use dashmap::DashMap;
use sqlx::migrate::{Migrate, MigrateError, MigrationType};
use sqlx::{Connection, SqlSafeStr};

use crate::error::TenantError;
use crate::migration::{Applied, Migration, Script};
use crate::tenant::{Dialect, Locator, Tenant, scrub_secrets};

/// How each tenant's pending migrations are grouped into transactions.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum TxMode {
    /// Each migration in its own transaction (sqlx's behaviour).
    #[default]
    Migration,
    /// All of a tenant's pending migrations in one transaction (PostgreSQL,
    /// SQLite); a `-- no-transaction` migration runs on its own. MySQL commits
    /// DDL implicitly, so there it behaves as `migration`.
    Tenant,
}

/// Session settings applied to every tenant connection.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long DDL may wait for a lock before failing (transient, retried):
    /// PostgreSQL `lock_timeout`, MySQL `lock_wait_timeout`, SQLite busy timeout.
    pub lock_timeout: Duration,
    /// PostgreSQL `statement_timeout`, MariaDB `max_statement_time`.
    pub statement_timeout: Option<Duration>,
    /// Connections per PostgreSQL pool (schema-per-tenant databases).
    pub pool_size: u32,
    /// How long to wait to connect.
    pub connect_timeout: Duration,
    /// Create missing SQLite tenant files (and their folders) on sync.
    pub create_missing: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lock_timeout: Duration::from_secs(5),
            statement_timeout: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
            create_missing: false,
        }
    }
}

/// Opens tenant sessions; owns the connection pools shared between tenants of
/// one database (schema-per-tenant).
pub struct Connector {
    pub settings: Settings,
    pg_pools: DashMap<String, sqlx::PgPool>,
}

/// Whether a session may write. `Read` never creates a file, a table or a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Runs `$body` with `$c` bound to the concrete connection of each dialect, so
/// that a query built inside the body is typed for that database.
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr, missing => $m:expr) => {
        match $conn {
            Conn::Sqlite($c) => $body,
            Conn::PgPooled(pc) => {
                let $c: &mut sqlx::PgConnection = &mut *pc;
                $body
            }
            Conn::Pg($c) => $body,
            Conn::Mysql($c) => $body,
            Conn::SqliteMissing => $m,
        }
    };
}

pub(crate) enum Conn {
    Sqlite(sqlx::SqliteConnection),
    /// A SQLite tenant whose file does not exist yet (read-only access).
    SqliteMissing,
    PgPooled(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Pg(sqlx::PgConnection),
    Mysql(sqlx::MySqlConnection),
}

/// Why a transaction group failed: the database, or a verification query
/// that returned rows (the group was rolled back either way).
pub(crate) enum Fail {
    Db(MigrateError),
    Verify(TenantError),
}

/// One applied migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedStep {
    pub version: i64,
    pub duration: Duration,
    /// Another process applied it between our history read and our apply.
    pub already_applied: bool,
}

/// What one transaction of a batched backfill did.
#[derive(Debug, Clone, Copy)]
pub struct BatchOutcome {
    /// Rows the batch changed (a rolled-back confirming run not counted).
    pub changed: u64,
    /// Times the statement ran: 2 when a short batch was confirmed in the
    /// same transaction.
    pub statements: u64,
    /// How long the transaction held its locks.
    pub held: Duration,
    /// Nothing is left: the history row committed with this transaction.
    pub done: bool,
}

/// One migration to apply: the set's entry and the script for this dialect.
#[derive(Clone, Copy)]
pub struct Step<'a> {
    pub migration: &'a Migration,
    pub script: &'a Script,
}

/// An open connection to one tenant.
pub struct Session {
    pub(crate) conn: Conn,
    pub(crate) dialect: Dialect,
    /// The history table as it is written in SQL (schema-qualified and quoted
    /// for PostgreSQL schema tenants).
    pub(crate) table: String,
    pub(crate) schema: Option<String>,
    pub(crate) locked: bool,
    /// Whether `_sqlx_migrations` is known to exist.
    pub(crate) history_ready: bool,
    /// The tenant had no `_sqlx_migrations` when this session read its
    /// history under the tenant lock: no earlier attempt got far enough to
    /// leave anything behind (PostgreSQL skips the look for INVALID indexes).
    pub(crate) fresh: bool,
    pub(crate) url: Option<String>,
    pub(crate) lock_key: String,
    /// How long to wait for the tenant lock.
    pub(crate) lock_wait: Duration,
    /// Whether the history table exists, when `lock` already found out.
    pub(crate) exists_hint: Option<bool>,
    /// Session settings still to send (PostgreSQL sends them with the lock).
    pub(crate) setup: String,
    /// The connection is in an unknown state and must not be reused.
    pub(crate) broken: bool,
    /// How a PostgreSQL session creates the history table (see
    /// `postgres::HistoryLayout`); unused elsewhere.
    pub(crate) pg_history: postgres::HistoryLayout,
}

impl Connector {
    pub fn new(settings: Settings) -> Self {
        Connector {
            settings,
            pg_pools: DashMap::new(),
        }
    }

    /// Opens a session on `tenant` and applies the session settings.
    pub async fn open(&self, tenant: &Tenant, access: Access) -> Result<Session, TenantError> {
        match &tenant.locator {
            Locator::Sqlite { path } => sqlite::open(self, path, access).await,
            Locator::Postgres { url, schema } => postgres::open(self, url, schema.as_deref()).await,
            Locator::Mysql { url } => mysql::open(self, url).await,
        }
    }

    pub(crate) fn pg_pool(&self, url: &str) -> Result<sqlx::PgPool, sqlx::Error> {
        if let Some(p) = self.pg_pools.get(url) {
            return Ok(p.clone());
        }
        let opts = postgres::connect_options(url)?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(self.settings.pool_size.max(1))
            .acquire_timeout(self.settings.connect_timeout)
            .idle_timeout(Duration::from_secs(60))
            // No ping before each tenant: a dead connection fails its attempt
            // with a transient error and the retry gets a fresh one.
            .test_before_acquire(false)
            .connect_lazy_with(opts);
        Ok(self.pg_pools.entry(url.to_string()).or_insert(pool).clone())
    }

    /// Closes every pool (end of a run).
    pub async fn close(&self) {
        let pools: Vec<_> = self.pg_pools.iter().map(|p| p.value().clone()).collect();
        for p in pools {
            p.close().await;
        }
    }
}

/// A check query passes when it returns no rows, or one row holding a single
/// true; otherwise the offending rows, as text (at most 5 shown).
pub(crate) fn verdict(rows: &[Vec<String>]) -> Option<String> {
    let single_true =
        rows.len() == 1 && rows[0].len() == 1 && matches!(rows[0][0].as_str(), "true" | "1" | "t");
    if rows.is_empty() || single_true {
        return None;
    }
    let shown: Vec<String> = rows
        .iter()
        .take(5)
        .map(|r| format!("({})", r.join(", ")))
        .collect();
    Some(format!(
        "{} row(s): {}{}",
        rows.len(),
        shown.join(", "),
        if rows.len() > 5 { " ..." } else { "" }
    ))
}

/// The error of a failed verification query.
pub(crate) fn verify_failed(file: &std::path::Path, why: &str, rolled_back: bool) -> TenantError {
    verify_failed_with(
        file,
        why,
        if rolled_back {
            "the migration was rolled back on this tenant"
        } else {
            "MySQL cannot roll DDL back: the tenant is left dirty, fix it by hand"
        },
    )
}

/// What a failed verification of a batched backfill leaves behind.
pub(crate) const BACKFILL_UNRECORDED: &str = "the backfill's last transaction was rolled back and its earlier \
     batches stay committed; the migration is not recorded on this tenant and runs (and is verified) again next time";

pub(crate) fn verify_failed_with(file: &std::path::Path, why: &str, outcome: &str) -> TenantError {
    TenantError::permanent(
        "verify_failed",
        format!(
            "verification {} failed: it returned {why}; {outcome}",
            file.display()
        ),
    )
}

/// Renders a result row as text cells, whatever the column types.
pub(crate) fn render_row<R>(row: &R) -> Vec<String>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i16: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    (0..row.len())
        .map(|i| {
            if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                v.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into())
            } else if let Ok(v) = row.try_get::<Option<i32>, _>(i) {
                v.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into())
            } else if let Ok(v) = row.try_get::<Option<i16>, _>(i) {
                v.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into())
            } else if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
                v.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into())
            } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                v.unwrap_or_else(|| "NULL".into())
            } else if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
                v.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into())
            } else {
                "?".into()
            }
        })
        .collect()
}

/// Replaces the database (path) of a server URL.
pub fn with_database(url: &str, database: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_path(&format!("/{database}"));
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// Quotes an identifier for PostgreSQL/SQLite (`"x"`) or MySQL (`` `x` ``),
/// doubling any quote inside. Names are validated before they get here; the
/// quoting is the second wall.
pub fn quote_ident(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::Mysql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// Quotes a string literal (`'x'`), doubling quotes (and backslashes for MySQL).
pub fn quote_literal(dialect: Dialect, s: &str) -> String {
    match dialect {
        Dialect::Mysql => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''")),
        _ => format!("'{}'", s.replace('\'', "''")),
    }
}

pub(crate) fn sqlx_migration(
    m: &Migration,
    script: &Script,
    kind: MigrationType,
) -> sqlx::migrate::Migration {
    sqlx::migrate::Migration {
        version: m.version,
        description: Cow::Owned(m.description.clone()),
        migration_type: kind,
        sql: sqlx::AssertSqlSafe(script.sql.clone()).into_sql_str(),
        checksum: Cow::Owned(script.checksum.clone()),
        no_tx: script.no_tx,
    }
}

impl Session {
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The tenant's schema, for schema-per-tenant PostgreSQL tenants.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// A driver error as a tenant error, with any password scrubbed.
    pub(crate) fn err(&self, e: sqlx::Error) -> TenantError {
        let mut t = classify(&e, self.dialect);
        t.message = scrub_secrets(&t.message, self.url.as_deref());
        t
    }

    /// A failed group as a tenant error, pinned to the migration it was in.
    pub(crate) fn fail(&self, f: Fail, version: Option<i64>) -> TenantError {
        let t = match f {
            Fail::Db(e) => self.migrate_err(e),
            Fail::Verify(t) => t,
        };
        match version {
            Some(v) => t.at_version(v),
            None => t,
        }
    }

    pub(crate) fn migrate_err(&self, e: MigrateError) -> TenantError {
        match e {
            MigrateError::ExecuteMigration(e, v) => self.err(e).at_version(v),
            MigrateError::Execute(e) => self.err(e),
            other => TenantError::permanent(
                "migrate",
                scrub_secrets(&other.to_string(), self.url.as_deref()),
            ),
        }
    }

    /// Takes the tenant's own lock: a session advisory lock keyed on
    /// (database, schema) on PostgreSQL, `GET_LOCK` on MySQL. SQLite tenants are
    /// serialised by `BEGIN IMMEDIATE` around each migration instead. Waiting is
    /// bounded by the lock timeout; a tenant that stays locked fails with a
    /// transient `tenant_locked` error and is retried later.
    pub async fn lock(&mut self) -> Result<(), TenantError> {
        match self.dialect {
            Dialect::Sqlite => {}
            Dialect::Postgres => postgres::lock(self).await?,
            Dialect::Mysql => mysql::lock(self).await?,
        }
        self.locked = true;
        Ok(())
    }

    /// Reads the tenant's history; a tenant without `_sqlx_migrations` has none.
    /// Never writes.
    pub async fn history(&mut self) -> Result<Vec<Applied>, TenantError> {
        let table = self.table.clone();
        let hint = self.exists_hint.take();
        let exists = match (&mut self.conn, hint) {
            (_, Some(known)) => Ok(known),
            (conn, None) => match conn {
                Conn::SqliteMissing => Ok(false),
                Conn::Sqlite(c) => sqlite::history_exists(c).await,
                Conn::PgPooled(c) => postgres::history_exists(c, &table).await,
                Conn::Pg(c) => postgres::history_exists(c, &table).await,
                Conn::Mysql(c) => mysql::history_exists(c).await,
            },
        }
        .map_err(|e| self.err(e))?;
        if !exists {
            self.fresh = self.locked;
            return Ok(Vec::new());
        }
        self.history_ready = true;
        let sql =
            format!("SELECT version, description, success, checksum FROM {table} ORDER BY version");
        let rows: Vec<(i64, String, bool, Vec<u8>)> = on_conn!(&mut self.conn, c => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(c).await
        }, missing => Ok(Vec::new()))
        .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|(version, description, success, checksum)| Applied {
                version,
                description,
                checksum,
                success,
            })
            .collect())
    }

    /// Creates `_sqlx_migrations` in the tenant if it is missing (sqlx's DDL).
    pub async fn ensure_history(&mut self) -> Result<(), TenantError> {
        if self.history_ready {
            return Ok(());
        }
        if self.dialect == Dialect::Postgres {
            return postgres::ensure_history(self).await;
        }
        let table = self.table.clone();
        let r = on_conn!(&mut self.conn, c => c.ensure_migrations_table(&table).await,
            missing => return Err(TenantError::permanent("cannot_open", "tenant file does not exist")));
        r.map_err(|e| self.migrate_err(e))?;
        self.history_ready = true;
        Ok(())
    }

    /// Applies `steps` as one unit: in one transaction when there are several
    /// (`--tx-mode tenant`), else as sqlx applies one migration. On failure,
    /// nothing of the group is recorded (except a dirty row for a failed
    /// no-transaction migration, see below).
    pub async fn apply(&mut self, steps: &[Step<'_>]) -> Result<Vec<AppliedStep>, TenantError> {
        match self.dialect {
            Dialect::Sqlite => sqlite::apply(self, steps).await,
            Dialect::Postgres => postgres::apply(self, steps).await,
            Dialect::Mysql => {
                let mut out = Vec::new();
                for s in steps {
                    out.push(mysql::apply(self, *s).await?);
                }
                Ok(out)
            }
        }
    }

    /// Runs a read-only check query on the tenant (a rollout gate): it passes
    /// when it returns no rows, or a single row holding a single true. Returns
    /// `Ok(None)` when it passes, `Ok(Some(rows))` with the offending rows
    /// (at most 5, as text) when it does not.
    pub async fn check(&mut self, sql: &str) -> Result<Option<String>, TenantError> {
        if let (Some(schema), Conn::PgPooled(_) | Conn::Pg(_)) = (self.schema.clone(), &self.conn) {
            let set = format!(
                "SET search_path TO {}",
                quote_ident(Dialect::Postgres, &schema)
            );
            let r = on_conn!(&mut self.conn, c => sqlx::raw_sql(sqlx::AssertSqlSafe(set)).execute(c).await.map(|_| ()),
                missing => Ok(()));
            r.map_err(|e| self.err(e))?;
        }
        let sql = sqlx::AssertSqlSafe(sql.trim().trim_end_matches(';').to_string());
        let rows: Vec<Vec<String>> = on_conn!(&mut self.conn, c => {
            sqlx::raw_sql(sql).fetch_all(c).await.map(|rows| rows.iter().map(render_row).collect())
        }, missing => Ok(Vec::new()))
        .map_err(|e| {
            let mut t = self.err(e);
            t.kind = format!("gate_sql_{}", t.kind);
            t
        })?;
        Ok(verdict(&rows))
    }

    /// The tenant's actual schema as sorted lines (tables and columns with
    /// types, nullability and defaults, indexes, constraints), read from the
    /// catalogue, without fleetmig's history table: what `fleetmig verify`
    /// compares across tenants at the same version.
    pub async fn fingerprint(&mut self) -> Result<Vec<String>, TenantError> {
        let schema = self.schema.clone().unwrap_or_else(|| "public".into());
        let mut items: Vec<String> = match &mut self.conn {
            Conn::SqliteMissing => Vec::new(),
            Conn::Sqlite(c) => sqlx::query_scalar(
                "SELECT type || ' ' || name || ': ' || COALESCE(sql, '') FROM sqlite_master \
                 WHERE name NOT LIKE 'sqlite_%' AND tbl_name <> '_sqlx_migrations'",
            )
            .fetch_all(c)
            .await
            .map_err(|e| classify(&e, Dialect::Sqlite))?,
            Conn::PgPooled(_) | Conn::Pg(_) => {
                let c = postgres::conn_mut(self);
                let q = "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type \
                     || CASE WHEN is_nullable = 'NO' THEN ' not null' ELSE '' END \
                     || COALESCE(' default ' || column_default, '') \
                     FROM information_schema.columns WHERE table_schema = $1 AND table_name <> '_sqlx_migrations' \
                     UNION ALL SELECT 'index ' || indexname || ': ' || replace(indexdef, quote_ident($1) || '.', '') \
                     FROM pg_indexes WHERE schemaname = $1 AND tablename <> '_sqlx_migrations' \
                     UNION ALL SELECT 'constraint ' || c.relname || '.' || con.conname || ': ' \
                     || replace(pg_get_constraintdef(con.oid), quote_ident($1) || '.', '') \
                     FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname <> '_sqlx_migrations'";
                sqlx::query_scalar(q)
                    .bind(&schema)
                    .fetch_all(c)
                    .await
                    .map_err(|e| classify(&e, Dialect::Postgres))?
            }
            Conn::Mysql(c) => sqlx::query_scalar(
                "SELECT CAST(CONCAT('column ', table_name, '.', column_name, ' ', column_type, \
                 IF(is_nullable = 'NO', ' not null', ''), COALESCE(CONCAT(' default ', column_default), '')) AS CHAR) \
                 FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name <> '_sqlx_migrations' \
                 UNION ALL SELECT CAST(CONCAT('index ', table_name, '.', index_name, IF(non_unique = 0, ' unique', ''), ': ', \
                 GROUP_CONCAT(column_name ORDER BY seq_in_index)) AS CHAR) \
                 FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name <> '_sqlx_migrations' \
                 GROUP BY table_name, index_name, non_unique",
            )
            .fetch_all(c)
            .await
            .map_err(|e| classify(&e, Dialect::Mysql))?,
        };
        for i in &mut items {
            *i = one_line(i);
        }
        items.sort();
        Ok(items)
    }

    /// Refreshes planner statistics of `tables` (PostgreSQL `ANALYZE`, MySQL
    /// `ANALYZE TABLE`, SQLite `ANALYZE`). Best effort: a table that is gone
    /// is skipped; returns the tables analyzed.
    pub async fn analyze(&mut self, tables: &[String]) -> Vec<String> {
        let mut done = Vec::new();
        for t in tables {
            let sql = match self.dialect {
                Dialect::Mysql => format!("ANALYZE TABLE {}", quote_ident(Dialect::Mysql, t)),
                d => format!("ANALYZE {}", quote_ident(d, t)),
            };
            let sql = sqlx::AssertSqlSafe(sql);
            let r = on_conn!(&mut self.conn, c => sqlx::raw_sql(sql).execute(c).await.map(|_| ()), missing => Ok(()));
            match r {
                Ok(()) => done.push(t.clone()),
                Err(e) => {
                    tracing::warn!(table = %t, "ANALYZE skipped: {}", one_line(&e.to_string()))
                }
            }
        }
        done
    }

    /// Checks, before anything is applied, that the tenant can take DDL now
    /// (PostgreSQL: no transaction older than `max_xact_age` holds a lock on
    /// a table the migrations touch; MySQL: no transaction that old is open
    /// on the tenant's database, since any of them can hold the metadata lock
    /// DDL needs), and the server has at least
    /// `min_free_connections` free. Returns a summary for the report (size and
    /// largest tables), or a transient `preflight_deferred` error so that the
    /// tenant is retried later instead of queueing production traffic.
    pub async fn preflight(
        &mut self,
        tables: &[String],
        max_xact_age: Duration,
        min_free_connections: i64,
    ) -> Result<Option<String>, TenantError> {
        match self.dialect {
            Dialect::Postgres => {}
            Dialect::Mysql => {
                return mysql::preflight(self, max_xact_age, min_free_connections).await;
            }
            Dialect::Sqlite => return Ok(None),
        }
        let schema = self.schema.clone().unwrap_or_else(|| "public".into());
        let c = postgres::conn_mut(self);
        let sizes: Vec<(String, i64)> = sqlx::query_as(
            "SELECT c.relname::text, pg_total_relation_size(c.oid) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') \
             ORDER BY 2 DESC, 1",
        )
        .bind(&schema)
        .fetch_all(&mut *c)
        .await
        .map_err(|e| classify(&e, Dialect::Postgres))?;
        let blockers: Vec<(i32, String, f64, String)> = sqlx::query_as(
            "SELECT a.pid, c.relname::text, EXTRACT(EPOCH FROM now() - a.xact_start)::float8, l.mode \
             FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE n.nspname = $1 AND c.relname = ANY($2) AND a.pid <> pg_backend_pid() \
             AND a.xact_start < now() - make_interval(secs => $3) ORDER BY 3 DESC",
        )
        .bind(&schema)
        .bind(tables)
        .bind(max_xact_age.as_secs_f64())
        .fetch_all(&mut *c)
        .await
        .map_err(|e| classify(&e, Dialect::Postgres))?;
        let free: i32 = sqlx::query_scalar(
            "SELECT current_setting('max_connections')::int - (SELECT count(*) FROM pg_stat_activity)::int",
        )
        .fetch_one(&mut *c)
        .await
        .map_err(|e| classify(&e, Dialect::Postgres))?;
        if let Some((pid, table, age, mode)) = blockers.first() {
            return Err(TenantError::transient(
                "preflight_deferred",
                format!(
                    "table {table} is held ({mode}) by pid {pid} in a transaction open for {age:.0}s: \
                     DDL would queue behind it and every query behind the DDL; deferred"
                ),
            ));
        }
        if (free as i64) < min_free_connections {
            return Err(TenantError::transient(
                "preflight_deferred",
                format!(
                    "the server has {free} free connection(s), fewer than {min_free_connections}; deferred"
                ),
            ));
        }
        let total: i64 = sizes.iter().map(|(_, b)| b).sum();
        let largest: Vec<String> = sizes
            .iter()
            .take(3)
            .map(|(t, b)| format!("{t} {} kB", b / 1024))
            .collect();
        Ok(Some(format!(
            "size {} kB; largest: {}; {free} free connection(s)",
            total / 1024,
            if largest.is_empty() {
                "none".to_string()
            } else {
                largest.join(", ")
            }
        )))
    }

    /// Runs a statement outside any transaction (e.g. `VACUUM INTO`).
    pub async fn execute_plain(&mut self, sql: &str) -> Result<(), TenantError> {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        let r = on_conn!(&mut self.conn, c => sqlx::raw_sql(sql).execute(c).await.map(|_| ()), missing => Ok(()));
        r.map_err(|e| self.err(e))
    }

    /// Runs one batch of a batched backfill in its own short transaction,
    /// with `:batch_size` bound to `size`.
    ///
    /// A batch that changes fewer rows than `size` is followed at once, in
    /// the same transaction and without the pause, by the statement again
    /// under a savepoint: the batch that confirms nothing is left. If it
    /// changes nothing, the history row is written and everything commits
    /// together; if it does change rows (a statement whose batches are not
    /// simply "the next `size` rows"), it is rolled back to the savepoint, so
    /// no transaction ever changes more than `size` rows, and the loop goes
    /// on with the pause as usual. On a small tenant the whole backfill is
    /// one transaction and no pause.
    pub async fn backfill_batch(
        &mut self,
        m: &Migration,
        script: &Script,
        size: u64,
        started: std::time::Instant,
    ) -> Result<BatchOutcome, TenantError> {
        self.ensure_history().await?;
        if self.dialect == Dialect::Postgres {
            return postgres::backfill_batch(self, m, script, size, started).await;
        }
        let sql = script.sql.replace(":batch_size", &size.to_string());
        let begin = if self.dialect == Dialect::Sqlite {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        };
        let p = |n: usize| match self.dialect {
            Dialect::Postgres => format!("${n}"),
            _ => "?".to_string(),
        };
        let insert = format!(
            "INSERT INTO {} (version, description, success, checksum, execution_time) VALUES ({}, {}, TRUE, {}, {})",
            self.table,
            p(1),
            p(2),
            p(3),
            p(4)
        );
        let (v, d, sum) = (m.version, m.description.clone(), script.checksum.clone());
        let t0 = std::time::Instant::now();
        let verify = script.verify.clone();
        let r: Result<(u64, u64, bool), Fail> = on_conn!(&mut self.conn, c => {
            async {
                let db = |e: sqlx::Error| Fail::Db(e.into());
                let mut tx = c.begin_with(begin).await.map_err(db)?;
                let run = |sql: &str| sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()));
                let changed = run(&sql).execute(&mut *tx).await.map_err(db)?.rows_affected();
                let mut statements = 1;
                let mut done = changed == 0;
                if !done && changed < size {
                    statements += 1;
                    let mut confirm = tx.begin().await.map_err(db)?;
                    if run(&sql).execute(&mut *confirm).await.map_err(db)?.rows_affected() == 0 {
                        confirm.commit().await.map_err(db)?;
                        done = true;
                    } else {
                        confirm.rollback().await.map_err(db)?;
                    }
                }
                if done {
                    // the verification, before the history row: on failure
                    // the transaction is dropped (rolled back) unrecorded
                    if let Some((file, vsql)) = &verify {
                        let rows: Vec<Vec<String>> = run(vsql)
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(db)?
                            .iter()
                            .map(render_row)
                            .collect();
                        if let Some(why) = verdict(&rows) {
                            return Err(Fail::Verify(verify_failed_with(file, &why, BACKFILL_UNRECORDED)));
                        }
                    }
                    sqlx::query(sqlx::AssertSqlSafe(insert))
                        .bind(v)
                        .bind(d)
                        .bind(sum)
                        .bind(started.elapsed().as_nanos() as i64)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
                tx.commit().await.map_err(db)?;
                Ok((changed, statements, done))
            }
            .await
        }, missing => Ok((0, 1, true)));
        let held = t0.elapsed();
        r.map(|(changed, statements, done)| BatchOutcome {
            changed,
            statements,
            held,
            done,
        })
        .map_err(|f| self.fail(f, None))
    }

    /// Records a migration as applied without running it (sqlx's `skip`: the
    /// history row with `execution_time = -1`), for `fleetmig baseline`.
    pub async fn skip(&mut self, m: &Migration, script: &Script) -> Result<(), TenantError> {
        self.ensure_history().await?;
        let table = self.table.clone();
        let mig = sqlx_migration(m, script, MigrationType::Simple);
        let r = on_conn!(&mut self.conn, c => c.skip(&table, &mig).await,
            missing => return Err(TenantError::permanent("cannot_open", "tenant file does not exist")));
        r.map_err(|e| self.migrate_err(e).at_version(m.version))
    }

    /// Takes one migration back down with its `.down.sql` (sqlx's `revert`:
    /// runs the script and deletes the history row).
    pub async fn revert(&mut self, m: &Migration, down: &Script) -> Result<Duration, TenantError> {
        let table = self.table.clone();
        let mig = sqlx_migration(m, down, MigrationType::ReversibleDown);
        let r = on_conn!(&mut self.conn, c => c.revert(&table, &mig).await,
            missing => return Err(TenantError::permanent("cannot_open", "tenant file does not exist")));
        r.map_err(|e| self.migrate_err(e).at_version(m.version))
    }

    /// Records a failed no-transaction migration as dirty (`success = false`),
    /// as sqlx's MySQL driver does, so that nobody runs more migrations on top
    /// of a half-applied one.
    pub(crate) async fn mark_dirty(&mut self, step: Step<'_>) -> Result<(), sqlx::Error> {
        let p = |n: usize| match self.dialect {
            Dialect::Postgres => format!("${n}"),
            _ => "?".to_string(),
        };
        let sql = format!(
            "INSERT INTO {} (version, description, success, checksum, execution_time) VALUES ({}, {}, FALSE, {}, -1)",
            self.table,
            p(1),
            p(2),
            p(3)
        );
        let (v, d, sum) = (
            step.migration.version,
            step.migration.description.clone(),
            step.script.checksum.clone(),
        );
        on_conn!(&mut self.conn, c => {
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(v).bind(d).bind(sum).execute(c).await.map(|_| ())
        }, missing => Ok(()))
    }

    /// Releases the lock and the connection. Session state never leaks to the
    /// next tenant: a pooled PostgreSQL connection is reset (`RESET ALL`,
    /// advisory locks released) before it goes back, or closed if that fails.
    pub async fn close(self) {
        match self.conn {
            Conn::Sqlite(c) => {
                let _ = c.close().await;
            }
            Conn::SqliteMissing => {}
            Conn::PgPooled(mut c) => {
                if self.broken {
                    c.close_on_drop();
                } else {
                    postgres::release_pooled(c, &self.lock_key, self.locked).await
                }
            }
            Conn::Pg(c) => {
                let _ = c.close().await;
            }
            Conn::Mysql(mut c) => {
                if self.locked {
                    let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
                        .bind(&self.lock_key)
                        .execute(&mut c)
                        .await;
                }
                let _ = c.close().await;
            }
        }
    }
}
