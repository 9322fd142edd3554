//! Row tenants: tenants that are the rows of one `tenant_id` in tables many
//! tenants share. A migration runs once per database (the default: schema
//! changes), recorded in `_sqlx_migrations` as for any database tenant, or
//! once per tenant (`-- fleetmig: scope=tenant`: data changes), with the
//! tenant's id bound as a real query parameter wherever the SQL writes
//! `:tenant_id`, recorded per tenant in fleetmig's own table beside it,
//! `_fleetmig_tenant_migrations`.
//!
//! A `RowSession` works on one tenant through its own connection (sqlx's
//! `Any`, so one implementation serves PostgreSQL, MySQL/MariaDB and SQLite):
//! a lock per tenant (an advisory lock, `GET_LOCK`; SQLite's write lock
//! serializes on its own), the tenant's history (the database's rows and
//! its own), and its tenant-scoped migrations, each in one transaction that
//! checks again, under the lock, that it is not already recorded. A
//! database-wide migration is applied through a session on the database
//! itself, under the database's lock and after a fresh read of its history:
//! the first tenant to need it applies it, the others find it there. The
//! plan runs versions in order, so a tenant-scoped migration never runs
//! before the database-wide migrations it follows.

use crate::error::FailureKind;
use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Any, Connection};

use super::history::{ROLLED_BACK, render_row, verdict};
use super::{Access, AppliedStep, BatchOutcome, Connector, Session, Step, classify};
use crate::error::TenantError;
use crate::migration::split::split_for;
use crate::migration::{Applied, Migration, Scope, Script};
use crate::options::PreflightLimits;
use crate::tenant::{Dialect, Locator, Tenant, TenantId};

mod peek;
mod sql;
mod step;
pub(crate) use peek::peek;
pub(crate) use sql::Pools;
use sql::*;
pub use sql::{TABLE, bind_tenant, list};
use step::{confirmed, record, verify};

/// One row tenant, open.
pub struct RowSession {
    connector: Connector,
    /// The shared database, as a tenant of its own (database-wide steps).
    db: Tenant,
    tenant_id: String,
    dialect: Dialect,
    conn: PoolConnection<Any>,
    access: Access,
    locked: bool,
}

/// A MySQL history table made before its ids were compared byte for byte
/// (the database's default collation, where `Acme` is `ACME` and one
/// tenant's record passed for the other's) is given the binary collation.
async fn binary_ids(conn: &mut sqlx::pool::PoolConnection<sqlx::Any>) -> Result<(), sqlx::Error> {
    let collation: Option<String> = sqlx::query_scalar(
        "SELECT CAST(COLLATION_NAME AS CHAR) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = 'tenant_id'",
    )
    .bind(TABLE)
    .fetch_optional(&mut **conn)
    .await?
    .flatten();
    if collation.is_some_and(|c| !c.ends_with("_bin")) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {TABLE} MODIFY tenant_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL"
        )))
        .execute(&mut **conn)
        .await?;
    }
    Ok(())
}

impl RowSession {
    pub async fn open(
        connector: &Connector,
        db: &Locator,
        tenant_id: &str,
        access: Access,
    ) -> Result<RowSession, TenantError> {
        let dialect = db.dialect();
        let settings = &connector.settings;
        let url = any_url(db, access)?;
        let pool = connector.rows.get(&url, dialect, settings);
        let mut conn =
            super::connect(dialect, &url, settings.connect_timeout, pool.acquire()).await?;
        if access == Access::Write
            && !connector.rows.tabled.contains(&url)
            && let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(create_table(dialect)))
                .execute(&mut *conn)
                .await
        {
            // several tenants' sessions create it at once: PostgreSQL's
            // IF NOT EXISTS can lose that race (a duplicate type name), and
            // then the table is there
            let there = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(exists_sql(dialect)))
                .bind(TABLE)
                .fetch_one(&mut *conn)
                .await
                .unwrap_or(0);
            if there == 0 {
                return Err(classify(&e, dialect));
            }
        }
        if access == Access::Write {
            if dialect == Dialect::Mysql {
                binary_ids(&mut conn)
                    .await
                    .map_err(|e| classify(&e, dialect))?;
            }
            connector.rows.tabled.insert(url);
        }
        let name = match db {
            Locator::Sqlite { path } => path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| "db".into()),
            _ => "db".into(),
        };
        Ok(RowSession {
            connector: connector.clone(),
            db: Tenant {
                id: TenantId::new(&name).unwrap_or_else(|_| TenantId::new("db").expect("valid")),
                locator: db.clone(),
                tags: Default::default(),
            },
            tenant_id: tenant_id.to_string(),
            dialect,
            conn,
            access,
            locked: false,
        })
    }

    fn err(&self, e: sqlx::Error) -> TenantError {
        classify(&e, self.dialect)
    }

    fn p(&self, n: usize) -> String {
        match self.dialect {
            Dialect::Postgres => format!("${n}"),
            _ => "?".into(),
        }
    }

    /// The history rows of a table, as text-typed portable SQL.
    async fn read(&mut self, sql: &str, tenant: bool) -> Result<Vec<Applied>, TenantError> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if tenant {
            q = q.bind(self.tenant_id.as_str());
        }
        let rows = q.fetch_all(&mut *self.conn).await.map_err(|e| {
            TenantError::permanent(FailureKind::History, format!("reading the history: {e}"))
        })?;
        rows.iter()
            .map(applied)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    async fn table_exists(&mut self, name: &str) -> Result<bool, TenantError> {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(exists_sql(self.dialect)))
            .bind(name)
            .fetch_one(&mut *self.conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Applies a database-wide step through a session on the database
    /// itself, under its lock, unless its history already has it.
    /// The database's own history read under the database's lock: what a
    /// migration being applied left when it finished (dirty only if it
    /// failed).
    async fn settled_database_history(&mut self) -> Result<Vec<Applied>, TenantError> {
        let mut s = self.connector.open(&self.db, Access::Write).await?;
        let r = async {
            s.lock().await?;
            s.history().await
        }
        .await;
        s.close().await;
        r
    }

    async fn apply_database(&mut self, step: Step<'_>) -> Result<AppliedStep, TenantError> {
        let mut s = self.connector.open(&self.db, Access::Write).await?;
        let r = async {
            s.lock().await?;
            let history = s.history().await?;
            if history
                .iter()
                .any(|h| h.version == step.migration.version && h.success)
            {
                return Ok(AppliedStep {
                    version: step.migration.version,
                    duration: Duration::ZERO,
                    already_applied: true,
                });
            }
            Ok(s.apply(&[step]).await?.remove(0))
        }
        .await;
        s.close().await;
        r
    }

    /// A batch of a `scope=database` backfill: run on the database's own
    /// session, under its lock.
    async fn backfill_database_batch(
        &mut self,
        step: Step<'_>,
        size: u64,
        started: Instant,
    ) -> Result<BatchOutcome, TenantError> {
        let mut s = self.connector.open(&self.db, Access::Write).await?;
        let r = async {
            s.lock().await?;
            s.backfill_batch(step, size, started).await
        }
        .await;
        s.close().await;
        r
    }

    /// Opens the transaction of one tenant-scoped change (SQLite takes its
    /// write lock up front).
    async fn begin(&mut self) -> Result<sqlx::Transaction<'_, sqlx::Any>, TenantError> {
        let begin = match self.dialect {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            _ => "BEGIN",
        };
        let dialect = self.dialect;
        self.conn
            .begin_with(sqlx::AssertSqlSafe(begin))
            .await
            .map_err(|e| classify(&e, dialect))
    }

    fn recorded_sql(&self) -> String {
        format!(
            "SELECT count(*) FROM {TABLE} WHERE tenant_id = {} AND version = {}",
            self.p(1),
            self.p(2)
        )
    }

    fn insert_sql(&self) -> String {
        format!(
            "INSERT INTO {TABLE} (tenant_id, version, description, success, checksum, execution_time, installed_at) \
             VALUES ({}, {}, {}, 1, {}, {}, {})",
            self.p(1),
            self.p(2),
            self.p(3),
            self.p(4),
            self.p(5),
            self.p(6)
        )
    }

    /// Applies one tenant-scoped step in one transaction: checked again
    /// that it is not recorded, each statement with the id bound, its
    /// verification (also bound), its history row.
    async fn apply_tenant(&mut self, step: Step<'_>) -> Result<AppliedStep, TenantError> {
        let t0 = Instant::now();
        let (dialect, tenant) = (self.dialect, self.tenant_id.clone());
        let (recorded, insert) = (self.recorded_sql(), self.insert_sql());
        let m = step.migration;
        let mut tx = self.begin().await?;
        let seen: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(recorded))
            .bind(tenant.as_str())
            .bind(m.version)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| classify(&e, dialect))?;
        if seen > 0 {
            return Ok(AppliedStep {
                version: m.version,
                duration: Duration::ZERO,
                already_applied: true,
            });
        }
        for st in split_for(&step.script.sql, dialect) {
            let (sql, n) = bind_tenant(&st.sql, dialect);
            bound(&sql, n, &tenant)
                .execute(&mut *tx)
                .await
                .map_err(|e| at_line(classify(&e, dialect), &step.script.path, st.line))?;
        }
        if let Some(failed) = verify(&mut tx, step.script, &tenant, dialect, ROLLED_BACK).await? {
            return Err(failed);
        }
        record(
            &mut *tx,
            &insert,
            &tenant,
            step,
            t0.elapsed().as_nanos() as i64,
        )
        .await
        .map_err(|e| classify(&e, dialect))?;
        tx.commit().await.map_err(|e| classify(&e, dialect))?;
        Ok(AppliedStep {
            version: m.version,
            duration: t0.elapsed(),
            already_applied: false,
        })
    }
}

#[async_trait::async_trait]
impl Session for RowSession {
    fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Each step is its own unit: a database-wide one goes through the
    /// database's session, a tenant-scoped one through this connection.
    fn transactional_ddl(&self) -> bool {
        false
    }

    async fn lock(&mut self) -> Result<(), TenantError> {
        let dialect = self.dialect;
        let tenant = self.tenant_id.clone();
        match dialect {
            Dialect::Postgres => {
                sqlx::query(
                    "SELECT pg_advisory_lock(hashtext('fleetmig-row:' || current_database()), hashtext($1))::text",
                )
                .bind(tenant.as_str())
                .fetch_one(&mut *self.conn)
                .await
                .map_err(|e| locked(classify(&e, dialect), &tenant))?;
            }
            Dialect::Mysql => {
                let secs = self.connector.settings.lock_timeout.as_secs().max(1) as i64;
                let got: Option<String> = sqlx::query_scalar(
                    "SELECT CAST(GET_LOCK(MD5(CONCAT('fleetmig-row:', DATABASE(), ':', ?)), ?) AS CHAR)",
                )
                .bind(tenant.as_str())
                .bind(secs)
                .fetch_one(&mut *self.conn)
                .await
                .map_err(|e| classify(&e, dialect))?;
                if got.as_deref() != Some("1") {
                    return Err(locked(
                        TenantError::transient(FailureKind::TenantLocked, "GET_LOCK timed out"),
                        &tenant,
                    ));
                }
            }
            // each change takes SQLite's write lock and checks its history
            // again inside it
            Dialect::Sqlite => {}
        }
        self.locked = true;
        Ok(())
    }

    async fn history(&mut self) -> Result<Vec<Applied>, TenantError> {
        let mut out = Vec::new();
        if self.table_exists("_sqlx_migrations").await? {
            out = self.read(DATABASE_HISTORY, false).await?;
        }
        if out.iter().any(|h| !h.success) {
            // a database-wide migration that is being applied right now
            // (MySQL records it before it runs, its DDL being no
            // transaction): its applier holds the database's lock, so read
            // the database's history again under that lock
            out = self.settled_database_history().await?;
        }
        if self.table_exists(TABLE).await? {
            let sql = tenant_history(&format!("tenant_id = {}", self.p(1)));
            out.extend(self.read(&sql, true).await?);
        }
        out.sort_by_key(|a| a.version);
        Ok(out)
    }

    async fn apply(&mut self, steps: &[Step<'_>]) -> Result<Vec<AppliedStep>, TenantError> {
        if self.access != Access::Write {
            return Err(unsupported("applying a migration without write access"));
        }
        let mut out = Vec::with_capacity(steps.len());
        for step in steps {
            out.push(match step.script.directives.scope {
                Scope::Tenant => self.apply_tenant(*step).await?,
                Scope::Database => self.apply_database(*step).await?,
            });
        }
        Ok(out)
    }

    async fn backfill_batch(
        &mut self,
        step: Step<'_>,
        size: u64,
        started: Instant,
    ) -> Result<BatchOutcome, TenantError> {
        if step.script.directives.scope == Scope::Database {
            return self.backfill_database_batch(step, size, started).await;
        }
        let (dialect, tenant) = (self.dialect, self.tenant_id.clone());
        let (recorded, insert) = (self.recorded_sql(), self.insert_sql());
        let m = step.migration;
        let (sql, n) = bind_tenant(
            &step.script.sql.replace(":batch_size", &size.to_string()),
            dialect,
        );
        let t0 = Instant::now();
        let mut tx = self.begin().await?;
        let seen: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(recorded))
            .bind(tenant.as_str())
            .bind(m.version)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| classify(&e, dialect))?;
        if seen > 0 {
            return Ok(BatchOutcome {
                changed: 0,
                statements: 0,
                held: t0.elapsed(),
                done: true,
            });
        }
        let db = |e: sqlx::Error| classify(&e, dialect);
        let changed = bound(&sql, n, &tenant)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        let mut statements = 1;
        let mut done = changed == 0;
        if !done && changed < size {
            statements += 1;
            done = confirmed(&mut tx, &sql, n, &tenant).await.map_err(db)?;
        }
        if done {
            if let Some(failed) = verify(
                &mut tx,
                step.script,
                &tenant,
                dialect,
                super::history::BACKFILL_UNRECORDED,
            )
            .await?
            {
                return Err(failed);
            }
            record(
                &mut *tx,
                &insert,
                &tenant,
                step,
                started.elapsed().as_nanos() as i64,
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(BatchOutcome {
            changed,
            statements,
            held: t0.elapsed(),
            done,
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
        Err(unsupported("a schema fingerprint"))
    }

    /// In a read-only transaction: a gate that writes fails, naming why.
    async fn check(&mut self, sql: &str) -> Result<Option<String>, TenantError> {
        let (sql, n) = bind_tenant(sql.trim().trim_end_matches(';'), self.dialect);
        let (begin, end) = match self.dialect {
            Dialect::Postgres => ("BEGIN READ ONLY", "ROLLBACK"),
            Dialect::Mysql => ("START TRANSACTION READ ONLY", "ROLLBACK"),
            Dialect::Sqlite => ("PRAGMA query_only = 1", "PRAGMA query_only = 0"),
        };
        let r = async {
            sqlx::raw_sql(begin).execute(&mut *self.conn).await?;
            bound(&sql, n, &self.tenant_id)
                .fetch_all(&mut *self.conn)
                .await
        }
        .await;
        let _ = sqlx::raw_sql(end).execute(&mut *self.conn).await;
        let rows = r.map_err(|e| {
            let mut t = classify(&e, self.dialect);
            t.kind = FailureKind::GateQueryFailed;
            t
        })?;
        let rows: Vec<Vec<String>> = rows.iter().map(render_row).collect();
        Ok(verdict(&rows))
    }

    async fn analyze(&mut self, _tables: &[String]) -> Vec<String> {
        Vec::new()
    }

    async fn skip(&mut self, step: Step<'_>) -> Result<(), TenantError> {
        if step.script.directives.scope == Scope::Database {
            return Err(unsupported("baseline of a database-wide migration"));
        }
        // sqlx's skip row: applied, with an execution time of -1
        let insert = self.insert_sql();
        record(&mut *self.conn, &insert, &self.tenant_id, step, -1)
            .await
            .map_err(|e| classify(&e, self.dialect))
    }

    async fn revert(&mut self, _m: &Migration, _down: &Script) -> Result<Duration, TenantError> {
        Err(unsupported("reverting a migration"))
    }

    async fn backup(&mut self, _path: &Path) -> Result<(), TenantError> {
        Err(unsupported("a backup"))
    }

    /// Releases the tenant's lock and gives the connection back to the
    /// pool; a connection whose lock cannot be released is closed instead.
    async fn close(self: Box<Self>) {
        let RowSession {
            mut conn,
            locked,
            dialect,
            ..
        } = *self;
        let release = match dialect {
            Dialect::Postgres => Some("SELECT pg_advisory_unlock_all()::text"),
            Dialect::Mysql => Some("SELECT CAST(RELEASE_ALL_LOCKS() AS CHAR)"),
            Dialect::Sqlite => None,
        };
        if let Some(sql) = release.filter(|_| locked)
            && sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_optional(&mut *conn)
                .await
                .is_err()
        {
            let _ = conn.detach().close().await;
        }
    }
}
