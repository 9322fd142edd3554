//! What the commands that run tenants share: the state store opened, the
//! engine's context built (the fleet discovered, the set loaded, one
//! connector, the progress display, signals), the work run in it and what
//! it opened closed, the rollout printed.

use std::path::PathBuf;
use std::sync::Arc;

use super::output;
use super::progress::{Progress, ProgressMode};
use crate::config::Config;
use crate::dialect::Connector;
use crate::error::Error;
use crate::event::Bus;
use crate::rollout::{Ctx, Finished, RunOptions, prepare};
use crate::state::{Open, StateStore, owner_id};

/// What one invocation adds to its config: how progress is shown, where
/// the metrics file goes, whether a failed gate is passed on purpose.
#[derive(Debug, Default)]
pub(super) struct Invocation {
    pub progress_every: Option<u64>,
    pub metrics_file: Option<PathBuf>,
    pub override_gate: bool,
    /// A move rollout's target template with its password (the store
    /// keeps it without).
    pub move_to: Option<String>,
}

/// The state store of `cfg`, connected within the connect timeout.
pub(super) async fn open_store(cfg: &Config, mode: Open) -> Result<StateStore, Error> {
    StateStore::open(&cfg.state, mode, cfg.settings.connect_timeout).await
}

fn progress_mode(every: Option<u64>) -> ProgressMode {
    match every {
        Some(0) => ProgressMode::Off,
        Some(n) => ProgressMode::Lines(std::time::Duration::from_secs(n)),
        None => ProgressMode::Auto,
    }
}

/// The context of a command that runs tenants: the fleet discovered and the
/// set loaded, one connector, the progress display subscribed, Ctrl-C and
/// SIGTERM handled.
async fn context<'a>(
    cfg: &Config,
    store: &'a StateStore,
    progress: &Progress,
    inv: Invocation,
    prepared: Option<Prepared>,
) -> Result<Ctx<'a>, Error> {
    let fleet = cfg.fleet()?;
    let (set, found) = match prepared {
        Some(p) => p,
        None => prepare(&cfg.migrations, fleet, &cfg.discover).await?,
    };
    tracing::debug!(tenants = found.tenants.len(), "discovered");
    let cancel = super::signals::arm();
    Ok(Ctx {
        fanout: Default::default(),
        store,
        set,
        tenants: found.tenants,
        refused: found.refused,
        fleet: fleet.clone(),
        connector: Arc::new(Connector::new(cfg.settings.clone())),
        bus: Bus::new(vec![progress.live()]),
        cancel,
        opts: RunOptions {
            concurrency: cfg.given.concurrency.then_some(cfg.exec.concurrency),
            per_server: cfg.given.per_server.then_some(cfg.exec.per_server),
            lease: cfg.lease,
            reports: cfg.reports.clone(),
            metrics_file: inv.metrics_file,
            override_gate: inv.override_gate,
        },
        owner: owner_id(),
        mover: Some(crate::relocate::bulk::step(inv.move_to)),
    })
}

/// The migration set loaded and the fleet discovered.
type Prepared = (
    std::sync::Arc<crate::migration::MigrationSet>,
    crate::discover::Fleet,
);

/// Runs `work` in a fresh context on `store` and closes what it opened,
/// whatever the outcome.
pub(super) async fn in_context<T>(
    cfg: &Config,
    store: &StateStore,
    inv: Invocation,
    work: impl AsyncFnOnce(&Ctx<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    run_in_context(cfg, store, None, inv, work).await
}

async fn run_in_context<T>(
    cfg: &Config,
    store: &StateStore,
    prepared: Option<Prepared>,
    inv: Invocation,
    work: impl AsyncFnOnce(&Ctx<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    let progress = Progress::start(progress_mode(inv.progress_every));
    let r = match context(cfg, store, &progress, inv, prepared).await {
        Ok(ctx) => {
            let r = work(&ctx).await;
            ctx.connector.close().await;
            r
        }
        Err(e) => Err(e),
    };
    progress.finish();
    r
}

/// `in_context` with a store opened (and created where missing) for it.
pub(super) async fn with_context<T>(
    cfg: &Config,
    inv: Invocation,
    work: impl AsyncFnOnce(&Ctx<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    // bad input (a registry row, a migration file) is refused before the
    // state store is created
    let prepared = prepare(&cfg.migrations, cfg.fleet()?, &cfg.discover).await?;
    let store = open_store(cfg, Open::Create).await?;
    let r = run_in_context(cfg, &store, Some(prepared), inv, work).await;
    store.close().await;
    r
}

pub(super) fn finish(f: &Finished) -> i32 {
    if let Some(h) = &f.report.rollout.settings.policy.held {
        errln!("fleetmig: {h}");
    }
    output::print_run(&f.report);
    outln!("{}", f.dir.display());
    f.exit_code()
}
