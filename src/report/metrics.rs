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
        let mut m = String::new();
        gauge(
            &mut m,
            "fleetmig_tenants",
            "Tenants of the last fleetmig run by status.",
        );
        for (k, v) in [
            ("succeeded", t.succeeded),
            ("failed", t.failed),
            ("pending", t.pending + t.running),
            ("not_started", t.not_started),
            ("skipped", t.skipped),
            ("reverted", t.reverted),
        ] {
            let _ = writeln!(m, "fleetmig_tenants{{status=\"{k}\"}} {v}");
        }
        gauge(
            &mut m,
            "fleetmig_migrations_applied",
            "Migrations applied by the last run.",
        );
        let _ = writeln!(m, "fleetmig_migrations_applied {}", t.migrations_applied);
        gauge(
            &mut m,
            "fleetmig_run_duration_seconds",
            "Wall time of the last run.",
        );
        let seconds = |ms: u64| ms as f64 / 1000.0;
        let _ = writeln!(
            m,
            "fleetmig_run_duration_seconds {:.3}",
            seconds(s.duration_ms)
        );
        gauge(
            &mut m,
            "fleetmig_tenant_duration_seconds",
            "Tenant duration quantiles of the last run.",
        );
        for (q, v) in [
            ("0.5", s.tenant_duration.p50_ms),
            ("0.95", s.tenant_duration.p95_ms),
            ("1", s.tenant_duration.max_ms),
        ] {
            let _ = writeln!(
                m,
                "fleetmig_tenant_duration_seconds{{quantile=\"{q}\"}} {:.3}",
                seconds(v)
            );
        }
        gauge(
            &mut m,
            "fleetmig_failures",
            "Failed tenants of the last run by error class and kind.",
        );
        let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
        for c in &s.failures {
            *by.entry((c.class.clone(), c.kind.clone())).or_default() += c.count;
        }
        for ((class, kind), n) in by {
            let _ = writeln!(
                m,
                "fleetmig_failures{{class=\"{class}\",kind=\"{kind}\"}} {n}"
            );
        }
        gauge(
            &mut m,
            "fleetmig_last_run_timestamp_seconds",
            "When the last run finished.",
        );
        let finished = self
            .rollout
            .finished_at
            .unwrap_or_else(crate::state::now_ms);
        let _ = writeln!(
            m,
            "fleetmig_last_run_timestamp_seconds {:.3}",
            finished as f64 / 1000.0
        );
        gauge(
            &mut m,
            "fleetmig_last_run_success",
            "1 when every tenant reached the target.",
        );
        let _ = writeln!(m, "fleetmig_last_run_success {}", self.all_ok() as u8);
        m
    }
}

/// The HELP and TYPE lines of gauge `name`.
fn gauge(m: &mut String, name: &str, help: &str) {
    let _ = writeln!(m, "# HELP {name} {help}");
    let _ = writeln!(m, "# TYPE {name} gauge");
}
