//! The tenants of a rollout in the state store: their runs (written in
//! batches, one transaction each), gate errors, backups and backfill
//! checkpoints.

use std::collections::BTreeMap;

use sqlx::Row;

use super::records::WaveTally;
use super::records::{join_applied, tenant_from};
use super::{Backfill, Finish, RunError, RunStatus, StateStore, TenantRun, TenantUpdate, now_ms};
use crate::error::Error;

/// Clean finishes per statement (nine parameters each): sqlx binds a
/// SQLite parameter by looking its name up among all of them, so a statement
/// of thousands of parameters costs quadratic time; 64 rows is past the gain.
const FINISH_ROWS: usize = 64;

/// Where an attempt starts from ($1), written before it applies anything to
/// tenant $3 of rollout $2, under the claim of worker $4 when several work.
/// A finish clears it.
const JOURNAL: &str = "UPDATE fleetmig_tenant_runs SET journal_from = COALESCE(journal_from, $1), \
     from_version = COALESCE(from_version, $1) WHERE rollout_id = $2 AND tenant = $3 \
     AND ($4 IS NULL OR claimed_by = $4)";

/// Tenants, succeeded and failed of rollout `$1` (`$2`, `$3`: the
/// succeeded and failed statuses).
pub(super) const RUN_COUNTS: &str = "SELECT count(*), \
     COALESCE(sum(CASE WHEN status = $2 THEN 1 ELSE 0 END), 0), \
     COALESCE(sum(CASE WHEN status = $3 THEN 1 ELSE 0 END), 0) \
     FROM fleetmig_tenants WHERE rollout_id = $1";

impl StateStore {
    pub async fn tenant_runs(&self, id: &str) -> Result<Vec<TenantRun>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM fleetmig_tenants WHERE rollout_id = $1 ORDER BY wave, tenant",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| tenant_from(r).map_err(|e| self.err(format!("rollout {id}: {e}"))))
            .collect()
    }

    /// Calls `f` with every tenant run of rollout `id`, by wave and tenant,
    /// streamed from the store: a report of 100,000 tenants never holds
    /// their rows.
    pub async fn each_run(
        &self,
        id: &str,
        mut f: impl FnMut(TenantRun) -> Result<(), Error>,
    ) -> Result<(), Error> {
        use futures_util::TryStreamExt;
        let mut rows = sqlx::query(
            "SELECT * FROM fleetmig_tenants WHERE rollout_id = $1 ORDER BY wave, tenant",
        )
        .bind(id)
        .fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(|e| self.err(e))? {
            f(tenant_from(&row).map_err(|e| self.err(format!("rollout {id}: {e}")))?)?;
        }
        Ok(())
    }

    /// How many tenants of rollout `id` started, the first start and the
    /// last end (for the shape of a report's timeline).
    pub async fn run_bounds(&self, id: &str) -> Result<(usize, i64, i64), Error> {
        let (n, t0, t1): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT count(started_at), min(started_at), max(COALESCE(finished_at, started_at)) \
             FROM fleetmig_tenants WHERE rollout_id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok((n as usize, t0.unwrap_or(0), t1.unwrap_or(0)))
    }

    /// Tenants, succeeded and failed of rollout `id`, counted by the store.
    /// A pruned rollout has none left: its summary has them (`RolloutRecord::pruned`).
    pub async fn run_counts(&self, id: &str) -> Result<(usize, usize, usize), Error> {
        let (n, ok, failed): (i64, i64, i64) = sqlx::query_as(RUN_COUNTS)
            .bind(id)
            .bind(RunStatus::Succeeded.as_str())
            .bind(RunStatus::Failed.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok((n as usize, ok as usize, failed as usize))
    }

    /// The status of each of `tenants` in rollout `id` (those it has).
    pub async fn statuses(
        &self,
        id: &str,
        tenants: &[String],
    ) -> Result<Vec<(String, RunStatus)>, Error> {
        let mut out = Vec::new();
        for chunk in tenants.chunks(super::BY_KEY) {
            let sql = format!(
                "SELECT tenant, status FROM fleetmig_tenants WHERE rollout_id = $1 AND {}",
                super::tenant_in(2, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql)).bind(id);
            for t in chunk {
                q = q.bind(t);
            }
            for (tenant, status) in q.fetch_all(&self.pool).await.map_err(|e| self.err(e))? {
                let status = status
                    .parse()
                    .map_err(|e| self.err(format!("rollout {id}, tenant {tenant}: {e}")))?;
                out.push((tenant, status));
            }
        }
        Ok(out)
    }

    /// The tenants of wave `wave` whose status is one of `statuses`, by id.
    pub async fn wave_tenants(
        &self,
        id: &str,
        wave: i64,
        statuses: &[RunStatus],
    ) -> Result<Vec<String>, Error> {
        let marks: Vec<String> = (0..statuses.len()).map(|i| format!("${}", i + 3)).collect();
        // only succeeded tenants are ever folded (some from the start:
        // `rollout::prefold`); the to-do lists read the rows alone
        let table = match statuses.contains(&RunStatus::Succeeded) {
            true => "fleetmig_tenants",
            false => "fleetmig_tenant_runs",
        };
        let sql = format!(
            "SELECT tenant FROM {table} WHERE rollout_id = $1 AND wave = $2 \
             AND status IN ({}) ORDER BY tenant",
            marks.join(", ")
        );
        let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(wave);
        for s in statuses {
            q = q.bind(s.as_str());
        }
        q.fetch_all(&self.pool).await.map_err(|e| self.err(e))
    }

    /// The tenants of wave `wave` whose last attempt wrote where it started
    /// and never recorded its end (see `Earlier`): asked by the one process
    /// that takes the wave whole (a worker's claim reads its own tenants').
    pub async fn interrupted(
        &self,
        id: &str,
        wave: i64,
    ) -> Result<std::collections::HashMap<String, super::Earlier>, Error> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT tenant, journal_from FROM fleetmig_tenant_runs \
             WHERE rollout_id = $1 AND wave = $2 AND status IN ($3, $4, $5) \
             AND journal_from IS NOT NULL",
        )
        .bind(id)
        .bind(wave)
        .bind(RunStatus::TODO[0].as_str())
        .bind(RunStatus::TODO[1].as_str())
        .bind(RunStatus::TODO[2].as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|(t, from)| (t, super::Earlier { from }))
            .collect())
    }

    /// The runs of wave `wave` with status `status`.
    pub async fn wave_runs(
        &self,
        id: &str,
        wave: i64,
        status: RunStatus,
    ) -> Result<Vec<TenantRun>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM fleetmig_tenants WHERE rollout_id = $1 AND wave = $2 AND status = $3 ORDER BY tenant",
        )
        .bind(id)
        .bind(wave)
        .bind(status.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| tenant_from(r).map_err(|e| self.err(format!("rollout {id}: {e}"))))
            .collect()
    }

    /// Counts the tenants of wave `wave` by status, in the store.
    pub async fn wave_tally(&self, id: &str, wave: i64) -> Result<WaveTally, Error> {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, count(*) FROM fleetmig_tenants WHERE rollout_id = $1 AND wave = $2 GROUP BY status",
        )
        .bind(id)
        .bind(wave)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let mut t = WaveTally::default();
        for (status, n) in counts {
            let status: RunStatus = status
                .parse()
                .map_err(|e| self.err(format!("rollout {id}: {e}")))?;
            let n = n as usize;
            t.tenants += n;
            match status {
                RunStatus::Succeeded => t.succeeded += n,
                RunStatus::Failed => t.failed += n,
                RunStatus::NotStarted => t.not_started += n,
                _ => {}
            }
        }
        t.failed_examples = sqlx::query_scalar(
            "SELECT tenant FROM fleetmig_tenant_runs WHERE rollout_id = $1 AND wave = $2 AND status = $3 \
             ORDER BY tenant LIMIT 10",
        )
        .bind(id)
        .bind(wave)
        .bind(RunStatus::Failed.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(t)
    }

    /// Writes, before `worker` applies anything to `tenant`, the version it
    /// starts from (see `Earlier`): true while `worker` still holds the
    /// tenant's claim, false when another took it (then it must not apply).
    /// The claim check and the write are one statement, so a worker taking
    /// the tenant over either sees this record or made this write fail.
    pub async fn journal(
        &self,
        id: &str,
        tenant: &str,
        from: i64,
        worker: Option<&str>,
    ) -> Result<bool, Error> {
        let r = sqlx::query(JOURNAL)
            .bind(from)
            .bind(id)
            .bind(tenant)
            .bind(worker)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.rows_affected() == 1)
    }

    /// Applies a batch of tenant updates in one transaction. With `worker`
    /// (several workers on a rollout), a start records the worker and a
    /// finish is written only while the worker still holds the tenant's
    /// claim: a worker whose lease ran out and that wakes up later cannot
    /// overwrite what the worker that took over recorded.
    pub async fn record(
        &self,
        id: &str,
        updates: &[TenantUpdate],
        worker: Option<&str>,
    ) -> Result<(), Error> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        // clean finishes (no error) are written many per statement; any
        // other update of a tenant among them first writes them out
        let mut clean: Vec<&Finish> = Vec::new();
        for u in updates {
            if let TenantUpdate::Finished(f) = u
                && f.error == RunError::default()
            {
                clean.push(f);
                if clean.len() == FINISH_ROWS {
                    self.finish_many(&mut tx, id, &std::mem::take(&mut clean), worker)
                        .await?;
                }
                continue;
            }
            if clean.iter().any(|f| f.tenant == u.tenant()) {
                self.finish_many(&mut tx, id, &std::mem::take(&mut clean), worker)
                    .await?;
            }
            self.write_update(&mut tx, id, u, worker).await?;
        }
        self.finish_many(&mut tx, id, &clean, worker).await?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// One update that is not a clean finish.
    async fn write_update(
        &self,
        c: &mut sqlx::AnyConnection,
        id: &str,
        u: &TenantUpdate,
        worker: Option<&str>,
    ) -> Result<(), Error> {
        let q = match u {
            TenantUpdate::Started { tenant, at } => sqlx::query(
                "UPDATE fleetmig_tenant_runs SET status = $1, attempts = attempts + 1, \
                 started_at = COALESCE(started_at, $2), worker = COALESCE($5, worker) \
                 WHERE rollout_id = $3 AND tenant = $4 AND ($5 IS NULL OR claimed_by = $5)",
            )
            .bind(RunStatus::Running.as_str())
            .bind(*at)
            .bind(id)
            .bind(tenant)
            .bind(worker),
            TenantUpdate::Planned { tenant, from } => sqlx::query(JOURNAL)
                .bind(*from)
                .bind(id)
                .bind(tenant)
                .bind(worker),
            TenantUpdate::Preflight { tenant, summary } => sqlx::query(
                "UPDATE fleetmig_tenant_runs SET preflight = $1 WHERE rollout_id = $2 AND tenant = $3",
            )
            .bind(summary)
            .bind(id)
            .bind(tenant),
            TenantUpdate::Backup { tenant, path } => sqlx::query(
                "INSERT INTO fleetmig_backups (rollout_id, tenant, path, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (rollout_id, tenant) DO NOTHING",
            )
            .bind(id)
            .bind(tenant)
            .bind(path)
            .bind(now_ms()),
            TenantUpdate::Backfill { .. } => return self.backfill_progress(c, id, u).await,
            TenantUpdate::Finished(f) => return self.finish_one(c, id, f, worker).await,
        };
        q.execute(&mut *c).await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A backfill's progress: batches and rows added, its slowest batch.
    async fn backfill_progress(
        &self,
        c: &mut sqlx::AnyConnection,
        id: &str,
        u: &TenantUpdate,
    ) -> Result<(), Error> {
        let TenantUpdate::Backfill {
            tenant,
            version,
            batches,
            rows,
            batch_ms,
            done,
        } = u
        else {
            return Ok(());
        };
        sqlx::query(
        "INSERT INTO fleetmig_backfills (rollout_id, tenant, version, batches, rows_changed, max_batch_ms, done, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (rollout_id, tenant, version) DO UPDATE SET \
         batches = fleetmig_backfills.batches + excluded.batches, \
         rows_changed = fleetmig_backfills.rows_changed + excluded.rows_changed, \
         max_batch_ms = CASE WHEN excluded.max_batch_ms > fleetmig_backfills.max_batch_ms \
         THEN excluded.max_batch_ms ELSE fleetmig_backfills.max_batch_ms END, \
         done = excluded.done, updated_at = excluded.updated_at",
    )
    .bind(id)
    .bind(tenant)
    .bind(*version)
    .bind(*batches)
    .bind(*rows)
    .bind(*batch_ms)
    .bind(*done as i64)
    .bind(now_ms())
        .execute(&mut *c)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// One finish (with its error, if any).
    async fn finish_one(
        &self,
        c: &mut sqlx::AnyConnection,
        id: &str,
        f: &Finish,
        worker: Option<&str>,
    ) -> Result<(), Error> {
        let applied = join_applied(&f.applied);
        sqlx::query(
            "UPDATE fleetmig_tenant_runs SET status = $1, attempts = attempts + $2, \
             from_version = COALESCE(from_version, $3), to_version = COALESCE($4, to_version), \
             applied = CASE WHEN $5 = '' THEN applied WHEN applied = '' THEN $6 ELSE applied || ';' || $7 END, \
             started_at = COALESCE(started_at, $8), finished_at = $9, duration_ms = duration_ms + $10, \
             error_class = $11, error_kind = $12, error_code = $13, error_version = $14, \
             error_message = $15, gate_error = NULL, worker = COALESCE($18, worker), journal_from = NULL \
             WHERE rollout_id = $16 AND tenant = $17 \
             AND ($18 IS NULL OR claimed_by IS NULL OR claimed_by = $18)",
        )
        .bind(f.status.as_str())
        .bind(f.attempts)
        .bind(f.from_version)
        .bind(f.to_version)
        .bind(applied.clone())
        .bind(applied.clone())
        .bind(applied)
        .bind(f.started_at)
        .bind(f.finished_at)
        .bind(f.duration_ms)
        .bind(f.error.class.map(|c| c.as_str()))
        .bind(f.error.kind.map(|k| k.as_str()))
        .bind(f.error.code.clone())
        .bind(f.error.version)
        .bind(f.error.message.clone())
        .bind(id)
        .bind(&f.tenant)
        .bind(worker)
        .execute(&mut *c)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Writes clean finishes (no error) of rollout `id`, one statement for
    /// all of them: an up-to-date fleet of 100,000 tenants is 200
    /// statements, not 100,000. Same effect as `record`'s one-row update.
    async fn finish_many(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: &str,
        rows: &[&Finish],
        worker: Option<&str>,
    ) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let values: Vec<String> = (0..rows.len())
            .map(|i| {
                let b = 3 + i * 9;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b,
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8
                )
            })
            .collect();
        let sql = format!(
            "WITH v (tenant, status, attempts, from_v, to_v, applied, started, finished, ms) AS (VALUES {}) \
             UPDATE fleetmig_tenant_runs SET status = v.status, \
             attempts = fleetmig_tenant_runs.attempts + v.attempts, \
             from_version = COALESCE(fleetmig_tenant_runs.from_version, v.from_v), \
             to_version = COALESCE(v.to_v, fleetmig_tenant_runs.to_version), \
             applied = CASE WHEN v.applied = '' THEN fleetmig_tenant_runs.applied \
             WHEN fleetmig_tenant_runs.applied = '' THEN v.applied \
             ELSE fleetmig_tenant_runs.applied || ';' || v.applied END, \
             started_at = COALESCE(fleetmig_tenant_runs.started_at, v.started), finished_at = v.finished, \
             duration_ms = fleetmig_tenant_runs.duration_ms + v.ms, error_class = NULL, error_kind = NULL, \
             error_code = NULL, error_version = NULL, error_message = NULL, gate_error = NULL, \
             worker = COALESCE($2, fleetmig_tenant_runs.worker), journal_from = NULL \
             FROM v WHERE fleetmig_tenant_runs.rollout_id = $1 AND fleetmig_tenant_runs.tenant = v.tenant \
             AND ($2 IS NULL OR fleetmig_tenant_runs.claimed_by IS NULL OR fleetmig_tenant_runs.claimed_by = $2)",
            values.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(worker);
        for f in rows {
            q = q
                .bind(f.tenant.as_str())
                .bind(f.status.as_str())
                .bind(f.attempts)
                .bind(f.from_version)
                .bind(f.to_version)
                .bind(join_applied(&f.applied))
                .bind(f.started_at)
                .bind(f.finished_at)
                .bind(f.duration_ms);
        }
        q.execute(&mut **tx).await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Sets tenants' status (e.g. `skipped` on abort, `reverted`); their claims go:
    /// a worker still running one records nothing more on it.
    pub async fn set_tenant_status(
        &self,
        id: &str,
        tenants: &[String],
        status: RunStatus,
        note: Option<&str>,
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        for t in tenants {
            sqlx::query(
                "UPDATE fleetmig_tenant_runs SET status = $1, error_message = COALESCE($2, error_message), \
                 claimed_by = NULL WHERE rollout_id = $3 AND tenant = $4",
            )
            .bind(status.as_str())
            .bind(note.map(str::to_string))
            .bind(id)
            .bind(t)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Records gate failures on tenants (tenant → why); a folded tenant
    /// (found at head when the rollout was planned) gets its row back first.
    pub async fn set_gate_errors(
        &self,
        id: &str,
        errors: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        if errors.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        self.lock_rollout(&mut tx, id).await?;
        let tenants: Vec<String> = errors.keys().cloned().collect();
        self.unfold_in(&mut tx, id, &tenants, None).await?;
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
}
