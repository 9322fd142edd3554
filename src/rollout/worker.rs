//! A worker of a rollout that several processes share (PostgreSQL state
//! store): `rollout`, `sync`, `resume` and `worker` all work this way there.
//! A worker registers itself, heartbeats (extending the leases of its claims
//! and learning of pauses, aborts and halts), claims tenants of the current
//! wave a small batch at a time and runs them with its own limits, and when
//! a wave has nothing left, tries to take its gate: the one worker whose
//! conditional update wins evaluates it, records it once, and opens the next
//! wave (after its bake) or ends the rollout. A worker that stops (SIGKILL)
//! or stalls (SIGSTOP) past its lease loses its claims to the others; one
//! that wakes after that starts nothing more on them (`Lease`), and the
//! tenant's own lock keeps a migration from running twice even then.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use super::context::{Cancel, Ctx, Lease};
use super::driver::{Finished, write_report};
use super::judge;
use super::recorder::Recorder;
use crate::error::Error;
use crate::event::Event;
use crate::fanout::Fanout;
use crate::state::{Request, RolloutRecord, RolloutStatus, StateStore, WaveStatus, now_ms};

/// How long a worker waits before looking again when there is nothing to
/// claim (others finish the wave, or a bake runs).
const POLL: Duration = Duration::from_millis(250);

/// Tenants claimed in a first batch, per unit of the worker's concurrency.
const CLAIM_PER_SLOT: usize = 2;

/// The most tenants one batch claims. A batch that took under an eighth of
/// the lease doubles the next (an up-to-date fleet goes a thousand tenants
/// per claim, not eight), one that took over half of it halves the next (a
/// worker that dies holds few slow tenants).
const CLAIM_MAX: usize = 1024;

/// This machine's name, for the workers table.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Heartbeats every quarter lease until aborted: renews the lease, and
/// stops the worker (`stop`) when the rollout no longer runs or an operator
/// asked it to stop.
async fn heartbeat(
    store: StateStore,
    id: String,
    worker: String,
    lease: Arc<Lease>,
    lease_ms: i64,
    stop: Cancel,
) {
    let every = Duration::from_millis((lease_ms / 4).max(200) as u64);
    loop {
        tokio::time::sleep(every).await;
        let sent = now_ms();
        match store.beat(&id, &worker).await {
            Ok(seen) => {
                lease.renewed(sent);
                if seen.status != RolloutStatus::Running || seen.requested.is_some() {
                    stop.cancel();
                }
            }
            Err(e) => tracing::warn!("heartbeat of worker {worker} on rollout {id} failed: {e}"),
        }
    }
}

/// A worker joins only a rollout planned by its own fleetmig version (the
/// claims, the journal and the plan are read as this version writes them).
pub fn same_version(r: &crate::state::RolloutRecord) -> Result<(), Error> {
    match &r.settings.fleetmig_version {
        Some(v) if v != env!("CARGO_PKG_VERSION") => Err(Error::Usage(format!(
            "rollout {} was planned by fleetmig {v}; this is fleetmig {}: its workers must all be \
             the one version (run fleetmig {v} here, or finish the rollout first)",
            r.id,
            env!("CARGO_PKG_VERSION")
        ))),
        _ => Ok(()),
    }
}

/// Works on rollout `id` until it ends, is paused or halted, or this process
/// is stopped; returns its report as it stands then.
pub async fn work(ctx: &Ctx<'_>, id: &str, override_gate: bool) -> Result<Finished, Error> {
    let store = ctx.store;
    let me = ctx.owner.clone();
    same_version(&store.get_rollout(id).await?)?;
    store.reap(id, ctx.opts.lease).await?;
    store.join(id, &me, &host()).await?;
    let lease_ms = ctx.opts.lease.as_millis() as i64;
    let lease = Lease::new(ctx.opts.lease);
    // stops this worker: a signal, a request, the rollout ending elsewhere
    let stop = ctx.cancel.child(None);
    let hb = tokio::spawn(heartbeat(
        store.clone(),
        id.to_string(),
        me.clone(),
        lease.clone(),
        lease_ms,
        stop.clone(),
    ));
    let recorder = Recorder::start(store.clone(), id, Some(me.clone()), ctx.opts.lease);
    let bus = ctx.bus.with(recorder.clone());
    let fanout = Arc::new(Fanout::new(ctx.opts.concurrency, ctx.opts.per_server));
    let failures: Arc<AtomicUsize> = Default::default();
    let r = work_waves(
        ctx,
        id,
        &me,
        &lease,
        &stop,
        &bus,
        &recorder,
        &fanout,
        failures,
        override_gate,
    )
    .await;
    let flushed = recorder.finish().await;
    hb.abort();
    store.leave(id, &me).await?;
    r?;
    flushed?;
    // the last worker out ends a rollout an operator or a signal stopped
    let now = store.get_rollout(id).await?;
    if now.status == RolloutStatus::Running
        && store.alive(id, Some(&me), ctx.opts.lease).await? == 0
    {
        let (status, reason) = match now.requested {
            Some(Request::Abort) => {
                super::driver::skip_todo(store, id).await?;
                (
                    RolloutStatus::Aborted,
                    "aborted by the operator (fleetmig abort)",
                )
            }
            Some(Request::Pause) => (
                RolloutStatus::Paused,
                "paused by the operator (fleetmig pause)",
            ),
            None => (RolloutStatus::Paused, "interrupted: its workers stopped"),
        };
        if store.end(id, status, Some(reason)).await? {
            bus.emit(Event::RolloutEnded {
                rollout: id.to_string(),
                status,
                reason: Some(reason.to_string()),
            });
        }
    }
    let metrics = ctx.opts.metrics_file.as_deref();
    write_report(store, id, &ctx.opts.reports, metrics).await
}

#[allow(clippy::too_many_arguments)]
async fn work_waves(
    ctx: &Ctx<'_>,
    id: &str,
    me: &str,
    lease: &Arc<Lease>,
    stop: &Cancel,
    bus: &crate::event::Bus,
    recorder: &Arc<Recorder>,
    fanout: &Arc<Fanout>,
    failures: Arc<AtomicUsize>,
    mut override_gate: bool,
) -> Result<(), Error> {
    let store = ctx.store;
    let lease_ms = ctx.opts.lease.as_millis() as i64;
    let first = (ctx.opts.concurrency * CLAIM_PER_SLOT).max(1);
    let mut batch = first;
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        let r = store.get_rollout(id).await?;
        // an operator's pause or abort waits for every worker to leave:
        // none starts anything once it is asked (not only at its next beat)
        if r.status != RolloutStatus::Running || r.requested.is_some() {
            return Ok(());
        }
        let waves = store.waves(id).await?;
        let Some(wave) = waves.iter().find(|w| w.wave == r.current_wave) else {
            store.end(id, RolloutStatus::Completed, None).await?;
            return Ok(());
        };
        match wave.status {
            WaveStatus::Pending => {
                if store.open_wave(id, wave.wave).await? {
                    let left = store.wave_left(id, wave.wave).await?;
                    bus.emit(Event::WaveStarted {
                        rollout: id.to_string(),
                        wave: wave.wave,
                        name: wave.name.clone(),
                        tenants: left,
                    });
                } else {
                    tokio::time::sleep(POLL).await;
                }
            }
            WaveStatus::Running => {
                let max = r.settings.exec.max_failures;
                let budget_left =
                    max.is_none_or(|m| failures.load(std::sync::atomic::Ordering::SeqCst) < m);
                if !lease.holds() {
                    // stalled past the lease: claims are gone; wait for the
                    // heartbeat to renew before claiming afresh
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                let claimed = match budget_left {
                    true => {
                        store
                            .claim_tenants(id, wave.wave, me, lease_ms, batch)
                            .await?
                    }
                    false => Vec::new(),
                };
                if !claimed.is_empty() {
                    let mut earlier = store.interrupted(id, wave.wave).await?;
                    earlier.retain(|t, _| claimed.binary_search(t).is_ok());
                    let cancel = stop.child(Some(lease.clone()));
                    let took = std::time::Instant::now();
                    judge::run_tenants(
                        ctx,
                        &r,
                        bus,
                        recorder,
                        fanout,
                        &claimed,
                        earlier,
                        &cancel,
                        failures.clone(),
                    )
                    .await;
                    recorder.flush().await?;
                    store.batch_done(id, me, claimed.len()).await?;
                    cancel.cancel();
                    let took = took.elapsed().as_millis() as i64;
                    if took < lease_ms / 8 {
                        // never more than this worker's share of what is
                        // left: another live worker always finds some
                        let live = store.alive(id, None, ctx.opts.lease).await?.max(1);
                        let left = store.wave_left(id, wave.wave).await?;
                        let share = (left / live).max(first);
                        batch = (batch * 2).min(CLAIM_MAX).min(share);
                    } else if took > lease_ms / 2 {
                        batch = (batch / 2).max(first);
                    }
                    continue;
                }
                if !budget_left {
                    store.not_start_rest(id, wave.wave, lease_ms).await?;
                }
                let left = store.wave_left(id, wave.wave).await?;
                if left > 0 {
                    // others hold the rest: free the claims of any that are
                    // gone, and look again
                    store.reap(id, ctx.opts.lease).await?;
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                if store.take_gate(id, wave.wave, me, lease_ms).await? {
                    gate(ctx, &r, wave, me, bus, fanout, override_gate).await?;
                    override_gate = false;
                } else {
                    tokio::time::sleep(POLL).await;
                }
            }
            WaveStatus::Gating => {
                // a gater that stopped heartbeating loses the gate to us
                if store.take_gate(id, wave.wave, me, lease_ms).await? {
                    gate(ctx, &r, wave, me, bus, fanout, override_gate).await?;
                    override_gate = false;
                } else {
                    tokio::time::sleep(POLL).await;
                }
            }
            WaveStatus::Passed | WaveStatus::Overridden => {
                // its gater recorded the gate and stopped before opening
                // the next wave: anyone opens it (a conditional update)
                store.advance(id, wave.wave).await?;
            }
            WaveStatus::Failed => {
                store
                    .end(id, RolloutStatus::Halted, wave.gate.as_deref())
                    .await?;
                return Ok(());
            }
        }
    }
}

/// Evaluates and records the gate of `wave` (this worker took it), then
/// opens the next wave, or ends the rollout.
async fn gate(
    ctx: &Ctx<'_>,
    r: &RolloutRecord,
    wave: &crate::state::WaveRecord,
    me: &str,
    bus: &crate::event::Bus,
    fanout: &Fanout,
    override_gate: bool,
) -> Result<(), Error> {
    let (store, id, policy) = (ctx.store, &r.id, &r.settings.policy);
    let d = judge::decide(ctx, r, wave, fanout, override_gate).await?;
    store
        .gate_evaluated(id, wave.wave, me, d.status, &d.text)
        .await?;
    d.emit(bus, id, wave);
    let waves = store.waves(id).await?;
    let (end, reason) = if let Some(reason) = d.halt {
        (Some(RolloutStatus::Halted), Some(reason))
    } else if wave.wave + 1 >= waves.len() as i64 {
        (Some(RolloutStatus::Completed), None)
    } else if policy
        .pause_after
        .as_deref()
        .is_some_and(|p| p == wave.name || p == (wave.wave + 1).to_string())
    {
        store.advance(id, wave.wave).await?;
        (
            Some(RolloutStatus::Paused),
            Some(format!("paused after wave {} (--pause-after)", wave.name)),
        )
    } else {
        if !policy.bake.is_zero() {
            store
                .open_at(id, wave.wave + 1, now_ms() + policy.bake.as_millis() as i64)
                .await?;
        }
        store.advance(id, wave.wave).await?;
        write_report(store, id, &ctx.opts.reports, None).await?;
        (None, None)
    };
    if let Some(status) = end
        && store.end(id, status, reason.as_deref()).await?
    {
        bus.emit(Event::RolloutEnded {
            rollout: id.to_string(),
            status,
            reason,
        });
    }
    Ok(())
}
