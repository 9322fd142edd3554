//! Progress on stderr while a run works: an indicatif bar when stderr is a
//! terminal (done/total, ok, failed, retrying, ETA, the slowest tenant in
//! flight), and a plain line every few seconds when it is not (a cron job's
//! log). It reads the live state that the executor's events feed.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::rollout::LiveState;

/// A running progress display; `finish` stops it.
pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    /// Plain lines every `interval`.
    Lines(Duration),
    Off,
}

fn line(live: &LiveState) -> String {
    let mut s = format!(
        "{}/{} done, {} ok, {} failed, {} retrying",
        live.done.load(Ordering::Relaxed),
        live.total.load(Ordering::Relaxed),
        live.ok.load(Ordering::Relaxed),
        live.failed.load(Ordering::Relaxed),
        live.retrying()
    );
    if let Some((id, d, m, b)) = live.slowest() {
        s.push_str(&format!(
            ", slowest in flight: {id} ({:.1}s{}{})",
            d.as_secs_f64(),
            m.map(|m| format!(", migration {m}")).unwrap_or_default(),
            b.map(|(n, r)| format!(", backfill batch {n}, {r} rows"))
                .unwrap_or_default()
        ));
    }
    s
}

impl Progress {
    pub fn start(live: Arc<LiveState>, mode: ProgressMode) -> Progress {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => None,
            ProgressMode::Auto => Some(Duration::from_secs(5)),
            ProgressMode::Lines(d) => Some(d),
            ProgressMode::Off => {
                return Progress {
                    task: None,
                    bar: None,
                };
            }
        };
        match mode {
            Some(every) => {
                let task = tokio::spawn(async move {
                    let start = Instant::now();
                    let mut tick = tokio::time::interval(every);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        eprintln!(
                            "fleetmig: {:>6.1}s {}",
                            start.elapsed().as_secs_f64(),
                            line(&live)
                        );
                    }
                });
                Progress {
                    task: Some(task),
                    bar: None,
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
                        b.set_length(live.total.load(Ordering::Relaxed) as u64);
                        b.set_position(live.done.load(Ordering::Relaxed) as u64);
                        b.set_message(line(&live));
                    }
                });
                Progress {
                    task: Some(task),
                    bar: Some(bar),
                }
            }
        }
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
