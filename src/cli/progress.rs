//! Progress on stderr while a command works: an indicatif bar when stderr is
//! a terminal (done/total, ok, failed, retrying, ETA, the slowest tenant in
//! flight), and a plain line every few seconds when it is not (a cron job's
//! log), with a line for each wave that starts and each gate verdict. It is a
//! subscriber of the engine's events (`Live`), started by the CLI and handed
//! to the engine on its bus.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::event::{Event, Subscriber, TenantStatus};
use crate::tenant::TenantId;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    /// Plain lines every `interval`.
    Lines(Duration),
    Off,
}

/// What a tenant is doing right now.
#[derive(Debug, Clone)]
struct InFlight {
    current_migration: Option<i64>,
    started: Instant,
    retrying: bool,
    /// (batches, rows) of a running backfill.
    backfill: Option<(u64, u64)>,
}

/// The live counts of a command, fed by events: what the display reads.
/// Tenants leave `in_flight` when they finish, so it holds at most the
/// tenants running at once.
#[derive(Default)]
pub struct Live {
    total: AtomicUsize,
    done: AtomicUsize,
    ok: AtomicUsize,
    failed: AtomicUsize,
    in_flight: DashMap<TenantId, InFlight>,
    /// Wave and gate lines waiting to be shown.
    notes: std::sync::Mutex<Vec<String>>,
}

impl Live {
    fn line(&self) -> String {
        let retrying = self.in_flight.iter().filter(|t| t.retrying).count();
        let mut s = format!(
            "{}/{} done, {} ok, {} failed, {retrying} retrying",
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        );
        let slowest = self
            .in_flight
            .iter()
            .max_by_key(|t| t.started.elapsed())
            .map(|t| (t.key().clone(), t.value().clone()));
        if let Some((id, t)) = slowest {
            s.push_str(&format!(
                ", slowest in flight: {id} ({:.1}s{}{})",
                t.started.elapsed().as_secs_f64(),
                t.current_migration
                    .map(|m| format!(", migration {m}"))
                    .unwrap_or_default(),
                t.backfill
                    .map(|(n, r)| format!(", backfill batch {n}, {r} rows"))
                    .unwrap_or_default()
            ));
        }
        s
    }

    fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().expect("notes lock"))
    }
}

impl Subscriber for Live {
    fn on_event(&self, event: &Event) {
        match event {
            Event::RunStarted { tenants, .. } | Event::ReadingAhead { tenants } => {
                // a later wave (or the run after the read-ahead) adds to
                // what was done before
                let done = self.done.load(Ordering::Relaxed);
                self.total.store(done + tenants, Ordering::Relaxed);
            }
            Event::FoundAtHead { tenants } => {
                self.done.fetch_add(*tenants, Ordering::Relaxed);
                self.ok.fetch_add(*tenants, Ordering::Relaxed);
            }
            Event::TenantStarted { tenant, .. } => {
                let mut e = self
                    .in_flight
                    .entry(tenant.clone())
                    .or_insert_with(|| InFlight {
                        current_migration: None,
                        started: Instant::now(),
                        retrying: false,
                        backfill: None,
                    });
                e.retrying = false;
            }
            Event::MigrationStarted { tenant, version } => {
                if let Some(mut t) = self.in_flight.get_mut(tenant) {
                    t.current_migration = Some(*version);
                }
            }
            Event::TenantRetrying { tenant, .. } => {
                if let Some(mut t) = self.in_flight.get_mut(tenant) {
                    t.retrying = true;
                }
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
            Event::TenantFinished(outcome) => {
                self.in_flight.remove(&outcome.tenant);
                self.done.fetch_add(1, Ordering::Relaxed);
                match outcome.status {
                    s if s.is_ok() => self.ok.fetch_add(1, Ordering::Relaxed),
                    TenantStatus::NotStarted => 0,
                    _ => self.failed.fetch_add(1, Ordering::Relaxed),
                };
            }
            Event::WaveStarted { name, tenants, .. } => {
                self.notes
                    .lock()
                    .expect("notes lock")
                    .push(format!("wave {name}: {tenants} tenant(s) to run"));
            }
            Event::GateEvaluated {
                name, status, text, ..
            } => {
                self.notes
                    .lock()
                    .expect("notes lock")
                    .push(format!("wave {name}: gate {status}: {text}"));
            }
            _ => {}
        }
    }
}

/// A running progress display; `finish` stops it.
pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<ProgressBar>,
    live: Arc<Live>,
}

impl Progress {
    /// Starts the display; subscribe `live()` to the engine's events.
    pub fn start(mode: ProgressMode) -> Progress {
        let live = Arc::new(Live::default());
        let every = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => None,
            ProgressMode::Auto => Some(Duration::from_secs(5)),
            ProgressMode::Lines(d) => Some(d),
            ProgressMode::Off => {
                return Progress {
                    task: None,
                    bar: None,
                    live,
                };
            }
        };
        let l = live.clone();
        match every {
            Some(every) => {
                let task = tokio::spawn(async move {
                    let start = Instant::now();
                    let mut tick = tokio::time::interval(every);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let at = start.elapsed().as_secs_f64();
                        for note in l.take_notes() {
                            errln!("fleetmig: {at:>6.1}s {note}");
                        }
                        errln!("fleetmig: {at:>6.1}s {}", l.line());
                    }
                });
                Progress {
                    task: Some(task),
                    bar: None,
                    live,
                }
            }
            None => {
                let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{elapsed_precise} [{bar:30}] {pos}/{len} ETA {eta} {wide_msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                let b = bar.clone();
                let task = tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(200));
                    loop {
                        tick.tick().await;
                        for note in l.take_notes() {
                            b.println(format!("fleetmig: {note}"));
                        }
                        b.set_length(l.total.load(Ordering::Relaxed) as u64);
                        b.set_position(l.done.load(Ordering::Relaxed) as u64);
                        b.set_message(l.line());
                    }
                });
                Progress {
                    task: Some(task),
                    bar: Some(bar),
                    live,
                }
            }
        }
    }

    /// The subscriber that feeds this display.
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    pub fn finish(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
