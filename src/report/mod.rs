//! Reports: everything a rollout leaves for people and machines, written under
//! `reports/<rollout-id>/` (ids sort by time) from what the state store holds,
//! so `fleetmig report ID` can write them again at any time:
//! `tenants.csv` (one row a tenant), `waves.csv` (one row a wave),
//! `summary.json` (with `format_version`), `summary.md`, and `report.html` (one
//! self-contained page: timeline, duration histogram, failure clusters).
//! `metrics` writes the Prometheus text file for the nightly job.

mod files;
pub mod gather;
pub mod html;
pub(crate) mod metrics;
pub mod moves;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::options::TxMode;
use crate::state::{
    REFUSED_WAVE, RolloutRecord, RolloutStatus, StateStore, WaveRecord, WaveStatus,
};
use gather::{Gather, Gathered, quantile_ms};

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

/// What the state store knows about one rollout: its record, its waves, and
/// the aggregates of its tenants (one streamed pass; see `gather`).
#[derive(Debug, Clone)]
pub struct RunReport {
    pub rollout: RolloutRecord,
    pub waves: Vec<WaveRecord>,
    pub gathered: Gathered,
}

#[derive(Debug, Serialize, Default, Clone, PartialEq, Eq)]
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

impl RunReport {
    /// The report of rollout `id`, gathered from the store in one pass
    /// (`csv`: also written row by row into that file as the pass goes).
    async fn gather(
        store: &StateStore,
        id: &str,
        mut csv: Option<&mut files::TenantsCsv>,
    ) -> Result<RunReport, Error> {
        let rollout = store.get_rollout(id).await?;
        rollout.unpruned()?;
        let waves = store.waves(id).await?;
        let (started, t0, t1) = store.run_bounds(id).await?;
        let mut g = Gather::new(started, t0, t1);
        store
            .each_run(id, |run| {
                g.add(&run);
                if let Some(csv) = csv.as_deref_mut() {
                    csv.row(&run, wave_name(&waves, run.wave))?;
                }
                Ok(())
            })
            .await?;
        Ok(RunReport {
            rollout,
            waves,
            gathered: g.finish(),
        })
    }

    /// Everything the store holds about rollout `id`, without writing files.
    pub async fn load(store: &StateStore, id: &str) -> Result<RunReport, Error> {
        Self::gather(store, id, None).await
    }

    /// Writes every report file of rollout `id` into `reports/<id>/`, each
    /// through a temporary file and a rename, so a reader never sees half a
    /// report; `tenants.csv` is streamed from the store as it is read.
    pub async fn write(
        store: &StateStore,
        id: &str,
        reports: &Path,
    ) -> Result<(RunReport, PathBuf), Error> {
        store.get_rollout(id).await?.unpruned()?;
        let dir = reports.join(id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut csv = files::TenantsCsv::create(&dir.join("tenants.csv"))?;
        let report = Self::gather(store, id, Some(&mut csv)).await?;
        csv.finish()?;
        let summary = report.summary();
        write_atomic(&dir.join("waves.csv"), &report.waves_csv(&summary))?;
        let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
        write_atomic(&dir.join("summary.json"), &(json + "\n"))?;
        let mut md = report.markdown(&summary);
        if report.rollout.settings.moving.is_some() {
            let (verified, rows) = moves::rollout_moves(&dir)?;
            md += &format!(
                "\n## Moves\n\n{verified} tenant(s) moved and verified (row counts and checksums \
                 of every table), {rows} rows; one row per tenant in `moves.csv`, each move's own \
                 report in `moves/<move id>/`.\n"
            );
        }
        write_atomic(&dir.join("summary.md"), &md)?;
        write_atomic(&dir.join("report.html"), &html::render(&report, &summary))?;
        Ok((report, dir))
    }

    /// The name of wave `i`; tenants that discovery refused are in no wave.
    pub fn wave_name(&self, i: i64) -> &str {
        wave_name(&self.waves, i)
    }

    pub fn totals(&self) -> Totals {
        self.gathered.totals.clone()
    }

    /// Whether every tenant ended at the target (exit code 0).
    pub fn all_ok(&self) -> bool {
        self.gathered.totals.succeeded == self.gathered.totals.tenants
    }

    /// Whether no tenant's gate query failed.
    pub fn gates_clean(&self) -> bool {
        self.gathered.gate_errors == 0
    }

    pub fn duration_stats(&self) -> DurationStats {
        let d = &self.gathered.durations;
        DurationStats {
            p50_ms: quantile_ms(d, 0.5),
            p95_ms: quantile_ms(d, 0.95),
            max_ms: d.last().copied().unwrap_or(0) as u64,
        }
    }

    /// Failed tenants clustered by class, kind and normalised message,
    /// largest cluster first. Gate failures cluster under kind `gate_sql`.
    pub fn failure_clusters(&self) -> Vec<FailureCluster> {
        self.gathered.clusters.clone()
    }

    pub fn wave_summaries(&self) -> Vec<WaveSummary> {
        self.waves
            .iter()
            .map(|w| {
                let c = self
                    .gathered
                    .waves
                    .get(&w.wave)
                    .cloned()
                    .unwrap_or_default();
                WaveSummary {
                    wave: w.wave,
                    name: w.name.clone(),
                    selector: w.selector.clone(),
                    status: w.status,
                    tenants: c.tenants,
                    succeeded: c.succeeded,
                    failed: c.failed,
                    p50_ms: quantile_ms(&c.durations, 0.5),
                    p95_ms: quantile_ms(&c.durations, 0.95),
                    gate: w.gate.clone(),
                }
            })
            .collect()
    }

    pub fn summary(&self) -> Summary<'_> {
        let r = &self.rollout;
        let end = r
            .finished_at
            .or(self.gathered.last_finished)
            .unwrap_or(r.created_at);
        Summary {
            format_version: FORMAT_VERSION,
            rollout_id: &r.id,
            command: &r.command,
            operator: &r.operator,
            fleet: &r.fleet,
            migrations_dir: &r.migrations_dir,
            migration_set_checksum: &r.set_checksum,
            // the version tenants were taken to (a held contract step stops
            // them before it)
            target_version: r.settings.policy.reached.unwrap_or(r.target),
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
}

/// The name of wave `i` among `waves`; tenants that discovery refused are in
/// no wave.
fn wave_name(waves: &[WaveRecord], i: i64) -> &str {
    if i == REFUSED_WAVE {
        return "discovery";
    }
    waves
        .iter()
        .find(|w| w.wave == i)
        .map(|w| w.name.as_str())
        .unwrap_or("")
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

/// A temporary file beside `path`, its own to this process and call: the
/// workers of one rollout may write its report into one folder at once.
pub(crate) fn tmp_beside(path: &Path) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    path.with_extension(format!(
        "{}.{}-{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ))
}

/// Writes `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), Error> {
    let tmp = tmp_beside(path);
    let mut guard = TmpGuard(Some(tmp.clone()));
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    guard.0 = None;
    Ok(())
}

/// A temporary file that a failed write (a full disk) would leave behind:
/// removed when dropped, unless it was renamed into place (`None`).
pub(crate) struct TmpGuard(pub(crate) Option<std::path::PathBuf>);

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let d: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile_ms(&d, 0.5), 50);
        assert_eq!(quantile_ms(&d, 0.95), 95);
        assert_eq!(quantile_ms(&d[..1], 0.95), 1);
        assert_eq!(quantile_ms(&[], 0.5), 0);
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // the rename fails: a folder stands where the file would go
        let target = dir.path().join("summary.md");
        std::fs::create_dir(&target).unwrap();
        assert!(write_atomic(&target, "text").is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("summary.md")],
            "{left:?}"
        );
    }

    #[test]
    fn run_ids_sort_by_time() {
        let a = new_run_id();
        std::thread::sleep(std::time::Duration::from_millis(5));
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
