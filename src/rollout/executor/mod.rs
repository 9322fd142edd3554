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
use crate::dialect::Connector;
use crate::error::TenantError;
use crate::event::{Bus, Event, TenantOutcome, TenantStatus};
use crate::fanout::{Fanout, interleave};
use crate::migration::{MigrationSet, plan_tenant};
use crate::options::ExecOptions;
use crate::state::Earlier;
use crate::tenant::{Dialect, Tenant};

mod attempt;

use attempt::attempt_once;

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
    let dialect = tenant.locator.dialect();
    let held = &shared.opts.hold_versions;
    let Some(current) = at_rest(history, &shared.set, dialect, shared.target, held) else {
        return false;
    };
    shared.emit(Event::TenantStarted {
        tenant: tenant.id.clone(),
        attempt: 1,
    });
    shared.emit(Event::TenantPlanned {
        tenant: tenant.id.clone(),
        from_version: current,
        pending: Vec::new(),
    });
    shared.emit(Event::TenantFinished(Box::new(TenantOutcome {
        tenant: tenant.id.clone(),
        status: TenantStatus::UpToDate,
        attempts: 1,
        from_version: Some(current),
        to_version: Some(current),
        applied: Vec::new(),
        duration: started.elapsed(),
        started_at: Some(started_at),
        finished_at: Some(Utc::now()),
        error: None,
    })));
    true
}

/// The version a tenant whose `history` this is stands at, when it has
/// nothing to apply up to `target` (`held`: the contract versions held):
/// `None` when something is pending or the history does not plan (a failed
/// or changed migration), which only a session may decide.
pub(crate) fn at_rest(
    history: &[crate::migration::Applied],
    set: &MigrationSet,
    dialect: Dialect,
    target: Option<i64>,
    held: &[i64],
) -> Option<i64> {
    let mut plan = plan_tenant(history, set, dialect, target).ok()?;
    super::hold::cut_at_held(&mut plan.pending, held);
    plan.pending.is_empty().then_some(plan.current)
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
    if shared.opts.per_server == crate::options::ExecOptions::UNBOUNDED {
        // no --per-server: nothing to share with the other workers
        return Ok(None);
    }
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
