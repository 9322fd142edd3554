//! Rollouts: taking a fleet to a target version. `executor` fans out over
//! tenants (bounded, with retries and cancellation), `retry` is the retry
//! policy, `live` the per-tenant live state, `inspect` the read-only view used
//! by `status` and `plan`. `sync` here is the whole flow of one run: load and
//! validate the set, discover, execute, report.

pub mod executor;
pub mod inspect;
pub mod live;
pub mod retry;

pub use executor::{Cancel, ExecOptions, Executor, Stops};
pub use inspect::{Inspection, TenantState, inspect};
pub use live::LiveState;
pub use retry::RetryPolicy;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;

use crate::config::Config;
use crate::dialect::Connector;
use crate::error::Error;
use crate::event::Subscriber;
use crate::migration::{MigrationSet, load};
use crate::report::progress::{Progress, ProgressMode};
use crate::report::{RunReport, new_run_id};
use crate::tenant::{Tenant, TenantId, discover};

/// Loads the set, discovers the fleet and keeps only `only` (all when empty).
/// Nothing is written anywhere before this succeeds.
pub async fn prepare(
    config: &Config,
    only: &[String],
) -> Result<(Arc<MigrationSet>, Vec<Tenant>), Error> {
    let set = load(&config.migrations)?;
    let mut tenants = discover(&config.fleet, &config.discover).await?;
    if !only.is_empty() {
        let mut wanted = Vec::new();
        for id in only {
            let id = TenantId::new(id).map_err(|m| Error::Usage(format!("--tenant: {m}")))?;
            if !tenants.iter().any(|t| t.id == id) {
                return Err(Error::Usage(format!(
                    "--tenant {id}: no such tenant in fleet {}",
                    config.fleet
                )));
            }
            wanted.push(id);
        }
        tenants.retain(|t| wanted.contains(&t.id));
    }
    Ok((Arc::new(set), tenants))
}

/// Brings every tenant (or `only` those) to the target and writes the report.
/// Returns the report and the folder it was written to.
pub async fn sync(
    config: &Config,
    only: &[String],
    cancel: Cancel,
    progress: ProgressMode,
    extra: Vec<Arc<dyn Subscriber>>,
) -> Result<(RunReport, PathBuf), Error> {
    let (set, tenants) = prepare(config, only).await?;
    let run_id = new_run_id();
    let started_at = Utc::now();
    let connector = Arc::new(Connector::new(config.settings.clone()));
    let live = Arc::new(LiveState::default());
    let mut subscribers: Vec<Arc<dyn Subscriber>> = vec![live.clone()];
    subscribers.extend(extra);
    let executor = Executor::new(
        connector.clone(),
        set.clone(),
        config.exec.clone(),
        subscribers,
        cancel,
    );
    let progress = Progress::start(live.clone(), progress);
    let stops = executor.run(&run_id, tenants).await;
    progress.finish();
    connector.close().await;
    let report = RunReport {
        run_id,
        command: "sync".into(),
        fleet: config.fleet.to_string(),
        migrations_dir: config.migrations.clone(),
        set_checksum: set.checksum.clone(),
        head: set.head(),
        target: config.exec.target,
        started_at,
        finished_at: Utc::now(),
        concurrency: config.exec.concurrency,
        tx_mode: format!("{:?}", config.exec.tx_mode).to_lowercase(),
        interrupted: stops.interrupted,
        max_failures_reached: stops.max_failures_reached,
        outcomes: live.take_outcomes(),
    };
    let dir = report.write(&config.reports)?;
    Ok((report, dir))
}
