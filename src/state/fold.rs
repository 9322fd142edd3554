//! Folding: a nightly `sync` of 100,000 tenants that finds them all at
//! head would otherwise leave 100,000 rows a night in the store. Once a
//! rollout is finished (completed or aborted) and its report written, its
//! *plain* up-to-date tenants — one clean attempt, nothing applied, at the
//! version they started from, no error, no preflight, not marked by a retry — are folded:
//! their rows are replaced by one row per wave and version (a count, the
//! first start and last end) naming a list of their ids, and a list is kept
//! once however many rollouts name it (the same fleet night after night is
//! one list). Every other tenant keeps its row: those that changed, failed,
//! retried or were asked about.
//!
//! Readers see rows and folds as one table, the view `fleetmig_tenants`
//! (a folded tenant reads back as a succeeded run at its version, with the
//! fold's start and end and no duration of its own). A tenant asked about
//! again (`retry --tenant`, serve's retry) is unfolded first: its row
//! comes back, and a CLI retry marks it so it is not folded again.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

use super::StateStore;
use super::status::{RolloutStatus, RunStatus};
use crate::error::Error;

/// Whether a row of rollout `$1` is a plain up-to-date run (`$2`: the
/// succeeded status, `$3`: `ASKED`): what a fold reads back exactly but for
/// its times and the worker that ran it. (A finished rollout's claims are
/// over: workers leave them on the rows they ran.)
const PLAIN: &str = "rollout_id = $1 AND status = $2 AND attempts = 1 \
     AND from_version IS NOT NULL AND from_version = to_version AND applied = '' \
     AND error_class IS NULL AND error_kind IS NULL AND error_code IS NULL \
     AND error_version IS NULL AND error_message IS NULL AND gate_error IS NULL \
     AND preflight IS NULL AND journal_from IS NULL AND COALESCE(claimed_by, '') <> $3";

/// On PostgreSQL, folds, unfolds and prunes change the lists one at a time
/// (taken after the rollout's row): a list no fold names is removed, and
/// another transaction must not be naming it at that moment.
const LISTS_LOCK: &str = "SELECT pg_advisory_xact_lock(7215092862)";

/// What the mark a CLI retry leaves on a tenant it unfolded says (its
/// `claimed_by`; no worker is named so, so the claim is free).
pub const ASKED: &str = "asked:retry";

/// Tenants of one wave found at `version` with nothing to do before the
/// rollout was recorded (`rollout::prefold`): recorded as a fold from the
/// start, with the times their histories were read.
#[derive(Debug, Clone, Default)]
pub struct Folded {
    pub wave: i64,
    pub version: i64,
    pub ids: Vec<String>,
    pub started: Option<i64>,
    pub finished: Option<i64>,
}

/// A plain row as a fold takes it: tenant, wave, version, start, end.
type PlainRow = (String, i64, i64, Option<i64>, Option<i64>);

/// A fold as an unfold reads it: wave, version, start, end, the list.
type FoldRow = (i64, i64, Option<i64>, Option<i64>, String);

/// The tenants of one fold, with their first start and last end.
#[derive(Default)]
struct Group {
    ids: Vec<String>,
    started: Option<i64>,
    finished: Option<i64>,
}

fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.into_iter().chain(b).min()
}

fn latest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.into_iter().chain(b).max()
}

impl StateStore {
    /// Folds the plain up-to-date tenants of rollout `id` if it is finished
    /// (see the module); how many were folded. In one transaction: a
    /// process that dies halfway folds nothing.
    pub async fn fold(&self, id: &str) -> Result<usize, Error> {
        let mut tx = self.write_tx().await?;
        let status = self.lock_rollout(&mut tx, id).await?;
        if !status.is_some_and(|s| s.is_finished()) {
            return Ok(0);
        }
        self.lock_lists(&mut tx).await?;
        let sql = format!(
            "DELETE FROM fleetmig_tenant_runs WHERE {PLAIN} \
             RETURNING tenant, wave, to_version, started_at, finished_at"
        );
        let rows: Vec<PlainRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(RunStatus::Succeeded.as_str())
            .bind(ASKED)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        if rows.is_empty() {
            return Ok(0);
        }
        let n = rows.len();
        let mut groups: BTreeMap<(i64, i64), Group> = BTreeMap::new();
        for (tenant, wave, version, started, finished) in rows {
            let g = groups.entry((wave, version)).or_default();
            g.ids.push(tenant);
            g.started = earliest(g.started, started);
            g.finished = latest(g.finished, finished);
        }
        for ((wave, version), mut g) in groups {
            // an earlier fold of the same wave and version (a tenant retried
            // since, up to date again) takes the new ones in
            if let Some((ids, started, finished)) = self.folded(&mut tx, id, wave, version).await? {
                g.ids.extend(ids);
                g.started = earliest(g.started, started);
                g.finished = latest(g.finished, finished);
            }
            self.put_fold(&mut tx, id, (wave, version), g).await?;
        }
        self.drop_orphan_lists(&mut tx).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        tracing::info!(rollout = %id, tenants = n, "folded up-to-date tenants");
        Ok(n)
    }

    /// Brings the rows of `tenants` of rollout `id` back out of its folds,
    /// in its own transaction; `mark`: their `claimed_by` (`ASKED`), so
    /// that no fold takes them again before the caller has run them.
    pub async fn unfold(
        &self,
        id: &str,
        tenants: &[String],
        mark: Option<&str>,
    ) -> Result<usize, Error> {
        let mut tx = self.write_tx().await?;
        let status = self.lock_rollout(&mut tx, id).await?;
        let n = self.unfold_in(&mut tx, id, tenants, mark).await?;
        if let Some(mark) = mark
            && status.is_some_and(|s| s.is_finished())
        {
            // those still rows are marked too: a fold (which only takes a
            // finished rollout) must not take them while the caller runs them
            for chunk in tenants.chunks(super::BY_KEY) {
                let sql = format!(
                    "UPDATE fleetmig_tenant_runs SET claimed_by = $1 WHERE rollout_id = $2 AND {}",
                    super::tenant_in(3, chunk.len())
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(mark).bind(id);
                for t in chunk {
                    q = q.bind(t);
                }
                q.execute(&mut *tx).await.map_err(|e| self.err(e))?;
            }
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(n)
    }

    /// `unfold` inside the caller's transaction (which holds the rollout's
    /// row on PostgreSQL, or SQLite's write lock).
    pub(super) async fn unfold_in(
        &self,
        c: &mut sqlx::AnyConnection,
        id: &str,
        tenants: &[String],
        mark: Option<&str>,
    ) -> Result<usize, Error> {
        let folds: Vec<FoldRow> = sqlx::query_as(
            "SELECT f.wave, f.version, f.started_at, f.finished_at, l.ids \
             FROM fleetmig_folds f JOIN fleetmig_id_lists l ON l.key = f.list \
             WHERE f.rollout_id = $1 ORDER BY f.wave, f.version",
        )
        .bind(id)
        .fetch_all(&mut *c)
        .await
        .map_err(|e| self.err(e))?;
        if folds.is_empty() {
            return Ok(0);
        }
        self.lock_lists(c).await?;
        let wanted: HashSet<&str> = tenants.iter().map(String::as_str).collect();
        let mut n = 0;
        for (wave, version, started, finished, ids) in folds {
            let ids = self.list_ids(&ids)?;
            let (out, kept): (Vec<String>, Vec<String>) =
                ids.into_iter().partition(|t| wanted.contains(t.as_str()));
            if out.is_empty() {
                continue;
            }
            for t in &out {
                sqlx::query(
                    "INSERT INTO fleetmig_tenant_runs (rollout_id, tenant, wave, status, attempts, \
                     from_version, to_version, applied, started_at, finished_at, duration_ms, claimed_by) \
                     VALUES ($1, $2, $3, $4, 1, $5, $5, '', $6, $7, 0, $8)",
                )
                .bind(id)
                .bind(t)
                .bind(wave)
                .bind(RunStatus::Succeeded.as_str())
                .bind(version)
                .bind(started)
                .bind(finished)
                .bind(mark)
                .execute(&mut *c)
                .await
                .map_err(|e| self.err(e))?;
            }
            n += out.len();
            let g = Group {
                ids: kept,
                started,
                finished,
            };
            self.put_fold(c, id, (wave, version), g).await?;
        }
        self.drop_orphan_lists(c).await?;
        Ok(n)
    }

    /// Records `folds` of rollout `id` inside the caller's transaction (the
    /// one that creates the rollout).
    pub(super) async fn put_folds(
        &self,
        c: &mut sqlx::AnyConnection,
        id: &str,
        folds: Vec<Folded>,
    ) -> Result<(), Error> {
        if folds.iter().all(|f| f.ids.is_empty()) {
            return Ok(());
        }
        self.lock_lists(c).await?;
        for f in folds {
            let g = Group {
                ids: f.ids,
                started: f.started,
                finished: f.finished,
            };
            self.put_fold(c, id, (f.wave, f.version), g).await?;
        }
        Ok(())
    }

    /// The fold of `wave` at `version` in rollout `id`, if any: its ids,
    /// first start and last end.
    async fn folded(
        &self,
        c: &mut sqlx::AnyConnection,
        id: &str,
        wave: i64,
        version: i64,
    ) -> Result<Option<(Vec<String>, Option<i64>, Option<i64>)>, Error> {
        let row: Option<(String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT l.ids, f.started_at, f.finished_at \
             FROM fleetmig_folds f JOIN fleetmig_id_lists l ON l.key = f.list \
             WHERE f.rollout_id = $1 AND f.wave = $2 AND f.version = $3",
        )
        .bind(id)
        .bind(wave)
        .bind(version)
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| self.err(e))?;
        match row {
            None => Ok(None),
            Some((ids, s, f)) => Ok(Some((self.list_ids(&ids)?, s, f))),
        }
    }

    /// Writes the fold of `(wave, version)` in rollout `id` as `g` says
    /// (removed when `g` has no tenant).
    async fn put_fold(
        &self,
        c: &mut sqlx::AnyConnection,
        id: &str,
        (wave, version): (i64, i64),
        mut g: Group,
    ) -> Result<(), Error> {
        if g.ids.is_empty() {
            sqlx::query(
                "DELETE FROM fleetmig_folds WHERE rollout_id = $1 AND wave = $2 AND version = $3",
            )
            .bind(id)
            .bind(wave)
            .bind(version)
            .execute(&mut *c)
            .await
            .map_err(|e| self.err(e))?;
            return Ok(());
        }
        g.ids.sort_unstable();
        g.ids.dedup();
        let key = self.keep_list(c, &g.ids).await?;
        sqlx::query(
            "INSERT INTO fleetmig_folds (rollout_id, wave, version, tenants, list, started_at, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (rollout_id, wave, version) DO UPDATE SET \
             tenants = excluded.tenants, list = excluded.list, started_at = excluded.started_at, \
             finished_at = excluded.finished_at",
        )
        .bind(id)
        .bind(wave)
        .bind(version)
        .bind(g.ids.len() as i64)
        .bind(key)
        .bind(g.started)
        .bind(g.finished)
        .execute(&mut *c)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The key of the list of `ids` (sorted), kept once: a list with the
    /// same ids is named again, never written twice. The key is the count
    /// and a hash; the text is compared, so two lists that hash alike
    /// each get their own key.
    async fn keep_list(
        &self,
        c: &mut sqlx::AnyConnection,
        ids: &[String],
    ) -> Result<String, Error> {
        let text = serde_json::to_string(ids).map_err(|e| self.err(e))?;
        let mut h = std::hash::DefaultHasher::new();
        text.hash(&mut h);
        let base = format!("{}-{:016x}", ids.len(), h.finish());
        for n in 0u32.. {
            let key = match n {
                0 => base.clone(),
                n => format!("{base}-{n}"),
            };
            sqlx::query("INSERT INTO fleetmig_id_lists (key, ids) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(&key)
                .bind(&text)
                .execute(&mut *c)
                .await
                .map_err(|e| self.err(e))?;
            let kept: String =
                sqlx::query_scalar("SELECT ids FROM fleetmig_id_lists WHERE key = $1")
                    .bind(&key)
                    .fetch_one(&mut *c)
                    .await
                    .map_err(|e| self.err(e))?;
            if kept == text {
                return Ok(key);
            }
        }
        unreachable!("u32 keys run out before lists do")
    }

    /// Where the tenants of rollout `id` are read: its rows alone while it
    /// has no fold (a running rollout: pages ordered by the key's index),
    /// the view of rows and folds once it has.
    pub(super) async fn tenants_of(&self, id: &str) -> Result<&'static str, Error> {
        let folds: i64 =
            sqlx::query_scalar("SELECT count(*) FROM fleetmig_folds WHERE rollout_id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        Ok(match folds {
            0 => "fleetmig_tenant_runs",
            _ => "fleetmig_tenants",
        })
    }

    /// A list's ids, read back.
    fn list_ids(&self, text: &str) -> Result<Vec<String>, Error> {
        serde_json::from_str(text).map_err(|e| self.err(format!("a folded list of tenants: {e}")))
    }

    /// Removes the lists no fold names any more.
    pub(super) async fn drop_orphan_lists(&self, c: &mut sqlx::AnyConnection) -> Result<(), Error> {
        sqlx::query(
            "DELETE FROM fleetmig_id_lists WHERE NOT EXISTS \
             (SELECT 1 FROM fleetmig_folds f WHERE f.list = fleetmig_id_lists.key)",
        )
        .execute(&mut *c)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// On PostgreSQL, the lists to change alone (see `LISTS_LOCK`).
    pub(super) async fn lock_lists(&self, c: &mut sqlx::AnyConnection) -> Result<(), Error> {
        if self.postgres {
            sqlx::query(LISTS_LOCK)
                .execute(&mut *c)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// A transaction that will write: on SQLite the write lock first (a
    /// read that turns into a write fails at once beside another writer).
    pub(super) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, Error> {
        match self.postgres {
            true => self.pool.begin().await,
            false => self.pool.begin_with("BEGIN IMMEDIATE").await,
        }
        .map_err(|e| self.err(e))
    }

    /// The status of rollout `id`, its row held until the transaction ends
    /// on PostgreSQL (SQLite's write lock holds everything already).
    pub(super) async fn lock_rollout(
        &self,
        c: &mut sqlx::AnyConnection,
        id: &str,
    ) -> Result<Option<RolloutStatus>, Error> {
        let status: Option<String> = sqlx::query_scalar(if self.postgres {
            "SELECT status FROM fleetmig_rollouts WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT status FROM fleetmig_rollouts WHERE id = $1"
        })
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| self.err(e))?;
        status
            .map(|s| {
                s.parse()
                    .map_err(|e| self.err(format!("rollout {id}: {e}")))
            })
            .transpose()
    }
}
