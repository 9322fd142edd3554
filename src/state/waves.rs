//! The wave protocol of a rollout in the store, the same for one process
//! and for many: a wave opened once (after the bake of the one before,
//! `opens_at`), its gate taken by one process with a conditional update and
//! recorded once (`fleetmig_gates`' key), the rollout advanced; the tenants
//! not started when a wave stops early marked so; a halted wave's gate
//! opened again.

use super::{RunStatus, StateStore, WaveStatus, now_ms};
use crate::error::Error;

impl StateStore {
    /// Opens wave `wave` (pending → running) once it may open (`opens_at`,
    /// after the bake of the wave before); true for the one worker that
    /// opened it.
    pub async fn open_wave(&self, id: &str, wave: i64) -> Result<bool, Error> {
        let now = now_ms();
        let r = sqlx::query(
            "UPDATE fleetmig_waves SET status = $1, started_at = COALESCE(started_at, $2) \
             WHERE rollout_id = $3 AND wave = $4 AND status = $5 AND COALESCE(opens_at, 0) <= $2",
        )
        .bind(WaveStatus::Running.as_str())
        .bind(now)
        .bind(id)
        .bind(wave)
        .bind(WaveStatus::Pending.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(r.rows_affected() == 1)
    }

    /// Takes the gate of wave `wave` for `worker`: true when this worker is
    /// the one to evaluate it (the wave was running with nothing left, or a
    /// gater stopped heartbeating for longer than `lease_ms`).
    pub async fn take_gate(
        &self,
        id: &str,
        wave: i64,
        worker: &str,
        lease_ms: i64,
    ) -> Result<bool, Error> {
        let now = now_ms();
        let r = sqlx::query(
            "UPDATE fleetmig_waves SET status = $1, gated_by = $2, gated_at = $3 \
             WHERE rollout_id = $4 AND wave = $5 \
             AND (status = $6 OR (status = $1 AND gated_at < $7))",
        )
        .bind(WaveStatus::Gating.as_str())
        .bind(worker)
        .bind(now)
        .bind(id)
        .bind(wave)
        .bind(WaveStatus::Running.as_str())
        .bind(now - lease_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(r.rows_affected() == 1)
    }

    /// Records the one evaluation of wave `wave`'s gate by `worker`, with
    /// the wave's end; a second evaluation would break the key and fail.
    pub async fn gate_evaluated(
        &self,
        id: &str,
        wave: i64,
        worker: &str,
        status: WaveStatus,
        text: &str,
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        sqlx::query(
            "INSERT INTO fleetmig_gates (rollout_id, wave, worker, status, evaluated_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(wave)
        .bind(worker)
        .bind(status.as_str())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        sqlx::query(
            "UPDATE fleetmig_waves SET status = $1, gate = $2, finished_at = $3 WHERE rollout_id = $4 AND wave = $5",
        )
        .bind(status.as_str())
        .bind(text)
        .bind(now_ms())
        .bind(id)
        .bind(wave)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Moves rollout `id` past wave `wave`, unless it already moved.
    pub async fn advance(&self, id: &str, wave: i64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE fleetmig_rollouts SET current_wave = $1 WHERE id = $2 AND current_wave = $3",
        )
        .bind(wave + 1)
        .bind(id)
        .bind(wave)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// `--max-failures` was reached: the tenants of wave `wave` whose claim
    /// is free are not started (the gate halts the rollout on them).
    pub async fn not_start_rest(&self, id: &str, wave: i64, lease_ms: i64) -> Result<(), Error> {
        let sql = format!(
            "UPDATE fleetmig_tenant_runs SET status = $1, error_class = $6, error_kind = $7, \
             error_message = '--max-failures was reached before this tenant started' \
             WHERE rollout_id = $2 AND wave = $3 AND status IN ($4, $8) AND {}",
            super::workers::free(5)
        );
        // a running row whose claim is free is a killed worker's tenant:
        // not started again either (its history says what it applied)
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(RunStatus::NotStarted.as_str())
            .bind(id)
            .bind(wave)
            .bind(RunStatus::Pending.as_str())
            .bind(now_ms() - lease_ms)
            .bind(crate::error::ErrorClass::Permanent.as_str())
            .bind(crate::error::FailureKind::NotStarted.as_str())
            .bind(RunStatus::Running.as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A halted wave's gate is evaluated again when its rollout resumes:
    /// its record of the evaluation goes, and the wave runs again.
    pub async fn reopen_gate(&self, id: &str, wave: i64) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        self.run_wave_again(&mut tx, id, wave, &[WaveStatus::Failed])
            .await?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Wave `wave` runs again, in transaction `tx`, when its status is one
    /// of `from`: its gate's evaluation, outcome and end go (a resumed
    /// halted wave; a wave whose tenants an operator requeued).
    pub(super) async fn run_wave_again(
        &self,
        tx: &mut sqlx::AnyConnection,
        id: &str,
        wave: i64,
        from: &[WaveStatus],
    ) -> Result<(), Error> {
        sqlx::query("DELETE FROM fleetmig_gates WHERE rollout_id = $1 AND wave = $2")
            .bind(id)
            .bind(wave)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let list: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 4)).collect();
        let sql = format!(
            "UPDATE fleetmig_waves SET status = $1, gate = NULL, gated_by = NULL, \
             finished_at = NULL WHERE rollout_id = $2 AND wave = $3 AND status IN ({})",
            list.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(WaveStatus::Running.as_str())
            .bind(id)
            .bind(wave);
        for status in from {
            q = q.bind(status.as_str());
        }
        q.execute(&mut *tx).await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The next wave opens no earlier than `at` (the bake).
    pub async fn open_at(&self, id: &str, wave: i64, at: i64) -> Result<(), Error> {
        sqlx::query("UPDATE fleetmig_waves SET opens_at = $1 WHERE rollout_id = $2 AND wave = $3")
            .bind(at)
            .bind(id)
            .bind(wave)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
