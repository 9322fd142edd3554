//! Several workers on one rollout, through the PostgreSQL state store: each
//! registers itself and heartbeats (one row: its own); tenants of the
//! current wave are claimed in small batches with `SELECT ... FOR UPDATE
//! SKIP LOCKED`, each claim naming the worker. A claim holds while its
//! worker heartbeats within the lease: the claim of a worker that stopped,
//! or whose heartbeat is older than the lease, is anyone's. (A lease per
//! tenant row, extended by each heartbeat, made the heartbeat lock the rows
//! the worker's recorder was finishing: a deadlock PostgreSQL broke by
//! failing the heartbeat.) The waves themselves (opened once, a gate taken
//! and recorded once) are `waves.rs`.

use serde::Serialize;
use sqlx::Row;

use super::{Request, RolloutStatus, RunStatus, StateStore, WaveStatus, now_ms};
use crate::error::Error;

/// One worker of a rollout, as `status --rollout` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRecord {
    pub worker: String,
    pub host: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub stopped_at: Option<i64>,
    /// Tenants it holds a claim on now (valid while it heartbeats).
    pub claimed: i64,
    /// Tenants it ran to an end.
    pub done: i64,
}

/// The claim of a `fleetmig_tenant_runs` row is free: nobody holds it, or
/// its worker stopped or last heartbeat before bind `$since`.
pub(super) fn free(since: usize) -> String {
    format!(
        "(fleetmig_tenant_runs.claimed_by IS NULL OR NOT EXISTS (SELECT 1 FROM fleetmig_workers w \
         WHERE w.rollout_id = fleetmig_tenant_runs.rollout_id AND w.worker = fleetmig_tenant_runs.claimed_by \
         AND w.stopped_at IS NULL AND w.heartbeat_at >= ${since}))"
    )
}

/// What a heartbeat learns about the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub status: RolloutStatus,
    pub requested: Option<Request>,
}

const TODO: [RunStatus; 3] = RunStatus::TODO;

impl StateStore {
    /// Whether several processes can work on one rollout through this store
    /// (PostgreSQL: row locks and `SKIP LOCKED`); a SQLite file cannot.
    pub fn is_shared(&self) -> bool {
        self.postgres
    }

    /// Takes one of rollout `id`'s `limit` slots on `server` for `worker`'s
    /// `tenant`: the slot's number, or `None` while every slot is held by a
    /// live worker (a slot of a worker that stopped or whose heartbeat is
    /// older than the lease is anyone's).
    pub async fn take_slot(
        &self,
        id: &str,
        server: &str,
        worker: &str,
        tenant: &str,
        limit: usize,
        lease_ms: i64,
    ) -> Result<Option<i64>, Error> {
        sqlx::query(
            "DELETE FROM fleetmig_slots WHERE rollout_id = $1 AND server = $2 AND NOT EXISTS ( \
               SELECT 1 FROM fleetmig_workers w WHERE w.rollout_id = fleetmig_slots.rollout_id \
               AND w.worker = fleetmig_slots.worker AND w.stopped_at IS NULL AND w.heartbeat_at >= $3)",
        )
        .bind(id)
        .bind(server)
        .bind(now_ms() - lease_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        // the lowest free slot; two workers after the same one: the
        // primary key lets one in, the other looks again
        let slot: Option<i64> = sqlx::query_scalar(
            "INSERT INTO fleetmig_slots (rollout_id, server, slot, worker, tenant, taken_at) \
             SELECT $1, $2, s, $3, $4, $5 FROM generate_series(0, $6 - 1) s \
             WHERE NOT EXISTS (SELECT 1 FROM fleetmig_slots x WHERE x.rollout_id = $1 AND x.server = $2 AND x.slot = s) \
             ORDER BY s LIMIT 1 ON CONFLICT DO NOTHING RETURNING slot",
        )
        .bind(id)
        .bind(server)
        .bind(worker)
        .bind(tenant)
        .bind(now_ms())
        .bind(limit as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(slot)
    }

    /// Gives back slot `slot` of `server` (its tenant ended).
    pub async fn give_slot(
        &self,
        id: &str,
        server: &str,
        slot: i64,
        worker: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "DELETE FROM fleetmig_slots WHERE rollout_id = $1 AND server = $2 AND slot = $3 AND worker = $4",
        )
        .bind(id)
        .bind(server)
        .bind(slot)
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Registers `worker` (host `host`) on rollout `id`, or marks it live again.
    pub async fn join(&self, id: &str, worker: &str, host: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO fleetmig_workers (rollout_id, worker, host, started_at, heartbeat_at, stopped_at, done) \
             VALUES ($1, $2, $3, $4, $4, NULL, 0) \
             ON CONFLICT (rollout_id, worker) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, stopped_at = NULL",
        )
        .bind(id)
        .bind(worker)
        .bind(host)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// `worker` is alive: its heartbeat (which keeps its claims) and the
    /// lease of the gate it evaluates are renewed, and it learns how the
    /// rollout stands. A worker the others took for gone (stopped past its
    /// lease) is live again, with whatever claims nobody took meanwhile.
    /// One statement: no row but its own, the rollout's and its gate's.
    pub async fn beat(&self, id: &str, worker: &str) -> Result<Seen, Error> {
        let row = sqlx::query(
            "WITH w AS (UPDATE fleetmig_workers SET heartbeat_at = $1, stopped_at = NULL \
               WHERE rollout_id = $2 AND worker = $3 RETURNING 1), \
             g AS (UPDATE fleetmig_waves SET gated_at = $1 \
               WHERE rollout_id = $2 AND gated_by = $3 AND status = $4 RETURNING 1), \
             r AS (UPDATE fleetmig_rollouts SET heartbeat_at = $1, claimed_by = $3 \
               WHERE id = $2 AND status = $5 RETURNING 1) \
             SELECT status, requested, (SELECT count(*) FROM w) + (SELECT count(*) FROM g) + (SELECT count(*) FROM r) AS n \
             FROM fleetmig_rollouts WHERE id = $2",
        )
        .bind(now_ms())
        .bind(id)
        .bind(worker)
        .bind(WaveStatus::Gating.as_str())
        .bind(RolloutStatus::Running.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let status: String = row.try_get("status").map_err(|e| self.err(e))?;
        let requested: Option<String> = row.try_get("requested").map_err(|e| self.err(e))?;
        Ok(Seen {
            status: status
                .parse()
                .map_err(|e| self.err(format!("rollout {id}: {e}")))?,
            requested: requested
                .map(|r| r.parse())
                .transpose()
                .map_err(|e| self.err(format!("rollout {id}: {e}")))?,
        })
    }

    /// Claims up to `n` tenants of wave `wave` for `worker` (their names,
    /// sorted, each with the version an interrupted attempt started from,
    /// its journal): tenants still to run whose claim is free (`free`,
    /// under a lease of `lease_ms`). Rows another worker is claiming right
    /// now are skipped, not waited for.
    pub async fn claim_tenants(
        &self,
        id: &str,
        wave: i64,
        worker: &str,
        lease_ms: i64,
        n: usize,
        after: Option<&str>,
    ) -> Result<Vec<(String, Option<i64>)>, Error> {
        // the rows picked once, in a CTE (a locking CTE runs once), then
        // found again by key as one array (an init plan, evaluated once,
        // then the primary key's index): `WHERE tenant IN (SELECT … LIMIT n
        // FOR UPDATE SKIP LOCKED)` was planned as a semi-join that ran the
        // LIMIT again for each row, and one claim took every tenant of the
        // wave; a join on the CTE was planned as a hash join over every row
        // of the table, every rollout's, at each claim
        let sql = format!(
            "WITH picked AS ( \
               SELECT rollout_id, tenant FROM fleetmig_tenant_runs \
               WHERE rollout_id = $2 AND wave = $3 AND status IN ($4, $5, $6) AND {} \
               AND ($9::text IS NULL OR tenant > $9::text) \
               ORDER BY tenant LIMIT $8 FOR UPDATE SKIP LOCKED) \
             UPDATE fleetmig_tenant_runs r SET claimed_by = $1 \
             WHERE r.rollout_id = $2 AND r.tenant = ANY(ARRAY(SELECT tenant FROM picked)) \
             RETURNING r.tenant, r.journal_from",
            free(7)
        );
        let mut claimed: Vec<(String, Option<i64>)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(worker)
            .bind(id)
            .bind(wave)
            .bind(TODO[0].as_str())
            .bind(TODO[1].as_str())
            .bind(TODO[2].as_str())
            .bind(now_ms() - lease_ms)
            .bind(n as i64)
            .bind(after)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        claimed.sort_unstable();
        Ok(claimed)
    }

    /// A batch of `worker` ended (its rows recorded): counts the `n` tenants
    /// it ran, and gives up its claims on those of `batch` still to run
    /// (interrupted, not started), so that anyone, itself included, claims
    /// them afresh (`batch` is empty when every tenant of it finished). By
    /// key, 500 at a time: the wave's every to-do row read at every batch
    /// made a big wave quadratic.
    pub async fn batch_done(
        &self,
        id: &str,
        worker: &str,
        n: usize,
        batch: &[String],
    ) -> Result<(), Error> {
        for chunk in batch.chunks(super::BY_KEY) {
            let sql = format!(
                "UPDATE fleetmig_tenant_runs SET claimed_by = NULL \
                 WHERE rollout_id = $1 AND claimed_by = $2 AND status IN ($3, $4, $5) AND {}",
                super::tenant_in(6, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(worker)
                .bind(TODO[0].as_str())
                .bind(TODO[1].as_str())
                .bind(TODO[2].as_str());
            for t in chunk {
                q = q.bind(t);
            }
            q.execute(&self.pool).await.map_err(|e| self.err(e))?;
        }
        match n {
            0 => Ok(()),
            n => self.count_done(id, worker, n).await,
        }
    }

    /// Gives up every claim of `worker` on a tenant of wave `wave` still to
    /// run (the wave's index finds them among its to-do rows): asked when
    /// a claim found nothing, so nothing of its own is running then (a batch
    /// cut short by an error leaves its claims behind).
    pub async fn release_mine(&self, id: &str, wave: i64, worker: &str) -> Result<(), Error> {
        sqlx::query(
            "UPDATE fleetmig_tenant_runs SET claimed_by = NULL \
             WHERE rollout_id = $1 AND wave = $6 AND claimed_by = $2 AND status IN ($3, $4, $5)",
        )
        .bind(id)
        .bind(worker)
        .bind(TODO[0].as_str())
        .bind(TODO[1].as_str())
        .bind(TODO[2].as_str())
        .bind(wave)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Adds `n` to the tenants `worker` ran.
    async fn count_done(&self, id: &str, worker: &str, n: usize) -> Result<(), Error> {
        sqlx::query(
            "UPDATE fleetmig_workers SET done = done + $1 WHERE rollout_id = $2 AND worker = $3",
        )
        .bind(n as i64)
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Marks `worker` stopped: its claims on tenants it did not finish are
    /// anyone's at once.
    pub async fn leave(&self, id: &str, worker: &str) -> Result<(), Error> {
        sqlx::query(
            "UPDATE fleetmig_workers SET stopped_at = $1 WHERE rollout_id = $2 AND worker = $3",
        )
        .bind(now_ms())
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Tenants of wave `wave` still to run (claimed or not), counted up to
    /// `cap`: what a worker sizing its next batch needs, after every batch,
    /// without reading the whole rest of a big wave each time.
    pub async fn wave_left_up_to(&self, id: &str, wave: i64, cap: usize) -> Result<usize, Error> {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT 1 FROM fleetmig_tenant_runs WHERE rollout_id = $1 \
             AND wave = $2 AND status IN ($3, $4, $5) LIMIT $6) AS s",
        )
        .bind(id)
        .bind(wave)
        .bind(TODO[0].as_str())
        .bind(TODO[1].as_str())
        .bind(TODO[2].as_str())
        .bind(cap as i64)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(left as usize)
    }

    /// Tenants of wave `wave` still to run (claimed or not). With
    /// `free_after` (a lease, in ms), a tenant not started (`--max-failures`
    /// was reached) counts only while a live worker holds its claim: the
    /// rest wait for a resume, not for this wave.
    pub async fn wave_left(
        &self,
        id: &str,
        wave: i64,
        free_after: Option<i64>,
    ) -> Result<usize, Error> {
        let sql = match free_after {
            None => {
                "SELECT count(*) FROM fleetmig_tenant_runs WHERE rollout_id = $1 AND wave = $2 \
                     AND status IN ($3, $4, $5)"
                    .to_string()
            }
            Some(_) => format!(
                "SELECT count(*) FROM fleetmig_tenant_runs WHERE rollout_id = $1 AND wave = $2 \
                 AND (status IN ($3, $4) OR (status = $5 AND NOT {}))",
                free(6)
            ),
        };
        let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(wave)
            .bind(TODO[0].as_str())
            .bind(TODO[1].as_str())
            .bind(TODO[2].as_str());
        if let Some(lease_ms) = free_after {
            q = q.bind(now_ms() - lease_ms);
        }
        let left: i64 = q.fetch_one(&self.pool).await.map_err(|e| self.err(e))?;
        Ok(left as usize)
    }

    /// The workers of rollout `id`, by start.
    pub async fn workers(&self, id: &str) -> Result<Vec<WorkerRecord>, Error> {
        let rows = sqlx::query(
            "SELECT worker, host, started_at, heartbeat_at, stopped_at, done, \
             (SELECT count(*) FROM fleetmig_tenant_runs r WHERE r.rollout_id = w.rollout_id \
              AND r.claimed_by = w.worker AND r.status IN ($2, $3, $4)) AS claimed \
             FROM fleetmig_workers w WHERE rollout_id = $1 ORDER BY started_at, worker",
        )
        .bind(id)
        .bind(TODO[0].as_str())
        .bind(TODO[1].as_str())
        .bind(TODO[2].as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                Ok(WorkerRecord {
                    worker: r.try_get("worker")?,
                    host: r.try_get("host")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_at: r.try_get("heartbeat_at")?,
                    stopped_at: r.try_get("stopped_at")?,
                    claimed: r.try_get("claimed")?,
                    done: r.try_get("done")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    /// Frees the claims of workers of rollout `id` that are gone: a
    /// heartbeat older than `lease`, or a process of this host that no
    /// longer exists (so a worker that resumes after a crash on the same
    /// machine need not wait out the dead one's lease). Returns how many.
    pub async fn reap(&self, id: &str, lease: std::time::Duration) -> Result<usize, Error> {
        let mut n = 0;
        for (worker, heartbeat_at) in self.running_workers(id).await? {
            if super::claim_is_stale(Some(&worker), Some(heartbeat_at), lease) {
                tracing::info!(
                    "worker {worker} of rollout {id} is gone (heartbeat {} ms ago): its claims are free",
                    now_ms() - heartbeat_at
                );
                self.leave(id, &worker).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Live workers of rollout `id` other than `except`: not stopped, and
    /// their claim not stale (a heartbeat within `lease`, and on this host a
    /// process that still exists).
    pub async fn alive(
        &self,
        id: &str,
        except: Option<&str>,
        lease: std::time::Duration,
    ) -> Result<usize, Error> {
        Ok(self
            .running_workers(id)
            .await?
            .iter()
            .filter(|(w, _)| Some(w.as_str()) != except)
            .filter(|(w, beat)| !super::claim_is_stale(Some(w), Some(*beat), lease))
            .count())
    }

    /// The workers of rollout `id` not stopped, with their last heartbeat
    /// (without `workers`' count of claims: asked after every batch).
    async fn running_workers(&self, id: &str) -> Result<Vec<(String, i64)>, Error> {
        sqlx::query_as(
            "SELECT worker, heartbeat_at FROM fleetmig_workers \
             WHERE rollout_id = $1 AND stopped_at IS NULL ORDER BY started_at, worker",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))
    }

    /// Ends rollout `id` with `status` unless it already ended: true for the
    /// one process that ended it.
    pub async fn end(
        &self,
        id: &str,
        status: RolloutStatus,
        reason: Option<&str>,
    ) -> Result<bool, Error> {
        let r = sqlx::query(
            "UPDATE fleetmig_rollouts SET status = $1, reason = $2, requested = NULL, claimed_by = NULL, \
             finished_at = CASE WHEN $3 = 1 THEN $4 ELSE finished_at END WHERE id = $5 AND status = $6",
        )
        .bind(status.as_str())
        .bind(reason.map(str::to_string))
        .bind(status.is_finished() as i64)
        .bind(now_ms())
        .bind(id)
        .bind(RolloutStatus::Running.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(r.rows_affected() == 1)
    }
}
