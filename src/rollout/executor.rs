//! The executor: takes a list of tenants through their pending migrations with
//! bounded parallelism. Concurrency is bounded here and only here: a global
//! limit and a per-server limit (tenants are interleaved by server so that a
//! fleet spread over shards loads each one evenly). Each tenant runs in its own
//! task with its own attempts; a failed tenant is data, never an abort.
//! Cancellation (Ctrl-C/SIGTERM) starts no new tenant and stops in-flight
//! tenants after the migration they are running.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::retry::RetryPolicy;
use crate::dialect::{Access, Connector, Step, TxMode};
use crate::error::TenantError;
use crate::event::{Event, Subscriber, TenantOutcome, TenantStatus};
use crate::migration::{MigrationSet, plan_tenant};
use crate::tenant::Tenant;

/// How a run is executed.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub concurrency: usize,
    pub per_server: usize,
    pub retry: RetryPolicy,
    /// Stop starting tenants once this many have failed.
    pub max_failures: Option<usize>,
    /// Highest version to apply (head when `None`).
    pub target: Option<i64>,
    pub tx_mode: TxMode,
    /// Back each tenant up into this folder before its first migration.
    pub backup_dir: Option<std::path::PathBuf>,
    /// ANALYZE the tables a tenant's migrations changed, after them.
    pub analyze: bool,
    /// Preflight before a tenant is touched: (longest transaction allowed to
    /// hold a touched table, fewest free server connections).
    pub preflight: Option<(Duration, i64)>,
    /// Contract versions held back: a tenant that needs one stops below it.
    pub hold_versions: Vec<i64>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            concurrency: 8,
            per_server: usize::MAX,
            retry: RetryPolicy::default(),
            max_failures: None,
            target: None,
            tx_mode: TxMode::Migration,
            backup_dir: None,
            analyze: false,
            preflight: None,
            hold_versions: Vec::new(),
        }
    }
}

/// A handle to stop a run gracefully.
#[derive(Clone)]
pub struct Cancel {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Cancel {
            tx: Arc::new(watch::channel(false).0),
        }
    }
}

impl Cancel {
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }

    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// Why the executor stopped dispatching early, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stops {
    pub interrupted: bool,
    pub max_failures_reached: bool,
}

pub struct Executor {
    pub connector: Arc<Connector>,
    pub set: Arc<MigrationSet>,
    pub opts: ExecOptions,
    subscribers: Arc<Vec<Arc<dyn Subscriber>>>,
    pub cancel: Cancel,
}

struct Shared {
    connector: Arc<Connector>,
    set: Arc<MigrationSet>,
    opts: ExecOptions,
    subscribers: Arc<Vec<Arc<dyn Subscriber>>>,
    cancel: Cancel,
    failures: AtomicUsize,
    run_id: String,
    tables: dashmap::DashMap<(i64, crate::tenant::Dialect), Vec<String>>,
}

impl Shared {
    /// The tables `versions` touch for `dialect` (for preflight and
    /// `--analyze`), from the parser. Each script is parsed once per run, not
    /// once per tenant.
    fn tables(&self, versions: &[i64], dialect: crate::tenant::Dialect) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in versions {
            let per = self
                .tables
                .entry((*v, dialect))
                .or_insert_with(|| {
                    self.set
                        .get(*v)
                        .and_then(|m| m.up.get(dialect))
                        .map(|s| crate::migration::parse::touched_tables(s, dialect))
                        .unwrap_or_default()
                })
                .clone();
            out.extend(per);
        }
        out.sort();
        out.dedup();
        out
    }

    fn emit(&self, e: Event) {
        for s in self.subscribers.iter() {
            s.on_event(&e);
        }
    }
}

impl Executor {
    pub fn new(
        connector: Arc<Connector>,
        set: Arc<MigrationSet>,
        opts: ExecOptions,
        subscribers: Vec<Arc<dyn Subscriber>>,
        cancel: Cancel,
    ) -> Self {
        Executor {
            connector,
            set,
            opts,
            subscribers: Arc::new(subscribers),
            cancel,
        }
    }

    /// Runs every tenant; every tenant gets exactly one `TenantFinished` event.
    pub async fn run(&self, run_id: &str, tenants: Vec<Tenant>) -> Stops {
        let shared = Arc::new(Shared {
            connector: self.connector.clone(),
            set: self.set.clone(),
            opts: self.opts.clone(),
            subscribers: self.subscribers.clone(),
            cancel: self.cancel.clone(),
            failures: AtomicUsize::new(0),
            run_id: run_id.to_string(),
            tables: Default::default(),
        });
        shared.emit(Event::RunStarted {
            run_id: run_id.to_string(),
            tenants: tenants.len(),
        });
        let global = Arc::new(Semaphore::new(self.opts.concurrency.max(1)));
        let per_server = self.opts.per_server.clamp(1, Semaphore::MAX_PERMITS);
        let mut servers: HashMap<String, Arc<Semaphore>> = HashMap::new();
        let mut tasks = JoinSet::new();
        let mut stops = Stops::default();
        let mut queue = interleave_by_server(tenants);
        while let Some(tenant) = queue.pop_front() {
            let stop_reason = if shared.cancel.is_cancelled() {
                Some("interrupted before this tenant started")
            } else if self
                .opts
                .max_failures
                .is_some_and(|m| shared.failures.load(Ordering::SeqCst) >= m)
            {
                Some("--max-failures was reached before this tenant started")
            } else {
                None
            };
            if let Some(reason) = stop_reason {
                stops.interrupted |= shared.cancel.is_cancelled();
                stops.max_failures_reached |= !shared.cancel.is_cancelled();
                not_started(&shared, &tenant, reason);
                continue;
            }
            let server = servers
                .entry(tenant.locator.server_key())
                .or_insert_with(|| Arc::new(Semaphore::new(per_server)))
                .clone();
            let permits = tokio::select! {
                p = async {
                    let s = server.acquire_owned().await.expect("semaphore open");
                    let g = global.clone().acquire_owned().await.expect("semaphore open");
                    (s, g)
                } => Some(p),
                _ = shared.cancel.cancelled() => None,
            };
            // A failure may have been recorded while we waited for a slot.
            let Some(permits) = permits else {
                queue.push_front(tenant);
                continue;
            };
            if self
                .opts
                .max_failures
                .is_some_and(|m| shared.failures.load(Ordering::SeqCst) >= m)
            {
                queue.push_front(tenant);
                continue;
            }
            let shared = shared.clone();
            tasks.spawn(async move {
                let _permits = permits;
                run_tenant(&shared, &tenant).await;
            });
            // Reap finished tasks as we go so that 20,000 tenants do not keep
            // 20,000 finished task handles alive.
            while let Some(r) = tasks.try_join_next() {
                if let Err(e) = r {
                    tracing::error!("tenant task panicked: {e}");
                }
            }
        }
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!("tenant task panicked: {e}");
            }
        }
        stops.interrupted |= shared.cancel.is_cancelled();
        if stops.interrupted {
            shared.emit(Event::Interrupted);
        }
        shared.emit(Event::RunFinished);
        stops
    }
}

fn not_started(shared: &Shared, tenant: &Tenant, reason: &str) {
    shared.emit(Event::TenantFinished(Box::new(TenantOutcome {
        tenant: tenant.id.clone(),
        status: TenantStatus::NotStarted,
        attempts: 0,
        from_version: None,
        to_version: None,
        applied: Vec::new(),
        duration: Duration::ZERO,
        started_at: None,
        finished_at: None,
        error: Some(TenantError::permanent("not_started", reason)),
    })));
}

/// Orders tenants round-robin across servers, keeping each server's own order.
fn interleave_by_server(tenants: Vec<Tenant>) -> VecDeque<Tenant> {
    let mut by: BTreeMap<String, VecDeque<Tenant>> = BTreeMap::new();
    let n = tenants.len();
    for t in tenants {
        by.entry(t.locator.server_key()).or_default().push_back(t);
    }
    if by.len() == 1 {
        return by.into_values().next().unwrap_or_default();
    }
    let mut out = VecDeque::with_capacity(n);
    while out.len() < n {
        for q in by.values_mut() {
            if let Some(t) = q.pop_front() {
                out.push_back(t);
            }
        }
    }
    out
}

/// What one tenant's attempts have achieved so far.
#[derive(Default)]
struct Progress {
    from_version: Option<i64>,
    current: Option<i64>,
    applied: Vec<i64>,
    interrupted: bool,
    /// Batches and rows of a backfill, across attempts.
    backfill: (u64, u64),
}

async fn run_tenant(shared: &Shared, tenant: &Tenant) {
    let started = Instant::now();
    let started_at = Utc::now();
    let mut progress = Progress::default();
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        shared.emit(Event::TenantStarted {
            tenant: tenant.id.clone(),
            attempt,
        });
        match attempt_once(shared, tenant, &mut progress).await {
            Ok(()) => break Ok(()),
            Err(e)
                if shared.opts.retry.should_retry(&e, attempt) && !shared.cancel.is_cancelled() =>
            {
                let delay = shared.opts.retry.delay(attempt);
                shared.emit(Event::TenantRetrying {
                    tenant: tenant.id.clone(),
                    next_attempt: attempt + 1,
                    delay,
                    error: e.clone(),
                });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.cancel.cancelled() => break Err(e),
                }
            }
            Err(e) => break Err(e),
        }
    };
    let status = match &result {
        Ok(()) if progress.interrupted => TenantStatus::Interrupted,
        Ok(()) if progress.applied.is_empty() => TenantStatus::UpToDate,
        Ok(()) => TenantStatus::Succeeded,
        Err(_) => {
            shared.failures.fetch_add(1, Ordering::SeqCst);
            TenantStatus::Failed
        }
    };
    let error = match result {
        Err(e) => Some(e),
        Ok(()) if progress.interrupted => Some(TenantError::transient(
            "interrupted",
            "stopped between migrations by a signal; run again to finish",
        )),
        Ok(()) => None,
    };
    shared.emit(Event::TenantFinished(Box::new(TenantOutcome {
        tenant: tenant.id.clone(),
        status,
        attempts: attempt,
        from_version: progress.from_version,
        to_version: progress.current,
        applied: progress.applied,
        duration: started.elapsed(),
        started_at: Some(started_at),
        finished_at: Some(Utc::now()),
        error,
    })));
}

/// One attempt: connect, lock, read history (the truth), plan, apply.
async fn attempt_once(
    shared: &Shared,
    tenant: &Tenant,
    progress: &mut Progress,
) -> Result<(), TenantError> {
    let mut session = shared.connector.open(tenant, Access::Write).await?;
    let r = apply_pending(shared, tenant, &mut session, progress).await;
    session.close().await;
    r
}

async fn apply_pending(
    shared: &Shared,
    tenant: &Tenant,
    session: &mut crate::dialect::Session,
    progress: &mut Progress,
) -> Result<(), TenantError> {
    session.lock().await?;
    let history = session.history().await?;
    let dialect = session.dialect();
    let mut plan = plan_tenant(&history, &shared.set, dialect, shared.opts.target)?;
    crate::rollout::cut_at_held(&mut plan.pending, &shared.opts.hold_versions);
    progress.from_version.get_or_insert(plan.current);
    progress.current = Some(plan.current);
    shared.emit(Event::TenantPlanned {
        tenant: tenant.id.clone(),
        from_version: plan.current,
        pending: plan.pending.clone(),
    });
    if let Some((age, free)) = shared.opts.preflight
        && !plan.pending.is_empty()
    {
        let tables = shared.tables(&plan.pending, dialect);
        if let Some(summary) = session.preflight(&tables, age, free).await? {
            shared.emit(Event::Preflight {
                tenant: tenant.id.clone(),
                summary,
            });
        }
    }
    if let Some(dir) = &shared.opts.backup_dir
        && !plan.pending.is_empty()
    {
        let path = crate::dialect::backup::backup_path(dir, &shared.run_id, tenant);
        // a resumed rollout keeps the backup taken before anything ran
        if !path.exists() {
            crate::dialect::backup::take(session, tenant, &path).await?;
        }
        shared.emit(Event::BackupTaken {
            tenant: tenant.id.clone(),
            path: path.clone(),
        });
    }
    let steps: Vec<Step<'_>> = plan
        .pending
        .iter()
        .map(|v| {
            let m = shared.set.get(*v).expect("planned versions exist");
            Step {
                migration: m,
                script: m.up.get(dialect).expect("plan checked the variant"),
            }
        })
        .collect();
    for group in groups(&steps, shared.opts.tx_mode, dialect) {
        if shared.cancel.is_cancelled() {
            progress.interrupted = true;
            return Ok(());
        }
        if let [step] = group
            && let Some(batch) = step.script.directives.batch
        {
            backfill(shared, tenant, session, progress, *step, batch).await?;
            if progress.interrupted {
                return Ok(());
            }
            continue;
        }
        for s in group {
            shared.emit(Event::MigrationStarted {
                tenant: tenant.id.clone(),
                version: s.migration.version,
            });
        }
        let applied = session.apply(group).await?;
        for a in applied {
            if !a.already_applied {
                progress.applied.push(a.version);
                shared.emit(Event::MigrationApplied {
                    tenant: tenant.id.clone(),
                    version: a.version,
                    duration: a.duration,
                });
            }
            progress.current = Some(progress.current.unwrap_or(0).max(a.version));
        }
    }
    if shared.opts.analyze && !progress.applied.is_empty() {
        let tables = shared.tables(&progress.applied, dialect);
        session.analyze(&tables).await;
    }
    Ok(())
}

/// A batched backfill: the statement again and again, each batch in its own
/// short transaction, until it changes no rows; then the history row (see
/// `Session::backfill_batch` for the short batch confirmed without a pause). Every
/// batch is reported (the state store keeps the checkpoint); a signal stops
/// it between batches, and the next run continues where it stopped, since
/// the statement only picks rows not yet done.
async fn backfill(
    shared: &Shared,
    tenant: &Tenant,
    session: &mut crate::dialect::Session,
    progress: &mut Progress,
    step: Step<'_>,
    batch: crate::migration::Batch,
) -> Result<(), TenantError> {
    let v = step.migration.version;
    shared.emit(Event::MigrationStarted {
        tenant: tenant.id.clone(),
        version: v,
    });
    let t0 = Instant::now();
    loop {
        if shared.cancel.is_cancelled() {
            progress.interrupted = true;
            return Ok(());
        }
        let b = session
            .backfill_batch(step.migration, step.script, batch.size, t0)
            .await
            .map_err(|e| e.at_version(v))?;
        progress.backfill.0 += b.statements;
        progress.backfill.1 += b.changed;
        shared.emit(Event::BackfillBatch {
            tenant: tenant.id.clone(),
            version: v,
            batches: progress.backfill.0,
            rows: progress.backfill.1,
            batch_duration: b.held,
            done: b.done,
        });
        if b.done {
            break;
        }
        if !batch.pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(batch.pause) => {}
                _ = shared.cancel.cancelled() => {}
            }
        }
    }
    progress.applied.push(v);
    progress.current = Some(progress.current.unwrap_or(0).max(v));
    progress.backfill = (0, 0);
    shared.emit(Event::MigrationApplied {
        tenant: tenant.id.clone(),
        version: v,
        duration: t0.elapsed(),
    });
    Ok(())
}

/// Splits steps into transaction groups: one per migration, or (tenant mode,
/// transactional dialects) runs of transactional migrations, each
/// `-- no-transaction` migration on its own.
fn groups<'a, 'b>(
    steps: &'a [Step<'b>],
    mode: TxMode,
    dialect: crate::tenant::Dialect,
) -> Vec<&'a [Step<'b>]> {
    if mode == TxMode::Migration || dialect == crate::tenant::Dialect::Mysql {
        return steps.chunks(1).collect();
    }
    let mut out = Vec::new();
    let mut start = 0;
    for (i, s) in steps.iter().enumerate() {
        if s.script.no_tx || s.script.directives.batch.is_some() {
            if start < i {
                out.push(&steps[start..i]);
            }
            out.push(&steps[i..i + 1]);
            start = i + 1;
        }
    }
    if start < steps.len() {
        out.push(&steps[start..]);
    }
    out
}
