//! What the commands print on stdout: tables for people, JSON for scripts.
//! Locators are always printed redacted.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::migration::MigrationSet;
use crate::report::RunReport;
use crate::rollout::{Inspection, TenantState};

pub fn print_sync(r: &RunReport) {
    let t = r.totals();
    println!(
        "fleetmig sync {}: {} tenants: {} succeeded, {} up to date, {} failed, {} interrupted, {} not started; {} migrations applied, {} retries",
        r.run_id,
        t.tenants,
        t.succeeded,
        t.up_to_date,
        t.failed,
        t.interrupted,
        t.not_started,
        t.migrations_applied,
        t.retries
    );
    for g in r.failure_groups() {
        println!(
            "  {} {} on {} tenant(s), e.g. {}: {}",
            g.class,
            g.kind,
            g.count,
            g.example_tenants.join(", "),
            g.example_message
        );
    }
    if r.interrupted {
        println!("  interrupted: run the same command again to finish");
    }
    if r.max_failures_reached {
        println!("  stopped early: --max-failures was reached");
    }
}

pub fn print_status(set: &MigrationSet, rows: &[Inspection]) {
    let w = rows
        .iter()
        .map(|r| r.tenant.as_str().len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<w$}  {:<8}  {:>8}  {:>7}  {:<10}  note",
        "tenant", "dialect", "version", "pending", "state"
    );
    for r in rows {
        println!(
            "{:<w$}  {:<8}  {:>8}  {:>7}  {:<10}  {}",
            r.tenant.as_str(),
            r.dialect.as_str(),
            r.version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into()),
            r.pending.len(),
            r.state.as_str(),
            r.error.as_ref().map(|e| e.to_string()).unwrap_or_default()
        );
    }
    println!("\nversions across the fleet (head {}):", set.head());
    let mut hist: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows {
        let key = match r.version {
            Some(v) => format!("{v:>8}"),
            None => format!("{:>8}", "unknown"),
        };
        *hist.entry(key).or_default() += 1;
    }
    let max = hist.values().copied().max().unwrap_or(1).max(1);
    for (v, n) in &hist {
        let bar = "#".repeat((n * 40).div_ceil(max));
        println!("  {v}  {n:>6}  {bar}");
    }
    let mut states: BTreeMap<TenantState, usize> = BTreeMap::new();
    for r in rows {
        *states.entry(r.state).or_default() += 1;
    }
    let parts: Vec<String> = states
        .iter()
        .map(|(s, n)| format!("{n} {}", s.as_str()))
        .collect();
    println!("\n{} tenants: {}", rows.len(), parts.join(", "));
}

pub fn print_plan(set: &MigrationSet, rows: &[Inspection]) {
    let mut pending_total = 0;
    for r in rows {
        match r.state {
            TenantState::Pending => {
                pending_total += r.pending.len();
                let labels: Vec<String> = r
                    .pending
                    .iter()
                    .filter_map(|v| set.get(*v))
                    .map(|m| m.label())
                    .collect();
                println!(
                    "{}: {} -> {}: apply {}",
                    r.tenant,
                    r.version.unwrap_or(0),
                    r.pending.last().copied().unwrap_or(0),
                    labels.join(", ")
                );
            }
            TenantState::UpToDate => {
                println!("{}: at {}, nothing to do", r.tenant, r.version.unwrap_or(0))
            }
            _ => println!(
                "{}: cannot be planned ({}): {}",
                r.tenant,
                r.state.as_str(),
                r.error.as_ref().map(|e| e.to_string()).unwrap_or_default()
            ),
        }
    }
    println!(
        "\nplan: {} tenants, {} migrations to apply, {} tenants cannot be planned; nothing was written",
        rows.len(),
        pending_total,
        rows.iter()
            .filter(|r| !matches!(r.state, TenantState::Pending | TenantState::UpToDate))
            .count()
    );
}

#[derive(Serialize)]
struct JsonOut<'a> {
    format_version: u32,
    kind: &'a str,
    head_version: i64,
    migration_set_checksum: &'a str,
    tenants: &'a [Inspection],
}

pub fn print_json(set: &MigrationSet, rows: &[Inspection], is_plan: bool) {
    let out = JsonOut {
        format_version: crate::report::FORMAT_VERSION,
        kind: if is_plan { "plan" } else { "status" },
        head_version: set.head(),
        migration_set_checksum: &set.checksum,
        tenants: rows,
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&out).expect("serialisable")
    );
}
