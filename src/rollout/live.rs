//! Live per-tenant state of a run, in a `DashMap` fed by events: what the
//! progress display reads (done/ok/failed/retrying, the slowest tenant in
//! flight) and what the final report is built from.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use dashmap::DashMap;

use crate::event::{Event, Subscriber, TenantOutcome, TenantStatus};
use crate::tenant::TenantId;

/// What a tenant is doing right now.
#[derive(Debug, Clone)]
pub struct LiveTenant {
    pub attempt: u32,
    pub current_migration: Option<i64>,
    pub started: Instant,
    pub retrying: bool,
    /// (batches, rows) of a running backfill.
    pub backfill: Option<(u64, u64)>,
}

/// The slowest in-flight tenant: id, time so far, current migration, and
/// (batches, rows) when it is running a backfill.
pub type Slowest = (
    TenantId,
    std::time::Duration,
    Option<i64>,
    Option<(u64, u64)>,
);

/// The run's live state.
#[derive(Default)]
pub struct LiveState {
    pub total: AtomicUsize,
    pub in_flight: DashMap<TenantId, LiveTenant>,
    pub done: AtomicUsize,
    pub ok: AtomicUsize,
    pub failed: AtomicUsize,
    pub not_started: AtomicUsize,
    pub retries: AtomicUsize,
    pub migrations_applied: AtomicUsize,
    pub outcomes: Mutex<Vec<TenantOutcome>>,
}

impl LiveState {
    /// Tenants waiting for a retry right now.
    pub fn retrying(&self) -> usize {
        self.in_flight.iter().filter(|t| t.retrying).count()
    }

    /// The in-flight tenant that has been running longest, and for how long.
    pub fn slowest(&self) -> Option<Slowest> {
        self.in_flight
            .iter()
            .max_by_key(|t| t.started.elapsed())
            .map(|t| {
                (
                    t.key().clone(),
                    t.started.elapsed(),
                    t.current_migration,
                    t.backfill,
                )
            })
    }

    /// Takes the outcomes collected so far, sorted by tenant id.
    pub fn take_outcomes(&self) -> Vec<TenantOutcome> {
        let mut v = std::mem::take(&mut *self.outcomes.lock().expect("outcomes lock"));
        v.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        v
    }
}

impl Subscriber for LiveState {
    fn on_event(&self, event: &Event) {
        match event {
            Event::RunStarted { tenants, .. } => self.total.store(*tenants, Ordering::Relaxed),
            Event::TenantStarted { tenant, attempt } => {
                let mut e = self
                    .in_flight
                    .entry(tenant.clone())
                    .or_insert_with(|| LiveTenant {
                        attempt: *attempt,
                        current_migration: None,
                        started: Instant::now(),
                        retrying: false,
                        backfill: None,
                    });
                e.attempt = *attempt;
                e.retrying = false;
            }
            Event::MigrationStarted { tenant, version } => {
                if let Some(mut t) = self.in_flight.get_mut(tenant) {
                    t.current_migration = Some(*version);
                }
            }
            Event::MigrationApplied { .. } => {
                self.migrations_applied.fetch_add(1, Ordering::Relaxed);
            }
            Event::TenantRetrying { tenant, .. } => {
                self.retries.fetch_add(1, Ordering::Relaxed);
                if let Some(mut t) = self.in_flight.get_mut(tenant) {
                    t.retrying = true;
                }
            }
            Event::TenantFinished(outcome) => {
                self.in_flight.remove(&outcome.tenant);
                self.done.fetch_add(1, Ordering::Relaxed);
                match outcome.status {
                    s if s.is_ok() => self.ok.fetch_add(1, Ordering::Relaxed),
                    TenantStatus::NotStarted => self.not_started.fetch_add(1, Ordering::Relaxed),
                    _ => self.failed.fetch_add(1, Ordering::Relaxed),
                };
                self.outcomes
                    .lock()
                    .expect("outcomes lock")
                    .push((**outcome).clone());
            }
            Event::BackfillBatch {
                tenant,
                batches,
                rows,
                ..
            } => {
                if let Some(mut t) = self.in_flight.get_mut(tenant) {
                    t.backfill = Some((*batches, *rows));
                }
            }
            Event::TenantPlanned { .. }
            | Event::BackupTaken { .. }
            | Event::Preflight { .. }
            | Event::Interrupted
            | Event::RunFinished => {}
        }
    }
}
