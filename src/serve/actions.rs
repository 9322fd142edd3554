//! The controls: pause, abort, resume and retry a rollout, retry one
//! tenant. Each is carried out as the CLI carries it out (a pause or abort
//! is a request the workers see at their next heartbeat; a rollout nobody
//! runs is stopped here) or left for the workers to pick up (resume and
//! retry: serve reaches no tenant itself), and recorded in the store under
//! the operator's name.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::App;
use super::auth::Operator;
use super::pages::{failed, page};
use crate::error::Error;
use crate::state::{Request, Requeue, RolloutStatus};

/// A refusal that changes nothing, said as a page (409).
fn conflict(why: String) -> Response {
    let body = html! { p.error #refused { (why) } };
    (StatusCode::CONFLICT, page("Not done", None, None, body)).into_response()
}

/// `POST /rollouts/{id}/{pause|abort|resume|retry}`.
pub(super) async fn rollout(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Operator>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    // the guard let no POST through without an operator
    let Some(name) = who.0 else {
        return StatusCode::FORBIDDEN.into_response();
    };
    let done = match action.as_str() {
        "pause" => stop(&app, &id, Request::Pause).await,
        "abort" => stop(&app, &id, Request::Abort).await,
        "resume" => match app.store.reopen(&id).await {
            Ok(true) => Ok(Ok(String::new())),
            Ok(false) => Ok(Err("only a paused or halted rollout resumes".to_string())),
            Err(e) => Err(e),
        },
        "retry" => match app.store.requeue(&id, Requeue::Failed).await {
            Ok(0) => Ok(Err(
                "nothing to retry: no failed tenant, or the rollout is running or aborted"
                    .to_string(),
            )),
            Ok(n) => Ok(Ok(format!("{n} failed tenant(s)"))),
            Err(e) => Err(e),
        },
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    finish(&app, &id, &name, &action, done, format!("/rollouts/{id}")).await
}

/// `POST /rollouts/{id}/tenants/{tenant}/retry`.
pub(super) async fn retry_tenant(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Operator>,
    Path((id, tenant)): Path<(String, String)>,
) -> Response {
    let Some(name) = who.0 else {
        return StatusCode::FORBIDDEN.into_response();
    };
    let done = match app.store.requeue(&id, Requeue::Tenant(&tenant)).await {
        Ok(0) => Ok(Err(format!(
            "{tenant} is not retried: it is not a tenant of this rollout, it is running, or \
             the rollout is running or aborted"
        ))),
        Ok(_) => Ok(Ok(tenant.clone())),
        Err(e) => Err(e),
    };
    let back = format!("/rollouts/{id}/tenants/{tenant}");
    finish(&app, &id, &name, "retry", done, back).await
}

/// Records a carried-out action and goes back to `back`; or says why not.
async fn finish(
    app: &App,
    id: &str,
    name: &str,
    action: &str,
    done: Result<Result<String, String>, Error>,
    back: String,
) -> Response {
    match done {
        Ok(Ok(detail)) => {
            if let Err(e) = app.store.record_action(id, name, action, &detail).await {
                return failed(e);
            }
            tracing::info!("serve: {name} asked rollout {id} to {action} {detail}");
            Redirect::to(&back).into_response()
        }
        Ok(Err(why)) => conflict(why),
        Err(e) => failed(e),
    }
}

/// A pause or abort: left for the workers running it (and waited for in
/// the background, where its report is written), or carried out here when
/// nobody runs it.
async fn stop(app: &Arc<App>, id: &str, request: Request) -> Result<Result<String, String>, Error> {
    let r = app.store.get_rollout(id).await?;
    let may = match request {
        Request::Pause => r.status == RolloutStatus::Running,
        Request::Abort => matches!(r.status, RolloutStatus::Running | RolloutStatus::Paused),
    };
    if !may || r.requested.is_some() {
        return Ok(Err(format!(
            "rollout {id} is {}{}: it cannot be asked to {request}",
            r.status,
            r.requested
                .map(|q| format!(" (asked to {q})"))
                .unwrap_or_default()
        )));
    }
    // driver::stop leaves the request for a process that holds it, or
    // carries it out here (and leaves none) when nobody does
    let (app, id) = (app.clone(), id.to_string());
    tokio::spawn(async move {
        let stopped = crate::rollout::driver::stop(
            &app.store,
            &id,
            request,
            &app.opts.reports,
            app.opts.lease,
            |_| {},
        )
        .await;
        if let Err(e) = stopped {
            tracing::warn!("serve: rollout {id} asked to {request}: {e}");
        }
    });
    Ok(Ok(String::new()))
}
