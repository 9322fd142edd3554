//! The rollout driver: runs a frozen wave plan wave by wave, records every
//! tenant's state in the state store before it is reported, evaluates the gate
//! after each wave (failure count and rate, a verification query on every
//! tenant of the wave, bake time, pause-after), halts a bad rollout (reverting
//! the halted wave on request), and resumes a paused, halted or crashed one
//! from where it stood. The tenant's own history stays the truth: a tenant
//! left `running` by a crash is simply run again, and re-reads its history
//! before applying anything.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::executor::{Cancel, ExecOptions, Executor};
use super::live::LiveState;
use super::retry::RetryPolicy;
use super::waves::{Gates, PlannedWave, check_failures};
use crate::config::Config;
use crate::dialect::{Access, Connector, TxMode};
use crate::error::Error;
use crate::event::{Event, Subscriber, TenantStatus};
use crate::migration::MigrationSet;
use crate::report::RunReport;
use crate::report::progress::{Progress, ProgressMode};
use crate::state::{
    FrozenSettings, RolloutRecord, StateStore, TenantRun, TenantUpdate, now_ms, status,
    tenant_status,
};
use crate::tenant::{Tenant, TenantId};

/// Options of one invocation (not frozen with the rollout).
#[derive(Clone)]
pub struct RunOptions {
    pub progress: ProgressMode,
    pub lease: Duration,
    pub reports: PathBuf,
    pub metrics_file: Option<PathBuf>,
    /// Pass the failed gate of the wave the rollout halted on.
    pub override_gate: bool,
}

/// What a command leaves: the rollout as stored at the end, and its report.
pub struct Finished {
    pub report: RunReport,
    pub dir: PathBuf,
}

impl Finished {
    pub fn exit_code(&self) -> i32 {
        let completed = self.report.rollout.status == status::COMPLETED;
        let gates_clean = self.report.tenants.iter().all(|t| t.gate_error.is_none());
        if self.report.all_ok() && completed && gates_clean {
            0
        } else {
            1
        }
    }
}

/// Feeds tenant state into the store as events arrive: a writer task drains a
/// channel and writes each batch in one transaction.
struct Recorder {
    tx: mpsc::UnboundedSender<TenantUpdate>,
    prior: HashMap<String, TenantRun>,
    /// Backfill checkpoints: what earlier runs did, and the running state.
    backfills: dashmap::DashMap<(String, i64), crate::state::Backfill>,
    prior_backfills: HashMap<(String, i64), crate::state::Backfill>,
}

impl Recorder {
    fn prior_backfill(&self, tenant: &str, version: i64) -> (i64, i64) {
        self.prior_backfills
            .get(&(tenant.to_string(), version))
            .map(|b| (b.batches, b.rows))
            .unwrap_or((0, 0))
    }
}

impl Subscriber for Recorder {
    fn on_event(&self, event: &Event) {
        let prior = |id: &TenantId| self.prior.get(id.as_str());
        let update = match event {
            Event::TenantStarted { tenant, attempt } => TenantUpdate::Started {
                tenant: tenant.to_string(),
                attempts: prior(tenant).map(|p| p.attempts).unwrap_or(0) + *attempt as i64,
                at: now_ms(),
            },
            Event::Preflight { tenant, summary } => TenantUpdate::Preflight {
                tenant: tenant.to_string(),
                summary: summary.clone(),
            },
            Event::BackupTaken { tenant, path } => TenantUpdate::Backup {
                tenant: tenant.to_string(),
                path: path.display().to_string(),
            },
            Event::BackfillBatch {
                tenant,
                version,
                batches,
                rows,
                batch_duration,
                done,
            } => {
                let key = (tenant.to_string(), *version);
                let mut b = self
                    .backfills
                    .entry(key)
                    .or_insert_with(|| crate::state::Backfill {
                        tenant: tenant.to_string(),
                        version: *version,
                        batches: 0,
                        rows: 0,
                        max_batch_ms: 0,
                        done: false,
                    });
                // earlier runs' counts live in `base_*`; this run's are cumulative
                let base = self.prior_backfill(tenant.as_str(), *version);
                b.batches = base.0 + *batches as i64;
                b.rows = base.1 + *rows as i64;
                b.max_batch_ms = b.max_batch_ms.max(batch_duration.as_millis() as i64);
                b.done = *done;
                TenantUpdate::Backfill(b.clone())
            }
            Event::TenantFinished(o) => {
                let p = prior(&o.tenant);
                let mut applied = p.map(|p| p.applied.clone()).unwrap_or_default();
                applied.extend(&o.applied);
                let status = match o.status {
                    TenantStatus::Succeeded | TenantStatus::UpToDate => tenant_status::SUCCEEDED,
                    TenantStatus::Failed => tenant_status::FAILED,
                    TenantStatus::NotStarted => tenant_status::NOT_STARTED,
                    TenantStatus::Interrupted => tenant_status::PENDING,
                };
                let e = o.error.as_ref();
                TenantUpdate::Finished(Box::new(TenantRun {
                    tenant: o.tenant.to_string(),
                    wave: p.map(|p| p.wave).unwrap_or(0),
                    status: status.to_string(),
                    attempts: p.map(|p| p.attempts).unwrap_or(0) + o.attempts as i64,
                    from_version: o.from_version,
                    to_version: o.to_version,
                    applied,
                    started_at: o.started_at.map(|t| t.timestamp_millis()),
                    finished_at: o.finished_at.map(|t| t.timestamp_millis()),
                    duration_ms: p.map(|p| p.duration_ms).unwrap_or(0)
                        + o.duration.as_millis() as i64,
                    error_class: e.map(|e| e.class.to_string()),
                    error_kind: e.map(|e| e.kind.clone()),
                    error_code: e.and_then(|e| e.code.clone()),
                    error_version: e.and_then(|e| e.version),
                    error_message: e.map(|e| e.message.clone()),
                    gate_error: None,
                    preflight: None,
                }))
            }
            _ => return,
        };
        let _ = self.tx.send(update);
    }
}

/// Everything a rollout needs while it runs.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub store: &'a StateStore,
    pub set: Arc<MigrationSet>,
    pub tenants: Vec<Tenant>,
    pub owner: String,
    pub cancel: Cancel,
    pub opts: RunOptions,
}

pub fn freeze(
    config: &Config,
    gates: &Gates,
    gate_sql: Option<String>,
    bake: Duration,
    pause_after: Option<String>,
    revert_on_halt: bool,
) -> FrozenSettings {
    let e = &config.exec;
    FrozenSettings {
        concurrency: e.concurrency,
        per_server: e.per_server,
        max_attempts: e.retry.max_attempts,
        retry_backoff_ms: e.retry.backoff.as_millis() as u64,
        max_failures: e.max_failures,
        tx_mode: format!("{:?}", e.tx_mode).to_lowercase(),
        gate_max_failures: gates.max_failures,
        gate_max_failure_rate: gates.max_failure_rate,
        gate_sql,
        bake_ms: bake.as_millis() as u64,
        pause_after,
        revert_on_halt,
        held: None,
        hold_versions: Vec::new(),
        backup_dir: e.backup_dir.as_ref().map(|p| p.display().to_string()),
        analyze: e.analyze,
        preflight: e
            .preflight
            .map(|(age, free)| (age.as_millis() as u64, free)),
    }
}

fn exec_options(f: &FrozenSettings, target: i64) -> ExecOptions {
    ExecOptions {
        concurrency: f.concurrency.max(1),
        per_server: f.per_server.max(1),
        retry: RetryPolicy {
            max_attempts: f.max_attempts.max(1),
            backoff: Duration::from_millis(f.retry_backoff_ms),
            max_backoff: Duration::from_secs(30),
        },
        max_failures: f.max_failures,
        target: Some(target),
        tx_mode: if f.tx_mode == "tenant" {
            TxMode::Tenant
        } else {
            TxMode::Migration
        },
        backup_dir: f.backup_dir.as_ref().map(PathBuf::from),
        analyze: f.analyze,
        preflight: f
            .preflight
            .map(|(ms, free)| (Duration::from_millis(ms), free)),
        hold_versions: f.hold_versions.clone(),
    }
}

/// Creates a rollout from a wave plan and runs it.
pub async fn start(
    ctx: &Ctx<'_>,
    command: &str,
    target: i64,
    settings: FrozenSettings,
    plan: Vec<PlannedWave>,
    id: String,
) -> Result<Finished, Error> {
    let record = RolloutRecord {
        id: id.clone(),
        created_at: now_ms(),
        operator: std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into()),
        command: command.to_string(),
        fleet: ctx.config.fleet.to_string(),
        migrations_dir: ctx.config.migrations.display().to_string(),
        set_checksum: ctx.set.checksum.clone(),
        target,
        settings,
        status: status::RUNNING.into(),
        reason: None,
        current_wave: 0,
        claimed_by: Some(ctx.owner.clone()),
        heartbeat_at: None,
        finished_at: None,
    };
    let waves: Vec<(String, String, Vec<String>)> = plan
        .into_iter()
        .map(|w| (w.name, w.selector, w.tenants))
        .collect();
    ctx.store
        .create_rollout(&record, &waves, ctx.opts.lease)
        .await?;
    drive(ctx, &id, false).await
}

/// Takes over rollout `id` (refusing while a live process holds it) and runs
/// it from where it stood.
pub async fn resume(ctx: &Ctx<'_>, id: &str) -> Result<Finished, Error> {
    let r = ctx.store.rollout(id).await?.ok_or_else(|| {
        Error::Usage(format!(
            "no rollout {id} in the state store {}",
            ctx.store.location
        ))
    })?;
    if matches!(r.status.as_str(), status::COMPLETED | status::ABORTED) {
        return Err(Error::Usage(format!(
            "rollout {id} is {}; nothing to resume (use `fleetmig retry --rollout {id}` for failed tenants)",
            r.status
        )));
    }
    check_same_set(ctx, &r)?;
    if let Err(holder) = ctx.store.claim(id, &ctx.owner, ctx.opts.lease).await? {
        return Err(Error::Busy(holder));
    }
    let halted = r.status == status::HALTED;
    if halted && !ctx.opts.override_gate {
        tracing::info!("resuming halted rollout {id}: its gate is evaluated again");
    }
    ctx.store.set_status(id, status::RUNNING, None).await?;
    drive(ctx, id, halted && ctx.opts.override_gate).await
}

fn check_same_set(ctx: &Ctx<'_>, r: &RolloutRecord) -> Result<(), Error> {
    if r.set_checksum != ctx.set.checksum {
        return Err(Error::Usage(format!(
            "rollout {} was planned with migration set {} but {} now has {}: the migrations changed \
             since it started. Restore them, or abort it and start a new rollout",
            r.id,
            r.set_checksum,
            ctx.config.migrations.display(),
            ctx.set.checksum
        )));
    }
    Ok(())
}

/// Runs `tenants` (ids of rollout `id`) through the executor, recording state.
async fn run_tenants(
    ctx: &Ctx<'_>,
    r: &RolloutRecord,
    ids: &[String],
    prior: &[TenantRun],
) -> Result<bool, Error> {
    let by_id: HashMap<&str, &Tenant> = ctx.tenants.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut run = Vec::new();
    let mut gone = Vec::new();
    for id in ids {
        match by_id.get(id.as_str()) {
            Some(t) => run.push((*t).clone()),
            None => gone.push(id.clone()),
        }
    }
    if !gone.is_empty() {
        let now = now_ms();
        let updates: Vec<TenantUpdate> = gone
            .iter()
            .map(|g| {
                let mut p = prior
                    .iter()
                    .find(|p| &p.tenant == g)
                    .cloned()
                    .unwrap_or_else(|| empty_run(g));
                p.status = tenant_status::FAILED.into();
                p.finished_at = Some(now);
                p.error_class = Some("permanent".into());
                p.error_kind = Some("tenant_gone".into());
                p.error_message = Some(format!(
                    "tenant {g} is no longer in the fleet {}",
                    ctx.config.fleet
                ));
                TenantUpdate::Finished(Box::new(p))
            })
            .collect();
        ctx.store.record(&r.id, &updates).await?;
    }
    if run.is_empty() {
        return Ok(false);
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<TenantUpdate>();
    let store = ctx.store.clone();
    let rid = r.id.clone();
    let failure: Arc<Mutex<Option<Error>>> = Arc::default();
    let fail = failure.clone();
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // Let a batch gather for a moment: one transaction for many
            // tenants, and a `Started` row that is already `Finished` in the
            // same batch is not written at all.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 2048 {
                    break;
                }
            }
            let finished: std::collections::HashSet<String> = batch
                .iter()
                .filter_map(|u| match u {
                    TenantUpdate::Finished(t) => Some(t.tenant.clone()),
                    _ => None,
                })
                .collect();
            batch.retain(
                |u| !matches!(u, TenantUpdate::Started { tenant, .. } if finished.contains(tenant)),
            );
            if let Err(e) = store.record(&rid, &batch).await {
                tracing::error!("cannot record tenant state: {e}");
                *fail.lock().expect("lock") = Some(e);
            }
        }
    });
    let prior_backfills = ctx
        .store
        .backfills(&r.id)
        .await?
        .into_iter()
        .map(|b| ((b.tenant.clone(), b.version), b))
        .collect::<HashMap<_, _>>();
    let recorder = Arc::new(Recorder {
        tx,
        prior: prior
            .iter()
            .map(|p| (p.tenant.clone(), p.clone()))
            .collect(),
        backfills: Default::default(),
        prior_backfills: prior_backfills.clone(),
    });
    for (k, b) in prior_backfills {
        recorder.backfills.insert(k, b);
    }
    let live = Arc::new(LiveState::default());
    let connector = Arc::new(Connector::new(ctx.config.settings.clone()));
    let executor = Executor::new(
        connector.clone(),
        ctx.set.clone(),
        exec_options(&r.settings, r.target),
        vec![recorder as Arc<dyn Subscriber>, live.clone()],
        ctx.cancel.clone(),
    );
    let progress = Progress::start(live, ctx.opts.progress);
    let stops = executor.run(&r.id, run).await;
    progress.finish();
    drop(executor);
    connector.close().await;
    let _ = writer.await;
    if let Some(e) = failure.lock().expect("lock").take() {
        return Err(e);
    }
    Ok(stops.interrupted)
}

fn empty_run(id: &str) -> TenantRun {
    TenantRun {
        tenant: id.to_string(),
        wave: 0,
        status: tenant_status::PENDING.into(),
        attempts: 0,
        from_version: None,
        to_version: None,
        applied: Vec::new(),
        started_at: None,
        finished_at: None,
        duration_ms: 0,
        error_class: None,
        error_kind: None,
        error_code: None,
        error_version: None,
        error_message: None,
        gate_error: None,
        preflight: None,
    }
}

/// Runs the gate SQL on every succeeded tenant of a wave: tenant → why it failed.
async fn gate_sql(ctx: &Ctx<'_>, sql: &str, ids: &[String]) -> HashMap<String, String> {
    let connector = Connector::new(ctx.config.settings.clone());
    let mut out = HashMap::new();
    let tenants: Vec<&Tenant> = ctx
        .tenants
        .iter()
        .filter(|t| ids.iter().any(|i| i == t.id.as_str()))
        .collect();
    let results = futures_util::future::join_all(tenants.iter().map(|t| {
        let c = &connector;
        async move {
            let r = match c.open(t, Access::Read).await {
                Ok(mut s) => {
                    let r = s.check(sql).await;
                    s.close().await;
                    r
                }
                Err(e) => Err(e),
            };
            (t.id.to_string(), r)
        }
    }))
    .await;
    for (id, r) in results {
        match r {
            Ok(None) => {}
            Ok(Some(rows)) => {
                out.insert(id, format!("gate query returned {rows}"));
            }
            Err(e) => {
                out.insert(id, format!("gate query failed: {e}"));
            }
        }
    }
    connector.close().await;
    out
}

/// Takes the succeeded tenants of a halted wave back down with their
/// `.down.sql`, newest migration first.
async fn revert_wave(ctx: &Ctx<'_>, r: &RolloutRecord, runs: &[TenantRun]) -> Result<(), Error> {
    let connector = Connector::new(ctx.config.settings.clone());
    let mut reverted = Vec::new();
    let mut updates = Vec::new();
    for run in runs
        .iter()
        .filter(|t| t.status == tenant_status::SUCCEEDED && !t.applied.is_empty())
    {
        let Some(tenant) = ctx.tenants.iter().find(|t| t.id.as_str() == run.tenant) else {
            continue;
        };
        let result: Result<(), crate::error::TenantError> = async {
            let mut s = connector.open(tenant, Access::Write).await?;
            let r = async {
                s.lock().await?;
                s.history().await?;
                let mut versions = run.applied.clone();
                versions.sort_unstable_by(|a, b| b.cmp(a));
                for v in versions {
                    let m = ctx.set.get(v).expect("applied versions are in the set");
                    let down = m
                        .down
                        .as_ref()
                        .and_then(|d| d.get(s.dialect()))
                        .ok_or_else(|| {
                            crate::error::TenantError::permanent(
                                "no_down",
                                format!("migration {v} has no .down.sql"),
                            )
                        })?;
                    s.revert(m, down).await?;
                }
                Ok(())
            }
            .await;
            s.close().await;
            r
        }
        .await;
        let mut u = run.clone();
        match result {
            Ok(()) => {
                reverted.push(run.tenant.clone());
                u.status = tenant_status::REVERTED.into();
                u.to_version = u.from_version;
                u.error_message = Some(format!(
                    "reverted after wave gate failed (was at {})",
                    run.to_version.unwrap_or(0)
                ));
            }
            Err(e) => {
                u.status = tenant_status::FAILED.into();
                u.error_class = Some(e.class.to_string());
                u.error_kind = Some(format!("revert_{}", e.kind));
                u.error_message = Some(format!("revert failed: {}", e.message));
            }
        }
        updates.push(TenantUpdate::Finished(Box::new(u)));
    }
    connector.close().await;
    ctx.store.record(&r.id, &updates).await?;
    tracing::info!("reverted {} tenant(s) of rollout {}", reverted.len(), r.id);
    Ok(())
}

/// Everything the store holds about rollout `id`.
pub async fn load_report(store: &StateStore, id: &str) -> Result<RunReport, Error> {
    let rollout = store.rollout(id).await?.ok_or_else(|| {
        Error::Usage(format!(
            "no rollout {id} in the state store {}",
            store.location
        ))
    })?;
    Ok(RunReport {
        waves: store.waves(id).await?,
        tenants: store.tenant_runs(id).await?,
        rollout,
    })
}

/// Writes the report (and metrics file) of rollout `id` from the store.
pub async fn write_report(
    store: &StateStore,
    id: &str,
    reports: &std::path::Path,
    metrics: Option<&std::path::Path>,
) -> Result<Finished, Error> {
    let report = load_report(store, id).await?;
    let dir = report.write(reports)?;
    if let Some(m) = metrics {
        crate::report::write_atomic(m, &report.metrics())?;
    }
    Ok(Finished { report, dir })
}

async fn heartbeat(store: StateStore, id: String, owner: String, lease: Duration) {
    let every = (lease / 4).max(Duration::from_millis(500));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = store.heartbeat(&id, &owner).await {
            tracing::warn!("heartbeat of rollout {id} failed: {e}");
        }
    }
}

/// Runs rollout `id` from its current wave to the end, a halt or a pause.
async fn drive(ctx: &Ctx<'_>, id: &str, override_first_gate: bool) -> Result<Finished, Error> {
    let hb = tokio::spawn(heartbeat(
        ctx.store.clone(),
        id.to_string(),
        ctx.owner.clone(),
        ctx.opts.lease,
    ));
    let r = drive_waves(ctx, id, override_first_gate).await;
    hb.abort();
    let end = r?;
    ctx.store.set_status(id, &end.0, end.1.as_deref()).await?;
    write_report(
        ctx.store,
        id,
        &ctx.opts.reports,
        ctx.opts.metrics_file.as_deref(),
    )
    .await
}

async fn drive_waves(
    ctx: &Ctx<'_>,
    id: &str,
    mut override_gate: bool,
) -> Result<(String, Option<String>), Error> {
    let r = ctx.store.rollout(id).await?.expect("rollout exists");
    let waves = ctx.store.waves(id).await?;
    let gates = Gates {
        max_failures: r.settings.gate_max_failures,
        max_failure_rate: r.settings.gate_max_failure_rate,
    };
    for wave in waves.iter().filter(|w| w.wave >= r.current_wave) {
        let runs: Vec<TenantRun> = ctx.store.tenant_runs(id).await?;
        let in_wave: Vec<&TenantRun> = runs.iter().filter(|t| t.wave == wave.wave).collect();
        let todo: Vec<String> = in_wave
            .iter()
            .filter(|t| {
                matches!(
                    t.status.as_str(),
                    tenant_status::PENDING | tenant_status::RUNNING | tenant_status::NOT_STARTED
                )
            })
            .map(|t| t.tenant.clone())
            .collect();
        ctx.store
            .set_wave(id, wave.wave, "running", None, true, false)
            .await?;
        let interrupted = run_tenants(ctx, &r, &todo, &runs).await?;
        if interrupted {
            ctx.store
                .set_wave(id, wave.wave, "running", None, false, false)
                .await?;
            return Ok((
                status::PAUSED.into(),
                Some(format!("interrupted by a signal during wave {}", wave.name)),
            ));
        }
        // The gate.
        let runs: Vec<TenantRun> = ctx.store.tenant_runs(id).await?;
        let in_wave: Vec<&TenantRun> = runs.iter().filter(|t| t.wave == wave.wave).collect();
        let not_started = in_wave
            .iter()
            .filter(|t| t.status == tenant_status::NOT_STARTED)
            .count();
        if not_started > 0 {
            let text = format!(
                "--max-failures {} reached: {not_started} tenant(s) not started",
                r.settings.max_failures.unwrap_or(0)
            );
            ctx.store
                .set_wave(id, wave.wave, "failed", Some(&text), false, true)
                .await?;
            return Ok((
                status::HALTED.into(),
                Some(format!("wave {}: {text}", wave.name)),
            ));
        }
        let failed: Vec<&str> = in_wave
            .iter()
            .filter(|t| t.status == tenant_status::FAILED)
            .map(|t| t.tenant.as_str())
            .collect();
        let mut why: Vec<String> = Vec::new();
        if let Err(e) = check_failures(&gates, in_wave.len(), failed.len()) {
            why.push(format!(
                "{e} ({})",
                failed
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(sql) = &r.settings.gate_sql {
            let ok: Vec<String> = in_wave
                .iter()
                .filter(|t| t.status == tenant_status::SUCCEEDED)
                .map(|t| t.tenant.clone())
                .collect();
            let bad = gate_sql(ctx, sql, &ok).await;
            ctx.store.set_gate_errors(id, &bad).await?;
            if !bad.is_empty() {
                let mut names: Vec<&String> = bad.keys().collect();
                names.sort();
                why.push(format!(
                    "gate_sql failed on {} tenant(s): {}",
                    bad.len(),
                    names
                        .iter()
                        .take(10)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if !why.is_empty() && !override_gate {
            let text = why.join("; ");
            ctx.store
                .set_wave(id, wave.wave, "failed", Some(&text), false, true)
                .await?;
            if r.settings.revert_on_halt {
                revert_wave(
                    ctx,
                    &r,
                    &in_wave.iter().map(|t| (*t).clone()).collect::<Vec<_>>(),
                )
                .await?;
            }
            return Ok((
                status::HALTED.into(),
                Some(format!("wave {} gate failed: {text}", wave.name)),
            ));
        }
        let (st, text) = if why.is_empty() {
            ("passed", "passed".to_string())
        } else {
            (
                "overridden",
                format!("overridden by --override-gate: {}", why.join("; ")),
            )
        };
        override_gate = false;
        ctx.store
            .set_wave(id, wave.wave, st, Some(&text), false, true)
            .await?;
        ctx.store.set_current_wave(id, wave.wave + 1).await?;
        if wave.wave + 1 >= waves.len() as i64 {
            break; // the final report is written by `drive`
        }
        // Reports are written again after every wave.
        write_report(ctx.store, id, &ctx.opts.reports, None).await?;
        if r.settings
            .pause_after
            .as_deref()
            .is_some_and(|p| p == wave.name || p == (wave.wave + 1).to_string())
        {
            return Ok((
                status::PAUSED.into(),
                Some(format!("paused after wave {} (--pause-after)", wave.name)),
            ));
        }
        if r.settings.bake_ms > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(r.settings.bake_ms)) => {}
                _ = ctx.cancel.cancelled() => {
                    return Ok((status::PAUSED.into(), Some(format!("interrupted while baking after wave {}", wave.name))));
                }
            }
        }
        if ctx.cancel.is_cancelled() {
            return Ok((
                status::PAUSED.into(),
                Some(format!("interrupted after wave {}", wave.name)),
            ));
        }
    }
    Ok((status::COMPLETED.into(), None))
}

/// Runs `tenants` of rollout `id` again (recorded as further attempts).
pub async fn retry(ctx: &Ctx<'_>, id: &str, tenants: &[String]) -> Result<Finished, Error> {
    let r = ctx.store.rollout(id).await?.ok_or_else(|| {
        Error::Usage(format!(
            "no rollout {id} in the state store {}",
            ctx.store.location
        ))
    })?;
    check_same_set(ctx, &r)?;
    if r.status == status::RUNNING
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
    let interrupted = run_tenants(ctx, &r, tenants, &runs).await?;
    if r.status == status::RUNNING {
        ctx.store
            .set_status(
                id,
                status::PAUSED,
                Some(if interrupted {
                    "interrupted during retry"
                } else {
                    "tenants retried; resume to continue"
                }),
            )
            .await?;
    }
    write_report(
        ctx.store,
        id,
        &ctx.opts.reports,
        ctx.opts.metrics_file.as_deref(),
    )
    .await
}

/// Aborts rollout `id`: tenants not yet run are marked skipped.
pub async fn abort(
    store: &StateStore,
    id: &str,
    reports: &std::path::Path,
) -> Result<Finished, Error> {
    let r = store.rollout(id).await?.ok_or_else(|| {
        Error::Usage(format!(
            "no rollout {id} in the state store {}",
            store.location
        ))
    })?;
    if matches!(r.status.as_str(), status::COMPLETED | status::ABORTED) {
        return Err(Error::Usage(format!(
            "rollout {id} is already {}",
            r.status
        )));
    }
    let runs = store.tenant_runs(id).await?;
    let todo: Vec<String> = runs
        .iter()
        .filter(|t| {
            matches!(
                t.status.as_str(),
                tenant_status::PENDING | tenant_status::RUNNING | tenant_status::NOT_STARTED
            )
        })
        .map(|t| t.tenant.clone())
        .collect();
    store
        .set_tenant_status(id, &todo, tenant_status::SKIPPED, Some("rollout aborted"))
        .await?;
    store
        .set_status(id, status::ABORTED, Some("aborted by the operator"))
        .await?;
    write_report(store, id, reports, None).await
}
