//! Reports: everything a run leaves for people and machines, written under
//! `reports/<run-id>/` (run ids sort by time): `tenants.csv` (one row a
//! tenant), `summary.json` (with `format_version`), and `summary.md`. The
//! progress display lives in `progress`; both read what the executor's events
//! produced, never the executor itself.

pub mod progress;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, ErrorClass};
use crate::event::{TenantOutcome, TenantStatus};

/// The version of the layout of `summary.json`; bumped on any breaking change.
pub const FORMAT_VERSION: u32 = 1;

/// A new run id: UTC time to the millisecond plus 4 random hex digits, so ids
/// sort by start time and two runs started together do not collide.
pub fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        rand::random::<u16>()
    )
}

/// Everything known about a finished run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub command: String,
    pub fleet: String,
    pub migrations_dir: PathBuf,
    pub set_checksum: String,
    pub head: i64,
    pub target: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub concurrency: usize,
    pub tx_mode: String,
    pub interrupted: bool,
    pub max_failures_reached: bool,
    pub outcomes: Vec<TenantOutcome>,
}

#[derive(Debug, Serialize, Default, PartialEq, Eq)]
pub struct Totals {
    pub tenants: usize,
    pub succeeded: usize,
    pub up_to_date: usize,
    pub failed: usize,
    pub interrupted: usize,
    pub not_started: usize,
    pub migrations_applied: usize,
    pub retries: usize,
}

#[derive(Debug, Serialize)]
pub struct DurationStats {
    pub p50_ms: u64,
    pub p95_ms: u64,
    pub max_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct FailureGroup {
    pub class: ErrorClass,
    pub kind: String,
    pub count: usize,
    pub example_tenants: Vec<String>,
    pub example_message: String,
}

#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub format_version: u32,
    pub run_id: &'a str,
    pub command: &'a str,
    pub fleet: &'a str,
    pub migrations_dir: String,
    pub migration_set_checksum: &'a str,
    pub head_version: i64,
    pub target_version: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub concurrency: usize,
    pub tx_mode: &'a str,
    pub interrupted: bool,
    pub max_failures_reached: bool,
    pub totals: Totals,
    pub tenant_duration: DurationStats,
    pub failures_by_class: Vec<FailureGroup>,
    pub peak_rss_kb: Option<u64>,
}

/// The `q` quantile (0..=1) of sorted durations, nearest-rank.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// This process's peak resident set size (Linux `VmHWM`), in KiB.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl RunReport {
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            tenants: self.outcomes.len(),
            ..Default::default()
        };
        for o in &self.outcomes {
            match o.status {
                TenantStatus::Succeeded => t.succeeded += 1,
                TenantStatus::UpToDate => t.up_to_date += 1,
                TenantStatus::Failed => t.failed += 1,
                TenantStatus::Interrupted => t.interrupted += 1,
                TenantStatus::NotStarted => t.not_started += 1,
            }
            t.migrations_applied += o.applied.len();
            t.retries += o.attempts.saturating_sub(1) as usize;
        }
        t
    }

    /// Whether every tenant ended where it should (exit code 0).
    pub fn all_ok(&self) -> bool {
        self.outcomes.iter().all(|o| o.status.is_ok())
    }

    pub fn duration_stats(&self) -> DurationStats {
        let mut d: Vec<Duration> = self
            .outcomes
            .iter()
            .filter(|o| o.started_at.is_some())
            .map(|o| o.duration)
            .collect();
        d.sort();
        DurationStats {
            p50_ms: quantile(&d, 0.5).as_millis() as u64,
            p95_ms: quantile(&d, 0.95).as_millis() as u64,
            max_ms: d.last().copied().unwrap_or_default().as_millis() as u64,
        }
    }

    /// Failed tenants grouped by (class, kind), largest group first.
    pub fn failure_groups(&self) -> Vec<FailureGroup> {
        let mut groups: BTreeMap<(ErrorClass, String), FailureGroup> = BTreeMap::new();
        for o in self.outcomes.iter().filter(|o| !o.status.is_ok()) {
            let Some(e) = &o.error else { continue };
            let g = groups
                .entry((e.class, e.kind.clone()))
                .or_insert_with(|| FailureGroup {
                    class: e.class,
                    kind: e.kind.clone(),
                    count: 0,
                    example_tenants: Vec::new(),
                    example_message: e.message.clone(),
                });
            g.count += 1;
            if g.example_tenants.len() < 5 {
                g.example_tenants.push(o.tenant.to_string());
            }
        }
        let mut v: Vec<_> = groups.into_values().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.kind.cmp(&b.kind)));
        v
    }

    pub fn summary(&self) -> Summary<'_> {
        Summary {
            format_version: FORMAT_VERSION,
            run_id: &self.run_id,
            command: &self.command,
            fleet: &self.fleet,
            migrations_dir: self.migrations_dir.display().to_string(),
            migration_set_checksum: &self.set_checksum,
            head_version: self.head,
            target_version: self.target,
            started_at: self.started_at,
            finished_at: self.finished_at,
            duration_ms: (self.finished_at - self.started_at)
                .num_milliseconds()
                .max(0) as u64,
            concurrency: self.concurrency,
            tx_mode: &self.tx_mode,
            interrupted: self.interrupted,
            max_failures_reached: self.max_failures_reached,
            totals: self.totals(),
            tenant_duration: self.duration_stats(),
            failures_by_class: self.failure_groups(),
            peak_rss_kb: peak_rss_kb(),
        }
    }

    /// Writes the report into `reports/<run-id>/` and returns that folder.
    pub fn write(&self, reports: &Path) -> Result<PathBuf, Error> {
        let dir = reports.join(&self.run_id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        self.write_csv(&dir.join("tenants.csv"))?;
        let summary = self.summary();
        let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
        let p = dir.join("summary.json");
        std::fs::write(&p, json + "\n").map_err(|e| Error::io(&p, e))?;
        let p = dir.join("summary.md");
        std::fs::write(&p, self.markdown(&summary)).map_err(|e| Error::io(&p, e))?;
        Ok(dir)
    }

    fn write_csv(&self, path: &Path) -> Result<(), Error> {
        let io = |e: csv::Error| Error::io(path, std::io::Error::other(e.to_string()));
        let mut w = csv::Writer::from_path(path).map_err(io)?;
        w.write_record([
            "tenant",
            "status",
            "attempts",
            "from_version",
            "to_version",
            "applied_versions",
            "duration_ms",
            "started_at",
            "finished_at",
            "error_class",
            "error_kind",
            "error_code",
            "error_version",
            "error_message",
        ])
        .map_err(io)?;
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        for o in &self.outcomes {
            let e = o.error.as_ref();
            w.write_record([
                o.tenant.to_string(),
                o.status.as_str().to_string(),
                o.attempts.to_string(),
                opt(o.from_version),
                opt(o.to_version),
                o.applied
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(";"),
                o.duration.as_millis().to_string(),
                o.started_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                o.finished_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                e.map(|e| e.class.to_string()).unwrap_or_default(),
                e.map(|e| e.kind.clone()).unwrap_or_default(),
                e.and_then(|e| e.code.clone()).unwrap_or_default(),
                opt(e.and_then(|e| e.version)),
                e.map(|e| e.message.clone()).unwrap_or_default(),
            ])
            .map_err(io)?;
        }
        w.flush().map_err(|e| Error::io(path, e))
    }

    fn markdown(&self, s: &Summary<'_>) -> String {
        let t = &s.totals;
        let mut md = String::new();
        let verdict = if self.all_ok() {
            "every tenant is at its target"
        } else {
            "SOME TENANTS ARE NOT AT THEIR TARGET"
        };
        let _ = writeln!(md, "# fleetmig {} {}: {verdict}\n", s.command, s.run_id);
        let _ = writeln!(md, "- fleet: `{}`", s.fleet);
        let _ = writeln!(
            md,
            "- migrations: `{}` (set {}, head {}{})",
            s.migrations_dir,
            s.migration_set_checksum,
            s.head_version,
            s.target_version
                .map(|t| format!(", target {t}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            md,
            "- started {} , took {:.1} s, concurrency {}, tx mode {}",
            s.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            s.duration_ms as f64 / 1000.0,
            s.concurrency,
            s.tx_mode
        );
        if s.interrupted {
            let _ = writeln!(md, "- **interrupted** by a signal: run again to finish");
        }
        if s.max_failures_reached {
            let _ = writeln!(md, "- **stopped early**: --max-failures was reached");
        }
        let _ = writeln!(
            md,
            "\n| tenants | succeeded | up to date | failed | interrupted | not started | migrations applied | retries |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            t.tenants,
            t.succeeded,
            t.up_to_date,
            t.failed,
            t.interrupted,
            t.not_started,
            t.migrations_applied,
            t.retries
        );
        let d = &s.tenant_duration;
        let _ = writeln!(
            md,
            "\nTenant duration: p50 {} ms, p95 {} ms, max {} ms.",
            d.p50_ms, d.p95_ms, d.max_ms
        );
        if !s.failures_by_class.is_empty() {
            let _ = writeln!(md, "\n## Failures\n");
            let _ = writeln!(
                md,
                "| class | kind | tenants | examples | message (first) |"
            );
            let _ = writeln!(md, "|---|---|---:|---|---|");
            for g in &s.failures_by_class {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    g.class,
                    g.kind,
                    g.count,
                    g.example_tenants.join(", "),
                    g.example_message.replace('|', "\\|")
                );
            }
            let _ = writeln!(
                md,
                "\nEvery failed tenant, with its full error, is a row of `tenants.csv`."
            );
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&d, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&d, 0.95), Duration::from_millis(95));
        assert_eq!(quantile(&d[..1], 0.95), Duration::from_millis(1));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn run_ids_sort_by_time() {
        let a = new_run_id();
        std::thread::sleep(Duration::from_millis(5));
        let b = new_run_id();
        assert!(a < b, "{a} !< {b}");
    }
}
