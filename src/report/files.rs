//! The tabular and prose files of a report: `tenants.csv` (one row a
//! tenant), `waves.csv` (one row a wave) and `summary.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{RunReport, Summary, ms_time};
use crate::error::Error;
use crate::state::TenantRun;

/// `tenants.csv`, written a row at a time as the store is read, through a
/// temporary file renamed into place when complete.
pub(super) struct TenantsCsv {
    tmp: PathBuf,
    path: PathBuf,
    w: csv::Writer<std::io::BufWriter<std::fs::File>>,
    /// Removes the temporary file unless it became the report.
    _left: super::TmpGuard,
}

impl TenantsCsv {
    pub(super) fn create(path: &Path) -> Result<TenantsCsv, Error> {
        let tmp = super::tmp_beside(path);
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let left = super::TmpGuard(Some(tmp.clone()));
        let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
        w.write_record([
            "tenant",
            "wave",
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
            "gate_error",
            "preflight",
        ])
        .map_err(|e| Error::io(&tmp, e.into()))?;
        Ok(TenantsCsv {
            _left: left,
            tmp,
            path: path.to_path_buf(),
            w,
        })
    }

    pub(super) fn row(&mut self, t: &TenantRun, wave: &str) -> Result<(), Error> {
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        self.w
            .write_record([
                t.tenant.clone(),
                wave.to_string(),
                t.status.to_string(),
                t.attempts.to_string(),
                opt(t.from_version),
                opt(t.to_version),
                t.applied
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(";"),
                t.duration_ms.to_string(),
                t.started_at.map(ms_time).unwrap_or_default(),
                t.finished_at.map(ms_time).unwrap_or_default(),
                t.error.class.map(|c| c.to_string()).unwrap_or_default(),
                t.error.kind.map(|k| k.to_string()).unwrap_or_default(),
                t.error.code.clone().unwrap_or_default(),
                opt(t.error.version),
                t.error.message.clone().unwrap_or_default(),
                t.gate_error.clone().unwrap_or_default(),
                t.preflight.clone().unwrap_or_default(),
            ])
            .map_err(|e| Error::io(&self.tmp, e.into()))
    }

    pub(super) fn finish(self) -> Result<(), Error> {
        let TenantsCsv {
            tmp,
            path,
            w,
            mut _left,
        } = self;
        let file = w
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        file.into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?
            .sync_all()
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        _left.0 = None;
        Ok(())
    }
}

impl RunReport {
    pub(super) fn waves_csv(&self, s: &Summary<'_>) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record([
            "wave",
            "name",
            "selector",
            "status",
            "tenants",
            "succeeded",
            "failed",
            "p50_ms",
            "p95_ms",
            "gate",
        ]);
        for x in &s.waves {
            let _ = w.write_record([
                x.wave.to_string(),
                x.name.clone(),
                x.selector.clone(),
                x.status.to_string(),
                x.tenants.to_string(),
                x.succeeded.to_string(),
                x.failed.to_string(),
                x.p50_ms.to_string(),
                x.p95_ms.to_string(),
                x.gate.clone().unwrap_or_default(),
            ]);
        }
        String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
    }

    pub(super) fn markdown(&self, s: &Summary<'_>) -> String {
        let t = &s.totals;
        let mut md = String::new();
        let verdict = if self.all_ok() {
            "every tenant is at its target".to_string()
        } else {
            format!(
                "{} — NOT EVERY TENANT IS AT ITS TARGET",
                s.status.as_str().to_uppercase()
            )
        };
        let _ = writeln!(md, "# fleetmig {} {}: {verdict}\n", s.command, s.rollout_id);
        let _ = writeln!(md, "- fleet: `{}`", s.fleet);
        let _ = writeln!(
            md,
            "- migrations: `{}` (set {}), target version {}",
            s.migrations_dir, s.migration_set_checksum, s.target_version
        );
        let _ = writeln!(
            md,
            "- started {} by {}, took {:.1} s, concurrency {}, tx mode {}",
            s.created_at,
            s.operator,
            s.duration_ms as f64 / 1000.0,
            s.concurrency,
            s.tx_mode
        );
        let _ = writeln!(
            md,
            "- status: **{}**{}",
            s.status,
            s.reason.map(|r| format!(" — {r}")).unwrap_or_default()
        );
        if let Some(h) = s.held_contract {
            let _ = writeln!(md, "- held: {h}");
        }
        let _ = writeln!(
            md,
            "\n| tenants | succeeded | up to date | failed | pending | not started | skipped | reverted | migrations applied | retries |"
        );
        let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            t.tenants,
            t.succeeded,
            t.up_to_date,
            t.failed,
            t.pending + t.running,
            t.not_started,
            t.skipped,
            t.reverted,
            t.migrations_applied,
            t.retries
        );
        let d = &s.tenant_duration;
        let _ = writeln!(
            md,
            "\nTenant duration: p50 {} ms, p95 {} ms, max {} ms.",
            d.p50_ms, d.p95_ms, d.max_ms
        );
        waves_md(s, &mut md);
        failures_md(s, &mut md);
        md
    }
}

/// The waves of summary `s` as a Markdown table (when there are waves to
/// tell apart or gates to show).
fn waves_md(s: &Summary<'_>, md: &mut String) {
    if s.waves.len() > 1 || s.waves.iter().any(|w| w.gate.is_some()) {
        let _ = writeln!(
            md,
            "\n## Waves\n\n| wave | selector | status | tenants | succeeded | failed | p50 ms | p95 ms | gate |"
        );
        let _ = writeln!(md, "|---|---|---|---:|---:|---:|---:|---:|---|");
        for w in &s.waves {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                w.name,
                w.selector,
                w.status,
                w.tenants,
                w.succeeded,
                w.failed,
                w.p50_ms,
                w.p95_ms,
                w.gate.clone().unwrap_or_default().replace('|', "\\|")
            );
        }
    }
}

/// The failure clusters of summary `s` as a Markdown table.
fn failures_md(s: &Summary<'_>, md: &mut String) {
    if !s.failures.is_empty() {
        let _ = writeln!(
            md,
            "\n## Failures\n\n| tenants | class | kind | message | examples |"
        );
        let _ = writeln!(md, "|---:|---|---|---|---|");
        for c in &s.failures {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                c.count,
                c.class,
                c.kind,
                c.message.replace('|', "\\|"),
                c.example_tenants.join(", ")
            );
        }
        let _ = writeln!(
            md,
            "\nEvery failed tenant, with its full error, is a row of `tenants.csv`."
        );
    }
}
