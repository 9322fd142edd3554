//! The one wave loop, for one process and for many: a process takes its
//! seat on the rollout (`coord`), heartbeats, and goes round: open the
//! current wave (once its bake is over), claim tenants of it and run them
//! through the executor, and when nothing of the wave is left, take its gate
//! (`judge`), record it, and open the next wave, pause, halt or complete.
//! Every outcome, wave and gate is written by the recorder; a decision is
//! taken only after it flushed. A stop (a signal, an operator's request, a
//! lost lease) ends the loop; the last process out ends the rollout.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use super::context::{Cancel, Ctx, Within};
use super::coord::{Coordinator, runs, seat};
use super::executor::Executor;
use super::judge;
use super::outcome::{Finished, skip_todo, write_report};
use super::recorder::Recorder;
use crate::error::Error;
use crate::event::{Bus, Event};
use crate::fanout::Fanout;
use crate::state::{
    Earlier, Finish, Request, RolloutRecord, RolloutStatus, RunStatus, TenantUpdate, WaveRecord,
    WaveStatus, now_ms,
};
use crate::tenant::Tenant;

/// How long the loop waits before looking again when there is nothing to
/// do (others finish the wave, or a bake runs).
const POLL: Duration = Duration::from_millis(250);

/// What one process works with while it runs a rollout.
struct Run<'c, 'a> {
    ctx: &'c Ctx<'a>,
    id: String,
    seat: Arc<dyn Coordinator>,
    /// A signal, an operator's request, the rollout ending elsewhere.
    stop: Cancel,
    bus: Bus,
    recorder: Arc<Recorder>,
    fanout: Arc<Fanout>,
    /// Failures toward `--max-failures`: this process's, in the wave it
    /// works on (a new wave starts a new count).
    failures: std::sync::Mutex<(i64, Arc<AtomicUsize>)>,
    /// This process's limits: the frozen ones unless its command line
    /// gave others.
    concurrency: usize,
    per_server: usize,
}

/// Works on rollout `id` until it ends, is paused or halted, or this process
/// is stopped; returns its report as it stands then. `override_gate` passes
/// the first gate this process evaluates (`--override-gate`).
pub(super) async fn run(ctx: &Ctx<'_>, id: &str, override_gate: bool) -> Result<Finished, Error> {
    let r = ctx.store.get_rollout(id).await?;
    let (concurrency, per_server) = ctx.opts.limits(&r.settings.exec);
    let seat = seat(ctx, &r, concurrency);
    crate::state::patiently("joining the rollout", || seat.enter()).await?;
    let stop = ctx.cancel.child(None);
    let hb = tokio::spawn(heartbeat(seat.clone(), ctx.opts.lease, stop.clone()));
    let recorder = Recorder::start(
        ctx.store.clone(),
        id,
        seat.worker().map(str::to_string),
        ctx.opts.lease,
    );
    let run = Run {
        ctx,
        id: id.to_string(),
        bus: ctx.bus.with(recorder.clone()),
        recorder,
        fanout: ctx.fanout(&r.settings.exec),
        failures: std::sync::Mutex::new((-1, Default::default())),
        seat,
        stop,
        concurrency,
        per_server,
    };
    let looped = run.waves(override_gate).await;
    let flushed = run.recorder.finish().await;
    hb.abort();
    crate::state::patiently("leaving the rollout", || run.seat.leave()).await?;
    looped?;
    flushed?;
    crate::state::patiently("ending the rollout", || run.end_stopped()).await?;
    let metrics = ctx.opts.metrics_file.as_deref();
    write_report(ctx.store, id, &ctx.opts.reports, metrics).await
}

/// Heartbeats every quarter lease until aborted: renews the claims, and
/// stops the loop (`stop`) when the rollout no longer runs or an operator
/// asked it to stop.
async fn heartbeat(seat: Arc<dyn Coordinator>, lease: Duration, stop: Cancel) {
    let every = (lease / 4).max(Duration::from_millis(200));
    loop {
        tokio::time::sleep(every).await;
        let sent = now_ms();
        match seat.beat().await {
            Ok(seen) => {
                if let Some(l) = seat.lease() {
                    l.renewed(sent);
                }
                if !runs(&seen) {
                    if let Some(request) = seen.requested {
                        tracing::warn!("the operator asked to {request}; stopping");
                    }
                    stop.cancel();
                }
            }
            Err(e) => tracing::warn!("heartbeat failed: {e}"),
        }
    }
}

impl Run<'_, '_> {
    /// The loop: one step at a time until the rollout ends or this process
    /// is stopped. A step that fails on the state store for a reason that
    /// passes (its connection lost, the server restarting) is taken again
    /// from the store's state after a backoff, for up to `state::PATIENCE`
    /// of failures in a row: each step reads what it acts on afresh, and
    /// every write it makes is conditional or idempotent.
    async fn waves(&self, mut override_gate: bool) -> Result<(), Error> {
        let mut failing: Option<(Instant, Duration)> = None;
        loop {
            if self.stop.is_cancelled() {
                return Ok(());
            }
            match self.step(&mut override_gate).await {
                Ok(true) => return Ok(()),
                Ok(false) => failing = None,
                Err(e) if e.is_transient_store() => {
                    let (since, wait) = failing.get_or_insert((Instant::now(), Duration::ZERO));
                    if since.elapsed() > crate::state::PATIENCE {
                        return Err(e);
                    }
                    *wait = (*wait * 2).clamp(Duration::from_millis(50), Duration::from_secs(2));
                    tracing::warn!("{e}; taking the step again in {wait:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(*wait) => {}
                        _ = self.stop.cancelled() => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One step of the loop; true when the rollout ended or no longer runs.
    async fn step(&self, override_gate: &mut bool) -> Result<bool, Error> {
        let store = self.ctx.store;
        let r = store.get_rollout(&self.id).await?;
        // an operator's pause or abort waits for every process to
        // leave: none starts anything once it is asked
        if r.status != RolloutStatus::Running || r.requested.is_some() {
            return Ok(true);
        }
        let waves = store.waves(&self.id).await?;
        let Some(wave) = waves.iter().find(|w| w.wave == r.current_wave) else {
            self.recorder.end(RolloutStatus::Completed, None).await?;
            return Ok(true);
        };
        let gate = match wave.status {
            WaveStatus::Pending => {
                self.open(wave).await?;
                false
            }
            WaveStatus::Running => self.work(&r, wave).await?,
            // a gater that stopped heartbeating loses the gate to us
            WaveStatus::Gating => {
                let took = self.seat.take_gate(wave.wave).await?;
                if !took {
                    self.pause().await;
                }
                took
            }
            WaveStatus::Passed | WaveStatus::Overridden => {
                // its gater recorded the gate and stopped before
                // going on: anyone goes on (pause, bake, next wave)
                self.next(&r, wave, &waves).await?;
                false
            }
            WaveStatus::Failed => {
                self.recorder
                    .end(RolloutStatus::Halted, wave.gate.as_deref())
                    .await?;
                return Ok(true);
            }
        };
        if gate {
            self.gate(&r, wave, &waves, *override_gate).await?;
            *override_gate = false;
        }
        Ok(false)
    }

    /// Opens `wave` once its bake is over (the one process that opens it
    /// says so), or waits.
    async fn open(&self, wave: &WaveRecord) -> Result<(), Error> {
        if self.recorder.open_wave(wave.wave).await? {
            let left = self.ctx.store.wave_left(&self.id, wave.wave, None).await?;
            self.bus.emit(Event::WaveStarted {
                rollout: self.id.clone(),
                wave: wave.wave,
                name: wave.name.clone(),
                tenants: left,
            });
        } else {
            self.pause().await;
        }
        Ok(())
    }

    /// This process's count of failures in wave `wave`.
    fn failures(&self, wave: i64) -> Arc<AtomicUsize> {
        let mut f = self.failures.lock().expect("failures lock");
        if f.0 != wave {
            *f = (wave, Default::default());
        }
        f.1.clone()
    }

    /// Waits a moment, or until stopped.
    async fn pause(&self) {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = self.stop.cancelled() => {}
        }
    }

    /// One step in a running wave: a batch claimed and run, or, when the
    /// wave has nothing left, whether this process takes its gate.
    async fn work(&self, r: &RolloutRecord, wave: &WaveRecord) -> Result<bool, Error> {
        let store = self.ctx.store;
        if self.seat.lease().is_some_and(|l| !l.holds()) {
            // stalled past the lease: claims are gone; wait for the
            // heartbeat to renew before claiming afresh
            self.pause().await;
            return Ok(false);
        }
        let failures = self.failures(wave.wave);
        let budget_left = r
            .settings
            .exec
            .max_failures
            .is_none_or(|m| failures.load(std::sync::atomic::Ordering::SeqCst) < m);
        let (claimed, earlier) = match budget_left {
            true => {
                let c = self.seat.claim(wave.wave).await?;
                (c.tenants, c.earlier)
            }
            false => (Vec::new(), None),
        };
        if !claimed.is_empty() {
            let mut earlier = match earlier {
                Some(e) => e,
                None => store.interrupted(&self.id, wave.wave).await?,
            };
            // a set: the claim's order is the store's collation's
            let these: std::collections::HashSet<&String> = claimed.iter().collect();
            earlier.retain(|t, _| these.contains(t));
            let cancel = self.stop.child(self.seat.lease());
            let (took, before) = (Instant::now(), self.recorder.finished());
            self.run_tenants(r, &claimed, earlier, &cancel, failures)
                .await;
            // a batch whose every tenant has its outcome queued gives no
            // claim back: the next claim goes on while the recorder writes
            // (it cannot take this batch's tenants: this worker holds them);
            // only a batch with some left to give back waits for its rows
            let all = self.recorder.finished() - before >= claimed.len();
            match all {
                true => self.recorder.failed()?,
                false => self.recorder.flush().await?,
            }
            cancel.cancel();
            self.seat
                .batch_done(wave.wave, claimed.len(), took.elapsed(), all)
                .await?;
            return Ok(false);
        }
        // what is left is read from the store: every outcome written first
        self.recorder.flush().await?;
        if !budget_left {
            let lease_ms = self.ctx.opts.lease.as_millis() as i64;
            store.not_start_rest(&self.id, wave.wave, lease_ms).await?;
        }
        if self.seat.left(wave.wave).await? > 0 {
            // others hold the rest: look again
            self.pause().await;
            return Ok(false);
        }
        if self.seat.take_gate(wave.wave).await? {
            return Ok(true);
        }
        self.pause().await;
        Ok(false)
    }

    /// Runs the tenants `ids` of rollout `r` through the executor, each
    /// event recorded; a tenant gone from the fleet fails as `tenant_gone`.
    async fn run_tenants(
        &self,
        r: &RolloutRecord,
        ids: &[String],
        earlier: HashMap<String, Earlier>,
        cancel: &Cancel,
        failures: Arc<AtomicUsize>,
    ) {
        let mut exec = r.settings.exec.clone();
        exec.concurrency = self.concurrency;
        exec.per_server = self.per_server;
        let batch = Batch {
            ctx: self.ctx,
            r,
            bus: &self.bus,
            recorder: &self.recorder,
            fanout: &self.fanout,
            failures,
        };
        batch.run(exec, ids, earlier, cancel).await;
    }

    /// Evaluates and records the gate of `wave` (this process took it),
    /// then opens the next wave (after its bake), or ends the rollout.
    async fn gate(
        &self,
        r: &RolloutRecord,
        wave: &WaveRecord,
        waves: &[WaveRecord],
        override_gate: bool,
    ) -> Result<(), Error> {
        let (ctx, id) = (self.ctx, &self.id);
        let d = judge::decide(ctx, r, wave, &self.fanout, override_gate).await?;
        self.recorder
            .gate(wave.wave, &ctx.owner, d.status, &d.text)
            .await?;
        d.emit(&self.bus, id, wave);
        if let Some(reason) = d.halt {
            return self.end(RolloutStatus::Halted, Some(reason)).await;
        }
        self.next(r, wave, waves).await
    }

    /// After `wave`'s gate passed: the rollout completes, pauses
    /// (`--pause-after`), or goes on to the next wave after its bake.
    async fn next(
        &self,
        r: &RolloutRecord,
        wave: &WaveRecord,
        waves: &[WaveRecord],
    ) -> Result<(), Error> {
        let (ctx, policy) = (self.ctx, &r.settings.policy);
        if wave.wave + 1 >= waves.len() as i64 {
            return self.end(RolloutStatus::Completed, None).await;
        }
        if policy
            .pause_after
            .as_deref()
            .is_some_and(|p| p == wave.name || p == (wave.wave + 1).to_string())
        {
            self.recorder.advance(wave.wave).await?;
            let why = format!("paused after wave {} (--pause-after)", wave.name);
            return self.end(RolloutStatus::Paused, Some(why)).await;
        }
        if !policy.bake.is_zero() {
            let at = now_ms() + policy.bake.as_millis() as i64;
            self.recorder.open_at(wave.wave + 1, at).await?;
        }
        self.recorder.advance(wave.wave).await?;
        // the report is written again after every wave
        write_report(ctx.store, &self.id, &ctx.opts.reports, None).await?;
        Ok(())
    }

    /// Ends the rollout with `status`, unless another process did.
    async fn end(&self, status: RolloutStatus, reason: Option<String>) -> Result<(), Error> {
        if self.recorder.end(status, reason.as_deref()).await? {
            self.bus.emit(Event::RolloutEnded {
                rollout: self.id.clone(),
                status,
                reason,
            });
        }
        Ok(())
    }

    /// The last process out ends a rollout that was stopped: as the
    /// operator asked, or paused (a signal, every worker gone).
    async fn end_stopped(&self) -> Result<(), Error> {
        let store = self.ctx.store;
        let now = store.get_rollout(&self.id).await?;
        if now.status != RolloutStatus::Running || self.seat.others().await? > 0 {
            return Ok(());
        }
        let (status, reason) = match now.requested {
            Some(Request::Abort) => {
                skip_todo(store, &self.id).await?;
                (
                    RolloutStatus::Aborted,
                    "aborted by the operator (fleetmig abort)".to_string(),
                )
            }
            Some(Request::Pause) => (
                RolloutStatus::Paused,
                "paused by the operator (fleetmig pause)".to_string(),
            ),
            None if self.ctx.cancel.is_cancelled() => {
                let waves = store.waves(&self.id).await?;
                let name = waves
                    .iter()
                    .find(|w| w.wave == now.current_wave)
                    .map_or_else(|| now.current_wave.to_string(), |w| w.name.clone());
                (
                    RolloutStatus::Paused,
                    format!("interrupted by a signal during wave {name}"),
                )
            }
            None => (
                RolloutStatus::Paused,
                "interrupted: its workers stopped".to_string(),
            ),
        };
        if store.end(&self.id, status, Some(&reason)).await? {
            self.bus.emit(Event::RolloutEnded {
                rollout: self.id.clone(),
                status,
                reason: Some(reason),
            });
        }
        Ok(())
    }
}

/// A batch of a rollout's tenants on its way through the executor (a wave's
/// claim, or the tenants `retry` names).
pub(super) struct Batch<'b, 'a> {
    pub ctx: &'b Ctx<'a>,
    pub r: &'b RolloutRecord,
    pub bus: &'b Bus,
    pub recorder: &'b Arc<Recorder>,
    pub fanout: &'b Arc<Fanout>,
    pub failures: Arc<AtomicUsize>,
}

impl Batch<'_, '_> {
    /// Runs the tenants `ids` with `exec`; whether the run was interrupted
    /// (a signal, a request, a lost lease: `cancel`).
    pub async fn run(
        self,
        exec: crate::options::ExecOptions,
        ids: &[String],
        earlier: HashMap<String, Earlier>,
        cancel: &Cancel,
    ) -> bool {
        let ctx = self.ctx;
        let mut run: Vec<Tenant> = Vec::with_capacity(ids.len());
        for id in ids {
            match ctx.tenant(id) {
                Some(t) => run.push(t.clone()),
                None => {
                    let mut f = Finish::new(id, RunStatus::Failed);
                    f.finished_at = Some(now_ms());
                    f.error.class = Some(crate::error::ErrorClass::Permanent);
                    f.error.kind = Some(crate::error::FailureKind::TenantGone);
                    f.error.message = Some(format!(
                        "tenant {id} is no longer in the fleet {}",
                        ctx.fleet
                    ));
                    self.recorder.update(TenantUpdate::Finished(Box::new(f)));
                }
            }
        }
        if run.is_empty() {
            return false;
        }
        if let Some(spec) = &self.r.settings.moving {
            let Some(mover) = &ctx.mover else {
                // a command that cannot move was pointed at a move rollout
                tracing::error!("rollout {} moves tenants; this command cannot", self.r.id);
                return true;
            };
            let within = Within {
                fanout: self.fanout,
                bus: self.bus,
                cancel,
                failures: self.failures.clone(),
            };
            return mover.move_tenants(ctx, self.r, spec, run, within).await;
        }
        let recorder = self.recorder;
        let executor = Executor {
            connector: ctx.connector.clone(),
            fanout: self.fanout.clone(),
            set: ctx.set.clone(),
            opts: exec,
            target: Some(self.r.target),
            bus: self.bus.clone(),
            cancel: cancel.clone(),
            failures: self.failures,
            earlier,
            journal: recorder
                .is_worker()
                .then(|| recorder.clone() as Arc<dyn super::executor::Journal>),
        };
        executor.run(&self.r.id, run).await.interrupted
    }
}
