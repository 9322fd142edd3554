//! What the commands print on stdout: tables for people, JSON for scripts.
//! Locators are always printed redacted.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::discover::Refused;
use crate::inspect::drift::{DriftState, Verdict};
use crate::inspect::{Inspection, TenantState};
use crate::migration::MigrationSet;
use crate::report::RunReport;
use crate::rollout::waves::PlannedWave;
use crate::state::{RolloutStatus, WorkerRecord};

pub fn print_run(r: &RunReport) {
    let t = r.totals();
    outln!(
        "fleetmig {} {}: {}{}: {} tenants: {} succeeded ({} up to date), {} failed, {} pending, {} not started, {} skipped, {} reverted; {} migrations applied, {} retries",
        r.rollout.command,
        r.rollout.id,
        r.rollout.status,
        r.rollout
            .reason
            .as_ref()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default(),
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
    for c in r.failure_clusters() {
        outln!(
            "  {} {} on {} tenant(s), e.g. {}: {}",
            c.class,
            c.kind,
            c.count,
            c.example_tenants.join(", "),
            c.example_message
        );
    }
    match r.rollout.status {
        RolloutStatus::Paused | RolloutStatus::Halted => {
            outln!("  `fleetmig resume {}` to continue", r.rollout.id)
        }
        _ if t.failed > 0 => outln!(
            "  `fleetmig retry --failed --rollout {}` once the cause is fixed",
            r.rollout.id
        ),
        _ => {}
    }
}

/// `status --rollout`, before its tenants: the summary (JSON: the opening
/// of the object whose `tenants` follow, one by one).
pub fn print_rollout_head(r: &RunReport, workers: &[WorkerRecord], json: bool) {
    if json {
        let s = serde_json::to_string_pretty(&r.summary()).expect("serialisable");
        let w = serde_json::to_string_pretty(workers).expect("serialisable");
        outln!("{{\n\"summary\": {s},\n\"workers\": {w},\n\"tenants\": [");
        return;
    }
    print_run(r);
    if !workers.is_empty() {
        let now = crate::state::now_ms();
        outln!(
            "\n{:<36} {:<16} {:>14} {:>8} {:>6}  state",
            "worker",
            "host",
            "last heartbeat",
            "claimed",
            "done"
        );
        for w in workers {
            outln!(
                "{:<36} {:<16} {:>12.1}s {:>8} {:>6}  {}",
                w.worker,
                w.host,
                (now - w.heartbeat_at) as f64 / 1000.0,
                w.claimed,
                w.done,
                if w.stopped_at.is_some() {
                    "stopped"
                } else {
                    "working"
                }
            );
        }
    }
    outln!(
        "\n{:<12} {:<14} {:<10} {:>7} {:>9} {:>6}  gate",
        "wave",
        "selector",
        "status",
        "tenants",
        "succeeded",
        "failed"
    );
    for w in r.wave_summaries() {
        outln!(
            "{:<12} {:<14} {:<10} {:>7} {:>9} {:>6}  {}",
            w.name,
            w.selector,
            w.status,
            w.tenants,
            w.succeeded,
            w.failed,
            w.gate.unwrap_or_default()
        );
    }
    outln!(
        "\n{:<24}  {:<12} {:<11} {:>8} {:>5} {:>5}  error",
        "tenant",
        "wave",
        "status",
        "attempts",
        "from",
        "to"
    );
}

/// One tenant of `status --rollout` (the `n`th, from 0), as it streams
/// from the store.
pub fn print_rollout_tenant(r: &RunReport, t: &crate::state::TenantRun, n: usize, json: bool) {
    if json {
        let row = serde_json::to_string(t).expect("serialisable");
        outln!("{}{row}", if n == 0 { "" } else { "," });
        return;
    }
    outln!(
        "{:<24}  {:<12} {:<11} {:>8} {:>5} {:>5}  {}",
        t.tenant,
        r.wave_name(t.wave),
        t.status,
        t.attempts,
        t.from_version.map(|v| v.to_string()).unwrap_or_default(),
        t.to_version.map(|v| v.to_string()).unwrap_or_default(),
        t.gate_error
            .clone()
            .or(t.error.message.clone())
            .unwrap_or_default()
    );
}

/// The end of `status --rollout`.
pub fn print_rollout_tail(json: bool) {
    if json {
        outln!("]\n}}");
    }
}

pub fn print_history(rows: &[(crate::state::RolloutRecord, (usize, usize, usize))], json: bool) {
    if json {
        #[derive(Serialize)]
        struct Row<'a> {
            rollout: &'a crate::state::RolloutRecord,
            tenants: usize,
            succeeded: usize,
            failed: usize,
        }
        let out: Vec<Row> = rows
            .iter()
            .map(|(r, t)| Row {
                rollout: r,
                tenants: t.0,
                succeeded: t.1,
                failed: t.2,
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serialisable")
        );
        return;
    }
    outln!(
        "{:<30} {:<8} {:<25} {:<10} {:<10} {:>6} {:>7} {:>9} {:>6}",
        "rollout",
        "command",
        "created",
        "operator",
        "status",
        "target",
        "tenants",
        "succeeded",
        "failed"
    );
    for (r, t) in rows {
        outln!(
            "{:<30} {:<8} {:<25} {:<10} {:<10} {:>6} {:>7} {:>9} {:>6}",
            r.id,
            r.command,
            chrono::DateTime::from_timestamp_millis(r.created_at)
                .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default(),
            r.operator,
            r.status,
            r.settings.policy.reached.unwrap_or(r.target),
            t.0,
            t.1,
            t.2
        );
    }
}

/// How many pending tenants `status` lists without `--all` (every tenant in
/// a state a person must look at is always listed).
const PENDING_LISTED: usize = 20;

/// `status`: the tenants not at their target (every one with `all`; else
/// every dirty, drifted, missing or unreadable one and the first pending
/// ones), the version histogram and the count by state.
pub fn print_status(set: &MigrationSet, rows: &[Inspection], all: bool) {
    let mut pending = 0;
    let shown: Vec<&Inspection> = rows
        .iter()
        .filter(|r| match r.state {
            TenantState::UpToDate => all,
            TenantState::Pending => {
                pending += 1;
                all || pending <= PENDING_LISTED
            }
            _ => true,
        })
        .collect();
    if shown.is_empty() {
        outln!("every tenant is at its target (--all lists them)");
    } else {
        print_tenant_rows(&shown);
    }
    if !all && pending > PENDING_LISTED {
        outln!(
            "... and {} more pending (--all lists every tenant)",
            pending - PENDING_LISTED
        );
    }
    print_versions(set, rows);
}

fn print_tenant_rows(rows: &[&Inspection]) {
    let w = rows
        .iter()
        .map(|r| r.tenant.as_str().len())
        .max()
        .unwrap_or(6)
        .max(6);
    outln!(
        "{:<w$}  {:<8}  {:>8}  {:>7}  {:<10}  note",
        "tenant",
        "dialect",
        "version",
        "pending",
        "state"
    );
    for r in rows {
        outln!(
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
}

fn print_versions(set: &MigrationSet, rows: &[Inspection]) {
    outln!("\nversions across the fleet (head {}):", set.head());
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
        outln!("  {v}  {n:>6}  {bar}");
    }
    let mut states: BTreeMap<TenantState, usize> = BTreeMap::new();
    for r in rows {
        *states.entry(r.state).or_default() += 1;
    }
    let parts: Vec<String> = states
        .iter()
        .map(|(s, n)| format!("{n} {}", s.as_str()))
        .collect();
    outln!("\n{} tenants: {}", rows.len(), parts.join(", "));
}

pub fn print_plan(set: &MigrationSet, rows: &[Inspection], waves: Option<&[PlannedWave]>) {
    if let Some(waves) = waves {
        outln!("waves (a rollout draws its own sample with its id as the seed):");
        for w in waves {
            let pending: usize = rows
                .iter()
                .filter(|r| w.tenants.iter().any(|t| t == r.tenant.as_str()))
                .map(|r| r.pending.len())
                .sum();
            let shown: Vec<&str> = w.tenants.iter().take(8).map(String::as_str).collect();
            outln!(
                "  {} ({}): {} tenant(s), {} migrations to apply: {}{}",
                w.name,
                w.selector,
                w.tenants.len(),
                pending,
                shown.join(", "),
                if w.tenants.len() > 8 { ", ..." } else { "" }
            );
        }
        outln!();
    }
    let mut pending_total = 0;
    for r in rows {
        match r.state {
            TenantState::Pending | TenantState::Missing => {
                pending_total += r.pending.len();
                let labels: Vec<String> = r
                    .pending
                    .iter()
                    .filter_map(|v| set.get(*v))
                    .map(|m| m.label())
                    .collect();
                outln!(
                    "{}: {} -> {}: apply {}{}",
                    r.tenant,
                    r.version.unwrap_or(0),
                    r.pending.last().copied().unwrap_or(0),
                    labels.join(", "),
                    if r.state == TenantState::Missing {
                        " (its file does not exist: sync --create-missing creates it)"
                    } else {
                        ""
                    }
                );
            }
            TenantState::UpToDate => {
                outln!("{}: at {}, nothing to do", r.tenant, r.version.unwrap_or(0))
            }
            _ => outln!(
                "{}: cannot be planned ({}): {}",
                r.tenant,
                r.state.as_str(),
                r.error.as_ref().map(|e| e.to_string()).unwrap_or_default()
            ),
        }
    }
    outln!(
        "\nplan: {} tenants, {} migrations to apply, {} tenants cannot be planned; nothing was written",
        rows.len(),
        pending_total,
        rows.iter()
            .filter(|r| {
                !matches!(
                    r.state,
                    TenantState::Pending | TenantState::UpToDate | TenantState::Missing
                )
            })
            .count()
    );
}

#[derive(Serialize)]
struct JsonWave<'a> {
    name: &'a str,
    selector: &'a str,
    tenants: &'a [String],
}

#[derive(Serialize)]
struct JsonOut<'a> {
    format_version: u32,
    kind: &'a str,
    head_version: i64,
    migration_set_checksum: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    waves: Option<Vec<JsonWave<'a>>>,
    held_contract: Option<&'a str>,
    tenants: &'a [Inspection],
    /// Names discovery would not touch, and why.
    refused: Vec<JsonRefused<'a>>,
}

#[derive(Serialize)]
struct JsonRefused<'a> {
    name: &'a str,
    reason: &'a str,
}

pub fn print_json(
    set: &MigrationSet,
    rows: &[Inspection],
    refused: &[Refused],
    is_plan: bool,
    waves: Option<&[PlannedWave]>,
    held: Option<&str>,
) {
    let out = JsonOut {
        format_version: crate::report::FORMAT_VERSION,
        kind: if is_plan { "plan" } else { "status" },
        head_version: set.head(),
        migration_set_checksum: &set.checksum,
        waves: waves.map(|w| {
            w.iter()
                .map(|w| JsonWave {
                    name: &w.name,
                    selector: &w.selector,
                    tenants: &w.tenants,
                })
                .collect()
        }),
        held_contract: held,
        tenants: rows,
        refused: refused
            .iter()
            .map(|r| JsonRefused {
                name: &r.name,
                reason: &r.reason,
            })
            .collect(),
    };
    outln!(
        "{}",
        serde_json::to_string_pretty(&out).expect("serialisable")
    );
}

/// The names discovery refused: failed, never touched.
pub fn print_refused(refused: &[Refused]) {
    for r in refused {
        outln!("refused: {} ({}): never touched", r.name, r.reason);
    }
}

pub fn print_verify(v: &[Verdict], json: bool) {
    if json {
        outln!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
        return;
    }
    for t in v.iter().filter(|t| t.state != DriftState::Ok) {
        outln!(
            "{}: {} at version {}{}",
            t.tenant,
            t.state.as_str(),
            t.version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into()),
            t.message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
        if !t.missing.is_empty() || !t.extra.is_empty() {
            outln!(
                "  compared with the {} tenant(s) that share the usual schema at this version:",
                t.majority_of
            );
        }
        for m in &t.missing {
            outln!("  - missing: {m}");
        }
        for e in &t.extra {
            outln!("  + extra:   {e}");
        }
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in v {
        *counts.entry(t.state.as_str()).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    outln!("verify: {} tenants: {}", v.len(), parts.join(", "));
}
