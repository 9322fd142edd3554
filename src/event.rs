//! The one event stream of a rollout: tenant events from the executor, and
//! wave, gate and rollout lifecycle from the driver. The engine never prints:
//! the state recorder, the progress display, log lines and metrics are all
//! subscribers (`Subscriber`) of one `Bus`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::TenantError;
use crate::state::{RolloutStatus, WaveStatus};
use crate::tenant::TenantId;

/// How a tenant's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Migrations were applied and the tenant is at its target.
    Succeeded,
    /// Nothing was pending.
    UpToDate,
    /// Failed permanently, or transiently on every attempt.
    Failed,
    /// Never started: the run was interrupted or hit `--max-failures` first.
    NotStarted,
    /// Stopped between two migrations by Ctrl-C/SIGTERM; part-way to target.
    Interrupted,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Succeeded => "succeeded",
            TenantStatus::UpToDate => "up_to_date",
            TenantStatus::Failed => "failed",
            TenantStatus::NotStarted => "not_started",
            TenantStatus::Interrupted => "interrupted",
        }
    }

    /// The tenant ended where it should.
    pub fn is_ok(self) -> bool {
        matches!(self, TenantStatus::Succeeded | TenantStatus::UpToDate)
    }
}

/// The final record of one tenant in one run.
#[derive(Debug, Clone, Serialize)]
pub struct TenantOutcome {
    pub tenant: TenantId,
    pub status: TenantStatus,
    pub attempts: u32,
    pub from_version: Option<i64>,
    pub to_version: Option<i64>,
    pub applied: Vec<i64>,
    #[serde(serialize_with = "ser_ms")]
    pub duration: Duration,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<TenantError>,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Something that happened during a run.
#[derive(Debug, Clone)]
pub enum Event {
    RunStarted {
        run_id: String,
        tenants: usize,
    },
    /// Before a rollout is recorded, `tenants` of its first wave are read
    /// ahead (`rollout::prefold`).
    ReadingAhead {
        tenants: usize,
    },
    /// Of the tenants read ahead, `tenants` more were found with nothing to
    /// do: done, recorded folded.
    FoundAtHead {
        tenants: usize,
    },
    TenantStarted {
        tenant: TenantId,
        attempt: u32,
    },
    TenantPlanned {
        tenant: TenantId,
        from_version: i64,
        pending: Vec<i64>,
    },
    MigrationStarted {
        tenant: TenantId,
        version: i64,
    },
    MigrationApplied {
        tenant: TenantId,
        version: i64,
        duration: Duration,
    },
    /// What the preflight found (size, largest tables, free connections).
    Preflight {
        tenant: TenantId,
        summary: String,
    },
    /// A backup of the tenant exists at `path` (taken before its first migration).
    BackupTaken {
        tenant: TenantId,
        path: std::path::PathBuf,
    },
    /// One batch of a batched backfill committed.
    BackfillBatch {
        tenant: TenantId,
        version: i64,
        /// Runs of the statement (a confirming run in the same transaction
        /// counted, even when rolled back) and rows changed (committed or
        /// about to be), this attempt so far.
        batches: u64,
        rows: u64,
        /// What this batch added to `batches` and `rows`.
        batch_statements: u64,
        batch_rows: u64,
        batch_duration: Duration,
        /// The statement changed no rows: the backfill is complete.
        done: bool,
    },
    TenantRetrying {
        tenant: TenantId,
        next_attempt: u32,
        delay: Duration,
        error: TenantError,
    },
    TenantFinished(Box<TenantOutcome>),
    /// Ctrl-C/SIGTERM: no new tenant starts; in-flight ones stop after their
    /// current migration.
    Interrupted,
    RunFinished,
    /// A move copied rows: `rows` of `table` so far, `tables_done` of
    /// `tables` finished (`table` empty when all are).
    MoveProgress {
        table: String,
        tables_done: usize,
        tables: usize,
        rows: u64,
    },
    /// A wave of a rollout starts running `tenants` (those still to run).
    WaveStarted {
        rollout: String,
        wave: i64,
        name: String,
        tenants: usize,
    },
    /// A wave's gate was evaluated: `status` is passed, failed (the rollout
    /// halts) or overridden, and `text` says why.
    GateEvaluated {
        rollout: String,
        wave: i64,
        name: String,
        status: WaveStatus,
        text: String,
    },
    /// The rollout stopped running in this process: completed, halted,
    /// paused (or interrupted), or aborted.
    RolloutEnded {
        rollout: String,
        status: RolloutStatus,
        reason: Option<String>,
    },
}

/// Receives every event, in the order each tenant emits them. Called from the
/// executor's tasks: implementations must be quick and must not block.
pub trait Subscriber: Send + Sync {
    fn on_event(&self, event: &Event);
}

/// The subscribers of one command's events.
#[derive(Clone, Default)]
pub struct Bus {
    subscribers: Vec<Arc<dyn Subscriber>>,
}

impl Bus {
    pub fn new(subscribers: Vec<Arc<dyn Subscriber>>) -> Bus {
        Bus { subscribers }
    }

    /// This bus and one more subscriber.
    pub fn with(&self, extra: Arc<dyn Subscriber>) -> Bus {
        let mut subscribers = self.subscribers.clone();
        subscribers.push(extra);
        Bus { subscribers }
    }

    pub fn emit(&self, event: Event) {
        for s in &self.subscribers {
            s.on_event(&event);
        }
    }
}
