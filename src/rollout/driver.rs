//! The rollout driver: runs a frozen wave plan wave by wave — the wave's
//! tenants through the executor, then its gate (`gate`), then the next wave
//! (after its bake), a pause, or a halt (reverting the halted wave on
//! request, `revert`) — and resumes a paused, halted or crashed rollout from
//! where it stood. Every step is an event on the bus; the state recorder
//! (`recorder`) is the subscriber that writes it down, flushed before each
//! decision. The tenant's own history stays the truth: a tenant left
//! `running` by a crash is simply run again, and re-reads its history before
//! applying anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::context::{Cancel, Ctx};
use super::judge;
use super::recorder::Recorder;
use super::waves::PlannedWave;
use crate::error::Error;
use crate::event::{Bus, Event};
use crate::fanout::Fanout;
use crate::options::Frozen;
use crate::report::RunReport;
use crate::state::{Request, RolloutRecord, RolloutStatus, RunStatus, StateStore, now_ms};

/// What a command leaves: the rollout as stored at the end, and its report.
pub struct Finished {
    pub report: RunReport,
    pub dir: PathBuf,
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

/// Creates a rollout from a wave plan and runs it.
pub async fn start(
    ctx: &Ctx<'_>,
    command: &str,
    target: i64,
    settings: Frozen,
    plan: Vec<PlannedWave>,
    refused: &[(String, String)],
    id: String,
) -> Result<Finished, Error> {
    let record = RolloutRecord {
        id: id.clone(),
        created_at: now_ms(),
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
    };
    let waves: Vec<(String, String, Vec<String>)> = plan
        .into_iter()
        .map(|w| (w.name, w.selector, w.tenants))
        .collect();
    ctx.store
        .create_rollout(&record, &waves, refused, ctx.opts.lease)
        .await?;
    tracing::debug!(rollout = %id, "recorded");
    if ctx.store.is_shared() {
        return super::worker::work(ctx, &id, false).await;
    }
    drive(ctx, &id, false).await
}

/// Takes over rollout `id` (refusing while a live process holds it) and runs
/// it from where it stood.
pub async fn resume(ctx: &Ctx<'_>, id: &str) -> Result<Finished, Error> {
    let r = ctx.store.get_rollout(id).await?;
    if r.status.is_finished() {
        return Err(Error::Usage(format!(
            "rollout {id} is {}; nothing to resume (use `fleetmig retry --rollout {id}` for failed tenants)",
            r.status
        )));
    }
    ctx.check_same_set(&r)?;
    crate::report::check_folder(&ctx.opts.reports)?;
    let halted = r.status == RolloutStatus::Halted;
    if ctx.store.is_shared() {
        // join the workers running it, or run it again
        if halted {
            ctx.store.reopen_gate(id, r.current_wave).await?;
        }
        if r.status != RolloutStatus::Running {
            ctx.store
                .set_status(id, RolloutStatus::Running, None)
                .await?;
        }
        return super::worker::work(ctx, id, halted && ctx.opts.override_gate).await;
    }
    if let Err(holder) = ctx.store.claim(id, &ctx.owner, ctx.opts.lease).await? {
        return Err(Error::Busy(holder));
    }
    if halted && !ctx.opts.override_gate {
        tracing::info!("resuming halted rollout {id}: its gate is evaluated again");
    }
    ctx.store
        .set_status(id, RolloutStatus::Running, None)
        .await?;
    drive(ctx, id, halted && ctx.opts.override_gate).await
}

/// Extends this process's claim every quarter lease; an operator's request
/// (`fleetmig pause`/`abort`, seen here) stops the run gracefully.
async fn heartbeat(store: StateStore, id: String, owner: String, lease: Duration, cancel: Cancel) {
    let every = (lease / 4).max(Duration::from_millis(500));
    loop {
        tokio::time::sleep(every).await;
        match store.heartbeat(&id, &owner).await {
            Ok(Some(request)) => {
                tracing::warn!("rollout {id}: the operator asked to {request}; stopping");
                cancel.cancel();
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("heartbeat of rollout {id} failed: {e}"),
        }
    }
}

/// `path` made absolute against the working folder, for the record.
pub(crate) fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Runs rollout `id` from its current wave to the end, a halt or a pause,
/// and writes its report.
async fn drive(ctx: &Ctx<'_>, id: &str, override_first_gate: bool) -> Result<Finished, Error> {
    let hb = tokio::spawn(heartbeat(
        ctx.store.clone(),
        id.to_string(),
        ctx.owner.clone(),
        ctx.opts.lease,
        ctx.cancel.clone(),
    ));
    let recorder = Recorder::start(ctx.store.clone(), id, None, ctx.opts.lease);
    let bus = ctx.bus.with(recorder.clone());
    let r = drive_waves(ctx, id, &bus, &recorder, override_first_gate).await;
    let flushed = recorder.finish().await;
    hb.abort();
    let (mut status, mut reason) = r?;
    flushed?;
    // an operator's request decides how a stopped rollout ends
    if status != RolloutStatus::Completed
        && let Some(request) = ctx.store.get_rollout(id).await?.requested
    {
        match request {
            Request::Abort => {
                skip_todo(ctx.store, id).await?;
                status = RolloutStatus::Aborted;
                reason = Some("aborted by the operator (fleetmig abort)".into());
            }
            Request::Pause => {
                status = RolloutStatus::Paused;
                reason = Some("paused by the operator (fleetmig pause)".into());
            }
        }
    }
    ctx.store.set_request(id, None).await?;
    ctx.store.set_status(id, status, reason.as_deref()).await?;
    tracing::debug!(rollout = %id, %status, "ended; writing the report");
    bus.emit(Event::RolloutEnded {
        rollout: id.to_string(),
        status,
        reason,
    });
    ctx.final_report(id).await
}

async fn drive_waves(
    ctx: &Ctx<'_>,
    id: &str,
    bus: &Bus,
    recorder: &Arc<Recorder>,
    mut override_gate: bool,
) -> Result<(RolloutStatus, Option<String>), Error> {
    let r = ctx.store.get_rollout(id).await?;
    let waves = ctx.store.waves(id).await?;
    let exec = &r.settings.exec;
    let policy = &r.settings.policy;
    let fanout = Arc::new(Fanout::new(exec.concurrency, exec.per_server));
    for wave in waves.iter().filter(|w| w.wave >= r.current_wave) {
        let todo = ctx
            .store
            .wave_tenants(
                id,
                wave.wave,
                &[
                    RunStatus::Pending,
                    RunStatus::Running,
                    RunStatus::NotStarted,
                ],
            )
            .await?;
        bus.emit(Event::WaveStarted {
            rollout: id.to_string(),
            wave: wave.wave,
            name: wave.name.clone(),
            tenants: todo.len(),
        });
        let earlier = ctx.store.interrupted(id, wave.wave).await?;
        let interrupted = judge::run_tenants(
            ctx,
            &r,
            bus,
            recorder,
            &fanout,
            &todo,
            earlier,
            &ctx.cancel,
            Default::default(),
        )
        .await;
        recorder.flush().await?;
        tracing::debug!(rollout = %id, wave = %wave.name, "wave ran and recorded");
        if interrupted {
            return Ok((
                RolloutStatus::Paused,
                Some(format!("interrupted by a signal during wave {}", wave.name)),
            ));
        }
        // The gate.
        let d = judge::decide(ctx, &r, wave, &fanout, override_gate).await?;
        d.emit(bus, id, wave);
        if let Some(reason) = d.halt {
            recorder.flush().await?;
            return Ok((RolloutStatus::Halted, Some(reason)));
        }
        override_gate = false;
        recorder.flush().await?;
        ctx.store.set_current_wave(id, wave.wave + 1).await?;
        if wave.wave + 1 >= waves.len() as i64 {
            break; // the final report is written by `drive`
        }
        // Reports are written again after every wave.
        write_report(ctx.store, id, &ctx.opts.reports, None).await?;
        if policy
            .pause_after
            .as_deref()
            .is_some_and(|p| p == wave.name || p == (wave.wave + 1).to_string())
        {
            return Ok((
                RolloutStatus::Paused,
                Some(format!("paused after wave {} (--pause-after)", wave.name)),
            ));
        }
        if !policy.bake.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(policy.bake) => {}
                _ = ctx.cancel.cancelled() => {
                    return Ok((RolloutStatus::Paused, Some(format!("interrupted while baking after wave {}", wave.name))));
                }
            }
        }
        if ctx.cancel.is_cancelled() {
            return Ok((
                RolloutStatus::Paused,
                Some(format!("interrupted after wave {}", wave.name)),
            ));
        }
    }
    Ok((RolloutStatus::Completed, None))
}

/// Runs `tenants` of rollout `id` again (recorded as further attempts).
pub async fn retry(ctx: &Ctx<'_>, id: &str, tenants: &[String]) -> Result<Finished, Error> {
    let r = ctx.store.get_rollout(id).await?;
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
            return Err(Error::Usage(format!(
                "--tenant {t}: not a tenant of rollout {id}"
            )));
        }
    }
    let recorder = Recorder::start(ctx.store.clone(), id, None, ctx.opts.lease);
    let bus = ctx.bus.with(recorder.clone());
    let fanout = Arc::new(Fanout::new(
        r.settings.exec.concurrency,
        r.settings.exec.per_server,
    ));
    let interrupted = judge::run_tenants(
        ctx,
        &r,
        &bus,
        &recorder,
        &fanout,
        tenants,
        Default::default(),
        &ctx.cancel,
        Default::default(),
    )
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
    ctx.final_report(id).await
}

/// Aborts rollout `id`: tenants not yet run are marked skipped.
pub async fn abort(store: &StateStore, id: &str, reports: &Path) -> Result<Finished, Error> {
    let r = store.get_rollout(id).await?;
    if r.status.is_finished() {
        return Err(Error::Usage(format!(
            "rollout {id} is already {}",
            r.status
        )));
    }
    crate::report::check_folder(reports)?;
    skip_todo(store, id).await?;
    store
        .set_status(id, RolloutStatus::Aborted, Some("aborted by the operator"))
        .await?;
    write_report(store, id, reports, None).await
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
        return Err(Error::Usage(format!(
            "rollout {id} is already {}",
            r.status
        )));
    }
    if !held(store, &r, lease).await? {
        return match request {
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
            Request::Pause => Err(Error::Usage(format!(
                "rollout {id} is {} already: nothing runs it",
                r.status
            ))),
        };
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
            // it died before it could stop: finish the request here
            store.set_request(id, None).await?;
            return match request {
                Request::Abort => abort(store, id, reports).await,
                Request::Pause => {
                    store
                        .set_status(
                            id,
                            RolloutStatus::Paused,
                            Some("paused by the operator (fleetmig pause)"),
                        )
                        .await?;
                    write_report(store, id, reports, None).await
                }
            };
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

impl Ctx<'_> {
    /// The report of rollout `id` at the end of this command, with the
    /// metrics file when one was asked for.
    async fn final_report(&self, id: &str) -> Result<Finished, Error> {
        let metrics = self.opts.metrics_file.as_deref();
        write_report(self.store, id, &self.opts.reports, metrics).await
    }
}

/// Writes the report (and metrics file) of rollout `id` from the store.
pub async fn write_report(
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
