//! `report.html`: one self-contained page (no network, no script, inline SVG)
//! that an operator can open from a laptop or a CI artifact: the waves as a
//! timeline (each tenant a bar from start to end, coloured by outcome, retries
//! marked; above 2,000 tenants, tenants finished per time bucket by outcome,
//! wave starts marked), a histogram of tenant durations, and the failure
//! clusters. Its size does not grow with the fleet past the bars' limit.

use std::fmt::Write as _;

use super::gather::{Bar, Buckets, Timeline};
use super::{RunReport, Summary};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn colour(status: &str) -> &'static str {
    match status {
        "succeeded" => "#2e9d4f",
        "failed" => "#d1352b",
        "reverted" => "#e08a1e",
        "running" => "#3b7dd8",
        _ => "#9aa0a6",
    }
}

pub(crate) fn timeline(r: &RunReport) -> String {
    match &r.gathered.timeline {
        Timeline::Bars(bars) => tenant_bars(r, bars),
        Timeline::Buckets(b) => completions(r, b),
    }
}

/// A small rollout: a bar per tenant from start to end, by wave, coloured by
/// outcome, retries marked.
fn tenant_bars(r: &RunReport, rows: &[Bar]) -> String {
    if rows.is_empty() {
        return "<p>No tenant has started yet.</p>".into();
    }
    let t0 = rows.iter().map(|t| t.start).min().unwrap_or(0);
    let t1 = rows.iter().map(|t| t.end).max().unwrap_or(t0).max(t0 + 1);
    let (left, width) = (140.0, 820.0);
    let bar_h: f64 = if rows.len() > 400 {
        2.0
    } else if rows.len() > 100 {
        4.0
    } else {
        8.0
    };
    let gap = if bar_h > 4.0 { 2.0 } else { 0.5 };
    let mut y = 20.0;
    let mut body = String::new();
    let mut last_wave = None;
    for t in rows {
        if last_wave != Some(t.wave) {
            y += 6.0;
            let _ = write!(
                body,
                r##"<line class="wave-sep" x1="0" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ccc"/><text class="wave-label" x="4" y="{:.1}" font-size="11">{}</text>"##,
                left + width,
                y + 11.0,
                esc(r.wave_name(t.wave))
            );
            y += 4.0;
            last_wave = Some(t.wave);
        }
        let x = left + width * (t.start - t0) as f64 / (t1 - t0) as f64;
        let w = (width * (t.end - t.start) as f64 / (t1 - t0) as f64).max(1.0);
        let _ = write!(
            body,
            r#"<rect class="bar" data-tenant="{}" data-status="{}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{bar_h}" fill="{}"><title>{}: {} — {} attempt(s), {} ms{}</title></rect>"#,
            esc(&t.tenant),
            esc(t.status.as_str()),
            colour(t.status.as_str()),
            esc(&t.tenant),
            esc(t.status.as_str()),
            t.attempts,
            t.duration_ms,
            t.message
                .as_ref()
                .map(|m| format!(" — {}", esc(m)))
                .unwrap_or_default()
        );
        if t.attempts > 1 {
            let _ = write!(
                body,
                r##"<circle class="retry" cx="{:.1}" cy="{:.1}" r="{:.1}" fill="none" stroke="#222"><title>{} retried: {} attempts</title></circle>"##,
                x + w + 3.0,
                y + bar_h / 2.0,
                (bar_h / 2.0).max(1.5),
                esc(&t.tenant),
                t.attempts
            );
        }
        y += bar_h + gap;
    }
    let axis = time_axis(left, width, y, (t1 - t0) as f64 / 1000.0);
    format!(
        r#"<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{}" height="{:.0}" role="img" aria-label="tenant timeline">{axis}{body}</svg>"#,
        left + width + 20.0,
        y + 10.0
    )
}

/// Vertical guides every quarter of the run, labelled in seconds.
fn time_axis(left: f64, width: f64, bottom: f64, secs: f64) -> String {
    let mut axis = String::new();
    for i in 0..=4 {
        let x = left + width * i as f64 / 4.0;
        let _ = write!(
            axis,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="14" y2="{bottom:.1}" stroke="#eee"/><text x="{x:.1}" y="11" font-size="10" text-anchor="middle">{:.2}s</text>"##,
            secs * i as f64 / 4.0
        );
    }
    axis
}

/// A large rollout: tenants finished per time bucket, stacked by outcome,
/// with each wave's start marked; the full table is `tenants.csv`.
fn completions(r: &RunReport, b: &Buckets) -> String {
    let (left, width, height) = (60.0, 900.0, 220.0);
    let top = b
        .counts
        .iter()
        .map(|c| c.iter().sum::<usize>())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let bw = width / b.counts.len() as f64;
    let mut body = String::new();
    let colours = ["#2e9d4f", "#d1352b", "#9aa0a6"];
    let names = ["succeeded", "failed", "other"];
    let span = (b.t1 - b.t0) as f64;
    for (i, c) in b.counts.iter().enumerate() {
        let mut y = 20.0 + height;
        for k in 0..3 {
            if c[k] == 0 {
                continue;
            }
            let h = height * c[k] as f64 / top;
            y -= h;
            let from = span * i as f64 / b.counts.len() as f64 / 1000.0;
            let _ = write!(
                body,
                r#"<rect class="bucket" data-status="{}" x="{:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{} tenant(s) {} between {from:.1}s and {:.1}s</title></rect>"#,
                names[k],
                left + i as f64 * bw,
                (bw - 0.5).max(0.5),
                colours[k],
                c[k],
                names[k],
                from + span / b.counts.len() as f64 / 1000.0
            );
        }
    }
    for w in &r.waves {
        if let Some(at) = w.started_at.filter(|at| *at >= b.t0 && *at <= b.t1) {
            let x = left + width * (at - b.t0) as f64 / span;
            let _ = write!(
                body,
                r##"<line class="wave-start" x1="{x:.1}" x2="{x:.1}" y1="14" y2="{:.1}" stroke="#555" stroke-dasharray="3,2"/><text class="wave-label" x="{:.1}" y="{:.1}" font-size="10">{}</text>"##,
                20.0 + height,
                x + 2.0,
                30.0,
                esc(&w.name)
            );
        }
    }
    let axis = time_axis(left, width, 20.0 + height, span / 1000.0);
    format!(
        r#"<p>{} tenants: tenants finished per {:.1} s, by outcome (the full table is tenants.csv; the tallest bar is {top} tenants).</p><svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{}" height="{:.0}" role="img" aria-label="tenants finished over time">{axis}{body}</svg>"#,
        r.gathered.totals.tenants,
        span / b.counts.len() as f64 / 1000.0,
        left + width + 20.0,
        height + 40.0
    )
}

pub(crate) fn histogram(r: &RunReport) -> String {
    let d = &r.gathered.durations;
    if d.is_empty() {
        return String::new();
    }
    let max = *d.last().unwrap_or(&1) as i64;
    let bins = 20usize;
    let step = ((max as f64 + 1.0) / bins as f64).max(1.0);
    let mut counts = vec![0usize; bins];
    for v in d {
        counts[((*v as f64 / step) as usize).min(bins - 1)] += 1;
    }
    let top = *counts.iter().max().unwrap_or(&1) as f64;
    let (w, h, left) = (600.0, 160.0, 40.0);
    let bw = w / bins as f64;
    let mut svg = String::new();
    for (i, c) in counts.iter().enumerate() {
        let bh = h * *c as f64 / top;
        let _ = write!(
            svg,
            r##"<rect class="hbar" x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="#3b7dd8"><title>{:.0}–{:.0} ms: {c} tenant(s)</title></rect>"##,
            left + i as f64 * bw + 1.0,
            10.0 + h - bh,
            bw - 2.0,
            i as f64 * step,
            (i + 1) as f64 * step
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{left}" y="{:.0}" font-size="10">0 ms</text><text x="{:.0}" y="{:.0}" font-size="10" text-anchor="end">{max} ms</text><text x="2" y="18" font-size="10">{top}</text>"#,
        h + 24.0,
        left + w,
        h + 24.0
    );
    format!(
        r#"<svg id="histogram" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" role="img" aria-label="tenant duration histogram">{svg}</svg>"#,
        left + w + 10.0,
        h + 30.0
    )
}

/// The waves' rows.
fn waves_rows(s: &Summary<'_>) -> String {
    let mut waves = String::new();
    for w in &s.waves {
        let _ = write!(
            waves,
            "<tr class=\"wave\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&w.name),
            esc(&w.selector),
            esc(w.status.as_str()),
            w.tenants,
            w.succeeded,
            w.failed,
            w.p50_ms,
            w.p95_ms,
            esc(w.gate.as_deref().unwrap_or(""))
        );
    }
    waves
}

/// The failure clusters' table, or a line saying there were none.
fn failures_table(s: &Summary<'_>) -> String {
    let mut failures = String::new();
    for c in &s.failures {
        let _ = write!(
            failures,
            "<tr class=\"cluster\"><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            c.count,
            esc(&c.class),
            esc(&c.kind),
            esc(&c.message),
            esc(&c.example_tenants.join(", "))
        );
    }
    if failures.is_empty() {
        "<p>No failures.</p>".to_string()
    } else {
        format!(
            "<table><tr><th>tenants</th><th>class</th><th>kind</th><th>message</th><th>examples</th></tr>{failures}</table>"
        )
    }
}

/// Renders the page.
pub fn render(r: &RunReport, s: &Summary<'_>) -> String {
    let t = &s.totals;
    let waves = waves_rows(s);
    let failures = failures_table(s);
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fleetmig {cmd} {id}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }}
td, th {{ border: 1px solid #ddd; padding: 3px 8px; text-align: left; }}
.status-{status} {{ font-weight: bold; }}
.legend span {{ display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; }}
</style></head>
<body>
<h1>fleetmig {cmd} <code>{id}</code></h1>
<p id="status" class="status-{status}">Status: <b>{status}</b>{reason} — fleet <code>{fleet}</code>, target version {target}, operator {operator}, started {created}.</p>
<table id="totals"><tr><th>tenants</th><th>succeeded</th><th>up to date</th><th>failed</th><th>pending</th><th>not started</th><th>skipped</th><th>reverted</th><th>migrations applied</th><th>retries</th></tr>
<tr><td>{tn}</td><td>{ok}</td><td>{utd}</td><td>{failed}</td><td>{pending}</td><td>{ns}</td><td>{skipped}</td><td>{reverted}</td><td>{applied}</td><td>{retries}</td></tr></table>
<h2>Waves</h2>
<table id="waves"><tr><th>wave</th><th>selector</th><th>status</th><th>tenants</th><th>succeeded</th><th>failed</th><th>p50 ms</th><th>p95 ms</th><th>gate</th></tr>{waves}</table>
<h2>Timeline</h2>
<p class="legend"><span style="background:#2e9d4f"></span>succeeded<span style="background:#d1352b"></span>failed<span style="background:#e08a1e"></span>reverted<span style="background:#9aa0a6"></span>pending / not started &nbsp; ○ retried</p>
{timeline}
<h2>Tenant durations</h2>
<p>p50 {p50} ms, p95 {p95} ms, max {max} ms.</p>
{histogram}
<h2>Failures</h2>
<div id="failures">{failures}</div>
</body></html>
"##,
        cmd = esc(s.command),
        id = esc(s.rollout_id),
        status = esc(s.status.as_str()),
        reason = s
            .reason
            .map(|r| format!(" — {}", esc(r)))
            .unwrap_or_default(),
        fleet = esc(s.fleet),
        target = s.target_version,
        operator = esc(s.operator),
        created = esc(&s.created_at),
        tn = t.tenants,
        ok = t.succeeded,
        utd = t.up_to_date,
        failed = t.failed,
        pending = t.pending + t.running,
        ns = t.not_started,
        skipped = t.skipped,
        reverted = t.reverted,
        applied = t.migrations_applied,
        retries = t.retries,
        timeline = timeline(r),
        p50 = s.tenant_duration.p50_ms,
        p95 = s.tenant_duration.p95_ms,
        max = s.tenant_duration.max_ms,
        histogram = histogram(r),
    )
}
