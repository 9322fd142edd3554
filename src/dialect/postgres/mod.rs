//! PostgreSQL tenants: a schema in a shared database (pooled connections,
//! `search_path` set to that schema only) or a whole database (a connection of
//! its own). The tenant lock is a session advisory lock keyed on
//! `hashtextextended('fleetmig:<database>/<schema>')`, not sqlx's lock (keyed
//! on the database alone, which would queue every schema of a database behind
//! one another). Pooled connections are reset before they go back to the pool.
//! The history table has sqlx's columns and key but no TOAST table (`layout`);
//! a transaction group, a backfill batch and a no-transaction migration each
//! write their history rows in the same round trips as the work (`apply`).
//! Preflight, fingerprint and discovery read the catalogue (`catalog`).

mod apply;
mod catalog;
mod layout;
mod pools;
mod resume;

pub use catalog::{list_databases, list_schemas};
pub(crate) use pools::{Pools, peek_schemas};

use crate::error::FailureKind;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sqlx::migrate::{Migrate, MigrationType};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};

use super::classify::{migrate_error, tenant_error};
use super::history::{self, HistoryTable, Params};
use super::{
    AppliedStep, BatchOutcome, PreflightLimits, Session, Settings, Step, quote_ident, quote_literal,
};
use crate::error::TenantError;
use crate::migration::{Applied, Migration, Script};
use crate::tenant::{Dialect, validate_identifier};
use layout::HistoryLayout;

pub(crate) fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?
        .application_name("fleetmig")
        .disable_statement_logging())
}

fn pg_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// A schema tenant's connection comes from its database's pool; a database
/// tenant has one of its own.
enum PgConn {
    Pooled(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Own(PgConnection),
}

/// An open PostgreSQL tenant.
pub struct PgSession {
    conn: PgConn,
    schema: Option<String>,
    table: HistoryTable,
    url: String,
    /// The schema name (empty for a database tenant): with the database, the
    /// advisory lock's key.
    lock_key: String,
    /// Session settings still to send (sent with the lock, in one round trip).
    setup: String,
    /// The session's `lock_timeout` and `statement_timeout`, to put back
    /// after a migration that sets its own.
    timeouts: (String, String),
    locked: bool,
    /// Whether `_sqlx_migrations` is known to exist.
    history_ready: bool,
    /// The tenant had no `_sqlx_migrations` when this session read its
    /// history under the tenant lock: no earlier attempt got far enough to
    /// leave an INVALID index behind, so the look for one is skipped.
    fresh: bool,
    /// Whether the history table exists, when `lock` already found out.
    exists_hint: Option<bool>,
    /// The connection is in an unknown state and must not be reused.
    broken: bool,
    layout: HistoryLayout,
    /// This session made or found `_fleetmig_statements` (kept from one
    /// no-transaction migration to the next; `close` drops it when empty).
    statements_made: bool,
}

impl PgSession {
    pub(crate) async fn open(
        settings: &Settings,
        pools: &Pools,
        url: &str,
        schema: Option<&str>,
    ) -> Result<PgSession, TenantError> {
        let conn_err = |e: sqlx::Error| super::connect_error(Dialect::Postgres, url, &e);
        let (conn, table) = match schema {
            Some(schema) => {
                validate_identifier(schema)
                    .map_err(|m| TenantError::permanent(FailureKind::InvalidIdentifier, m))?;
                let pool = pools.get(url, settings).map_err(conn_err)?;
                let conn = pool.acquire().await.map_err(conn_err)?;
                (
                    PgConn::Pooled(conn),
                    format!("{}.\"_sqlx_migrations\"", quote_ident(schema)),
                )
            }
            None => {
                let opts = connect_options(url).map_err(conn_err)?;
                let conn = super::connect(
                    Dialect::Postgres,
                    url,
                    settings.connect_timeout,
                    PgConnection::connect_with(&opts),
                )
                .await?;
                (PgConn::Own(conn), "\"_sqlx_migrations\"".to_string())
            }
        };
        Ok(PgSession {
            conn,
            schema: schema.map(str::to_string),
            table: HistoryTable::new(table, Params::Dollar),
            url: url.to_string(),
            lock_key: schema.unwrap_or("").to_string(),
            setup: setup_sql(settings, schema),
            timeouts: (
                pg_duration(settings.lock_timeout),
                settings
                    .statement_timeout
                    .map(pg_duration)
                    .unwrap_or_else(|| "0".into()),
            ),
            locked: false,
            history_ready: false,
            fresh: false,
            exists_hint: None,
            broken: false,
            layout: HistoryLayout::default(),
            statements_made: false,
        })
    }

    fn conn(&mut self) -> &mut PgConnection {
        match &mut self.conn {
            PgConn::Pooled(c) => c,
            PgConn::Own(c) => c,
        }
    }

    /// A driver error as a tenant error, with any password scrubbed.
    fn err(&self, e: impl std::borrow::Borrow<sqlx::Error>) -> TenantError {
        tenant_error(e.borrow(), Dialect::Postgres, Some(&self.url))
    }

    /// Creates the history table if it is missing, in its own transaction.
    async fn ensure_history(&mut self) -> Result<(), TenantError> {
        if self.history_ready {
            return Ok(());
        }
        let sql = format!("BEGIN;\n{}COMMIT;", self.layout.ddl(&self.table.name));
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(self.conn())
            .await
        {
            let t = self.err(e);
            self.end_failed_transaction().await;
            return Err(t);
        }
        self.layout.committed();
        self.history_ready = true;
        Ok(())
    }

    /// Ends a transaction a failed batch left open. If even that fails, the
    /// connection is closed instead of reused (see `close`).
    async fn end_failed_transaction(&mut self) {
        if sqlx::raw_sql("ROLLBACK")
            .execute(self.conn())
            .await
            .is_err()
        {
            self.broken = true;
        }
    }

    /// The statements that give `step` the timeouts its directives set
    /// (`-- fleetmig: lock_timeout=... statement_timeout=...`), and those that
    /// put the session's back; both empty when it sets none. `local`: inside
    /// a transaction (`SET LOCAL`).
    fn step_timeouts(&self, step: Step<'_>, local: bool) -> (String, String) {
        let d = &step.script.directives;
        let set = if local { "SET LOCAL" } else { "SET" };
        let (mut before, mut after) = (String::new(), String::new());
        if let Some(t) = d.lock_timeout {
            before.push_str(&format!("{set} lock_timeout = '{}';\n", pg_duration(t)));
            after.push_str(&format!("{set} lock_timeout = '{}';\n", self.timeouts.0));
        }
        if let Some(t) = d.statement_timeout {
            before.push_str(&format!(
                "{set} statement_timeout = '{}';\n",
                pg_duration(t)
            ));
            after.push_str(&format!(
                "{set} statement_timeout = '{}';\n",
                self.timeouts.1
            ));
        }
        (before, after)
    }

    /// Points a session that did not take the lock (reads, gates) at the
    /// tenant's schema.
    async fn use_schema(&mut self) -> Result<(), TenantError> {
        if let Some(schema) = &self.schema {
            let set = format!("SET search_path TO {}", quote_ident(schema));
            sqlx::raw_sql(sqlx::AssertSqlSafe(set))
                .execute(self.conn())
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

fn setup_sql(settings: &Settings, schema: Option<&str>) -> String {
    // fleetmig writes history rows with SQL literals: backslashes are plain
    let mut setup = String::from("SET standard_conforming_strings = on;\n");
    if let Some(schema) = schema {
        setup.push_str(&format!("SET search_path TO {};\n", quote_ident(schema)));
    }
    setup.push_str(&format!(
        "SET lock_timeout = '{}';\n",
        pg_duration(settings.lock_timeout)
    ));
    if let Some(st) = settings.statement_timeout {
        setup.push_str(&format!("SET statement_timeout = '{}';\n", pg_duration(st)));
    }
    setup
}

/// Runs a simple-query batch (one round trip) and collects the `fleetmig:`
/// markers its rows carry, up to the first error.
async fn batch(conn: &mut PgConnection, sql: String) -> (Vec<String>, Option<sqlx::Error>) {
    let mut markers = Vec::new();
    let mut stream = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).fetch_many(conn);
    while let Some(item) = stream.next().await {
        match item {
            Ok(sqlx::Either::Right(row)) => {
                if let Ok(text) = row.try_get::<String, _>(0)
                    && text.starts_with("fleetmig:")
                {
                    markers.push(text);
                }
            }
            Ok(sqlx::Either::Left(_)) => {}
            Err(e) => return (markers, Some(e)),
        }
    }
    (markers, None)
}

#[async_trait::async_trait]
impl Session for PgSession {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn transactional_ddl(&self) -> bool {
        true
    }

    /// Session settings, the tenant's advisory lock and whether the history
    /// table exists, in one round trip.
    async fn lock(&mut self) -> Result<(), TenantError> {
        let sql = format!(
            "{}SELECT pg_advisory_lock(hashtextextended('fleetmig:' || current_database() || '/' || {}, 0));\n\
             SELECT 'fleetmig:exists:' || (to_regclass({}) IS NOT NULL)::text;\n\
             SELECT 'fleetmig:layout:' || current_setting('server_version_num') || ':' || \
             (to_regclass('pg_temp.{}') IS NOT NULL)::text || ':' || \
             has_database_privilege(current_database(), 'TEMPORARY')::text;",
            self.setup,
            quote_literal(&self.lock_key),
            quote_literal(&self.table.name),
            layout::TEMPLATE,
        );
        let (markers, err) = batch(self.conn(), sql).await;
        if let Some(e) = err {
            let mut t = self.err(e);
            if t.kind == FailureKind::LockTimeout {
                t.kind = FailureKind::TenantLocked;
                t.message = format!(
                    "another session holds this tenant's migration lock: {}",
                    t.message
                );
            }
            return Err(t);
        }
        self.locked = true;
        self.exists_hint = markers
            .iter()
            .find_map(|m| m.strip_prefix("fleetmig:exists:"))
            .map(|v| v == "true");
        if let Some((version, template)) = markers
            .iter()
            .find_map(|m| m.strip_prefix("fleetmig:layout:"))
            .and_then(|m| m.split_once(':'))
        {
            let (exists, may_create) = template.split_once(':').unwrap_or((template, "false"));
            // Schema tenants share pooled connections; a role without
            // TEMPORARY on the database cannot create the template.
            let pooled = matches!(self.conn, PgConn::Pooled(_)) && may_create == "true";
            self.layout =
                HistoryLayout::pick(version.parse().unwrap_or(0), pooled, exists == "true");
        }
        Ok(())
    }

    async fn history(&mut self) -> Result<Vec<Applied>, TenantError> {
        let exists = match self.exists_hint.take() {
            Some(known) => known,
            None => {
                let name = self.table.name.clone();
                sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
                    .bind(name)
                    .fetch_one(self.conn())
                    .await
                    .map_err(|e| self.err(e))?
            }
        };
        if !exists {
            self.fresh = self.locked;
            return Ok(Vec::new());
        }
        self.history_ready = true;
        let sql = self.table.select_sql();
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(history::applied(rows))
    }

    async fn apply(&mut self, steps: &[Step<'_>]) -> Result<Vec<AppliedStep>, TenantError> {
        // The history table is created in a transaction of its own, not
        // inside the group's: every `CREATE INDEX CONCURRENTLY` in the
        // database waits for the transactions running when it starts, so on
        // a fleet of schemas a shorter group transaction is less waiting for
        // every other tenant (measured by benches/server_fleet.rs). An empty
        // history table left by a failed group is version 0, as before (sqlx
        // does the same).
        self.ensure_history().await?;
        match steps {
            [step] if step.script.no_tx => self.apply_no_tx(*step).await,
            _ if steps.iter().any(|s| s.script.verify.is_some()) => {
                self.apply_verified(steps).await
            }
            _ => self.apply_batch(steps).await,
        }
    }

    async fn backfill_batch(
        &mut self,
        step: Step<'_>,
        size: u64,
        started: Instant,
    ) -> Result<BatchOutcome, TenantError> {
        self.ensure_history().await?;
        self.backfill(step, size, started).await
    }

    async fn preflight(
        &mut self,
        tables: &[String],
        limits: PreflightLimits,
    ) -> Result<Option<String>, TenantError> {
        let schema = self.schema.clone().unwrap_or_else(|| "public".into());
        catalog::preflight(self.conn(), &schema, tables, limits)
            .await
            .map_err(|e| match e {
                catalog::Deferred::Db(e) => self.err(e),
                catalog::Deferred::Now(t) => t,
            })
    }

    async fn fingerprint(&mut self) -> Result<Vec<String>, TenantError> {
        let schema = self.schema.clone().unwrap_or_else(|| "public".into());
        catalog::fingerprint(self.conn(), &schema)
            .await
            .map_err(|e| self.err(e))
    }

    /// In a read-only transaction: a gate that writes fails, naming why.
    async fn check(&mut self, sql: &str) -> Result<Option<String>, TenantError> {
        self.use_schema().await?;
        let r = async {
            sqlx::raw_sql("BEGIN READ ONLY")
                .execute(self.conn())
                .await?;
            history::check(self.conn(), sql).await
        }
        .await;
        let _ = sqlx::raw_sql("ROLLBACK").execute(self.conn()).await;
        r.map_err(|e| {
            let mut t = self.err(e);
            t.kind = FailureKind::GateQueryFailed;
            t
        })
    }

    async fn analyze(&mut self, tables: &[String]) -> Vec<String> {
        let mut done = Vec::new();
        for t in tables {
            let sql = sqlx::AssertSqlSafe(format!("ANALYZE {}", quote_ident(t)));
            match sqlx::raw_sql(sql).execute(self.conn()).await {
                Ok(_) => done.push(t.clone()),
                Err(e) => super::analyze_skipped(t, &e),
            }
        }
        done
    }

    async fn skip(&mut self, step: Step<'_>) -> Result<(), TenantError> {
        self.ensure_history().await?;
        let m = super::sqlx_migration(step.migration, step.script, MigrationType::Simple);
        let table = self.table.name.clone();
        let r = self.conn().skip(&table, &m).await;
        r.map_err(|e| migrate_error(e, Dialect::Postgres, Some(&self.url)).at_version(m.version))?;
        self.forget_statements(m.version).await;
        Ok(())
    }

    async fn revert(&mut self, m: &Migration, down: &Script) -> Result<Duration, TenantError> {
        let mig = super::sqlx_migration(m, down, MigrationType::ReversibleDown);
        let table = self.table.name.clone();
        let r = self.conn().revert(&table, &mig).await;
        let took = r.map_err(|e| {
            migrate_error(e, Dialect::Postgres, Some(&self.url)).at_version(m.version)
        })?;
        self.forget_statements(m.version).await;
        Ok(took)
    }

    async fn interrupted(&mut self, pending: &[Step<'_>]) -> Result<Option<i64>, TenantError> {
        self.interrupted_version(pending).await
    }

    async fn backup(&mut self, path: &Path) -> Result<(), TenantError> {
        super::backup::pg_dump(&self.url, self.schema.as_deref(), path).await
    }

    async fn close(self: Box<Self>) {
        // the table of statements this session made goes, if empty, while
        // the tenant is still locked
        let tidy = match self.locked && self.statements_made && !self.broken {
            true => self.drop_statements_if_empty_sql(),
            false => String::new(),
        };
        let PgSession {
            conn,
            lock_key,
            locked,
            broken,
            ..
        } = *self;
        match conn {
            PgConn::Own(mut c) => {
                if !tidy.is_empty() {
                    let _ = (&mut c).execute(sqlx::AssertSqlSafe(tidy)).await;
                }
                let _ = c.close().await;
            }
            PgConn::Pooled(mut c) if broken => c.close_on_drop(),
            PgConn::Pooled(mut c) => {
                let mut reset = tidy;
                if locked {
                    reset.push_str(&format!(
                        "SELECT pg_advisory_unlock(hashtextextended('fleetmig:' || current_database() || '/' || {}, 0));",
                        quote_literal(&lock_key)
                    ));
                }
                reset.push_str("RESET ALL;");
                if (&mut *c).execute(sqlx::AssertSqlSafe(reset)).await.is_err() {
                    // Never hand a connection in an unknown state to the next tenant.
                    c.close_on_drop();
                } else {
                    // Back in the pool before the tenant's fan-out slot is
                    // released: otherwise the next tenant finds no idle
                    // connection and the pool opens one more than the slots.
                    c.return_to_pool().await;
                }
            }
        }
    }
}
