//! Rollouts, their waves and their claim in the state store: creating one
//! (refused while another rollout of the fleet runs), taking it over from a
//! dead holder, the heartbeat, status and wave transitions, and reading them.

use std::time::Duration;

use super::records::{rollout_from, wave_from};
use super::{
    REFUSED_WAVE, Request, RolloutRecord, RolloutStatus, RunStatus, StateStore, WaveRecord,
    WaveStatus, claim_is_stale, now_ms,
};
use crate::error::Error;

/// Rows per multi-row INSERT: sqlx binds a SQLite parameter by looking its
/// name up among all of them (quadratic in the parameters of a statement),
/// so a few hundred is the sweet spot.
const INSERT_ROWS: usize = 200;

/// A rollout of more tenants than this refreshes the PostgreSQL planner's
/// statistics of the tenant rows once they are in.
const ANALYZE_AFTER: usize = 1000;

impl StateStore {
    /// The newest `sync` of `fleet` (as recorded) that is still running but
    /// whose process is gone: its claim stale (no heartbeat within the
    /// lease, or its pid gone on this host) and no live worker on it.
    pub async fn interrupted_sync(
        &self,
        fleet: &str,
        lease: Duration,
    ) -> Result<Option<RolloutRecord>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM fleetmig_rollouts WHERE fleet = $1 AND status = $2 AND command = 'sync' \
             ORDER BY created_at DESC",
        )
        .bind(fleet)
        .bind(RolloutStatus::Running.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let r = rollout_from(row).map_err(|e| self.err(e))?;
        let stale = claim_is_stale(r.claimed_by.as_deref(), r.heartbeat_at, lease);
        if !stale || (self.postgres && self.alive(&r.id, None, lease).await? > 0) {
            return Ok(None);
        }
        Ok(Some(r))
    }

    /// Creates a rollout with its waves and tenants (all `pending`), claimed by
    /// `owner`, unless another rollout of the same fleet is running: then the
    /// error names it and its operator. `refused` are the names discovery
    /// would not touch, (name, why): recorded failed (`invalid_tenant`) in no
    /// wave.
    pub async fn create_rollout(
        &self,
        r: &RolloutRecord,
        waves: &[(String, String, Vec<String>)],
        refused: &[(String, String)],
        folded: Vec<super::Folded>,
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
        self.refuse_running(&mut tx, &r.fleet, lease).await?;
        sqlx::query(
            "INSERT INTO fleetmig_rollouts (id, created_at, operator, command, fleet, migrations_dir, set_checksum, \
             target, settings, status, reason, current_wave, claimed_by, heartbeat_at, finished_at, reports_dir) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, 0, $11, $12, NULL, $13)",
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
        .bind(r.status.as_str())
        .bind(r.claimed_by.clone())
        .bind(now_ms())
        .bind(r.reports_dir.clone())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        self.insert_waves(&mut tx, r, waves).await?;
        self.insert_refused(&mut tx, r, refused).await?;
        self.put_folds(&mut tx, &r.id, folded).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        let tenants_added: usize = waves.iter().map(|w| w.2.len()).sum();
        if self.postgres && tenants_added > ANALYZE_AFTER {
            // the planner's statistics of a table that just grew by many
            // rows are stale until autovacuum comes by: the one-row-per-key
            // updates of the rollout would be planned as scans of it
            sqlx::query("ANALYZE fleetmig_tenant_runs")
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// `refuse_running` before a rollout of `fleet` is planned, outside
    /// the transaction that records it (which asks again): a rollout
    /// refused is refused before its tenants are read.
    pub async fn refuse_running_on(&self, fleet: &str, lease: Duration) -> Result<(), Error> {
        let mut c = self.pool.acquire().await.map_err(|e| self.err(e))?;
        self.refuse_running(&mut c, fleet, lease).await
    }

    /// A rollout already running on `fleet` refuses a new one.
    async fn refuse_running(
        &self,
        c: &mut sqlx::AnyConnection,
        fleet: &str,
        lease: Duration,
    ) -> Result<(), Error> {
        let running = sqlx::query(
            "SELECT * FROM fleetmig_rollouts WHERE fleet = $1 AND status = $2 ORDER BY created_at DESC",
        )
        .bind(fleet)
        .bind(RolloutStatus::Running.as_str())
        .fetch_all(&mut *c)
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
        Ok(())
    }

    /// The waves of rollout `r`, and one pending run row per tenant.
    async fn insert_waves(
        &self,
        c: &mut sqlx::AnyConnection,
        r: &RolloutRecord,
        waves: &[(String, String, Vec<String>)],
    ) -> Result<(), Error> {
        for (i, (name, selector, tenants)) in waves.iter().enumerate() {
            sqlx::query(
                "INSERT INTO fleetmig_waves (rollout_id, wave, name, selector, status, gate, started_at, finished_at) \
                 VALUES ($1, $2, $3, $4, $5, NULL, NULL, NULL)",
            )
            .bind(&r.id)
            .bind(i as i64)
            .bind(name)
            .bind(selector)
            .bind(WaveStatus::Pending.as_str())
            .execute(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
            // many rows per statement: 100,000 tenants are 200 statements
            for chunk in tenants.chunks(INSERT_ROWS) {
                let values: Vec<String> = (0..chunk.len())
                    .map(|k| format!("($1, ${}, $2, $3, 0, '', 0)", k + 4))
                    .collect();
                let sql = format!(
                    "INSERT INTO fleetmig_tenant_runs (rollout_id, tenant, wave, status, attempts, applied, duration_ms) \
                     VALUES {}",
                    values.join(", ")
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&r.id)
                    .bind(i as i64)
                    .bind(RunStatus::Pending.as_str());
                for t in chunk {
                    q = q.bind(t);
                }
                q.execute(&mut *c).await.map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    /// A failed run row for each name discovery refused (never touched).
    async fn insert_refused(
        &self,
        c: &mut sqlx::AnyConnection,
        r: &RolloutRecord,
        refused: &[(String, String)],
    ) -> Result<(), Error> {
        for (name, why) in refused {
            sqlx::query(
                "INSERT INTO fleetmig_tenant_runs (rollout_id, tenant, wave, status, attempts, applied, \
                 duration_ms, finished_at, error_class, error_kind, error_message) \
                 VALUES ($1, $2, $3, $4, 0, '', 0, $5, $7, $8, $6) \
                 ON CONFLICT (rollout_id, tenant) DO NOTHING",
            )
            .bind(&r.id)
            .bind(name)
            .bind(REFUSED_WAVE)
            .bind(RunStatus::Failed.as_str())
            .bind(now_ms())
            .bind(format!("refused by discovery, never touched: {why}"))
            .bind(crate::error::ErrorClass::Permanent.as_str())
            .bind(crate::error::FailureKind::InvalidTenant.as_str())
            .execute(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Takes over a rollout for `owner` if nobody alive holds it. Returns the
    /// holder's description when it is held.
    pub async fn claim(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Result<(), String>, Error> {
        let r = self.get_rollout(id).await?;
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

    /// Extends `owner`'s claim on rollout `id`; how it stands (an
    /// operator's pending request to it, if any).
    pub async fn heartbeat(&self, id: &str, owner: &str) -> Result<super::Seen, Error> {
        sqlx::query(
            "UPDATE fleetmig_rollouts SET heartbeat_at = $1 WHERE id = $2 AND claimed_by = $3",
        )
        .bind(now_ms())
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let r = self.get_rollout(id).await?;
        Ok(super::Seen {
            status: r.status,
            requested: r.requested,
        })
    }

    /// Leaves `request` for the process running rollout `id` (or clears it).
    pub async fn set_request(&self, id: &str, request: Option<Request>) -> Result<(), Error> {
        sqlx::query("UPDATE fleetmig_rollouts SET requested = $1 WHERE id = $2")
            .bind(request.map(|r| r.as_str()))
            .bind(id)
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
        status: RolloutStatus,
        reason: Option<&str>,
    ) -> Result<(), Error> {
        let release = status != RolloutStatus::Running;
        sqlx::query(
            "UPDATE fleetmig_rollouts SET status = $1, reason = $2, \
             finished_at = CASE WHEN $3 = 1 THEN $4 ELSE finished_at END, \
             claimed_by = CASE WHEN $5 = 1 THEN NULL ELSE claimed_by END WHERE id = $6",
        )
        .bind(status.as_str())
        .bind(reason.map(str::to_string))
        .bind(status.is_finished() as i64)
        .bind(now_ms())
        .bind(release as i64)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Rollout `id`, or a usage error saying the store has no such rollout.
    pub async fn get_rollout(&self, id: &str) -> Result<RolloutRecord, Error> {
        self.rollout(id).await?.ok_or_else(|| {
            let m = format!("no such rollout in the state store {}", self.location);
            Error::usage(crate::error::About::Rollout(id.into()), m)
        })
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
            .map(|r| wave_from(r).map_err(|e| self.err(format!("rollout {id}: {e}"))))
            .collect()
    }
}
