//! The only module that talks to a tenant. `Session` is what fleetmig does
//! with one tenant (take its lock, read its history, apply a group of
//! migrations, run a backfill batch, preflight, fingerprint, check, analyze,
//! back up, close), and each database is one type that implements it and owns
//! its SQL: `sqlite::SqliteSession`, `postgres::PgSession`,
//! `mysql::MySqlSession`. Nothing outside this module asks which database a
//! tenant is: it asks the session what it can do (`transactional_ddl`), and
//! which script variant it runs (`dialect`). sqlx's `Migrate` trait,
//! implemented per backend under one migrator, is the model.
//!
//! History lives in the tenant in sqlx's `_sqlx_migrations` layout (written
//! once, in `history`), so `sqlx migrate info` and an application's
//! `sqlx::migrate!()` read it as their own. What fleetmig adds: a lock per
//! tenant (never per database), the re-check of history under that lock (two
//! processes never apply a version twice), a dirty row when a no-transaction
//! migration fails for good, and batched backfills one transaction at a time.
//! `Connector` opens sessions and owns the connection pools of one command.

pub mod backup;
mod classify;
pub mod copy;
mod history;
mod memo;
pub mod mysql;
pub mod postgres;
mod resume;
pub mod rows;
pub mod sqlite;

pub use classify::{classify, one_line};

use crate::error::FailureKind;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::TenantError;
use crate::migration::{Applied, Migration, Script};
use crate::options::{PreflightLimits, Settings};
use crate::tenant::{Dialect, Locator, Tenant};

/// Whether a session may write. `Read` never creates a file, a table or a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One migration to apply: the set's entry and the script this tenant runs.
#[derive(Clone, Copy)]
pub struct Step<'a> {
    pub migration: &'a Migration,
    pub script: &'a Script,
}

impl<'a> Step<'a> {
    /// The steps of a tenant's plan: each planned version of `set` with
    /// the script `dialect` runs (the plan checked both are there).
    pub fn planned(
        set: &'a crate::migration::MigrationSet,
        versions: &[i64],
        dialect: Dialect,
    ) -> Vec<Step<'a>> {
        versions
            .iter()
            .map(|v| {
                let migration = set.get(*v).expect("planned versions exist");
                let script = migration.up.get(dialect).expect("plan checked the variant");
                Step { migration, script }
            })
            .collect()
    }
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

/// What fleetmig does with one open tenant. Every method works on the
/// tenant's own connection; errors are `TenantError`s with any password
/// scrubbed.
#[async_trait::async_trait]
pub trait Session: Send {
    /// Which variant of a script this tenant runs.
    fn dialect(&self) -> Dialect;

    /// Whether DDL is transactional here: a group of migrations (`--tx-mode
    /// tenant`) can be one transaction. MySQL commits DDL implicitly.
    fn transactional_ddl(&self) -> bool;

    /// Whether the tenant exists at all: a SQLite file that is not there is
    /// opened for reading as empty, and is `missing` to `status`.
    fn exists(&self) -> bool {
        true
    }

    /// Takes the tenant's own lock (never a lock of the whole database).
    /// Waiting is bounded by the lock timeout; a tenant that stays locked
    /// fails with a transient `tenant_locked` error and is retried later.
    async fn lock(&mut self) -> Result<(), TenantError>;

    /// Reads the tenant's history; a tenant without `_sqlx_migrations` has
    /// none. Never writes.
    async fn history(&mut self) -> Result<Vec<Applied>, TenantError>;

    /// The version an interrupted attempt left part-applied (statements of
    /// it recorded in `_fleetmig_statements` with no history row yet, on
    /// MySQL its unfinished history row holding its progress, on PostgreSQL
    /// a concurrent index of one of `pending` left INVALID), if any: a move
    /// or a baseline refuses such a tenant. Never writes.
    async fn interrupted(&mut self, _pending: &[Step<'_>]) -> Result<Option<i64>, TenantError> {
        Ok(None)
    }

    /// Applies `steps` as one unit: in one transaction when there are several
    /// (`--tx-mode tenant`), else as sqlx applies one migration. On failure,
    /// nothing of the group is recorded (except a dirty row for a failed
    /// no-transaction migration).
    async fn apply(&mut self, steps: &[Step<'_>]) -> Result<Vec<AppliedStep>, TenantError>;

    /// Runs one batch of a batched backfill in its own short transaction,
    /// with `:batch_size` bound to `size`.
    ///
    /// A batch that changes fewer rows than `size` is followed at once, in
    /// the same transaction and without the pause, by the statement again
    /// under a savepoint: the batch that confirms nothing is left. If it
    /// changes nothing, the verification runs, the history row is written and
    /// everything commits together; if it does change rows, it is rolled back
    /// to the savepoint, so no transaction ever changes more than `size` rows.
    async fn backfill_batch(
        &mut self,
        step: Step<'_>,
        size: u64,
        started: Instant,
    ) -> Result<BatchOutcome, TenantError>;

    /// Checks, before anything is applied, that the tenant can take DDL now
    /// (no transaction older than the limit holds what the migrations touch;
    /// enough free server connections). Returns a summary for the report
    /// (size and largest tables), or a transient `preflight_deferred` error so
    /// that the tenant is retried later instead of queueing production traffic.
    async fn preflight(
        &mut self,
        tables: &[String],
        limits: PreflightLimits,
    ) -> Result<Option<String>, TenantError>;

    /// The tenant's actual schema as sorted lines (tables and columns with
    /// types, nullability and defaults, indexes, constraints), without
    /// fleetmig's history table: what `fleetmig verify` compares.
    async fn fingerprint(&mut self) -> Result<Vec<String>, TenantError>;

    /// Runs a read-only check query (a rollout gate): `Ok(None)` when it
    /// returns no rows or a single true, `Ok(Some(rows))` with the offending
    /// rows (at most 5, as text) otherwise.
    async fn check(&mut self, sql: &str) -> Result<Option<String>, TenantError>;

    /// Refreshes planner statistics of `tables`. Best effort: a table that is
    /// gone is skipped; returns the tables analyzed.
    async fn analyze(&mut self, tables: &[String]) -> Vec<String>;

    /// Records a migration as applied without running it (sqlx's `skip`:
    /// the history row with `execution_time = -1`), for `fleetmig baseline`.
    async fn skip(&mut self, step: Step<'_>) -> Result<(), TenantError>;

    /// Takes one migration back down with its `.down.sql` (sqlx's `revert`:
    /// runs the script and deletes the history row).
    async fn revert(&mut self, m: &Migration, down: &Script) -> Result<Duration, TenantError>;

    /// Backs the tenant up into `path` (see `backup`).
    async fn backup(&mut self, path: &Path) -> Result<(), TenantError>;

    /// Releases the lock and the connection. Session state never leaks to
    /// the next tenant of a pool.
    async fn close(self: Box<Self>);
}

/// Opens tenant sessions; owns the connection pools shared between tenants of
/// one database (schema-per-tenant). One per command.
#[derive(Clone)]
pub struct Connector {
    pub settings: Settings,
    pg: std::sync::Arc<postgres::Pools>,
    rows: std::sync::Arc<rows::Pools>,
    mysql: std::sync::Arc<mysql::Idle>,
}

impl Connector {
    pub fn new(settings: Settings) -> Self {
        Connector {
            settings,
            pg: Default::default(),
            rows: Default::default(),
            mysql: Default::default(),
        }
    }

    /// Opens a session on `tenant` and applies the session settings.
    pub async fn open(
        &self,
        tenant: &Tenant,
        access: Access,
    ) -> Result<Box<dyn Session>, TenantError> {
        Ok(match &tenant.locator {
            Locator::Sqlite { path } => {
                Box::new(sqlite::SqliteSession::open(&self.settings, path, access).await?)
            }
            Locator::Postgres { url, schema } => Box::new(
                postgres::PgSession::open(&self.settings, &self.pg, url, schema.as_deref()).await?,
            ),
            Locator::Mysql { url } => {
                Box::new(mysql::MySqlSession::open(&self.settings, &self.mysql, url).await?)
            }
            Locator::Row { db, tenant_id } => {
                Box::new(rows::RowSession::open(self, db, tenant_id, access).await?)
            }
        })
    }

    /// Reads the histories of `tenants` where that is cheaper than a session
    /// (SQLite files, read on blocking threads; PostgreSQL schemas of one
    /// database, many per round trip; row tenants of one shared database, a
    /// chunk per query): `None` for a tenant whose history a
    /// session must read. Read-only: nothing is locked, created or written,
    /// so it serves only to find the tenants with nothing to do; anything
    /// else goes through a session, which reads its history again under the
    /// tenant's lock. Each reader holds a slot of `fanout` on its server
    /// while it reads, as a tenant's session would.
    pub async fn peek(
        &self,
        fanout: &crate::fanout::Fanout,
        tenants: &[Tenant],
    ) -> Vec<Option<Vec<Applied>>> {
        let mut out: Vec<Option<Vec<Applied>>> = vec![None; tenants.len()];
        let files: Vec<(usize, std::path::PathBuf)> = tenants
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match &t.locator {
                Locator::Sqlite { path } => Some((i, path.clone())),
                _ => None,
            })
            .collect();
        if !files.is_empty() {
            // one blocking reader per core
            let busy = self.settings.lock_timeout.min(Duration::from_millis(200));
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let per = files.len().div_ceil(cores);
            let mut readers = Vec::new();
            for part in files.chunks(per.max(1)) {
                let slot = fanout.slot(&tenants[part[0].0]).await;
                let part = part.to_vec();
                readers.push(tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    let paths: Vec<&Path> = part.iter().map(|(_, p)| p.as_path()).collect();
                    let found = sqlite::peek_histories(&paths, busy);
                    part.iter().map(|(i, _)| *i).zip(found).collect::<Vec<_>>()
                }));
            }
            for reader in readers {
                for (i, h) in reader.await.unwrap_or_default() {
                    out[i] = h;
                }
            }
        }
        for (i, h) in postgres::peek_schemas(&self.pg, &self.settings, fanout, tenants).await {
            out[i] = Some(h);
        }
        for (i, h) in rows::peek(&self.rows, &self.settings, fanout, tenants).await {
            out[i] = Some(h);
        }
        out
    }

    /// Closes every pool (end of a command).
    pub async fn close(&self) {
        self.pg.close().await;
        self.rows.close().await;
        self.mysql.close().await;
    }
}

/// Connects to the server at `url` within `timeout`. Errors say where,
/// with the password redacted, and are transient when connecting timed out.
async fn connect<C>(
    dialect: Dialect,
    url: &str,
    timeout: Duration,
    connecting: impl std::future::Future<Output = Result<C, sqlx::Error>>,
) -> Result<C, TenantError> {
    let redacted = crate::tenant::redact_url(url);
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(connect_error(dialect, url, &e)),
        Err(_) => Err(TenantError::transient(
            FailureKind::Connection,
            format!("connecting to {redacted} timed out"),
        )),
    }
}

/// A failure to connect to `url`, classified, the password scrubbed.
fn connect_error(dialect: Dialect, url: &str, e: &sqlx::Error) -> TenantError {
    let mut t = classify(e, dialect);
    t.message = format!(
        "cannot connect to {}: {}",
        crate::tenant::redact_url(url),
        crate::tenant::scrub_secrets(&t.message, [url])
    );
    t
}

/// Logs a table `ANALYZE` could not refresh (best effort: it may be gone).
fn analyze_skipped(table: &str, e: &sqlx::Error) {
    tracing::warn!(table = %table, "ANALYZE skipped: {}", one_line(&e.to_string()));
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

/// Quotes an identifier for PostgreSQL/SQLite (`"x"`), doubling any quote
/// inside. Names are validated before they get here; the quoting is the
/// second wall. MySQL quotes with backticks (`mysql::quote_ident`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal (`'x'`) for PostgreSQL (with
/// `standard_conforming_strings` on) and SQLite, doubling quotes.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The preflight summary for the report: size, the largest tables, and free
/// server connections (`sizes` largest first, in bytes).
fn preflight_summary(sizes: &[(String, i64)], free: i64) -> String {
    let total: i64 = sizes.iter().map(|(_, b)| b).sum();
    let largest: Vec<String> = sizes
        .iter()
        .take(3)
        .map(|(t, b)| format!("{t} {} kB", b / 1024))
        .collect();
    format!(
        "size {} kB; largest: {}; {free} free connection(s)",
        total / 1024,
        if largest.is_empty() {
            "none".to_string()
        } else {
            largest.join(", ")
        }
    )
}

/// The transient error of a preflight that found the server short of
/// connections.
fn too_few_connections(free: i64, min_free: i64) -> TenantError {
    TenantError::transient(
        FailureKind::PreflightDeferred,
        format!("the server has {free} free connection(s), fewer than {min_free}; deferred"),
    )
}

/// `step` as sqlx's own migration, for the parts of sqlx's `Migrate` trait
/// fleetmig uses as they are (`skip`, `revert`, SQLite's no-transaction apply).
fn sqlx_migration(
    m: &Migration,
    script: &Script,
    kind: sqlx::migrate::MigrationType,
) -> sqlx::migrate::Migration {
    use sqlx::SqlSafeStr;
    sqlx::migrate::Migration {
        version: m.version,
        description: std::borrow::Cow::Owned(m.description.clone()),
        migration_type: kind,
        sql: sqlx::AssertSqlSafe(script.sql.clone()).into_sql_str(),
        checksum: std::borrow::Cow::Owned(script.checksum.clone()),
        no_tx: script.no_tx,
    }
}
