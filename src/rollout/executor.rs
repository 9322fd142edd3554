//! The executor: takes a list of tenants through their pending migrations,
//! within the limits of the command's `Fanout` (global and per server, tenants
//! interleaved across servers). Each tenant runs in its own task with its own
//! attempts (`RetryPolicy`); a failed tenant is data, never an abort. Every
//! step is an event on the bus. Cancellation (Ctrl-C/SIGTERM) starts no new
//! tenant and stops in-flight tenants after the migration they are running.

use crate::error::FailureKind;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::task::JoinSet;

use super::context::Cancel;
use crate::dialect::{Access, Connector, Session, Step};
use crate::error::TenantError;
use crate::event::{Bus, Event, TenantOutcome, TenantStatus};
use crate::fanout::{Fanout, interleave};
use crate::migration::{MigrationSet, plan_tenant};
use crate::options::{ExecOptions, TxMode};
use crate::state::Earlier;
use crate::tenant::{Dialect, Tenant};

/// Why the executor stopped dispatching early, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stops {
    pub interrupted: bool,
    pub max_failures_reached: bool,
}

/// Where an attempt writes, before it applies anything, the version its
/// tenant starts from: a write-ahead record, so that the attempt after a
/// process killed between applying and recording knows what this rollout
/// applied (`Earlier`).
#[async_trait::async_trait]
pub trait Journal: Send + Sync {
    /// False: the tenant is no longer this process's to migrate (another
    /// worker took it over); the attempt stops before applying anything.
    async fn planned(&self, tenant: &str, from: i64) -> Result<bool, crate::error::Error>;

    /// A slot of the rollout's `--per-server` limit on `server`, shared by
    /// every worker (`Slot::Unshared`: this process's own limit is the
    /// limit).
    async fn try_slot(
        &self,
        _server: &str,
        _tenant: &str,
        _limit: usize,
    ) -> Result<Slot, crate::error::Error> {
        Ok(Slot::Unshared)
    }

    /// Gives slot `slot` of `server` back.
    async fn give_slot(&self, _server: &str, _slot: i64) {}
}

/// What `Journal::try_slot` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Unshared,
    Taken(i64),
    /// Every slot is held: look again.
    Busy,
}

/// Runs tenants through their pending migrations.
pub struct Executor {
    pub connector: Arc<Connector>,
    pub fanout: Arc<Fanout>,
    pub set: Arc<MigrationSet>,
    pub opts: ExecOptions,
    /// The version tenants are taken to (head when `None`).
    pub target: Option<i64>,
    pub bus: Bus,
    pub cancel: Cancel,
    /// Tenants failed so far (for `--max-failures`): of this run, or of all
    /// the batches a worker runs.
    pub failures: Arc<AtomicUsize>,
    /// Tenants whose last attempt never recorded its end (see `Earlier`).
    pub earlier: HashMap<String, Earlier>,
    /// Written before a tenant's first migration is applied, when set.
    pub journal: Option<Arc<dyn Journal>>,
}

struct Shared {
    connector: Arc<Connector>,
    set: Arc<MigrationSet>,
    opts: ExecOptions,
    target: Option<i64>,
    bus: Bus,
    cancel: Cancel,
    failures: Arc<AtomicUsize>,
    run_id: String,
    tables: dashmap::DashMap<(i64, Dialect), Vec<String>>,
    earlier: HashMap<String, Earlier>,
    journal: Option<Arc<dyn Journal>>,
}

impl Shared {
    /// The tables `versions` touch for `dialect` (for preflight and
    /// `--analyze`), from the parser. Each script is parsed once per run, not
    /// once per tenant.
    fn tables(&self, versions: &[i64], dialect: Dialect) -> Vec<String> {
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
        self.bus.emit(e);
    }
}

impl Executor {
    /// Runs every tenant; every tenant gets exactly one `TenantFinished` event.
    pub async fn run(&self, run_id: &str, tenants: Vec<Tenant>) -> Stops {
        let shared = self.shared(run_id);
        shared.emit(Event::RunStarted {
            run_id: run_id.to_string(),
            tenants: tenants.len(),
        });
        let mut tasks = JoinSet::new();
        let mut stops = Stops::default();
        let mut ahead = interleave(tenants, |t| t);
        let mut queue: VecDeque<Tenant> = VecDeque::new();
        loop {
            if queue.is_empty() {
                if ahead.is_empty() {
                    break;
                }
                self.peek(&shared, &mut ahead, &mut queue).await;
                continue;
            }
            let tenant = queue.pop_front().expect("not empty");
            let stop_reason = if shared.cancel.is_cancelled() {
                Some("interrupted before this tenant started")
            } else if self.budget_spent(&shared) {
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
            let permits = tokio::select! {
                p = self.fanout.slot(&tenant) => Some(p),
                _ = shared.cancel.cancelled() => None,
            };
            // A failure may have been recorded while we waited for a slot.
            let Some(permits) = permits else {
                queue.push_front(tenant);
                continue;
            };
            if self.budget_spent(&shared) {
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
                reaped(r);
            }
        }
        while let Some(r) = tasks.join_next().await {
            reaped(r);
        }
        stops.interrupted |= shared.cancel.is_cancelled();
        if stops.interrupted {
            shared.emit(Event::Interrupted);
        }
        shared.emit(Event::RunFinished);
        stops
    }

    /// What every tenant task of run `run_id` shares.
    fn shared(&self, run_id: &str) -> Arc<Shared> {
        Arc::new(Shared {
            connector: self.connector.clone(),
            set: self.set.clone(),
            opts: self.opts.clone(),
            target: self.target,
            bus: self.bus.clone(),
            cancel: self.cancel.clone(),
            failures: self.failures.clone(),
            run_id: run_id.to_string(),
            tables: Default::default(),
            earlier: self.earlier.clone(),
            journal: self.journal.clone(),
        })
    }

    /// Peeks ahead at a chunk of `ahead`: the tenants whose history says
    /// there is nothing to do finish here, without a session (the nightly
    /// check of an up-to-date fleet); the others go to `queue`.
    async fn peek(
        &self,
        shared: &Arc<Shared>,
        ahead: &mut VecDeque<Tenant>,
        queue: &mut VecDeque<Tenant>,
    ) {
        let chunk: Vec<Tenant> = ahead.drain(..ahead.len().min(PEEK_CHUNK)).collect();
        let peeked = match shared.cancel.is_cancelled() {
            true => vec![None; chunk.len()],
            false => self.connector.peek(&self.fanout, &chunk).await,
        };
        for (tenant, history) in chunk.into_iter().zip(peeked) {
            // an interrupted attempt's tenant takes a session: what it
            // applied is credited there
            let earlier = shared.earlier.contains_key(tenant.id.as_str());
            if earlier || !history.is_some_and(|h| up_to_date(shared, &tenant, &h)) {
                queue.push_back(tenant);
            }
        }
    }

    /// Whether `--max-failures` was reached.
    fn budget_spent(&self, shared: &Shared) -> bool {
        self.opts
            .max_failures
            .is_some_and(|m| shared.failures.load(Ordering::SeqCst) >= m)
    }
}

/// A tenant task that ended; a panic is logged (its tenant's row says
/// what it reached).
fn reaped(r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r {
        tracing::error!("tenant task panicked: {e}");
    }
}

/// Tenants read ahead at a time (see `Connector::peek`).
const PEEK_CHUNK: usize = 256;

/// A tenant whose peeked history plans nothing to apply is up to date: it
/// gets its events (started, planned, finished) without a session. Anything
/// else (something pending, a history that does not plan) goes through a
/// session, which reads the history again under the tenant's lock.
fn up_to_date(shared: &Shared, tenant: &Tenant, history: &[crate::migration::Applied]) -> bool {
    let started = Instant::now();
    let started_at = Utc::now();
    let Ok(mut plan) = plan_tenant(
        history,
        &shared.set,
        tenant.locator.dialect(),
        shared.target,
    ) else {
        return false;
    };
    super::hold::cut_at_held(&mut plan.pending, &shared.opts.hold_versions);
    if !plan.pending.is_empty() {
        return false;
    }
    shared.emit(Event::TenantStarted {
        tenant: tenant.id.clone(),
        attempt: 1,
    });
    shared.emit(Event::TenantPlanned {
        tenant: tenant.id.clone(),
        from_version: plan.current,
        pending: Vec::new(),
    });
    shared.emit(Event::TenantFinished(Box::new(TenantOutcome {
        tenant: tenant.id.clone(),
        status: TenantStatus::UpToDate,
        attempts: 1,
        from_version: Some(plan.current),
        to_version: Some(plan.current),
        applied: Vec::new(),
        duration: started.elapsed(),
        started_at: Some(started_at),
        finished_at: Some(Utc::now()),
        error: None,
    })));
    true
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
        error: Some(TenantError::permanent(FailureKind::NotStarted, reason)),
    })));
}

/// What one tenant's attempts have achieved so far.
#[derive(Default)]
struct Progress {
    from_version: Option<i64>,
    current: Option<i64>,
    applied: Vec<i64>,
    interrupted: bool,
    /// Its start was written to the `Journal`.
    journaled: bool,
    /// Batches and rows of a backfill, across attempts.
    backfill: (u64, u64),
}

async fn run_tenant(shared: &Shared, tenant: &Tenant) {
    // the rollout's limit on the tenant's server, across every worker
    let server = tenant.locator.server_key();
    let slot = match take_slot(shared, &server, tenant).await {
        Ok(slot) => slot,
        Err(why) => {
            not_started(shared, tenant, why);
            return;
        }
    };
    run_in_slot(shared, tenant).await;
    if let (Some(journal), Some(slot)) = (&shared.journal, slot) {
        journal.give_slot(&server, slot).await;
    }
}

/// Waits for a shared slot on `server` (`None`: none is needed).
async fn take_slot(
    shared: &Shared,
    server: &str,
    tenant: &Tenant,
) -> Result<Option<i64>, &'static str> {
    let Some(journal) = &shared.journal else {
        return Ok(None);
    };
    loop {
        match journal
            .try_slot(server, tenant.id.as_str(), shared.opts.per_server)
            .await
        {
            Ok(Slot::Unshared) => return Ok(None),
            Ok(Slot::Taken(s)) => return Ok(Some(s)),
            // the store is away: the attempt would fail on it too; its
            // retry is the next claim
            Err(_) => return Err("the state store did not answer for a --per-server slot"),
            Ok(Slot::Busy) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            _ = shared.cancel.cancelled() => return Err("interrupted while waiting for a --per-server slot"),
        }
    }
}

async fn run_in_slot(shared: &Shared, tenant: &Tenant) {
    let started = Instant::now();
    let started_at = Utc::now();
    let mut progress = Progress::default();
    let mut attempt = 0;
    // a transient failure met while this process is stopping (a signal, or
    // its lease lapsed: the store or the network away) is no failure of the
    // tenant: it is left for the next run or another worker to take
    let mut stopped = false;
    let result = loop {
        attempt += 1;
        shared.emit(Event::TenantStarted {
            tenant: tenant.id.clone(),
            attempt,
        });
        match attempt_once(shared, tenant, &mut progress).await {
            Ok(()) => break Ok(()),
            Err(e) if e.is_transient() && shared.cancel.is_cancelled() => {
                stopped = true;
                break Err(e);
            }
            Err(e) if shared.opts.retry.should_retry(&e, attempt) => {
                let delay = shared.opts.retry.delay(attempt);
                shared.emit(Event::TenantRetrying {
                    tenant: tenant.id.clone(),
                    next_attempt: attempt + 1,
                    delay,
                    error: e.clone(),
                });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.cancel.cancelled() => {
                        stopped = true;
                        break Err(e);
                    }
                }
            }
            Err(e) => break Err(e),
        }
    };
    let status = match &result {
        Ok(()) if progress.interrupted => TenantStatus::Interrupted,
        Ok(()) if progress.applied.is_empty() => TenantStatus::UpToDate,
        Ok(()) => TenantStatus::Succeeded,
        Err(_) if stopped => TenantStatus::Interrupted,
        Err(_) => {
            shared.failures.fetch_add(1, Ordering::SeqCst);
            TenantStatus::Failed
        }
    };
    let error = match result {
        Err(e) => Some(e),
        Ok(()) if progress.interrupted => Some(TenantError::transient(
            FailureKind::Interrupted,
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
    let r = apply_pending(shared, tenant, session.as_mut(), progress).await;
    session.close().await;
    r
}

async fn apply_pending(
    shared: &Shared,
    tenant: &Tenant,
    session: &mut dyn Session,
    progress: &mut Progress,
) -> Result<(), TenantError> {
    session.lock().await?;
    let history = session.history().await?;
    let dialect = session.dialect();
    let mut plan = plan_tenant(&history, &shared.set, dialect, shared.target)?;
    super::hold::cut_at_held(&mut plan.pending, &shared.opts.hold_versions);
    credit_earlier(shared, tenant, &history, plan.current, progress);
    progress.from_version.get_or_insert(plan.current);
    progress.current = Some(plan.current);
    shared.emit(Event::TenantPlanned {
        tenant: tenant.id.clone(),
        from_version: plan.current,
        pending: plan.pending.clone(),
    });
    if !plan.pending.is_empty() && !prepare(shared, tenant, session, &plan, progress).await? {
        return Ok(());
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
    let tx_mode = match session.transactional_ddl() {
        true => shared.opts.tx_mode,
        false => TxMode::Migration,
    };
    for group in groups(&steps, tx_mode) {
        if !apply_group(shared, tenant, session, progress, group).await? {
            return Ok(());
        }
    }
    if shared.opts.analyze && !progress.applied.is_empty() {
        let tables = shared.tables(&progress.applied, dialect);
        session.analyze(&tables).await;
    }
    Ok(())
}

/// What an attempt of an earlier process of this rollout applied (it
/// started from `e.from` and never recorded its end) is this rollout's too.
fn credit_earlier(
    shared: &Shared,
    tenant: &Tenant,
    history: &[crate::migration::Applied],
    current: i64,
    progress: &mut Progress,
) {
    if progress.from_version.is_some() {
        return;
    }
    if let Some(e) = shared.earlier.get(tenant.id.as_str()) {
        progress.from_version = Some(e.from);
        progress.applied.extend(
            history
                .iter()
                .filter(|h| h.success && h.version > e.from && h.version <= current)
                .filter(|h| shared.set.get(h.version).is_some())
                .map(|h| h.version),
        );
    }
}

/// Before the first migration of a tenant with work to do: the journal (a
/// worker's; false: the tenant is no longer this process's), the
/// preflight, the backup.
async fn prepare(
    shared: &Shared,
    tenant: &Tenant,
    session: &mut dyn Session,
    plan: &crate::migration::TenantPlan,
    progress: &mut Progress,
) -> Result<bool, TenantError> {
    let dialect = session.dialect();
    if let Some(journal) = &shared.journal
        && !progress.journaled
    {
        let ours = journal
            .planned(tenant.id.as_str(), plan.current)
            .await
            .map_err(|e| TenantError::transient(FailureKind::StateStore, e.to_string()))?;
        if !ours {
            progress.interrupted = true;
            return Ok(false);
        }
        progress.journaled = true;
    }
    if let Some(limits) = shared.opts.preflight {
        let tables = shared.tables(&plan.pending, dialect);
        if let Some(summary) = session.preflight(&tables, limits).await? {
            shared.emit(Event::Preflight {
                tenant: tenant.id.clone(),
                summary,
            });
        }
    }
    if let Some(dir) = &shared.opts.backup_dir {
        let path = crate::dialect::backup::backup_path(dir, &shared.run_id, tenant);
        // a resumed rollout keeps the backup taken before anything ran
        if !path.exists() {
            session.backup(&path).await?;
        }
        shared.emit(Event::BackupTaken {
            tenant: tenant.id.clone(),
            path: path.clone(),
        });
    }
    Ok(true)
}

/// One group of migrations (a batched backfill on its own); false when the
/// attempt stops here (interrupted).
async fn apply_group(
    shared: &Shared,
    tenant: &Tenant,
    session: &mut dyn Session,
    progress: &mut Progress,
    group: &[Step<'_>],
) -> Result<bool, TenantError> {
    if shared.cancel.is_cancelled() {
        progress.interrupted = true;
        return Ok(false);
    }
    if let [step] = group
        && let Some(batch) = step.script.directives.batch
    {
        backfill(shared, tenant, session, progress, *step, batch).await?;
        if progress.interrupted {
            return Ok(false);
        }
        return Ok(true);
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
    Ok(true)
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
    session: &mut dyn Session,
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
            .backfill_batch(step, batch.size, t0)
            .await
            .map_err(|e| e.at_version(v))?;
        progress.backfill.0 += b.statements;
        progress.backfill.1 += b.changed;
        shared.emit(Event::BackfillBatch {
            tenant: tenant.id.clone(),
            version: v,
            batches: progress.backfill.0,
            rows: progress.backfill.1,
            batch_statements: b.statements,
            batch_rows: b.changed,
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
/// on a tenant whose DDL is transactional) runs of transactional migrations,
/// each `-- no-transaction` or batched migration on its own.
fn groups<'a, 'b>(steps: &'a [Step<'b>], mode: TxMode) -> Vec<&'a [Step<'b>]> {
    if mode == TxMode::Migration {
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
