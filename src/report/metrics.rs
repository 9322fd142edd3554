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
        let _ = writeln!(
            m,
            "# HELP fleetmig_tenants Tenants of the last fleetmig run by status."
        );
        let _ = writeln!(m, "# TYPE fleetmig_tenants gauge");
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
        let _ = writeln!(
            m,
            "# HELP fleetmig_migrations_applied Migrations applied by the last run."
        );
        let _ = writeln!(m, "# TYPE fleetmig_migrations_applied gauge");
        let _ = writeln!(m, "fleetmig_migrations_applied {}", t.migrations_applied);
        let _ = writeln!(
            m,
            "# HELP fleetmig_run_duration_seconds Wall time of the last run."
        );
        let _ = writeln!(m, "# TYPE fleetmig_run_duration_seconds gauge");
        let _ = writeln!(
            m,
            "fleetmig_run_duration_seconds {:.3}",
            s.duration_ms as f64 / 1000.0
        );
        let _ = writeln!(
            m,
            "# HELP fleetmig_tenant_duration_seconds Tenant duration quantiles of the last run."
        );
        let _ = writeln!(m, "# TYPE fleetmig_tenant_duration_seconds gauge");
        for (q, v) in [
            ("0.5", s.tenant_duration.p50_ms),
            ("0.95", s.tenant_duration.p95_ms),
            ("1", s.tenant_duration.max_ms),
        ] {
            let _ = writeln!(
                m,
                "fleetmig_tenant_duration_seconds{{quantile=\"{q}\"}} {:.3}",
                v as f64 / 1000.0
            );
        }
        let _ = writeln!(
            m,
            "# HELP fleetmig_failures Failed tenants of the last run by error class and kind."
        );
        let _ = writeln!(m, "# TYPE fleetmig_failures gauge");
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
        let _ = writeln!(
            m,
            "# HELP fleetmig_last_run_timestamp_seconds When the last run finished."
        );
        let _ = writeln!(m, "# TYPE fleetmig_last_run_timestamp_seconds gauge");
        let _ = writeln!(
            m,
            "fleetmig_last_run_timestamp_seconds {:.3}",
            self.rollout
                .finished_at
                .unwrap_or_else(crate::state::now_ms) as f64
                / 1000.0
        );
        let _ = writeln!(
            m,
            "# HELP fleetmig_last_run_success 1 when every tenant reached the target."
        );
        let _ = writeln!(m, "# TYPE fleetmig_last_run_success gauge");
        let _ = writeln!(m, "fleetmig_last_run_success {}", self.all_ok() as u8);
        m
    }
}
