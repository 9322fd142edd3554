//! What a rollout command leaves: the rollout as stored, its report (and
//! metrics file) written from the store.

use std::path::Path;

use crate::error::Error;
use crate::report::RunReport;
use crate::state::{RolloutStatus, RunStatus, StateStore};

/// What a command leaves: the rollout as stored at the end, and its report.
pub struct Finished {
    pub report: RunReport,
    pub dir: std::path::PathBuf,
}

impl Finished {
    pub fn exit_code(&self) -> i32 {
        let completed = self.report.rollout.status == RolloutStatus::Completed;
        let gates_clean = self.report.gates_clean();
        if self.report.all_ok() && completed && gates_clean {
            0
        } else {
            1
        }
    }
}

/// Marks the tenants of rollout `id` not yet run as skipped.
pub(super) async fn skip_todo(store: &StateStore, id: &str) -> Result<(), Error> {
    let todo: Vec<String> = store
        .tenant_runs(id)
        .await?
        .into_iter()
        .filter(|t| t.status.is_todo())
        .map(|t| t.tenant)
        .collect();
    store
        .set_tenant_status(id, &todo, RunStatus::Skipped, Some("rollout aborted"))
        .await
}

/// Writes the report (and metrics file) of rollout `id` from the store,
/// then folds a finished rollout's up-to-date tenants (`state/fold.rs`):
/// the end of a process that ran it.
pub async fn write_report(
    store: &StateStore,
    id: &str,
    reports: &Path,
    metrics: Option<&Path>,
) -> Result<Finished, Error> {
    let f = rewrite_report(store, id, reports, metrics).await?;
    // its report written whole, a finished rollout's up-to-date tenants are
    // folded (state/fold.rs); a fold that fails leaves their rows as they
    // were, and the run's outcome is what it is
    if f.report.rollout.status.is_finished()
        && let Err(e) = store.fold(id).await
    {
        tracing::warn!(rollout = %id, error = %e, "up-to-date tenants not folded");
    }
    Ok(f)
}

/// The report of rollout `id` written from the store, and nothing written
/// to the store (`fleetmig report ID`: a role that may only read it is
/// enough).
pub async fn rewrite_report(
    store: &StateStore,
    id: &str,
    reports: &Path,
    metrics: Option<&Path>,
) -> Result<Finished, Error> {
    let (report, dir) = RunReport::write(store, id, reports).await?;
    if let Some(m) = metrics {
        crate::report::write_atomic(m, &report.metrics())?;
    }
    Ok(Finished { report, dir })
}
