//! Reports: everything a rollout leaves for people and machines, written under
//! `reports/<rollout-id>/` (ids sort by time) from what the state store holds,
//! so `fleetmig report ID` can write them again at any time:
//! `tenants.csv` (one row a tenant), `waves.csv` (one row a wave),
//! `summary.json` (with `format_version`), `summary.md`, and `report.html` (one
//! self-contained page: timeline, duration histogram, failure clusters).
//! `metrics` writes the Prometheus text file for the nightly job.

mod files;
pub mod html;
mod metrics;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::Error;
use crate::options::TxMode;
use crate::state::{
    REFUSED_WAVE, RolloutRecord, RolloutStatus, RunStatus, StateStore, TenantRun, WaveRecord,
    WaveStatus,
};

/// The version of the layout of `summary.json`; bumped on any breaking change.
pub const FORMAT_VERSION: u32 = 2;

/// A new run id: UTC time to the millisecond plus 4 random hex digits, so ids
/// sort by start time and two runs started together do not collide.
pub fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        rand::random::<u16>()
    )
}

/// Everything the state store knows about one rollout.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub rollout: RolloutRecord,
    pub waves: Vec<WaveRecord>,
    pub tenants: Vec<TenantRun>,
}

#[derive(Debug, Serialize, Default, PartialEq, Eq)]
pub struct Totals {
    pub tenants: usize,
    pub succeeded: usize,
    /// Succeeded with nothing to apply.
    pub up_to_date: usize,
    pub failed: usize,
    pub pending: usize,
    pub running: usize,
    pub not_started: usize,
    pub skipped: usize,
    pub reverted: usize,
    pub migrations_applied: usize,
    pub retries: usize,
}

#[derive(Debug, Serialize)]
pub struct DurationStats {
    pub p50_ms: u64,
    pub p95_ms: u64,
    pub max_ms: u64,
}

/// Failed tenants with the same error class, kind and normalised message.
#[derive(Debug, Serialize, Clone)]
pub struct FailureCluster {
    pub class: String,
    pub kind: String,
    pub message: String,
    pub count: usize,
    pub example_tenants: Vec<String>,
    pub example_message: String,
}

#[derive(Debug, Serialize)]
pub struct WaveSummary {
    pub wave: i64,
    pub name: String,
    pub selector: String,
    pub status: WaveStatus,
    pub tenants: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub p50_ms: u64,
    pub p95_ms: u64,
    pub gate: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub format_version: u32,
    pub rollout_id: &'a str,
    pub command: &'a str,
    pub operator: &'a str,
    pub fleet: &'a str,
    pub migrations_dir: &'a str,
    pub migration_set_checksum: &'a str,
    pub target_version: i64,
    pub status: RolloutStatus,
    pub reason: Option<&'a str>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: u64,
    pub concurrency: usize,
    pub tx_mode: TxMode,
    /// A `phase=contract` migration held back, and why.
    pub held_contract: Option<&'a str>,
    pub totals: Totals,
    pub tenant_duration: DurationStats,
    pub waves: Vec<WaveSummary>,
    pub failures: Vec<FailureCluster>,
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

/// Folds an error message to its shape, so that the same failure on many
/// tenants is one line: quoted names become `"…"`, numbers `N`.
pub fn normalise_message(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    let mut chars = m.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == c {
                        closed = true;
                        break;
                    }
                }
                out.push(c);
                out.push('…');
                if closed {
                    out.push(c);
                }
            }
            d if d.is_ascii_digit() => {
                while chars.peek().is_some_and(|x| x.is_ascii_digit()) {
                    chars.next();
                }
                out.push('N');
            }
            other => out.push(other),
        }
    }
    out
}

fn ms_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn durations(rows: &[&TenantRun]) -> Vec<Duration> {
    let mut d: Vec<Duration> = rows
        .iter()
        .filter(|t| t.started_at.is_some())
        .map(|t| Duration::from_millis(t.duration_ms.max(0) as u64))
        .collect();
    d.sort();
    d
}

impl RunReport {
    /// Everything the store holds about rollout `id`.
    pub async fn load(store: &StateStore, id: &str) -> Result<RunReport, Error> {
        Ok(RunReport {
            rollout: store.get_rollout(id).await?,
            waves: store.waves(id).await?,
            tenants: store.tenant_runs(id).await?,
        })
    }

    /// The name of wave `i`; tenants that discovery refused are in no wave.
    pub fn wave_name(&self, i: i64) -> &str {
        if i == REFUSED_WAVE {
            return "discovery";
        }
        self.waves
            .iter()
            .find(|w| w.wave == i)
            .map(|w| w.name.as_str())
            .unwrap_or("")
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            tenants: self.tenants.len(),
            ..Default::default()
        };
        for r in &self.tenants {
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
        }
        t
    }

    /// Whether every tenant ended at the target (exit code 0).
    pub fn all_ok(&self) -> bool {
        self.tenants
            .iter()
            .all(|t| t.status == RunStatus::Succeeded)
    }

    pub fn duration_stats(&self) -> DurationStats {
        let d = durations(&self.tenants.iter().collect::<Vec<_>>());
        DurationStats {
            p50_ms: quantile(&d, 0.5).as_millis() as u64,
            p95_ms: quantile(&d, 0.95).as_millis() as u64,
            max_ms: d.last().copied().unwrap_or_default().as_millis() as u64,
        }
    }

    /// Failed tenants clustered by class, kind and normalised message,
    /// largest cluster first. Gate failures cluster under kind `gate_sql`.
    pub fn failure_clusters(&self) -> Vec<FailureCluster> {
        let mut groups: BTreeMap<(String, String, String), FailureCluster> = BTreeMap::new();
        for t in &self.tenants {
            let (class, kind, message) = if t.status == RunStatus::Failed {
                (
                    t.error.class.clone().unwrap_or_default(),
                    t.error.kind.clone().unwrap_or_default(),
                    t.error.message.clone().unwrap_or_default(),
                )
            } else if let Some(g) = &t.gate_error {
                ("gate".to_string(), "gate_sql".to_string(), g.clone())
            } else {
                continue;
            };
            let norm = normalise_message(&message);
            let c = groups
                .entry((class.clone(), kind.clone(), norm.clone()))
                .or_insert_with(|| FailureCluster {
                    class,
                    kind,
                    message: norm,
                    count: 0,
                    example_tenants: Vec::new(),
                    example_message: message.clone(),
                });
            c.count += 1;
            if c.example_tenants.len() < 5 {
                c.example_tenants.push(t.tenant.clone());
            }
        }
        let mut v: Vec<_> = groups.into_values().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.kind.cmp(&b.kind)));
        v
    }

    pub fn wave_summaries(&self) -> Vec<WaveSummary> {
        self.waves
            .iter()
            .map(|w| {
                let rows: Vec<&TenantRun> =
                    self.tenants.iter().filter(|t| t.wave == w.wave).collect();
                let d = durations(&rows);
                WaveSummary {
                    wave: w.wave,
                    name: w.name.clone(),
                    selector: w.selector.clone(),
                    status: w.status,
                    tenants: rows.len(),
                    succeeded: rows
                        .iter()
                        .filter(|t| t.status == RunStatus::Succeeded)
                        .count(),
                    failed: rows
                        .iter()
                        .filter(|t| t.status == RunStatus::Failed)
                        .count(),
                    p50_ms: quantile(&d, 0.5).as_millis() as u64,
                    p95_ms: quantile(&d, 0.95).as_millis() as u64,
                    gate: w.gate.clone(),
                }
            })
            .collect()
    }

    pub fn summary(&self) -> Summary<'_> {
        let r = &self.rollout;
        let end = r
            .finished_at
            .or_else(|| self.tenants.iter().filter_map(|t| t.finished_at).max())
            .unwrap_or(r.created_at);
        Summary {
            format_version: FORMAT_VERSION,
            rollout_id: &r.id,
            command: &r.command,
            operator: &r.operator,
            fleet: &r.fleet,
            migrations_dir: &r.migrations_dir,
            migration_set_checksum: &r.set_checksum,
            target_version: r.target,
            status: r.status,
            reason: r.reason.as_deref(),
            created_at: ms_time(r.created_at),
            finished_at: r.finished_at.map(ms_time),
            duration_ms: (end - r.created_at).max(0) as u64,
            concurrency: r.settings.exec.concurrency,
            tx_mode: r.settings.exec.tx_mode,
            held_contract: r.settings.policy.held.as_deref(),
            totals: self.totals(),
            tenant_duration: self.duration_stats(),
            waves: self.wave_summaries(),
            failures: self.failure_clusters(),
            peak_rss_kb: peak_rss_kb(),
        }
    }

    /// Writes every report file into `reports/<rollout-id>/`, each through a
    /// temporary file and a rename, so a reader never sees half a report.
    pub fn write(&self, reports: &Path) -> Result<PathBuf, Error> {
        let dir = reports.join(&self.rollout.id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let summary = self.summary();
        write_atomic(&dir.join("tenants.csv"), &self.tenants_csv())?;
        write_atomic(&dir.join("waves.csv"), &self.waves_csv(&summary))?;
        let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
        write_atomic(&dir.join("summary.json"), &(json + "\n"))?;
        write_atomic(&dir.join("summary.md"), &self.markdown(&summary))?;
        write_atomic(&dir.join("report.html"), &html::render(self, &summary))?;
        Ok(dir)
    }
}

/// Checks, before any work, that reports can be written under `reports`:
/// the folder is created if missing and a probe file is written and removed.
/// A rollout that would migrate the fleet and then fail to say so is refused
/// up front (exit 3, naming the folder).
pub fn check_folder(reports: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(reports).map_err(|e| Error::io(reports, e))?;
    let probe = reports.join(format!(".fleetmig-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| Error::io(reports, e))?;
    std::fs::remove_file(&probe).map_err(|e| Error::io(reports, e))
}

/// Writes `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), Error> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
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

    #[test]
    fn messages_normalise_to_one_shape() {
        let a = normalise_message("relation \"invoices\" already exists (code 42P07) at line 12");
        let b = normalise_message("relation \"accounts\" already exists (code 42P07) at line 3");
        assert_eq!(a, b);
        assert_eq!(a, "relation \"…\" already exists (code NPN) at line N");
        assert_ne!(a, normalise_message("syntax error at or near \"x\""));
    }
}
