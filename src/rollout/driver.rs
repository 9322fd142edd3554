//! The rollout commands: start a planned rollout, resume a paused, halted or
//! crashed one from where it stood, retry tenants of one, and pause or abort
//! one another process runs. Running waves is the engine's one loop
//! (`engine`), the same for one process and for many. The tenant's own
//! history stays the truth: a tenant left `running` by a crash is simply run
//! again, and re-reads its history before applying anything.

use std::path::Path;
use std::time::Duration;

use super::context::Ctx;
use super::engine::Batch;
use super::outcome::{Finished, skip_todo, write_report};
use super::recorder::Recorder;
use super::waves::PlannedWave;
use crate::error::{About, Error};
use crate::options::Frozen;
use crate::state::{Folded, Request, RolloutRecord, RolloutStatus, StateStore, now_ms};

/// What a new rollout is recorded with: its waves, and the first wave's
/// tenants read ahead with nothing to do (`folded`, see `prefold`), which
/// are in no wave's list.
pub struct Plan {
    pub waves: Vec<PlannedWave>,
    pub folded: Vec<Folded>,
}

/// Creates a rollout from a plan and runs it.
pub async fn start(
    ctx: &Ctx<'_>,
    command: &str,
    target: i64,
    settings: Frozen,
    plan: Plan,
    refused: &[(String, String)],
    id: String,
) -> Result<Finished, Error> {
    let Plan { waves, folded } = plan;
    // a rollout began when its first tenant was read (ahead, `prefold`)
    let began = folded.iter().filter_map(|f| f.started).min();
    let record = RolloutRecord {
        id: id.clone(),
        created_at: began.unwrap_or_else(now_ms),
        operator: operator(),
        command: command.to_string(),
        fleet: ctx.fleet.recorded(),
        migrations_dir: absolute(&ctx.set.dir),
        set_checksum: ctx.set.checksum.clone(),
        target,
        settings,
        status: RolloutStatus::Running,
        reason: None,
        current_wave: 0,
        claimed_by: Some(ctx.owner.clone()),
        heartbeat_at: None,
        finished_at: None,
        requested: None,
        reports_dir: Some(absolute(&ctx.opts.reports)),
        pruned: None,
    };
    let waves: Vec<(String, String, Vec<String>)> = waves
        .into_iter()
        .map(|w| (w.name, w.selector, w.tenants))
        .collect();
    ctx.store
        .create_rollout(&record, &waves, refused, folded, ctx.opts.lease)
        .await?;
    tracing::debug!(rollout = %id, "recorded");
    super::engine::run(ctx, &id, false).await
}

/// Takes over rollout `id` (refusing while a live process holds it) and runs
/// it from where it stood.
pub async fn resume(ctx: &Ctx<'_>, id: &str) -> Result<Finished, Error> {
    let r = ctx.store.get_rollout(id).await?;
    if r.status.is_finished() {
        let m = format!(
            "{}; nothing to resume (use `fleetmig retry --rollout {id}` for failed tenants)",
            r.status
        );
        return Err(Error::usage(About::Rollout(id.into()), m));
    }
    ctx.check_same_set(&r)?;
    crate::report::check_folder(&ctx.opts.reports)?;
    let halted = r.status == RolloutStatus::Halted;
    if halted {
        // its gate is evaluated again (or passed: --override-gate)
        ctx.store.reopen_gate(id, r.current_wave).await?;
    }
    if r.status != RolloutStatus::Running {
        ctx.store
            .set_status(id, RolloutStatus::Running, None)
            .await?;
    }
    super::engine::run(ctx, id, halted && ctx.opts.override_gate).await
}

/// Joins rollout `id` as one more worker (`fleetmig worker`): only while
/// it runs, never changing its status (a resume reopens a halted gate; a
/// worker that joins late must not undo a halt or a pause another made
/// meanwhile). Returns the report as it stands when this worker leaves.
pub async fn join(ctx: &Ctx<'_>, id: &str) -> Result<Finished, Error> {
    let r = ctx.store.get_rollout(id).await?;
    r.unpruned()?;
    ctx.check_same_set(&r)?;
    crate::report::check_folder(&ctx.opts.reports)?;
    if r.status == RolloutStatus::Running && r.requested.is_none() {
        return super::engine::run(ctx, id, false).await;
    }
    let metrics = ctx.opts.metrics_file.as_deref();
    write_report(ctx.store, id, &ctx.opts.reports, metrics).await
}

/// `path` made absolute against the working folder, for the record.
pub(crate) fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Runs `tenants` of rollout `id` again (recorded as further attempts).
pub async fn retry(ctx: &Ctx<'_>, id: &str, tenants: &[String]) -> Result<Finished, Error> {
    let r = ctx.store.get_rollout(id).await?;
    r.unpruned()?;
    ctx.check_same_set(&r)?;
    crate::report::check_folder(&ctx.opts.reports)?;
    if r.status == RolloutStatus::Running
        && let Err(holder) = ctx.store.claim(id, &ctx.owner, ctx.opts.lease).await?
    {
        return Err(Error::Busy(holder));
    }
    let runs = ctx.store.tenant_runs(id).await?;
    for t in tenants {
        if !runs.iter().any(|r| &r.tenant == t) {
            let m = format!("not a tenant of rollout {id}");
            return Err(Error::flag_value("--tenant", t, m));
        }
    }
    drop(runs);
    // a folded tenant gets its row back, marked so no fold takes it again
    // before this retry has run it
    ctx.store
        .unfold(id, tenants, Some(crate::state::ASKED))
        .await?;
    let recorder = Recorder::start(ctx.store.clone(), id, None, ctx.opts.lease);
    let bus = ctx.bus.with(recorder.clone());
    let mut exec = r.settings.exec.clone();
    (exec.concurrency, exec.per_server) = ctx.opts.limits(&r.settings.exec);
    let fanout = ctx.fanout(&r.settings.exec);
    let batch = Batch {
        ctx,
        r: &r,
        bus: &bus,
        recorder: &recorder,
        fanout: &fanout,
        failures: Default::default(),
    };
    let interrupted = batch
        .run(exec, tenants, Default::default(), &ctx.cancel)
        .await;
    recorder.finish().await?;
    if r.status == RolloutStatus::Running {
        ctx.store
            .set_status(
                id,
                RolloutStatus::Paused,
                Some(if interrupted {
                    "interrupted during retry"
                } else {
                    "tenants retried; resume to continue"
                }),
            )
            .await?;
    }
    let metrics = ctx.opts.metrics_file.as_deref();
    write_report(ctx.store, id, &ctx.opts.reports, metrics).await
}

/// Aborts rollout `id`: tenants not yet run are marked skipped.
pub async fn abort(store: &StateStore, id: &str, reports: &Path) -> Result<Finished, Error> {
    let r = store.get_rollout(id).await?;
    if r.status.is_finished() {
        let m = format!("already {}", r.status);
        return Err(Error::usage(About::Rollout(id.into()), m));
    }
    crate::report::check_folder(reports)?;
    skip_todo(store, id).await?;
    store
        .set_status(id, RolloutStatus::Aborted, Some("aborted by the operator"))
        .await?;
    write_report(store, id, reports, None).await
}

/// Whether a live process runs rollout `r`: its holder, or on a shared
/// store any of its workers (a request is carried out once the last leaves).
async fn held(store: &StateStore, r: &RolloutRecord, lease: Duration) -> Result<bool, Error> {
    if r.status != RolloutStatus::Running {
        return Ok(false);
    }
    if store.is_shared() {
        return Ok(store.alive(&r.id, None, lease).await? > 0);
    }
    Ok(!crate::state::claim_is_stale(
        r.claimed_by.as_deref(),
        r.heartbeat_at,
        lease,
    ))
}

/// How long `stop` waits for the holder of a rollout to see a request: its
/// heartbeat comes every quarter lease, and the tenants in flight finish their
/// current migration first.
const STOP_WAIT_LEASES: u32 = 4;

/// Polls (200 ms apart) for the status of a rollout whose last process
/// let go of it while stopping, before this process ends it itself.
const STOP_GRACE_POLLS: usize = 15;

/// `fleetmig pause` and `fleetmig abort` of a rollout another process runs:
/// the request is left in the store, the holder sees it at its next
/// heartbeat and stops (starting no new tenant), and this waits until it has.
/// A rollout nobody runs any more is aborted (or found already paused) here.
pub async fn stop(
    store: &StateStore,
    id: &str,
    request: Request,
    reports: &Path,
    lease: Duration,
    waiting: impl Fn(&str),
) -> Result<Finished, Error> {
    let r = store.get_rollout(id).await?;
    if r.status.is_finished() {
        let m = format!("already {}", r.status);
        return Err(Error::usage(About::Rollout(id.into()), m));
    }
    if !held(store, &r, lease).await? {
        return stop_here(store, &r, request, reports).await;
    }
    crate::report::check_folder(reports)?;
    store.set_request(id, Some(request)).await?;
    let holder = r.claimed_by.clone().unwrap_or_default();
    waiting(&holder);
    let deadline = tokio::time::Instant::now() + lease * STOP_WAIT_LEASES;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = store.get_rollout(id).await?;
        if now.status != RolloutStatus::Running {
            return write_report(store, id, reports, None).await;
        }
        if !held(store, &now, lease).await? {
            // it let go of the claim: a process that stops leaves its seat
            // and then ends the rollout as asked (the last one out), so
            // its status is given a moment to change; one that died never
            // changes it
            if stopped_meanwhile(store, id).await? {
                return write_report(store, id, reports, None).await;
            }
            // it died: finish the request here
            store.set_request(id, None).await?;
            return stop_here(store, &now, request, reports).await;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Busy(format!(
                "rollout {id}: {holder} was asked to {request} but is still running after {}; \
                 it will stop when it next sees the request",
                humantime::format_duration(lease * STOP_WAIT_LEASES)
            )));
        }
    }
}

/// Whether the status of rollout `id`, whose last process let go of it,
/// changes within the grace polls (that process ended it as asked).
async fn stopped_meanwhile(store: &StateStore, id: &str) -> Result<bool, Error> {
    for _ in 0..STOP_GRACE_POLLS {
        if store.get_rollout(id).await?.status != RolloutStatus::Running {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(false)
}

/// `request` carried out by this process, on rollout `r` that nobody runs.
async fn stop_here(
    store: &StateStore,
    r: &RolloutRecord,
    request: Request,
    reports: &Path,
) -> Result<Finished, Error> {
    let id = r.id.as_str();
    match request {
        Request::Abort => abort(store, id, reports).await,
        Request::Pause if r.status == RolloutStatus::Running => {
            store
                .set_status(
                    id,
                    RolloutStatus::Paused,
                    Some("paused by the operator (fleetmig pause)"),
                )
                .await?;
            write_report(store, id, reports, None).await
        }
        Request::Pause => Err(Error::usage(
            About::Rollout(id.into()),
            format!("{} already: nothing runs it", r.status),
        )),
    }
}

/// Who runs this: `$USER` or `$LOGNAME`, else the name of this process's
/// user id in /etc/passwd, else `uid N` (a cron job or a container often
/// sets neither variable).
pub(crate) fn operator() -> String {
    if let Some(u) = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
    {
        return u;
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
        });
    let Some(uid) = uid else {
        return "unknown".into();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

#[cfg(test)]
mod operator_tests {
    #[test]
    fn the_operator_is_named_without_user() {
        let name = super::operator();
        assert!(!name.is_empty() && name != "unknown", "{name}");
    }
}
