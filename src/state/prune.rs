//! Keeping the store small: `prune` removes the per-tenant rows of old
//! finished rollouts (their tenant runs, backfill batches, server slots)
//! and keeps each rollout's row, waves, gates and backups, with a summary
//! of what its tenants did written into the row first (`Pruned`). A
//! rollout that is running, paused or halted is never pruned: it may still
//! be resumed, retried or have its gate overridden.

use serde::{Deserialize, Serialize};

use super::status::{RolloutStatus, RunStatus};
use super::{StateStore, now_ms};
use crate::error::{About, Error};
pub use crate::options::Keep;

/// What a pruned rollout's tenants did, kept in its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    /// When its tenant rows were removed (ms since the epoch).
    pub at: i64,
    pub tenants: usize,
    pub succeeded: usize,
    pub failed: usize,
}

/// What one `prune` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneOutcome {
    pub rollouts: usize,
    /// Tenant runs removed.
    pub tenant_rows: u64,
}

impl super::RolloutRecord {
    /// Refuses a pruned rollout for what needs its tenants' rows (a
    /// report, a retry, its tenants listed), saying what is left of it.
    pub fn unpruned(&self) -> Result<(), Error> {
        let Some(p) = self.pruned else {
            return Ok(());
        };
        let at = chrono::DateTime::from_timestamp_millis(p.at)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        Err(Error::usage(
            About::Rollout(self.id.clone()),
            format!(
                "its tenants' rows were pruned on {at} (fleetmig prune); what is left: {} \
                 tenants, {} succeeded, {} failed, {} (fleetmig history)",
                p.tenants, p.succeeded, p.failed, self.status
            ),
        ))
    }
}

impl StateStore {
    /// Prunes the finished rollouts `keep` does not keep (see the module).
    /// Safe beside running workers: a rollout is pruned only while its row
    /// says it is finished and not yet pruned, in one transaction with the
    /// removal of its rows.
    /// `quiet`: how long the rollout and each of its tenants must have been
    /// still (the lease: a live process writes within it).
    pub async fn prune(
        &self,
        keep: Keep,
        quiet: std::time::Duration,
    ) -> Result<PruneOutcome, Error> {
        let mut out = PruneOutcome::default();
        for id in self.prunable(keep).await? {
            if let Some(rows) = self.prune_one(&id, quiet).await? {
                out.rollouts += 1;
                out.tenant_rows += rows;
            }
        }
        if out.rollouts > 0 && !self.postgres {
            // a SQLite file gives the pages back only when rewritten
            sqlx::query("VACUUM")
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(out)
    }

    /// The finished, unpruned rollouts `keep` leaves out, oldest first
    /// (`prune_one` checks each again in its transaction).
    async fn prunable(&self, keep: Keep) -> Result<Vec<String>, Error> {
        let before = self.kept_from(keep).await?;
        sqlx::query_scalar(
            "SELECT id FROM fleetmig_rollouts WHERE pruned IS NULL AND status IN ($1, $2) \
             AND created_at < $3 ORDER BY created_at, id",
        )
        .bind(RolloutStatus::Completed.as_str())
        .bind(RolloutStatus::Aborted.as_str())
        .bind(before)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))
    }

    /// From which creation time on `keep` keeps rollouts: those created
    /// before it are pruned (when finished).
    async fn kept_from(&self, keep: Keep) -> Result<i64, Error> {
        match keep {
            Keep::Age(d) => {
                let age = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                Ok(now_ms().saturating_sub(age))
            }
            Keep::Newest(0) => Ok(i64::MAX),
            Keep::Newest(n) => {
                // the n-th newest rollout, pruned or not, is the last kept
                let kept: Option<i64> = sqlx::query_scalar(
                    "SELECT created_at FROM fleetmig_rollouts \
                     ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET $1",
                )
                .bind(i64::try_from(n - 1).unwrap_or(i64::MAX))
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
                Ok(kept.unwrap_or(i64::MIN))
            }
        }
    }

    /// Prunes rollout `id` if it is still finished and unpruned: its
    /// summary written, its tenant rows removed, in one transaction. The
    /// tenant runs removed (`None`: another process got there first, or
    /// it was taken up again).
    async fn prune_one(&self, id: &str, quiet: std::time::Duration) -> Result<Option<u64>, Error> {
        let mut tx = self.write_tx().await?;
        // one prune or status change of this rollout at a time
        self.lock_rollout(&mut tx, id).await?;
        let (tenants, succeeded, failed): (i64, i64, i64) = sqlx::query_as(super::runs::RUN_COUNTS)
            .bind(id)
            .bind(RunStatus::Succeeded.as_str())
            .bind(RunStatus::Failed.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let summary = Pruned {
            at: now_ms(),
            tenants: tenants as usize,
            succeeded: succeeded as usize,
            failed: failed as usize,
        };
        let summary = serde_json::to_string(&summary).map_err(|e| self.err(e))?;
        // not while anything may still write it: a retry (which leaves a
        // finished rollout's status as it is) has a tenant running or just
        // finished, and the process that ended it writes its report after
        let quiet_since = now_ms() - quiet.as_millis() as i64;
        let marked = sqlx::query(
            "UPDATE fleetmig_rollouts SET pruned = $2 \
             WHERE id = $1 AND pruned IS NULL AND status IN ($3, $4) \
             AND COALESCE(finished_at, 0) < $5 \
             AND NOT EXISTS (SELECT 1 FROM fleetmig_tenant_runs t WHERE t.rollout_id = $1 \
                 AND (t.status = $6 OR COALESCE(t.finished_at, 0) >= $5 \
                      OR COALESCE(t.started_at, 0) >= $5))",
        )
        .bind(id)
        .bind(&summary)
        .bind(RolloutStatus::Completed.as_str())
        .bind(RolloutStatus::Aborted.as_str())
        .bind(quiet_since)
        .bind(RunStatus::Running.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        if marked.rows_affected() != 1 {
            return Ok(None);
        }
        let removed = self.remove_rows(&mut tx, id).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        tracing::info!(rollout = %id, tenant_rows = removed, "pruned");
        Ok(Some(removed))
    }

    /// Removes the per-tenant rows of rollout `id` (its runs, folds,
    /// backfill batches and server slots, and the lists no fold names any
    /// more); how many tenants' runs went, the folded ones included.
    async fn remove_rows(&self, tx: &mut sqlx::AnyConnection, id: &str) -> Result<u64, Error> {
        let folded: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(sum(tenants) AS BIGINT) FROM fleetmig_folds WHERE rollout_id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        let mut removed = folded.unwrap_or(0) as u64;
        for table in [
            "fleetmig_tenant_runs",
            "fleetmig_folds",
            "fleetmig_backfills",
            "fleetmig_slots",
        ] {
            let sql = format!("DELETE FROM {table} WHERE rollout_id = $1");
            let r = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
            if table == "fleetmig_tenant_runs" {
                removed += r.rows_affected();
            }
        }
        if folded.is_some() {
            self.lock_lists(&mut *tx).await?;
            self.drop_orphan_lists(&mut *tx).await?;
        }
        Ok(removed)
    }
}
