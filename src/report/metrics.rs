//! The Prometheus text exposition of a rollout, for a node-exporter textfile
//! collector: what the nightly job's alerting reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::RunReport;

impl RunReport {
    /// The Prometheus text exposition of this rollout, for a node-exporter
    /// textfile collector.
    pub fn metrics(&self) -> String {
        let s = self.summary();
        let t = &s.totals;
        let seconds = |ms: u64| format!("{:.3}", ms as f64 / 1000.0);
        let mut m = String::new();
        gauge(
            &mut m,
            "fleetmig_tenants",
            "Tenants of the last fleetmig run by status.",
            [
                ("succeeded", t.succeeded),
                ("failed", t.failed),
                ("pending", t.pending + t.running),
                ("not_started", t.not_started),
                ("skipped", t.skipped),
                ("reverted", t.reverted),
            ]
            .map(|(k, v)| (format!("{{status=\"{k}\"}}"), v.to_string())),
        );
        gauge(
            &mut m,
            "fleetmig_migrations_applied",
            "Migrations applied by the last run.",
            [(String::new(), t.migrations_applied.to_string())],
        );
        gauge(
            &mut m,
            "fleetmig_run_duration_seconds",
            "Wall time of the last run.",
            [(String::new(), seconds(s.duration_ms))],
        );
        gauge(
            &mut m,
            "fleetmig_tenant_duration_seconds",
            "Tenant duration quantiles of the last run.",
            [
                ("0.5", s.tenant_duration.p50_ms),
                ("0.95", s.tenant_duration.p95_ms),
                ("1", s.tenant_duration.max_ms),
            ]
            .map(|(q, v)| (format!("{{quantile=\"{q}\"}}"), seconds(v))),
        );
        let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
        for c in &s.failures {
            *by.entry((c.class.clone(), c.kind.clone())).or_default() += c.count;
        }
        gauge(
            &mut m,
            "fleetmig_failures",
            "Failed tenants of the last run by error class and kind.",
            by.into_iter().map(|((class, kind), n)| {
                (
                    format!("{{class=\"{class}\",kind=\"{kind}\"}}"),
                    n.to_string(),
                )
            }),
        );
        let finished = self
            .rollout
            .finished_at
            .unwrap_or_else(crate::state::now_ms);
        gauge(
            &mut m,
            "fleetmig_last_run_timestamp_seconds",
            "When the last run finished.",
            [(String::new(), seconds(finished as u64))],
        );
        gauge(
            &mut m,
            "fleetmig_last_run_success",
            "1 when every tenant reached the target.",
            [(String::new(), (self.all_ok() as u8).to_string())],
        );
        m
    }
}

/// Gauge `name`: its HELP and TYPE lines, then one line per sample (its
/// labels, braces included, or none; its value).
pub(crate) fn gauge(
    m: &mut String,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, String)>,
) {
    let _ = writeln!(m, "# HELP {name} {help}");
    let _ = writeln!(m, "# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(m, "{name}{labels} {value}");
    }
}
