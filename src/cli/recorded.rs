//! Commands on rollouts the state store recorded: `resume`, `retry`,
//! `abort`, `pause`, `status --rollout`, `report`, `history`. A rollout
//! remembers its fleet, migration folder and report folder: with only
//! `--state` (and the id, or the single unfinished rollout of that store)
//! these work from the record, and a `--fleet` or `--migrations` given that
//! differs from it is an error naming both.

use crate::state::patiently;
use std::path::{Path, PathBuf};

use super::args::{
    AbortArgs, HistoryArgs, PauseArgs, ReportArgs, ResumeArgs, RetryArgs, StatusArgs, WorkerArgs,
    config,
};
use super::output;
use super::run::{Invocation, finish, in_context, open_store};
use crate::config::{Config, Overrides};
use crate::error::{About, Error};
use crate::report::RunReport;
use crate::rollout::Finished;
use crate::state::{Location, Open, Request, RolloutRecord, RolloutStatus, RunStatus, StateStore};
use crate::tenant::FleetSpec;

fn unfinished(r: &RolloutRecord) -> bool {
    !r.status.is_finished()
}

/// The rollout a command means: `id`; else the newest one of `--fleet` that
/// `pick` accepts; else, with no fleet given, the only such rollout of the
/// store (several are an error listing them).
async fn pick(
    store: &StateStore,
    fleet: Option<&FleetSpec>,
    id: Option<&str>,
    pick: impl Fn(&RolloutRecord) -> bool,
    what: &str,
) -> Result<RolloutRecord, Error> {
    if let Some(id) = id {
        return store.get_rollout(id).await;
    }
    let candidates: Vec<RolloutRecord> = store
        .rollouts(1000)
        .await?
        .into_iter()
        .filter(|r| pick(r) && fleet.is_none_or(|f| f.is(&r.fleet)))
        .collect();
    let whose = fleet.map(|f| format!(" of fleet {f}")).unwrap_or_default();
    match (candidates.len(), fleet) {
        (0, _) => Err(Error::usage(
            About::Store(store.location.clone()),
            format!("no {what}rollout{whose}"),
        )),
        (1, _) | (_, Some(_)) => Ok(candidates.into_iter().next().expect("one")),
        (n, None) => Err(Error::usage(
            About::Store(store.location.clone()),
            format!(
                "{n} {what}rollouts: {}; name one, or pass --fleet",
                candidates
                    .iter()
                    .take(5)
                    .map(|r| format!("{} (fleet {})", r.id, r.fleet))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// `cfg` as rollout `r` recorded it: its fleet, migration folder and report
/// folder, unless given; a given one that differs is an error.
fn adopt(cfg: &mut Config, r: &RolloutRecord, needs_fleet: bool) -> Result<(), Error> {
    match &cfg.fleet {
        Some(f) if !f.is(&r.fleet) => {
            let m = format!("is not the fleet of rollout {}, which is {}", r.id, r.fleet);
            return Err(Error::flag_value("--fleet", f.recorded(), m));
        }
        Some(_) => {}
        // pause and abort touch the state store only
        None if !needs_fleet => {
            cfg.fleet = FleetSpec::from_record(&r.fleet);
        }
        None => {
            cfg.fleet = Some(FleetSpec::from_record(&r.fleet).ok_or_else(|| {
                let m = format!(
                    "ran on {}, whose password fleetmig does not keep: pass --fleet",
                    r.fleet
                );
                Error::usage(About::Rollout(r.id.clone()), m)
            })?);
        }
    }
    let recorded = Path::new(&r.migrations_dir);
    if cfg.given.migrations {
        if !same_place(&cfg.migrations, recorded) {
            let m = format!(
                "is not the migration folder of rollout {}, which is {}",
                r.id, r.migrations_dir
            );
            return Err(Error::flag_value(
                "--migrations",
                cfg.migrations.display(),
                m,
            ));
        }
    } else {
        cfg.migrations = recorded.to_path_buf();
    }
    if !cfg.given.reports
        && let Some(dir) = &r.reports_dir
    {
        cfg.reports = PathBuf::from(dir);
    }
    Ok(())
}

/// Whether two folder names are the same folder.
fn same_place(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    a == b || canon(a) == canon(b)
}

/// Opens the store, picks the rollout and adopts its record.
async fn recorded(
    cfg: &mut Config,
    id: Option<&str>,
    accept: impl Fn(&RolloutRecord) -> bool,
    what: &str,
    needs_fleet: bool,
) -> Result<(StateStore, RolloutRecord), Error> {
    let store = open_store(cfg, Open::Existing).await?;
    let r = match pick(&store, cfg.fleet.as_ref(), id, accept, what).await {
        Ok(r) => r,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    if let Err(e) = adopt(cfg, &r, needs_fleet) {
        store.close().await;
        return Err(e);
    }
    Ok((store, r))
}

pub async fn resume(a: ResumeArgs) -> Result<i32, Error> {
    let mut cfg = config(&a.common, Overrides::default())?;
    let (store, r) = recorded(&mut cfg, a.id.as_deref(), unfinished, "unfinished ", true).await?;
    let f = in_context(
        &cfg,
        &store,
        Invocation {
            progress_every: a.progress_every,
            metrics_file: a.metrics_file.clone(),
            override_gate: a.override_gate,
            move_to: move_to(&r, a.move_to.clone())?,
        },
        async |ctx| crate::rollout::resume(ctx, &r.id).await,
    )
    .await;
    store.close().await;
    Ok(finish(&f?))
}

pub async fn retry(a: RetryArgs) -> Result<i32, Error> {
    let mut cfg = config(&a.common, Overrides::default())?;
    let (store, r) = recorded(&mut cfg, a.rollout.as_deref(), |_| true, "", true).await?;
    // its failed tenants are not known any more
    if let Err(e) = r.unpruned() {
        store.close().await;
        return Err(e);
    }
    let tenants: Vec<String> = if a.failed {
        let runs = store.tenant_runs(&r.id).await;
        match runs {
            Ok(runs) => runs
                .into_iter()
                .filter(|t| t.status == RunStatus::Failed)
                .map(|t| t.tenant)
                .collect(),
            Err(e) => {
                store.close().await;
                return Err(e);
            }
        }
    } else {
        a.tenants.clone()
    };
    if tenants.is_empty() {
        store.close().await;
        outln!("rollout {} has no failed tenant to retry", r.id);
        return Ok(0);
    }
    let f = in_context(
        &cfg,
        &store,
        Invocation {
            progress_every: a.progress_every,
            metrics_file: a.metrics_file.clone(),
            override_gate: false,
            move_to: move_to(&r, a.move_to.clone())?,
        },
        async |ctx| crate::rollout::retry(ctx, &r.id, &tenants).await,
    )
    .await;
    let (f, statuses) = match f {
        Ok(f) => {
            let statuses = store.statuses(&r.id, &tenants).await;
            store.close().await;
            (f, statuses?)
        }
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    output::print_run(&f.report);
    outln!("{}", f.dir.display());
    let retried_ok = statuses.iter().all(|(_, s)| *s == RunStatus::Succeeded);
    Ok(if retried_ok { 0 } else { 1 })
}

/// `abort` and `pause`: a rollout another process runs is asked to stop, and
/// this waits until it has; one nobody runs is stopped here.
async fn stop(cfg: &mut Config, id: Option<&str>, request: Request) -> Result<Finished, Error> {
    let (store, r) = recorded(cfg, id, unfinished, "unfinished ", false).await?;
    let f = crate::rollout::driver::stop(
        &store,
        &r.id,
        request,
        &cfg.reports,
        cfg.lease,
        |holder| {
            errln!(
                "fleetmig: rollout {} is being run by {holder}: asked it to {request}; waiting for it to stop",
                r.id
            )
        },
    )
    .await;
    store.close().await;
    f
}

/// How often an idle worker looks for a rollout to join (one small query).
const WORKER_POLL_MS: u64 = 500;

/// `fleetmig worker`: joins the active rollout of a shared store (or the one
/// `--rollout` names), works on it beside the other workers until it stops,
/// then waits for the next (or exits: `--rollout`, `--once`).
pub async fn worker(a: WorkerArgs) -> Result<i32, Error> {
    let cfg = config(&a.common, Overrides::default())?;
    let store = open_store(&cfg, Open::Existing).await?;
    if !store.is_shared() {
        let location = store.location.clone();
        store.close().await;
        return Err(Error::usage(
            About::Command("worker"),
            format!(
                "needs a state store several processes share: --state postgres://... ({location} \
                 is a SQLite file, which one process at a time runs; use sync, rollout or resume)"
            ),
        ));
    }
    let r = work_until_done(&cfg, &store, &a).await;
    store.close().await;
    r
}

async fn work_until_done(cfg: &Config, store: &StateStore, a: &WorkerArgs) -> Result<i32, Error> {
    let since = crate::state::now_ms();
    let mut announced = false;
    // since when joining has failed for a reason that may pass (the fleet's
    // or the store's server restarting): a worker waits that out
    let mut failing: Option<std::time::Instant> = None;
    loop {
        let Some(r) = rollout_to_join(store, a).await? else {
            if let Some(code) = ended_before_joined(store, a, since).await? {
                return Ok(code);
            }
            if !announced {
                errln!(
                    "fleetmig: no rollout runs in {}; waiting for one",
                    store.location
                );
                announced = true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(WORKER_POLL_MS)).await;
            continue;
        };
        match r.status {
            RolloutStatus::Completed => return Ok(0),
            RolloutStatus::Aborted | RolloutStatus::Halted if a.rollout.is_some() => return Ok(1),
            // a pause or abort being carried out: wait for its outcome
            RolloutStatus::Running if r.requested.is_none() => {}
            _ => {
                tokio::time::sleep(std::time::Duration::from_millis(WORKER_POLL_MS)).await;
                continue;
            }
        }
        let f = match join_one(cfg, store, a, &r).await {
            Err(
                e @ (Error::Discovery { .. }
                | Error::State {
                    transient: true, ..
                }),
            ) if failing
                .get_or_insert_with(std::time::Instant::now)
                .elapsed()
                < crate::state::PATIENCE =>
            {
                tracing::warn!("{e}; joining again in a second");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            f => f?,
        };
        failing = None;
        output::print_run(&f.report);
        outln!("{}", f.dir.display());
        announced = false;
        let done = patiently("reading the rollout", || store.get_rollout(&r.id))
            .await?
            .status;
        if a.rollout.is_some() || a.once {
            match done {
                RolloutStatus::Completed => return Ok(0),
                RolloutStatus::Aborted | RolloutStatus::Halted => return Ok(1),
                _ if a.once => return Ok(1),
                _ => {}
            }
        }
    }
}

/// `worker --once` (without `--rollout`): a rollout that ran and ended
/// between two looks for one since the worker started (a fleet found at
/// head is done the moment it is recorded) is the one it was waiting for:
/// its exit code, said on stderr.
async fn ended_before_joined(
    store: &StateStore,
    a: &WorkerArgs,
    since: i64,
) -> Result<Option<i32>, Error> {
    if !a.once || a.rollout.is_some() {
        return Ok(None);
    }
    let ended = patiently("reading the rollouts", || store.rollouts(20))
        .await?
        .into_iter()
        .find(|r| {
            r.status.is_finished() && r.finished_at.is_some_and(|f| f >= since)
                || r.status == RolloutStatus::Halted && r.created_at >= since
        });
    Ok(ended.map(|r| {
        errln!(
            "fleetmig: rollout {} ran and ended ({}) before this worker could join it",
            r.id,
            r.status
        );
        match r.status {
            RolloutStatus::Completed => 0,
            _ => 1,
        }
    }))
}

/// The rollout a worker joins: the one `--rollout` names, or the newest
/// running one (none yet: `None`); refused if another fleetmig version
/// planned it.
async fn rollout_to_join(
    store: &StateStore,
    a: &WorkerArgs,
) -> Result<Option<RolloutRecord>, Error> {
    let found = match &a.rollout {
        Some(id) => Some(patiently("reading the rollout", || store.get_rollout(id)).await?),
        None => patiently("reading the rollouts", || store.rollouts(100))
            .await?
            .into_iter()
            .find(|r| r.status == RolloutStatus::Running),
    };
    if let Some(r) = &found {
        crate::rollout::same_version(r)?;
    }
    Ok(found)
}

/// This worker on rollout `r` until it leaves it, with the rollout's
/// frozen settings under the command line's own.
async fn join_one(
    cfg: &Config,
    store: &StateStore,
    a: &WorkerArgs,
    r: &RolloutRecord,
) -> Result<crate::rollout::Finished, Error> {
    let mut cfg = cfg.clone();
    adopt(&mut cfg, r, true)?;
    in_context(
        &cfg,
        store,
        Invocation {
            progress_every: a.progress_every,
            metrics_file: a.metrics_file.clone(),
            override_gate: false,
            move_to: move_to(r, a.move_to.clone())?,
        },
        async |ctx| crate::rollout::join(ctx, &r.id).await,
    )
    .await
}

pub async fn abort(a: AbortArgs) -> Result<i32, Error> {
    let mut cfg = config(&a.common, Overrides::default())?;
    let f = stop(&mut cfg, a.id.as_deref(), Request::Abort).await?;
    output::print_run(&f.report);
    outln!("{}", f.dir.display());
    Ok(0)
}

pub async fn pause(a: PauseArgs) -> Result<i32, Error> {
    let mut cfg = config(&a.common, Overrides::default())?;
    let f = stop(&mut cfg, a.id.as_deref(), Request::Pause).await?;
    output::print_run(&f.report);
    outln!("{}", f.dir.display());
    Ok(0)
}

/// `status --rollout ID`: the rollout's waves and tenants from the store,
/// its tenants streamed.
/// `status --rollout ID`.
pub async fn rollout_status(a: StatusArgs) -> Result<i32, Error> {
    let cfg = config(&a.common, a.opts.overrides())?;
    let id = a.rollout.as_deref().unwrap_or_default();
    status(&cfg, id, a.opts.json).await
}

async fn status(cfg: &Config, id: &str, json: bool) -> Result<i32, Error> {
    let store = open_store(cfg, Open::Read).await?;
    let r = async {
        let report = RunReport::load(&store, id).await?;
        let workers = match store.is_shared() {
            true => store.workers(id).await?,
            false => Vec::new(),
        };
        output::print_rollout_head(&report, &workers, json);
        let mut n = 0;
        store
            .each_run(id, |t| {
                output::print_rollout_tenant(&report, &t, n, json);
                n += 1;
                Ok(())
            })
            .await?;
        output::print_rollout_tail(json);
        Ok::<_, Error>(report.all_ok())
    }
    .await;
    store.close().await;
    Ok(if r? { 0 } else { 1 })
}

pub async fn history(a: HistoryArgs) -> Result<i32, Error> {
    let cfg = config(&a.common, Overrides::default())?;
    if let Location::File(path) = Location::parse(&cfg.state)?
        && !path.exists()
    {
        // nothing recorded yet: say so, and create nothing
        errln!(
            "fleetmig: no state store at {}: no rollout has been recorded with it yet",
            path.display()
        );
        output::print_history(&[], a.json);
        return Ok(0);
    }
    let store = open_store(&cfg, Open::Read).await?;
    let rows = async {
        let mut rows = Vec::new();
        for r in store.rollouts(a.limit).await? {
            let counts = match r.pruned {
                Some(p) => (p.tenants, p.succeeded, p.failed),
                None => store.run_counts(&r.id).await?,
            };
            rows.push((r, counts));
        }
        Ok::<_, Error>(rows)
    }
    .await;
    store.close().await;
    output::print_history(&rows?, a.json);
    Ok(0)
}

/// `report ID`: written again from the store, into the rollout's own report
/// folder unless `--reports` says otherwise.
pub async fn report(a: ReportArgs) -> Result<i32, Error> {
    let cfg = config(&a.common, Overrides::default())?;
    let store = open_store(&cfg, Open::Read).await?;
    let f = async {
        let r = store.get_rollout(&a.id).await?;
        let reports = match (&r.reports_dir, cfg.given.reports) {
            (Some(dir), false) => PathBuf::from(dir),
            _ => cfg.reports.clone(),
        };
        crate::rollout::rewrite_report(&store, &r.id, &reports, a.metrics_file.as_deref()).await
    }
    .await;
    store.close().await;
    outln!("{}", f?.dir.display());
    Ok(0)
}

/// The target template a move rollout `r` needs: its frozen one, or, when
/// that held a password (kept redacted), the one given again with `--to`,
/// which must be the same but for the password.
fn move_to(r: &RolloutRecord, given: Option<String>) -> Result<Option<String>, Error> {
    let Some(spec) = &r.settings.moving else {
        return Ok(None);
    };
    if !spec.host.is_empty() && spec.host != crate::rollout::host() {
        let m = format!(
            "a move rollout; it switches rows of a registry file on {}: run this there",
            spec.host
        );
        return Err(Error::usage(About::Rollout(r.id.clone()), m));
    }
    let kept = &spec.to;
    match given {
        Some(to) if crate::options::MoveSpec::redacted(&to) != *kept => Err(Error::flag_value(
            "--to",
            crate::tenant::redact_url(&to),
            format!("not the target of move rollout {}, which is {kept}", r.id),
        )),
        Some(to) => Ok(Some(to)),
        None if spec.needs_password() => Err(Error::usage(
            About::Rollout(r.id.clone()),
            format!(
                "a move rollout to {kept}, whose password fleetmig does not keep: pass --to with it"
            ),
        )),
        None => Ok(None),
    }
}
