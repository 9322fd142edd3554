//! The state store: where rollouts and per-tenant runs are kept durably, so
//! that a crashed or interrupted rollout resumes and one tenant can be retried
//! the next morning. A SQLite file by default (`.fleetmig/state.db`), or a
//! PostgreSQL URL for a control plane shared by several coordinators. Both go
//! through sqlx's `Any` driver with portable SQL (`$N` placeholders, epoch
//! milliseconds for times), and the schema is versioned and migrates itself.
//!
//! The tenant's own history stays the truth about what is applied: this store
//! records what fleetmig did and decided (plans, waves, gates, attempts).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::error::Error;
use crate::tenant::redact_url;

/// The version of this store's schema; `open` brings older stores up to it.
pub const SCHEMA_VERSION: i64 = 4;

const MIGRATIONS: &[&str] = &[
    // 1: rollouts, their waves and their tenants
    "CREATE TABLE IF NOT EXISTS fleetmig_rollouts (
        id TEXT PRIMARY KEY,
        created_at BIGINT NOT NULL,
        operator TEXT NOT NULL,
        command TEXT NOT NULL,
        fleet TEXT NOT NULL,
        migrations_dir TEXT NOT NULL,
        set_checksum TEXT NOT NULL,
        target BIGINT NOT NULL,
        settings TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        current_wave BIGINT NOT NULL,
        claimed_by TEXT,
        heartbeat_at BIGINT,
        finished_at BIGINT
    );
    CREATE TABLE IF NOT EXISTS fleetmig_waves (
        rollout_id TEXT NOT NULL,
        wave BIGINT NOT NULL,
        name TEXT NOT NULL,
        selector TEXT NOT NULL,
        status TEXT NOT NULL,
        gate TEXT,
        started_at BIGINT,
        finished_at BIGINT,
        PRIMARY KEY (rollout_id, wave)
    );
    CREATE TABLE IF NOT EXISTS fleetmig_tenant_runs (
        rollout_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        wave BIGINT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        from_version BIGINT,
        to_version BIGINT,
        applied TEXT NOT NULL,
        started_at BIGINT,
        finished_at BIGINT,
        duration_ms BIGINT NOT NULL,
        error_class TEXT,
        error_kind TEXT,
        error_code TEXT,
        error_version BIGINT,
        error_message TEXT,
        gate_error TEXT,
        PRIMARY KEY (rollout_id, tenant)
    );
    CREATE INDEX IF NOT EXISTS fleetmig_rollouts_fleet ON fleetmig_rollouts (fleet, status)",
    // 2: checkpoints of batched backfills
    "CREATE TABLE IF NOT EXISTS fleetmig_backfills (
        rollout_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        version BIGINT NOT NULL,
        batches BIGINT NOT NULL,
        rows_changed BIGINT NOT NULL,
        max_batch_ms BIGINT NOT NULL,
        done BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (rollout_id, tenant, version)
    )",
    // 3: per-tenant backups
    "CREATE TABLE IF NOT EXISTS fleetmig_backups (
        rollout_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        path TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (rollout_id, tenant)
    )",
    // 4: preflight results
    "ALTER TABLE fleetmig_tenant_runs ADD COLUMN preflight TEXT",
];

/// Rollout statuses.
pub mod status {
    pub const RUNNING: &str = "running";
    pub const PAUSED: &str = "paused";
    pub const HALTED: &str = "halted";
    pub const COMPLETED: &str = "completed";
    pub const ABORTED: &str = "aborted";
}

/// Per-tenant statuses.
pub mod tenant_status {
    pub const PENDING: &str = "pending";
    pub const RUNNING: &str = "running";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const SKIPPED: &str = "skipped";
    pub const NOT_STARTED: &str = "not_started";
    pub const REVERTED: &str = "reverted";
}

/// Settings frozen with a rollout, so that `resume` runs it as it was planned.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct FrozenSettings {
    pub concurrency: usize,
    pub per_server: usize,
    pub max_attempts: u32,
    pub retry_backoff_ms: u64,
    pub max_failures: Option<usize>,
    pub tx_mode: String,
    pub gate_max_failures: Option<usize>,
    pub gate_max_failure_rate: Option<f64>,
    pub gate_sql: Option<String>,
    pub bake_ms: u64,
    pub pause_after: Option<String>,
    pub revert_on_halt: bool,
    /// Why the target was capped below a held contract migration, if it was.
    #[serde(default)]
    pub held: Option<String>,
    /// The contract versions held back (never applied in this rollout).
    #[serde(default)]
    pub hold_versions: Vec<i64>,
    /// Back tenants up here before their first migration.
    #[serde(default)]
    pub backup_dir: Option<String>,
    /// ANALYZE changed tables after each tenant's migrations.
    #[serde(default)]
    pub analyze: bool,
    /// Preflight thresholds: (max transaction age ms, min free connections).
    #[serde(default)]
    pub preflight: Option<(u64, i64)>,
}

/// One rollout as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutRecord {
    pub id: String,
    pub created_at: i64,
    pub operator: String,
    pub command: String,
    pub fleet: String,
    pub migrations_dir: String,
    pub set_checksum: String,
    pub target: i64,
    pub settings: FrozenSettings,
    pub status: String,
    pub reason: Option<String>,
    pub current_wave: i64,
    pub claimed_by: Option<String>,
    pub heartbeat_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// One wave as stored.
#[derive(Debug, Clone, Serialize)]
pub struct WaveRecord {
    pub wave: i64,
    pub name: String,
    pub selector: String,
    /// pending, running, passed, failed (gate), overridden
    pub status: String,
    pub gate: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// One tenant of one rollout as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TenantRun {
    pub tenant: String,
    pub wave: i64,
    pub status: String,
    pub attempts: i64,
    pub from_version: Option<i64>,
    pub to_version: Option<i64>,
    pub applied: Vec<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: i64,
    pub error_class: Option<String>,
    pub error_kind: Option<String>,
    pub error_code: Option<String>,
    pub error_version: Option<i64>,
    pub error_message: Option<String>,
    pub gate_error: Option<String>,
    /// What the preflight found, when it ran.
    pub preflight: Option<String>,
}

/// The checkpoint of one tenant's batched backfill.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Backfill {
    pub tenant: String,
    pub version: i64,
    pub batches: i64,
    pub rows: i64,
    pub max_batch_ms: i64,
    pub done: bool,
}

/// A change to one tenant's row.
#[derive(Debug, Clone)]
pub enum TenantUpdate {
    Backfill(Backfill),
    Backup {
        tenant: String,
        path: String,
    },
    Preflight {
        tenant: String,
        summary: String,
    },
    Started {
        tenant: String,
        attempts: i64,
        at: i64,
    },
    Finished(Box<TenantRun>),
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn store_err(location: &str, e: impl std::fmt::Display) -> Error {
    Error::State {
        location: location.to_string(),
        message: crate::tenant::scrub_secrets(&e.to_string(), [location]),
    }
}

/// The open store.
#[derive(Clone)]
pub struct StateStore {
    pool: AnyPool,
    /// Where the store is, redacted, for messages.
    pub location: String,
    postgres: bool,
}

fn parse_applied(s: &str) -> Vec<i64> {
    s.split(';').filter_map(|v| v.parse().ok()).collect()
}

fn join_applied(v: &[i64]) -> String {
    v.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(";")
}

fn rollout_from(r: &AnyRow) -> Result<RolloutRecord, sqlx::Error> {
    let settings: String = r.try_get("settings")?;
    Ok(RolloutRecord {
        id: r.try_get("id")?,
        created_at: r.try_get("created_at")?,
        operator: r.try_get("operator")?,
        command: r.try_get("command")?,
        fleet: r.try_get("fleet")?,
        migrations_dir: r.try_get("migrations_dir")?,
        set_checksum: r.try_get("set_checksum")?,
        target: r.try_get("target")?,
        settings: serde_json::from_str(&settings).unwrap_or_default(),
        status: r.try_get("status")?,
        reason: r.try_get("reason")?,
        current_wave: r.try_get("current_wave")?,
        claimed_by: r.try_get("claimed_by")?,
        heartbeat_at: r.try_get("heartbeat_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

fn tenant_from(r: &AnyRow) -> Result<TenantRun, sqlx::Error> {
    let applied: String = r.try_get("applied")?;
    Ok(TenantRun {
        tenant: r.try_get("tenant")?,
        wave: r.try_get("wave")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        from_version: r.try_get("from_version")?,
        to_version: r.try_get("to_version")?,
        applied: parse_applied(&applied),
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        duration_ms: r.try_get("duration_ms")?,
        error_class: r.try_get("error_class")?,
        error_kind: r.try_get("error_kind")?,
        error_code: r.try_get("error_code")?,
        error_version: r.try_get("error_version")?,
        error_message: r.try_get("error_message")?,
        gate_error: r.try_get("gate_error")?,
        preflight: r.try_get("preflight")?,
    })
}

/// Who holds a rollout: `pid@host:nonce`.
pub fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!(
        "{}@{}:{:08x}",
        std::process::id(),
        host,
        rand::random::<u32>()
    )
}

/// Whether the claim `owner` is dead: its heartbeat is older than `lease`, or
/// it was taken on this host by a process that no longer exists.
pub fn claim_is_stale(owner: Option<&str>, heartbeat_at: Option<i64>, lease: Duration) -> bool {
    let Some(owner) = owner else { return true };
    if heartbeat_at.is_none_or(|h| now_ms() - h > lease.as_millis() as i64) {
        return true;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if let Some((pid, rest)) = owner.split_once('@') {
        let claim_host = rest.rsplit_once(':').map(|(h, _)| h).unwrap_or(rest);
        if claim_host == host
            && let Ok(pid) = pid.parse::<u32>()
        {
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
                && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| !s.contains(") Z "))
                    .unwrap_or(false);
            return !alive;
        }
    }
    false
}

impl StateStore {
    /// Opens (creating where needed) the store at `spec`: a file path, or a
    /// `postgres://` URL.
    pub async fn open(spec: &str) -> Result<StateStore, Error> {
        sqlx::any::install_default_drivers();
        let postgres = spec.starts_with("postgres://") || spec.starts_with("postgresql://");
        let (url, location) = if postgres {
            (spec.to_string(), redact_url(spec))
        } else {
            let path = std::path::Path::new(spec.strip_prefix("sqlite://").unwrap_or(spec));
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| store_err(spec, e))?;
            }
            (
                format!("sqlite://{}?mode=rwc", path.display()),
                path.display().to_string(),
            )
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if postgres { 4 } else { 1 })
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .map_err(|e| store_err(&location, e))?;
        let store = StateStore {
            pool,
            location,
            postgres,
        };
        if !postgres {
            // WAL: readers (status, report) never wait for the writer.
            for pragma in [
                "PRAGMA journal_mode = WAL",
                "PRAGMA busy_timeout = 10000",
                "PRAGMA synchronous = NORMAL",
            ] {
                sqlx::query(pragma)
                    .execute(&store.pool)
                    .await
                    .map_err(|e| store_err(&store.location, e))?;
            }
        }
        store.migrate().await?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        store_err(&self.location, e)
    }

    async fn migrate(&self) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        if self.postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7215092861)")
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS fleetmig_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT value FROM fleetmig_meta WHERE key = 'schema_version'")
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        let current: i64 = current.and_then(|v| v.parse().ok()).unwrap_or(0);
        if current > SCHEMA_VERSION {
            return Err(self.err(format!(
                "the state store has schema version {current}, newer than this fleetmig ({SCHEMA_VERSION}): upgrade fleetmig"
            )));
        }
        for (i, ddl) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            for stmt in ddl.split(";\n").filter(|s| !s.trim().is_empty()) {
                sqlx::raw_sql(sqlx::AssertSqlSafe(stmt.to_string()))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        self.err(format!(
                            "migrating the state store to version {}: {e}",
                            i + 1
                        ))
                    })?;
            }
        }
        sqlx::query(
            "INSERT INTO fleetmig_meta (key, value) VALUES ('schema_version', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(SCHEMA_VERSION.to_string())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Creates a rollout with its waves and tenants (all `pending`), claimed by
    /// `owner`, unless another rollout of the same fleet is running: then the
    /// error names it and its operator.
    pub async fn create_rollout(
        &self,
        r: &RolloutRecord,
        waves: &[(String, String, Vec<String>)],
        lease: Duration,
    ) -> Result<(), Error> {
        let mut tx = if self.postgres {
            let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
            sqlx::query("SELECT pg_advisory_xact_lock(7215092862)")
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            tx
        } else {
            self.pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(|e| self.err(e))?
        };
        let running = sqlx::query(
            "SELECT * FROM fleetmig_rollouts WHERE fleet = $1 AND status = 'running' ORDER BY created_at DESC",
        )
        .bind(&r.fleet)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        if let Some(row) = running.first() {
            let other = rollout_from(row).map_err(|e| self.err(e))?;
            let stale = claim_is_stale(other.claimed_by.as_deref(), other.heartbeat_at, lease);
            return Err(Error::Busy(if stale {
                format!(
                    "rollout {} (operator {}) on this fleet was interrupted and never finished: \
                     `fleetmig resume {}` to finish it or `fleetmig abort {}` to give it up",
                    other.id, other.operator, other.id, other.id
                )
            } else {
                format!(
                    "rollout {} (operator {}) is running on this fleet; wait for it, or `fleetmig abort {}`",
                    other.id, other.operator, other.id
                )
            }));
        }
        sqlx::query(
            "INSERT INTO fleetmig_rollouts (id, created_at, operator, command, fleet, migrations_dir, set_checksum, \
             target, settings, status, reason, current_wave, claimed_by, heartbeat_at, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, 0, $11, $12, NULL)",
        )
        .bind(&r.id)
        .bind(r.created_at)
        .bind(&r.operator)
        .bind(&r.command)
        .bind(&r.fleet)
        .bind(&r.migrations_dir)
        .bind(&r.set_checksum)
        .bind(r.target)
        .bind(serde_json::to_string(&r.settings).expect("settings serialise"))
        .bind(&r.status)
        .bind(r.claimed_by.clone())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        for (i, (name, selector, tenants)) in waves.iter().enumerate() {
            sqlx::query(
                "INSERT INTO fleetmig_waves (rollout_id, wave, name, selector, status, gate, started_at, finished_at) \
                 VALUES ($1, $2, $3, $4, 'pending', NULL, NULL, NULL)",
            )
            .bind(&r.id)
            .bind(i as i64)
            .bind(name)
            .bind(selector)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            for t in tenants {
                sqlx::query(
                    "INSERT INTO fleetmig_tenant_runs (rollout_id, tenant, wave, status, attempts, applied, duration_ms) \
                     VALUES ($1, $2, $3, 'pending', 0, '', 0)",
                )
                .bind(&r.id)
                .bind(t)
                .bind(i as i64)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Takes over a rollout for `owner` if nobody alive holds it. Returns the
    /// holder's description when it is held.
    pub async fn claim(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Result<(), String>, Error> {
        let Some(r) = self.rollout(id).await? else {
            return Err(Error::Usage(format!(
                "no rollout {id} in the state store {}",
                self.location
            )));
        };
        if r.claimed_by.as_deref() != Some(owner)
            && !claim_is_stale(r.claimed_by.as_deref(), r.heartbeat_at, lease)
        {
            return Ok(Err(format!(
                "rollout {id} is being run by {} (operator {}), last heartbeat {} ms ago",
                r.claimed_by.unwrap_or_default(),
                r.operator,
                now_ms() - r.heartbeat_at.unwrap_or(0)
            )));
        }
        // compare-and-set on the claim we saw, so two resumers cannot both win
        let res = sqlx::query(
            "UPDATE fleetmig_rollouts SET claimed_by = $1, heartbeat_at = $2 \
             WHERE id = $3 AND COALESCE(claimed_by, '') = $4",
        )
        .bind(owner)
        .bind(now_ms())
        .bind(id)
        .bind(r.claimed_by.clone().unwrap_or_default())
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        if res.rows_affected() == 1 {
            Ok(Ok(()))
        } else {
            Ok(Err(format!(
                "rollout {id} was claimed by another process just now"
            )))
        }
    }

    pub async fn heartbeat(&self, id: &str, owner: &str) -> Result<(), Error> {
        sqlx::query(
            "UPDATE fleetmig_rollouts SET heartbeat_at = $1 WHERE id = $2 AND claimed_by = $3",
        )
        .bind(now_ms())
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Sets the rollout's status (and reason), releasing the claim unless it
    /// is still running.
    pub async fn set_status(
        &self,
        id: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Result<(), Error> {
        let done = matches!(status, status::COMPLETED | status::ABORTED);
        let release = status != status::RUNNING;
        sqlx::query(
            "UPDATE fleetmig_rollouts SET status = $1, reason = $2, \
             finished_at = CASE WHEN $3 = 1 THEN $4 ELSE finished_at END, \
             claimed_by = CASE WHEN $5 = 1 THEN NULL ELSE claimed_by END WHERE id = $6",
        )
        .bind(status)
        .bind(reason.map(str::to_string))
        .bind(done as i64)
        .bind(now_ms())
        .bind(release as i64)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub async fn set_current_wave(&self, id: &str, wave: i64) -> Result<(), Error> {
        sqlx::query("UPDATE fleetmig_rollouts SET current_wave = $1 WHERE id = $2")
            .bind(wave)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub async fn set_wave(
        &self,
        id: &str,
        wave: i64,
        status: &str,
        gate: Option<&str>,
        start: bool,
        finish: bool,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE fleetmig_waves SET status = $1, gate = COALESCE($2, gate), \
             started_at = CASE WHEN $3 = 1 AND started_at IS NULL THEN $4 ELSE started_at END, \
             finished_at = CASE WHEN $5 = 1 THEN $6 ELSE finished_at END \
             WHERE rollout_id = $7 AND wave = $8",
        )
        .bind(status)
        .bind(gate.map(str::to_string))
        .bind(start as i64)
        .bind(now_ms())
        .bind(finish as i64)
        .bind(now_ms())
        .bind(id)
        .bind(wave)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub async fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>, Error> {
        let row = sqlx::query("SELECT * FROM fleetmig_rollouts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        row.map(|r| rollout_from(&r).map_err(|e| self.err(e)))
            .transpose()
    }

    /// Rollouts, newest first.
    pub async fn rollouts(&self, limit: i64) -> Result<Vec<RolloutRecord>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM fleetmig_rollouts ORDER BY created_at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| rollout_from(r).map_err(|e| self.err(e)))
            .collect()
    }

    pub async fn waves(&self, id: &str) -> Result<Vec<WaveRecord>, Error> {
        let rows = sqlx::query("SELECT * FROM fleetmig_waves WHERE rollout_id = $1 ORDER BY wave")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(WaveRecord {
                    wave: r.try_get("wave")?,
                    name: r.try_get("name")?,
                    selector: r.try_get("selector")?,
                    status: r.try_get("status")?,
                    gate: r.try_get("gate")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    pub async fn tenant_runs(&self, id: &str) -> Result<Vec<TenantRun>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM fleetmig_tenant_runs WHERE rollout_id = $1 ORDER BY wave, tenant",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| tenant_from(r).map_err(|e| self.err(e)))
            .collect()
    }

    /// Applies a batch of tenant updates in one transaction.
    pub async fn record(&self, id: &str, updates: &[TenantUpdate]) -> Result<(), Error> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for u in updates {
            match u {
                TenantUpdate::Started {
                    tenant,
                    attempts,
                    at,
                } => {
                    sqlx::query(
                        "UPDATE fleetmig_tenant_runs SET status = 'running', attempts = $1, \
                         started_at = COALESCE(started_at, $2) WHERE rollout_id = $3 AND tenant = $4",
                    )
                    .bind(*attempts)
                    .bind(*at)
                    .bind(id)
                    .bind(tenant)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
                }
                TenantUpdate::Preflight { tenant, summary } => {
                    sqlx::query("UPDATE fleetmig_tenant_runs SET preflight = $1 WHERE rollout_id = $2 AND tenant = $3")
                        .bind(summary)
                        .bind(id)
                        .bind(tenant)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.err(e))?;
                }
                TenantUpdate::Backup { tenant, path } => {
                    sqlx::query(
                        "INSERT INTO fleetmig_backups (rollout_id, tenant, path, created_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (rollout_id, tenant) DO NOTHING",
                    )
                    .bind(id)
                    .bind(tenant)
                    .bind(path)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
                }
                TenantUpdate::Backfill(b) => {
                    sqlx::query(
                        "INSERT INTO fleetmig_backfills (rollout_id, tenant, version, batches, rows_changed, max_batch_ms, done, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (rollout_id, tenant, version) DO UPDATE SET \
                         batches = excluded.batches, rows_changed = excluded.rows_changed, max_batch_ms = excluded.max_batch_ms, \
                         done = excluded.done, updated_at = excluded.updated_at",
                    )
                    .bind(id)
                    .bind(&b.tenant)
                    .bind(b.version)
                    .bind(b.batches)
                    .bind(b.rows)
                    .bind(b.max_batch_ms)
                    .bind(b.done as i64)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
                }
                TenantUpdate::Finished(t) => {
                    sqlx::query(
                        "UPDATE fleetmig_tenant_runs SET status = $1, attempts = $2, \
                         from_version = COALESCE(from_version, $3), to_version = COALESCE($4, to_version), \
                         applied = $5, started_at = COALESCE(started_at, $6), finished_at = $7, duration_ms = $8, \
                         error_class = $9, error_kind = $10, error_code = $11, error_version = $12, \
                         error_message = $13, gate_error = NULL WHERE rollout_id = $14 AND tenant = $15",
                    )
                    .bind(&t.status)
                    .bind(t.attempts)
                    .bind(t.from_version)
                    .bind(t.to_version)
                    .bind(join_applied(&t.applied))
                    .bind(t.started_at)
                    .bind(t.finished_at)
                    .bind(t.duration_ms)
                    .bind(t.error_class.clone())
                    .bind(t.error_kind.clone())
                    .bind(t.error_code.clone())
                    .bind(t.error_version)
                    .bind(t.error_message.clone())
                    .bind(id)
                    .bind(&t.tenant)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
                }
            }
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Sets tenants' status (e.g. `skipped` on abort, `reverted`).
    pub async fn set_tenant_status(
        &self,
        id: &str,
        tenants: &[String],
        status: &str,
        note: Option<&str>,
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for t in tenants {
            sqlx::query(
                "UPDATE fleetmig_tenant_runs SET status = $1, error_message = COALESCE($2, error_message) \
                 WHERE rollout_id = $3 AND tenant = $4",
            )
            .bind(status)
            .bind(note.map(str::to_string))
            .bind(id)
            .bind(t)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Records gate failures on tenants (tenant → why).
    pub async fn set_gate_errors(
        &self,
        id: &str,
        errors: &HashMap<String, String>,
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for (t, why) in errors {
            sqlx::query("UPDATE fleetmig_tenant_runs SET gate_error = $1 WHERE rollout_id = $2 AND tenant = $3")
                .bind(why)
                .bind(id)
                .bind(t)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// The newest backup of `tenant` (of rollout `id` when given): (rollout, path).
    pub async fn backup(
        &self,
        tenant: &str,
        id: Option<&str>,
    ) -> Result<Option<(String, String)>, Error> {
        let row = sqlx::query(
            "SELECT rollout_id, path FROM fleetmig_backups WHERE tenant = $1 AND ($2 = '' OR rollout_id = $3) \
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(id.unwrap_or(""))
        .bind(id.unwrap_or(""))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        row.map(|r| Ok((r.try_get("rollout_id")?, r.try_get("path")?)))
            .transpose()
            .map_err(|e: sqlx::Error| self.err(e))
    }

    /// Backfill checkpoints of a rollout.
    pub async fn backfills(&self, id: &str) -> Result<Vec<Backfill>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM fleetmig_backfills WHERE rollout_id = $1 ORDER BY tenant, version",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(Backfill {
                    tenant: r.try_get("tenant")?,
                    version: r.try_get("version")?,
                    batches: r.try_get("batches")?,
                    rows: r.try_get("rows_changed")?,
                    max_batch_ms: r.try_get("max_batch_ms")?,
                    done: r.try_get::<i64, _>("done")? != 0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_expire_by_lease_or_by_a_dead_local_process() {
        let lease = Duration::from_secs(30);
        assert!(claim_is_stale(None, None, lease));
        let me = owner_id();
        assert!(
            !claim_is_stale(Some(&me), Some(now_ms()), lease),
            "a live claim"
        );
        assert!(
            claim_is_stale(Some(&me), Some(now_ms() - 31_000), lease),
            "heartbeat too old"
        );
        let host = me
            .split_once('@')
            .unwrap()
            .1
            .rsplit_once(':')
            .unwrap()
            .0
            .to_string();
        let dead = format!("{}@{host}:00000000", u32::MAX - 7);
        assert!(
            claim_is_stale(Some(&dead), Some(now_ms()), lease),
            "a dead local pid"
        );
        let remote = "1@some-other-host:00000000";
        assert!(
            !claim_is_stale(Some(remote), Some(now_ms()), lease),
            "a remote claim lives by its lease"
        );
    }

    #[tokio::test]
    async fn schema_is_versioned_and_a_newer_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/state.db");
        let store = StateStore::open(path.to_str().unwrap()).await.unwrap();
        let v: String =
            sqlx::query_scalar("SELECT value FROM fleetmig_meta WHERE key = 'schema_version'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(v, SCHEMA_VERSION.to_string());
        sqlx::query("UPDATE fleetmig_meta SET value = '99' WHERE key = 'schema_version'")
            .execute(&store.pool)
            .await
            .unwrap();
        store.close().await;
        let e = StateStore::open(path.to_str().unwrap())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("newer than this fleetmig"), "{e}");
    }
}
