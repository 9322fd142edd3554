//! The pages: rollouts and one rollout (its tenants: `tenants`). Each
//! page's changing part is `#live`: fetched again with `X-Fragment: 1` when the rollout's event stream says it changed. maud
//! escapes every value; only the report's own SVG plots (escaped where
//! they are drawn) go in as they are.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::App;
use super::auth::Operator;
use super::view::{age, count_of, when};
use crate::error::Error;
use crate::state::{RolloutRecord, RolloutStatus, RunStatus};

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/live.js");

/// Tenants on one page of a rollout's tenant list.
pub(super) const PAGE: usize = 100;

/// A whole page: `live` names the event stream that refreshes `#live`.
pub(super) fn page(title: &str, who: Option<&str>, live: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fleetmig" }
                link rel="stylesheet" href="/static/style.css";
                script src="/static/live.js" defer {}
            }
            body data-live=[live] {
                header {
                    a.brand href="/" { "fleetmig" }
                    span.who {
                        @match who {
                            Some(name) => {
                                "signed in as " b #operator { (name) }
                                form.inline method="post" action="/logout" {
                                    button type="submit" { "Sign out" }
                                }
                            }
                            None => a href="/login" { "Sign in" },
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page, or its `#live` part alone when the page's script asks.
pub(super) fn respond(
    headers: &HeaderMap,
    title: &str,
    who: &Operator,
    live: Option<String>,
    head: Markup,
    part: Markup,
) -> Response {
    if headers.contains_key("x-fragment") {
        return part.into_response();
    }
    page(
        title,
        who.0.as_deref(),
        live.as_deref(),
        html! { (head) div #live { (part) } },
    )
    .into_response()
}

/// An error as a page: a missing rollout is 404, anything else 500; the
/// store's location is already redacted in the message.
pub(super) fn failed(e: Error) -> Response {
    let status = match &e {
        Error::Usage { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = html! { p.error { (e.to_string()) } };
    (status, page("Error", None, None, body)).into_response()
}

pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (kind, body) = match file.as_str() {
        "style.css" => ("text/css; charset=utf-8", STYLE),
        "live.js" => ("text/javascript; charset=utf-8", SCRIPT),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// `/`: the rollouts, newest first.
pub(super) async fn rollouts(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Operator>,
    headers: HeaderMap,
) -> Response {
    let list = match app.store.rollouts(100).await {
        Ok(l) => l,
        Err(e) => return failed(e),
    };
    let mut rows = Vec::with_capacity(list.len());
    for r in list {
        let counts = match r.pruned.as_ref() {
            Some(p) => Ok((p.tenants, p.succeeded, p.failed)),
            None => app.store.run_counts(&r.id).await,
        };
        match counts {
            Ok(c) => rows.push((r, c)),
            Err(e) => return failed(e),
        }
    }
    let part = html! {
        @if rows.is_empty() { p { "No rollout is recorded in this state store yet." } }
        table #rollouts {
            thead { tr { th { "Rollout" } th { "Status" } th { "Fleet" } th { "Progress" } th { "Started" } th { "Operator" } } }
            tbody {
                @for (r, (n, ok, bad)) in &rows {
                    tr {
                        td { a href={ "/rollouts/" (r.id) } { (r.id) } }
                        td { span class={ "status " (r.status) } { (r.status) } }
                        td.fleet { (r.fleet) }
                        td { (progress(*n, *ok, *bad)) }
                        td { (when(r.created_at)) }
                        td { (r.operator) }
                    }
                }
            }
        }
    };
    let live = Some("/events".to_string());
    respond(&headers, "Rollouts", &who, live, html! {}, part)
}

/// A bar of `ok` and `bad` out of `n`, with the counts.
fn progress(n: usize, ok: usize, bad: usize) -> Markup {
    let pct = |k: usize| {
        if n == 0 {
            0.0
        } else {
            100.0 * k as f64 / n as f64
        }
    };
    html! {
        span.progress title={ (ok) " succeeded, " (bad) " failed of " (n) } {
            span.ok style={ "width:" (format!("{:.1}", pct(ok))) "%" } {}
            span.bad style={ "width:" (format!("{:.1}", pct(bad))) "%" } {}
        }
        " " span.count { (ok + bad) " / " (n) }
    }
}

/// `/rollouts/{id}`: its waves and gates, plots, failure clusters,
/// workers, actions; the controls for an operator.
pub(super) async fn rollout(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Operator>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match rollout_part(&app, &id, &who).await {
        Ok((r, part)) => {
            let head = html! {
                p.links { a href={ "/rollouts/" (id) "/tenants" } { "All tenants" } }
            };
            let title = format!("Rollout {}", r.id);
            respond(
                &headers,
                &title,
                &who,
                Some(format!("/rollouts/{id}/events")),
                head,
                part,
            )
        }
        Err(e) => failed(e),
    }
}

async fn rollout_part(
    app: &App,
    id: &str,
    who: &Operator,
) -> Result<(RolloutRecord, Markup), Error> {
    let r = app.store.get_rollout(id).await?;
    let waves = app.store.waves(id).await?;
    let counts = app.store.wave_counts(id).await?;
    let gates = app.store.gates(id).await?;
    let workers = app.store.workers(id).await?;
    let actions = app.store.actions(id).await?;
    let report = match r.pruned {
        None => Some(app.report(id).await?),
        Some(_) => None,
    };
    let now = crate::state::now_ms();
    let total: usize = counts.iter().map(|c| c.2).sum();
    let of = |s: RunStatus| count_of(&counts, None, s);
    let part = html! {
        section.summary {
            p {
                span #status class={ "status " (r.status) } { (r.status) }
                @if let Some(q) = r.requested { " · " span #requested { "asked to " (q) } }
                " · fleet " code { (r.fleet) } " · started " (when(r.created_at)) " by " (r.operator)
            }
            @if let Some(reason) = &r.reason { p #reason { (reason) } }
            p #policy { (policy(&r)) }
            p #counts {
                (progress(total, of(RunStatus::Succeeded), of(RunStatus::Failed)))
                " — "
                @for s in RunStatus::ALL {
                    @let n = of(*s);
                    @if n > 0 {
                        a.tally href={ "/rollouts/" (id) "/tenants?status=" (s) } data-status=(s) {
                            (s) ": " span.n { (n) }
                        } " "
                    }
                }
            }
            (controls(&r, who))
        }
        (waves_table(id, &waves, &counts, &gates, now))
        @if let Some(rep) = &report {
            h2 { "Progress" }
            div.plot { (PreEscaped(crate::report::html::timeline(rep))) }
            h2 { "Tenant durations" }
            div.plot { (PreEscaped(crate::report::html::histogram(rep))) }
            h2 { "Failures" }
            (clusters(id, rep))
        } @else {
            p { "Its tenant rows were pruned; the counts above are what they said." }
        }
        (workers_table(&workers, now))
        (actions_list(&actions))
    };
    Ok((r, part))
}

/// A rollout's waves: selector, status, counts, gate decisions, times.
fn waves_table(
    id: &str,
    waves: &[crate::state::WaveRecord],
    counts: &[(i64, RunStatus, usize)],
    gates: &[crate::state::GateRecord],
    now: i64,
) -> Markup {
    html! {
    h2 { "Waves" }
    table #waves {
        thead { tr { th { "Wave" } th { "Selector" } th { "Status" } th { "Tenants" } th { "Succeeded" } th { "Failed" } th { "Gate" } th { "Started" } th { "Took" } } }
        tbody {
            @for w in waves {
                @let n: usize = counts.iter().filter(|c| c.0 == w.wave).map(|c| c.2).sum();
                tr {
                    td { a href={ "/rollouts/" (id) "/tenants?wave=" (w.wave) } { (w.name) } }
                    td { code { (w.selector) } }
                    td { span class={ "status " (w.status) } { (w.status) } }
                    td { (n) }
                    td { (count_of(counts, Some(w.wave), RunStatus::Succeeded)) }
                    td { (count_of(counts, Some(w.wave), RunStatus::Failed)) }
                    td {
                        @for g in gates.iter().filter(|g| g.wave == w.wave) {
                            (g.status) " by " (g.worker) " at " (when(g.evaluated_at))
                        }
                        @if let Some(text) = &w.gate { div.gate { (text) } }
                    }
                    td { (w.started_at.map(when).unwrap_or_default()) }
                    td {
                        @if let Some(s) = w.started_at {
                            (age(w.finished_at.unwrap_or(now) - s))
                        }
                    }
                }
            }
        }
    }
    }
}

/// The workers of a rollout, with their heartbeat's age and claims.
fn workers_table(workers: &[crate::state::WorkerRecord], now: i64) -> Markup {
    html! {
    h2 { "Workers" }
    @if workers.is_empty() { p { "No worker has joined (one process ran it, or none yet)." } }
    @else {
        table #workers {
            thead { tr { th { "Worker" } th { "Host" } th { "Heartbeat" } th { "Claims" } th { "Done" } th { "Stopped" } } }
            tbody {
                @for w in workers {
                    tr {
                        td { (w.worker) } td { (w.host) }
                        td {
                            @if w.stopped_at.is_none() { (age(now - w.heartbeat_at)) " ago" }
                        }
                        td { (w.claimed) } td { (w.done) }
                        td { (w.stopped_at.map(when).unwrap_or_default()) }
                    }
                }
            }
        }
    }
    }
}

/// What operators asked of a rollout, by name.
fn actions_list(actions: &[crate::state::Action]) -> Markup {
    html! {
    @if !actions.is_empty() {
        h2 { "Actions" }
        ul #actions {
            @for a in actions {
                li { (when(a.at)) " " b { (a.operator) } " asked to " (a.action) @if !a.detail.is_empty() { " (" (a.detail) ")" } }
            }
        }
    }
    }
}

/// How the rollout goes from wave to wave: its gate, bake and pause.
fn policy(r: &RolloutRecord) -> String {
    let p = &r.settings.policy;
    let mut said = Vec::new();
    match (p.gates.max_failures, p.gates.max_failure_rate) {
        (None, None) => said.push("gate: none".to_string()),
        (n, rate) => {
            let mut g = Vec::new();
            if let Some(n) = n {
                g.push(format!("at most {n} failed"));
            }
            if let Some(rate) = rate {
                g.push(format!("at most {:.1}% failed", rate * 100.0));
            }
            said.push(format!("gate: {}", g.join(" and ")));
        }
    }
    if p.gate_sql.is_some() {
        said.push("and its query".into());
    }
    said.push(if p.bake.is_zero() {
        "no bake".into()
    } else {
        format!("bake {} between waves", humantime::format_duration(p.bake))
    });
    if let Some(w) = &p.pause_after {
        said.push(format!("pauses after {w}"));
    }
    said.join(" · ")
}

/// The failure clusters of a report, a sample error each.
fn clusters(id: &str, rep: &crate::report::RunReport) -> Markup {
    let clusters = rep.failure_clusters();
    html! {
        @if clusters.is_empty() { p #no-failures { "No tenant failed." } }
        @else {
            table #clusters {
                thead { tr { th { "Kind" } th { "Tenants" } th { "Sample error" } th { "Examples" } } }
                tbody {
                    @for c in &clusters {
                        tr {
                            td { a href={ "/rollouts/" (id) "/tenants?status=failed&kind=" (c.kind) } { (c.kind) } " (" (c.class) ")" }
                            td { (c.count) }
                            td.error { (c.example_message) }
                            td {
                                @for t in &c.example_tenants {
                                    a href={ "/rollouts/" (id) "/tenants/" (t) } { (t) } " "
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Pause, resume, abort, retry the failed tenants: for a signed-in
/// operator, as the rollout's status allows.
fn controls(r: &RolloutRecord, who: &Operator) -> Markup {
    let Some(_) = &who.0 else {
        return html! {};
    };
    let running = r.status == RolloutStatus::Running && r.requested.is_none();
    let stopped = matches!(r.status, RolloutStatus::Paused | RolloutStatus::Halted);
    let retryable = matches!(
        r.status,
        RolloutStatus::Completed | RolloutStatus::Halted | RolloutStatus::Paused
    );
    let button = |action: &str, label: &str| {
        html! {
            form.inline method="post" action={ "/rollouts/" (r.id) "/" (action) } {
                button type="submit" id=(action) { (label) }
            }
        }
    };
    html! {
        div.controls {
            @if running { (button("pause", "Pause")) (button("abort", "Abort")) }
            @if stopped { (button("resume", "Resume")) }
            @if r.status == RolloutStatus::Paused { (button("abort", "Abort")) }
            @if retryable { (button("retry", "Retry failed tenants")) }
        }
    }
}
