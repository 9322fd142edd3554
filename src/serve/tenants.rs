//! The tenants of a rollout (a page of them, filtered, taken by key on the
//! server) and one tenant (its run, its other rollouts, its moves).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::App;
use super::auth::Operator;
use super::pages::{PAGE, failed, page, respond};
use super::view::{age, when};
use crate::error::Error;
use crate::state::{RolloutStatus, RunStatus, TenantFilter};

#[derive(serde::Deserialize, Default)]
pub(super) struct TenantQuery {
    status: Option<String>,
    wave: Option<String>,
    kind: Option<String>,
    prefix: Option<String>,
    after: Option<String>,
}

impl TenantQuery {
    fn filter(&self) -> Result<TenantFilter, String> {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        Ok(TenantFilter {
            status: given(&self.status).map(|s| s.parse()).transpose()?,
            wave: given(&self.wave)
                .map(|w| w.parse().map_err(|_| format!("wave {w:?} is not a number")))
                .transpose()?,
            kind: given(&self.kind),
            prefix: given(&self.prefix),
        })
    }
}

/// `/rollouts/{id}/tenants`: a page of tenants, filtered.
pub(super) async fn tenants(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Operator>,
    Path(id): Path<String>,
    Query(q): Query<TenantQuery>,
    headers: HeaderMap,
) -> Response {
    let f = match q.filter() {
        Ok(f) => f,
        Err(m) => {
            let body = html! { p.error { (m) } };
            return (StatusCode::BAD_REQUEST, page("Tenants", None, None, body)).into_response();
        }
    };
    let got = async {
        let r = app.store.get_rollout(&id).await?;
        let waves = app.store.waves(&id).await?;
        let n = app.store.tenant_count(&id, &f).await?;
        let rows = app
            .store
            .tenant_page(&id, &f, q.after.as_deref(), PAGE)
            .await?;
        Ok::<_, Error>((r, waves, n, rows))
    };
    let (r, waves, n, rows) = match got.await {
        Ok(g) => g,
        Err(e) => return failed(e),
    };
    let head = filter_form(&id, &q, &waves);
    let next = next_page(&id, &q, &rows);
    let part = html! {
        p #matched { (n) " tenant(s) match" @if q.after.is_some() { " (a later page)" } }
        table #tenants {
            thead { tr { th { "Tenant" } th { "Wave" } th { "Status" } th { "Attempts" } th { "Versions" } th { "Took" } th { "Error" } } }
            tbody {
                @for t in &rows {
                    tr {
                        td { a href={ "/rollouts/" (id) "/tenants/" (t.tenant) } { (t.tenant) } }
                        td { (wave_name(&waves, t.wave)) }
                        td { span class={ "status " (t.status) } { (t.status) } }
                        td { (t.attempts) }
                        td { (versions(t.from_version, t.to_version)) }
                        td { (age(t.duration_ms)) }
                        td.error {
                            @if let Some(k) = t.error.kind { b { (k) } " " }
                            (t.error.message.as_deref().unwrap_or(""))
                        }
                    }
                }
            }
        }
        @if let Some(next) = next { p { a #next href=(next) { "Next page" } } }
    };
    let title = format!("Tenants of {}", r.id);
    respond(
        &headers,
        &title,
        &who,
        Some(format!("/rollouts/{id}/events")),
        head,
        part,
    )
}

/// One tenant's run as facts: status, wave, attempts, versions, times,
/// its error, gate error and preflight.
fn facts(t: &crate::state::TenantRun, waves: &[crate::state::WaveRecord]) -> maud::Markup {
    html! {
    table.facts #tenant {
        tr { th { "Status" } td { span #tenant-status class={ "status " (t.status) } { (t.status) } } }
        tr { th { "Wave" } td { (wave_name(waves, t.wave)) } }
        tr { th { "Attempts" } td { (t.attempts) } }
        tr { th { "Versions" } td { (versions(t.from_version, t.to_version)) } }
        tr { th { "Applied" } td { (t.applied.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")) } }
        tr { th { "Started" } td { (t.started_at.map(when).unwrap_or_default()) } }
        tr { th { "Took" } td { (age(t.duration_ms)) } }
        @if let Some(kind) = t.error.kind {
            tr { th { "Error" } td.error #tenant-error {
                b { (kind) } @if let Some(c) = t.error.class { " (" (c) ")" }
                @if let Some(code) = &t.error.code { " code " (code) }
                @if let Some(v) = t.error.version { " at version " (v) }
                br; (t.error.message.as_deref().unwrap_or(""))
            } }
        }
        @if let Some(g) = &t.gate_error { tr { th { "Gate" } td.error { (g) } } }
        @if let Some(p) = &t.preflight { tr { th { "Preflight" } td { (p) } } }
    }
    }
}

/// The moves that name a tenant.
fn moves_table(moves: &[crate::state::MoveRecord]) -> maud::Markup {
    html! {
    @if !moves.is_empty() {
        h2 { "Moves" }
        table #moves {
            thead { tr { th { "Move" } th { "Status" } th { "From" } th { "To" } th { "Rows" } th { "Started" } th { "Error" } } }
            tbody {
                @for m in moves {
                    tr {
                        td { (m.id) } td { (m.status) } td { (m.source) } td { (m.target) }
                        td { (m.rows_copied) } td { (when(m.started_at)) }
                        td.error { (m.error.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
    }
}

/// The filter form above a rollout's tenant list (status, wave, failure
/// kind, id prefix), showing what `q` asked.
fn filter_form(id: &str, q: &TenantQuery, waves: &[crate::state::WaveRecord]) -> maud::Markup {
    let sel = |v: &Option<String>, x: &str| v.as_deref() == Some(x);
    html! {
        p.links { a href={ "/rollouts/" (id) } { "Rollout " (id) } }
        form.filter method="get" {
            label { "Status " select name="status" {
                option value="" { "any" }
                @for s in RunStatus::ALL { option value=(s) selected[sel(&q.status, s.as_str())] { (s) } }
            } }
            label { " Wave " select name="wave" {
                option value="" { "any" }
                @for w in waves { option value=(w.wave) selected[sel(&q.wave, &w.wave.to_string())] { (w.name) } }
            } }
            label { " Failure kind " input name="kind" value=[q.kind.as_deref()] size="16"; }
            label { " Id starts with " input name="prefix" value=[q.prefix.as_deref()] size="16"; }
            " " button type="submit" { "Show" }
        }
    }
}

/// The link to the page after `rows` (when it was full), with the same
/// filter.
fn next_page(id: &str, q: &TenantQuery, rows: &[crate::state::TenantRun]) -> Option<String> {
    (rows.len() == PAGE).then(|| {
        let mut u = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("status", &q.status),
            ("wave", &q.wave),
            ("kind", &q.kind),
            ("prefix", &q.prefix),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                u.append_pair(k, v);
            }
        }
        u.append_pair("after", &rows[PAGE - 1].tenant);
        format!("/rollouts/{id}/tenants?{}", u.finish())
    })
}

fn wave_name(waves: &[crate::state::WaveRecord], wave: i64) -> String {
    waves
        .iter()
        .find(|w| w.wave == wave)
        .map_or_else(|| "(refused)".to_string(), |w| w.name.clone())
}

fn versions(from: Option<i64>, to: Option<i64>) -> String {
    match (from, to) {
        (Some(f), Some(t)) => format!("{f} → {t}"),
        (None, Some(t)) => format!("→ {t}"),
        (Some(f), None) => format!("{f} →"),
        (None, None) => String::new(),
    }
}

/// `/rollouts/{id}/tenants/{tenant}`: its run in this rollout, its other
/// rollouts, the moves that name it.
pub(super) async fn tenant(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Operator>,
    Path((id, tenant)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let got = async {
        let r = app.store.get_rollout(&id).await?;
        let waves = app.store.waves(&id).await?;
        let run = app.store.tenant_run(&id, &tenant).await?;
        let others = app.store.rollouts_of(&tenant, 20).await?;
        let moves: Vec<_> = app
            .store
            .moves(1000)
            .await?
            .into_iter()
            .filter(|m| m.tenant == tenant)
            .collect();
        Ok::<_, Error>((r, waves, run, others, moves))
    };
    let (r, waves, run, others, moves) = match got.await {
        Ok(g) => g,
        Err(e) => return failed(e),
    };
    let Some(t) = run else {
        let body = html! { p.error { (tenant) " is not a tenant of rollout " (id) } };
        return (StatusCode::NOT_FOUND, page("Tenant", None, None, body)).into_response();
    };
    let may_retry = who.0.is_some()
        && t.status != RunStatus::Running
        && matches!(
            r.status,
            RolloutStatus::Completed | RolloutStatus::Halted | RolloutStatus::Paused
        );
    let head = html! { p.links { a href={ "/rollouts/" (id) } { "Rollout " (id) } } };
    let part = html! {
        (facts(&t, &waves))
        @if may_retry {
            form.inline method="post" action={ "/rollouts/" (id) "/tenants/" (t.tenant) "/retry" } {
                button type="submit" #retry-tenant { "Retry this tenant" }
            }
        }
        h2 { "Rollouts that name it" }
        ul { @for o in &others { li { a href={ "/rollouts/" (o) "/tenants/" (t.tenant) } { (o) } } } }
        (moves_table(&moves))
    };
    let title = format!("Tenant {tenant}");
    respond(
        &headers,
        &title,
        &who,
        Some(format!("/rollouts/{id}/events")),
        head,
        part,
    )
}
