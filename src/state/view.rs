//! What `fleetmig serve` reads beyond a rollout's report: a page of its
//! tenants, filtered and taken by key (fast at 100,000 tenants: the primary
//! key's order, a LIMIT); one tenant across rollouts; the gates as
//! evaluated; and the operators' actions (the one table serve writes
//! besides what the CLI writes: who asked what, when).

use sqlx::Row;

use super::records::tenant_from;
use super::{RunStatus, StateStore, TenantRun, now_ms};
use crate::error::Error;

/// Which tenants of a rollout a page shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantFilter {
    pub status: Option<RunStatus>,
    pub wave: Option<i64>,
    /// A failure kind word (`lock_timeout`), as stored.
    pub kind: Option<String>,
    /// Tenant ids that start with this.
    pub prefix: Option<String>,
}

/// The `WHERE` of a filtered page: `$1` the rollout, `$2`..`$5` the filter
/// (NULL: any).
const FILTERED: &str = "rollout_id = $1 AND ($2 IS NULL OR status = $2) \
     AND ($3 IS NULL OR wave = $3) AND ($4 IS NULL OR error_kind = $4) \
     AND ($5 IS NULL OR substr(tenant, 1, length($5)) = $5)";

/// One evaluation of a wave's gate, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct GateRecord {
    pub wave: i64,
    pub worker: String,
    pub status: String,
    pub evaluated_at: i64,
}

/// An operator's action on a rollout (from `fleetmig serve` or the CLI).
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub rollout_id: String,
    pub at: i64,
    pub operator: String,
    /// `pause`, `resume`, `abort`, `retry`.
    pub action: String,
    /// What it was about (the tenants retried), or empty.
    pub detail: String,
}

impl StateStore {
    /// The first `limit` tenants of rollout `id` after `after` (by id) that
    /// `f` lets through.
    pub async fn tenant_page(
        &self,
        id: &str,
        f: &TenantFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TenantRun>, Error> {
        let table = self.tenants_of(id).await?;
        let sql = format!(
            "SELECT * FROM {table} WHERE {FILTERED} \
             AND ($6 IS NULL OR tenant > $6) ORDER BY tenant LIMIT $7"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(f.status.map(|s| s.as_str()))
            .bind(f.wave)
            .bind(f.kind.as_deref())
            .bind(f.prefix.as_deref())
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| tenant_from(r).map_err(|e| self.err(format!("rollout {id}: {e}"))))
            .collect()
    }

    /// How many tenants of rollout `id` `f` lets through.
    pub async fn tenant_count(&self, id: &str, f: &TenantFilter) -> Result<usize, Error> {
        let table = self.tenants_of(id).await?;
        let sql = format!("SELECT count(*) FROM {table} WHERE {FILTERED}");
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(f.status.map(|s| s.as_str()))
            .bind(f.wave)
            .bind(f.kind.as_deref())
            .bind(f.prefix.as_deref())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(n as usize)
    }

    /// Tenant `tenant` in rollout `id`, if it is one of its tenants.
    pub async fn tenant_run(&self, id: &str, tenant: &str) -> Result<Option<TenantRun>, Error> {
        let row =
            sqlx::query("SELECT * FROM fleetmig_tenants WHERE rollout_id = $1 AND tenant = $2")
                .bind(id)
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        row.map(|r| tenant_from(&r).map_err(|e| self.err(format!("rollout {id}: {e}"))))
            .transpose()
    }

    /// The rollouts (newest first, at most `limit`) that name tenant `tenant`.
    /// A folded tenant is found in its list as the JSON string it is
    /// written as, after the `[` or `,` that starts an element (a quote
    /// inside an id is escaped, so nothing else matches).
    pub async fn rollouts_of(&self, tenant: &str, limit: usize) -> Result<Vec<String>, Error> {
        let find = if self.postgres { "strpos" } else { "instr" };
        let sql = format!(
            "SELECT id FROM (SELECT r.id, r.created_at FROM fleetmig_rollouts r \
             JOIN fleetmig_tenant_runs t ON t.rollout_id = r.id WHERE t.tenant = $1 \
             UNION SELECT r.id, r.created_at FROM fleetmig_rollouts r \
             JOIN fleetmig_folds f ON f.rollout_id = r.id JOIN fleetmig_id_lists l ON l.key = f.list \
             WHERE {find}(l.ids, $3) > 0 OR {find}(l.ids, $4) > 0) x \
             ORDER BY created_at DESC LIMIT $2"
        );
        let quoted = serde_json::to_string(tenant).map_err(|e| self.err(e))?;
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(limit as i64)
            .bind(format!("[{quoted}"))
            .bind(format!(",{quoted}"))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))
    }

    /// The gates of rollout `id` as evaluated, by wave.
    pub async fn gates(&self, id: &str) -> Result<Vec<GateRecord>, Error> {
        let rows = sqlx::query(
            "SELECT wave, worker, status, evaluated_at FROM fleetmig_gates \
             WHERE rollout_id = $1 ORDER BY wave",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(GateRecord {
                    wave: r.try_get("wave")?,
                    worker: r.try_get("worker")?,
                    status: r.try_get("status")?,
                    evaluated_at: r.try_get("evaluated_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    /// Records that `operator` asked for `action` on rollout `id`.
    pub async fn record_action(
        &self,
        id: &str,
        operator: &str,
        action: &str,
        detail: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO fleetmig_actions (rollout_id, at, operator, action, detail) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(now_ms())
        .bind(operator)
        .bind(action)
        .bind(detail)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The actions asked on rollout `id`, oldest first.
    pub async fn actions(&self, id: &str) -> Result<Vec<Action>, Error> {
        let rows = sqlx::query(
            "SELECT rollout_id, at, operator, action, detail FROM fleetmig_actions \
             WHERE rollout_id = $1 ORDER BY at",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(Action {
                    rollout_id: r.try_get("rollout_id")?,
                    at: r.try_get("at")?,
                    operator: r.try_get("operator")?,
                    action: r.try_get("action")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    /// A marker that changes whenever rollout `id` changes in the store:
    /// its status and wave, its tenants' rows and their last change, its
    /// workers' heartbeats. Live pages send an update when it changes.
    pub async fn change_marker(&self, id: &str) -> Result<String, Error> {
        // one pass over the rollout's tenant rows
        let row = sqlx::query(
            "SELECT r.status, r.current_wave, COALESCE(r.requested, ''), \
             t.n, t.attempts, t.last, t.started, \
             (SELECT COALESCE(max(w.heartbeat_at), 0) / 1000 FROM fleetmig_workers w \
              WHERE w.rollout_id = r.id) \
             FROM fleetmig_rollouts r, (SELECT count(*) AS n, \
               CAST(COALESCE(sum(attempts), 0) AS BIGINT) AS attempts, \
               COALESCE(max(finished_at), 0) AS last, COALESCE(max(started_at), 0) AS started \
               FROM fleetmig_tenant_runs WHERE rollout_id = $1) t \
             WHERE r.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let Some(row) = row else {
            return Ok(String::new());
        };
        let text = |i: usize| row.try_get::<String, _>(i).unwrap_or_default();
        let num = |i: usize| row.try_get::<i64, _>(i).unwrap_or_default();
        Ok(format!(
            "{} {} {} {} {} {} {} {}",
            text(0),
            num(1),
            text(2),
            num(3),
            num(4),
            num(5),
            num(6),
            num(7)
        ))
    }
}

/// What `requeue` runs again.
#[derive(Debug, Clone, PartialEq)]
pub enum Requeue<'a> {
    /// Every failed tenant of the rollout.
    Failed,
    /// One tenant (whatever its outcome, unless it is running).
    Tenant(&'a str),
}

impl StateStore {
    /// Tenants of rollout `id` are to run again, by the workers that join
    /// it (`fleetmig serve`'s retry: serve reaches no tenant itself). In
    /// one transaction: their rows pending and unclaimed (attempts kept, a
    /// further run adds to them), the waves that hold them running again
    /// with their gates to evaluate again, the rollout running from the
    /// first of those waves. Only a rollout nobody runs (completed, halted,
    /// paused) is requeued: a running one has workers mid-wave. Returns how
    /// many tenants; 0 changes nothing.
    pub async fn requeue(&self, id: &str, which: Requeue<'_>) -> Result<usize, Error> {
        use super::RolloutStatus;
        let mut tx = self.write_tx().await?;
        let status = self.lock_rollout(&mut tx, id).await?;
        let runnable = [
            RolloutStatus::Completed,
            RolloutStatus::Halted,
            RolloutStatus::Paused,
        ];
        if !status.is_some_and(|s| runnable.contains(&s)) {
            return Ok(0);
        }
        if let Requeue::Tenant(t) = which {
            // a folded tenant gets its row back first
            self.unfold_in(&mut tx, id, &[t.to_string()], None).await?;
        }
        let (sql, key) = match which {
            Requeue::Failed => (
                "UPDATE fleetmig_tenant_runs SET status = $1, claimed_by = NULL \
                 WHERE rollout_id = $2 AND status = $3",
                RunStatus::Failed.as_str(),
            ),
            Requeue::Tenant(t) => (
                "UPDATE fleetmig_tenant_runs SET status = $1, claimed_by = NULL \
                 WHERE rollout_id = $2 AND tenant = $3 AND status <> 'running'",
                t,
            ),
        };
        let n = sqlx::query(sql)
            .bind(RunStatus::Pending.as_str())
            .bind(id)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?
            .rows_affected() as usize;
        if n == 0 {
            return Ok(0);
        }
        self.reopen_pending_waves(&mut tx, id).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(n)
    }

    /// The waves of rollout `id` that hold pending tenants running again,
    /// their gates to evaluate again, and the rollout running from the
    /// first of them (`requeue`'s last step, in its transaction).
    async fn reopen_pending_waves(
        &self,
        tx: &mut sqlx::AnyConnection,
        id: &str,
    ) -> Result<(), Error> {
        use super::{RolloutStatus, WaveStatus};
        let waves: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT wave FROM fleetmig_tenant_runs WHERE rollout_id = $1 AND status = $2 \
             ORDER BY wave",
        )
        .bind(id)
        .bind(RunStatus::Pending.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        // every wave that had begun (a pending one opens on its own)
        let begun: Vec<WaveStatus> = WaveStatus::ALL
            .iter()
            .copied()
            .filter(|s| *s != WaveStatus::Pending)
            .collect();
        for &wave in &waves {
            self.run_wave_again(tx, id, wave, &begun).await?;
        }
        let first = waves.first().copied().unwrap_or(0);
        sqlx::query(
            "UPDATE fleetmig_rollouts SET status = $1, reason = NULL, finished_at = NULL, \
             requested = NULL, claimed_by = NULL, \
             current_wave = CASE WHEN current_wave > $2 THEN $2 ELSE current_wave END \
             WHERE id = $3",
        )
        .bind(RolloutStatus::Running.as_str())
        .bind(first)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A paused or halted rollout `id` runs again, for the workers that
    /// join it (`fleetmig serve`'s resume; `fleetmig resume` runs it in its
    /// own process): a halted wave's gate is evaluated again. False when it
    /// was neither.
    pub async fn reopen(&self, id: &str) -> Result<bool, Error> {
        use super::RolloutStatus;
        let r = self.get_rollout(id).await?;
        match r.status {
            RolloutStatus::Halted => self.reopen_gate(id, r.current_wave).await?,
            RolloutStatus::Paused => {}
            _ => return Ok(false),
        }
        let done = sqlx::query(
            "UPDATE fleetmig_rollouts SET status = $1, reason = NULL, requested = NULL \
             WHERE id = $2 AND status = $3",
        )
        .bind(RolloutStatus::Running.as_str())
        .bind(id)
        .bind(r.status.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() == 1)
    }
}

impl StateStore {
    /// Rollout `id`'s tenants counted by wave and status (one pass).
    pub async fn wave_counts(&self, id: &str) -> Result<Vec<(i64, RunStatus, usize)>, Error> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT wave, status, count(*) FROM fleetmig_tenants WHERE rollout_id = $1 \
             GROUP BY wave, status ORDER BY wave, status",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(w, s, n)| {
                let s: RunStatus = s
                    .parse()
                    .map_err(|e: String| self.err(format!("rollout {id}: {e}")))?;
                Ok((w, s, n as usize))
            })
            .collect()
    }
}

impl StateStore {
    /// Tenants of rollout `id` that finished at or after `since` (ms).
    pub async fn finished_since(&self, id: &str, since: i64) -> Result<usize, Error> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM fleetmig_tenants WHERE rollout_id = $1 AND finished_at >= $2",
        )
        .bind(id)
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(n as usize)
    }
}
