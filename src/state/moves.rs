//! Moves of a tenant to another location (`fleetmig move`): one row each,
//! written when the copy starts and when it ends, so that an interrupted
//! move is known (a target marked by it may be emptied and filled again by
//! this tenant's next move) and `fleetmig move` can list what moved where.
//! Locations are kept without credentials; a target is claimed by its
//! place's key (`copy::Place::key`).

use sqlx::Row;

/// One table moved.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableMoved {
    pub table: String,
    pub rows: u64,
    /// The size of the values carried (`Value::size`).
    pub bytes: u64,
    /// Of the rows as the target holds them (`rows:sum`).
    pub checksum: String,
    /// The source server's own digest of the table in the snapshot (where
    /// it has one): a later one that differs says the source was written to.
    pub digest: Option<String>,
    pub ms: u64,
}

text_enum! {
    /// Where a move stands: copying until it ends, done or failed.
    pub enum MoveStatus {
        Copying = "copying",
        Done = "done",
        Failed = "failed",
    }
}

/// What a move did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MoveReport {
    pub format_version: u32,
    pub id: String,
    pub tenant: String,
    pub source: String,
    pub target: String,
    pub version: i64,
    pub status: MoveStatus,
    pub error: Option<String>,
    pub tables: Vec<TableMoved>,
    pub rows: u64,
    pub duration_ms: u64,
    /// What the move created (`nothing`: the target existed, empty or
    /// marked by this tenant's unfinished move).
    pub created: crate::dialect::copy::Created,
    /// The id of this tenant's unfinished move whose half-filled target
    /// this one emptied and filled again.
    pub restarted_from: Option<String>,
    /// Tables written to during the copy and copied again while the
    /// source's writes were held (`--freeze-source`).
    pub recopied: Vec<String>,
    /// A target this move created and then removed again, because it failed.
    pub target_removed: bool,
    pub registry_backup: Option<String>,
    pub source_dropped: bool,
    /// Where the report was written (set by the command).
    pub report_dir: Option<String>,
}

impl MoveReport {
    /// The report of move `id` of `tenant` (at `version`) to `target`,
    /// as it starts.
    pub fn new(
        id: String,
        tenant: &crate::tenant::Tenant,
        target: &str,
        version: i64,
    ) -> MoveReport {
        MoveReport {
            format_version: 2,
            id,
            tenant: tenant.id.to_string(),
            source: tenant.locator.redacted(),
            target: target.to_string(),
            version,
            status: MoveStatus::Done,
            error: None,
            tables: Vec::new(),
            rows: 0,
            duration_ms: 0,
            created: crate::dialect::copy::Created::Nothing,
            restarted_from: None,
            recopied: Vec::new(),
            target_removed: false,
            registry_backup: None,
            source_dropped: false,
            report_dir: None,
        }
    }

    /// The report of move `id` of `tenant` to `target`, refused (or
    /// failed) before it could report anything itself.
    pub fn refused(
        id: String,
        tenant: &crate::tenant::Tenant,
        target: &str,
        error: &str,
    ) -> MoveReport {
        MoveReport {
            status: MoveStatus::Failed,
            error: Some(error.to_string()),
            ..MoveReport::new(id, tenant, target, 0)
        }
    }
}

use super::{StateStore, now_ms};
use crate::error::Error;

/// One move as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MoveRecord {
    pub id: String,
    pub tenant: String,
    pub source: String,
    pub target: String,
    pub version: i64,
    pub status: MoveStatus,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub rows_copied: i64,
    pub error: Option<String>,
}

impl StateStore {
    /// Records move `id` of `tenant` as copying: the claim on the target
    /// at `key`. A copying move of this tenant to it that is still recorded
    /// was interrupted (the caller holds the tenant's lock): it becomes
    /// failed. Another tenant's copying move into it refuses this one.
    pub async fn move_started(
        &self,
        id: &str,
        tenant: &str,
        source: &str,
        target: &str,
        key: &str,
        version: i64,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE fleetmig_moves SET status = $3, error = 'interrupted' \
             WHERE tenant = $1 AND target_key = $2 AND status = $4",
        )
        .bind(tenant)
        .bind(key)
        .bind(MoveStatus::Failed.as_str())
        .bind(MoveStatus::Copying.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let busy: Option<String> = sqlx::query_scalar(
            "SELECT tenant FROM fleetmig_moves WHERE target_key = $1 AND status = $2",
        )
        .bind(key)
        .bind(MoveStatus::Copying.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        if let Some(other) = busy {
            return Err(Error::Busy(format!(
                "a move of tenant {other} into {target} is copying (or was interrupted): \
                 finish or clear it first"
            )));
        }
        sqlx::query(
            "INSERT INTO fleetmig_moves (id, tenant, source, target, target_key, version, status, started_at, rows_copied) \
             VALUES ($1, $2, $3, $4, $5, $6, $8, $7, 0)",
        )
        .bind(id)
        .bind(tenant)
        .bind(source)
        .bind(target)
        .bind(key)
        .bind(version)
        .bind(now_ms())
        .bind(MoveStatus::Copying.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| {
            // the unique index: another process claimed the target meanwhile
            Error::Busy(format!("another move is filling {target}: {}", self.err(e)))
        })?;
        Ok(())
    }

    /// The status of move `id`, if this store knows it.
    pub async fn move_status(&self, id: &str) -> Result<Option<MoveStatus>, Error> {
        let word: Option<String> =
            sqlx::query_scalar("SELECT status FROM fleetmig_moves WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        word.map(|w| w.parse().map_err(|e| self.err(format!("move {id}: {e}"))))
            .transpose()
    }

    /// Forgets move `id`, refused before it touched anything.
    pub async fn move_refused(&self, id: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM fleetmig_moves WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records how move `id` ended (done or failed).
    pub async fn move_finished(
        &self,
        id: &str,
        status: MoveStatus,
        rows: u64,
        tables: &str,
        error: Option<&str>,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE fleetmig_moves SET status = $1, finished_at = $2, rows_copied = $3, tables = $4, error = $5 \
             WHERE id = $6",
        )
        .bind(status.as_str())
        .bind(now_ms())
        .bind(rows as i64)
        .bind(tables)
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The moves recorded, newest first.
    pub async fn moves(&self, limit: usize) -> Result<Vec<MoveRecord>, Error> {
        let rows = sqlx::query(
            "SELECT id, tenant, source, target, version, status, started_at, finished_at, rows_copied, error \
             FROM fleetmig_moves ORDER BY started_at DESC, id DESC LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                let status = status
                    .parse()
                    .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
                Ok(MoveRecord {
                    id: r.try_get("id")?,
                    tenant: r.try_get("tenant")?,
                    source: r.try_get("source")?,
                    target: r.try_get("target")?,
                    version: r.try_get("version")?,
                    status,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    rows_copied: r.try_get("rows_copied")?,
                    error: r.try_get("error")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }
}
