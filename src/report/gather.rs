//! One pass over a rollout's tenant runs, streamed from the state store: the
//! counts, the durations (four bytes a tenant, for exact quantiles), the
//! failure clusters (one per shape of error, not per tenant) and the timeline
//! (a bar per tenant for a rollout of at most `MAX_BARS` tenants, otherwise
//! completions per time bucket). Nothing else of a tenant is kept: a report
//! of 100,000 tenants holds its aggregates, not its rows.

use std::collections::BTreeMap;

use super::{FailureCluster, Totals, normalise_message};
use crate::state::{RunStatus, TenantRun};

/// A rollout of at most this many started tenants is drawn a bar a tenant.
pub const MAX_BARS: usize = 2000;

/// Time buckets of the aggregate timeline.
pub const BUCKETS: usize = 100;

/// One tenant's bar in a small rollout's timeline.
#[derive(Debug, Clone)]
pub struct Bar {
    pub tenant: String,
    pub wave: i64,
    pub status: RunStatus,
    pub start: i64,
    pub end: i64,
    pub attempts: i64,
    pub duration_ms: i64,
    pub message: Option<String>,
}

/// Tenants finished per time bucket, by outcome.
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    pub t0: i64,
    pub t1: i64,
    /// (succeeded, failed, other) per bucket.
    pub counts: Vec<[usize; 3]>,
}

#[derive(Debug, Clone)]
pub enum Timeline {
    Bars(Vec<Bar>),
    Buckets(Buckets),
}

/// One wave's counts and durations (sorted once gathered).
#[derive(Debug, Clone, Default)]
pub struct WaveCount {
    pub tenants: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub durations: Vec<u32>,
}

/// What a report is made of.
#[derive(Debug, Clone)]
pub struct Gathered {
    pub totals: Totals,
    /// Tenants whose gate query failed.
    pub gate_errors: usize,
    pub waves: BTreeMap<i64, WaveCount>,
    /// Every started tenant's duration, sorted.
    pub durations: Vec<u32>,
    pub clusters: Vec<FailureCluster>,
    pub timeline: Timeline,
    pub last_finished: Option<i64>,
}

/// The accumulator of the pass.
pub struct Gather {
    g: Gathered,
    clusters: BTreeMap<(String, String, String), FailureCluster>,
}

impl Gather {
    /// `started` tenants between `t0` and `t1` (from the store's bounds):
    /// bars when few, buckets otherwise.
    pub fn new(started: usize, t0: i64, t1: i64) -> Gather {
        let timeline = if started <= MAX_BARS {
            Timeline::Bars(Vec::with_capacity(started))
        } else {
            Timeline::Buckets(Buckets {
                t0,
                t1: t1.max(t0 + 1),
                counts: vec![[0; 3]; BUCKETS],
            })
        };
        Gather {
            g: Gathered {
                totals: Totals::default(),
                gate_errors: 0,
                waves: BTreeMap::new(),
                durations: Vec::with_capacity(started),
                clusters: Vec::new(),
                timeline,
                last_finished: None,
            },
            clusters: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, r: &TenantRun) {
        let t = &mut self.g.totals;
        t.tenants += 1;
        match r.status {
            RunStatus::Succeeded => {
                t.succeeded += 1;
                if r.applied.is_empty() {
                    t.up_to_date += 1;
                }
            }
            RunStatus::Failed => t.failed += 1,
            RunStatus::Running => t.running += 1,
            RunStatus::NotStarted => t.not_started += 1,
            RunStatus::Skipped => t.skipped += 1,
            RunStatus::Reverted => t.reverted += 1,
            RunStatus::Pending => t.pending += 1,
        }
        t.migrations_applied += r.applied.len();
        t.retries += (r.attempts - 1).max(0) as usize;
        self.g.gate_errors += r.gate_error.is_some() as usize;
        self.g.last_finished = self.g.last_finished.max(r.finished_at);
        let w = self.g.waves.entry(r.wave).or_default();
        w.tenants += 1;
        w.succeeded += (r.status == RunStatus::Succeeded) as usize;
        w.failed += (r.status == RunStatus::Failed) as usize;
        if let Some(start) = r.started_at {
            let d = r.duration_ms.clamp(0, u32::MAX as i64) as u32;
            w.durations.push(d);
            self.g.durations.push(d);
            let end = r.finished_at.unwrap_or(start).max(start);
            match &mut self.g.timeline {
                Timeline::Bars(bars) => bars.push(Bar {
                    tenant: r.tenant.clone(),
                    wave: r.wave,
                    status: r.status,
                    start,
                    end,
                    attempts: r.attempts,
                    duration_ms: r.duration_ms,
                    message: r.error.message.clone(),
                }),
                Timeline::Buckets(b) => {
                    let at = ((end - b.t0) as f64 / (b.t1 - b.t0) as f64 * BUCKETS as f64) as usize;
                    let kind = match r.status {
                        RunStatus::Succeeded => 0,
                        RunStatus::Failed => 1,
                        _ => 2,
                    };
                    b.counts[at.min(BUCKETS - 1)][kind] += 1;
                }
            }
        }
        self.cluster(r);
    }

    /// Failed tenants cluster by class, kind and normalised message; a gate
    /// failure clusters under kind `gate_sql`.
    fn cluster(&mut self, r: &TenantRun) {
        let (class, kind, message) = if r.status == RunStatus::Failed {
            (
                r.error.class.map(|c| c.to_string()).unwrap_or_default(),
                r.error.kind.map(|k| k.to_string()).unwrap_or_default(),
                r.error.message.clone().unwrap_or_default(),
            )
        } else if let Some(g) = &r.gate_error {
            ("gate".to_string(), "gate_sql".to_string(), g.clone())
        } else {
            return;
        };
        let norm = normalise_message(&message);
        let c = self
            .clusters
            .entry((class.clone(), kind.clone(), norm.clone()))
            .or_insert_with(|| FailureCluster {
                class,
                kind,
                message: norm,
                count: 0,
                example_tenants: Vec::new(),
                example_message: message,
            });
        c.count += 1;
        if c.example_tenants.len() < 5 {
            c.example_tenants.push(r.tenant.clone());
        }
    }

    pub fn finish(mut self) -> Gathered {
        self.g.durations.sort_unstable();
        for w in self.g.waves.values_mut() {
            w.durations.sort_unstable();
        }
        let mut clusters: Vec<FailureCluster> = self.clusters.into_values().collect();
        clusters.sort_by(|a, b| b.count.cmp(&a.count).then(a.kind.cmp(&b.kind)));
        self.g.clusters = clusters;
        if let Timeline::Bars(bars) = &mut self.g.timeline {
            bars.sort_by(|a, b| (a.wave, a.start, &a.tenant).cmp(&(b.wave, b.start, &b.tenant)));
        }
        self.g
    }
}

/// The `q` quantile (0..=1) of sorted milliseconds, nearest-rank.
pub fn quantile_ms(sorted: &[u32], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as u64
}
