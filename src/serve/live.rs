//! What changes while one watches: the event stream a page listens to (an
//! event when the rollout changes in the store, looked at twice a second),
//! and `/metrics` for Prometheus.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;

use super::App;
use crate::error::Error;
use crate::report::metrics::gauge;
use crate::state::{RolloutStatus, now_ms};

/// How often a stream looks at the store: an update reaches the page
/// within this and the page's fetch.
const LOOK: Duration = Duration::from_millis(400);

/// The wait after an event, before the next look (see `changes`).
const SETTLE: Duration = Duration::from_millis(300);

/// `/rollouts/{id}/events`: `changed` whenever the rollout's marker
/// (status, wave, tenant rows, heartbeats) changes; 404 for a rollout the
/// store does not have (no stream held open for nothing). A store that
/// does not answer the look-up gets the stream all the same: a browser
/// gives up on an event stream for good after any answer but 200.
pub(super) async fn events(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.store.rollout(&id).await {
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Ok(Some(_)) | Err(_) => changes(app, Some(id)).into_response(),
    }
}

/// `/events`: `changed` whenever a rollout starts or a running one changes
/// (the rollouts page).
pub(super) async fn events_all(
    State(app): State<Arc<App>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    changes(app, None)
}

/// The marker of rollout `id`, or of the store's rollouts: the newest's
/// id and status, and each running one's marker.
async fn marker(app: &App, id: Option<&str>) -> Result<String, Error> {
    if let Some(id) = id {
        return app.store.change_marker(id).await;
    }
    let mut m = String::new();
    for (i, r) in app.store.rollouts(100).await?.iter().enumerate() {
        if i == 0 {
            m += &format!("{} {};", r.id, r.status);
        }
        if r.status == RolloutStatus::Running {
            m += &app.store.change_marker(&r.id).await?;
            m.push(';');
        }
    }
    Ok(m)
}

fn changes(
    app: Arc<App>,
    id: Option<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(
        (app, id, None::<String>, false),
        |(app, id, mut last, sent)| async move {
            // after an event the page fetches its part: the next look waits
            // a little longer, so that a rollout that changes all the time
            // costs a page one fetch in `SETTLE`, still within a second
            tokio::time::sleep(if sent { SETTLE } else { Duration::ZERO }).await;
            loop {
                if last.is_some() {
                    tokio::time::sleep(LOOK).await;
                }
                // a store that does not answer now is looked at again
                let marker = match marker(&app, id.as_deref()).await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(
                            "serve: watching {}: {e}",
                            id.as_deref().unwrap_or("the rollouts")
                        );
                        tokio::time::sleep(LOOK * 5).await;
                        continue;
                    }
                };
                if last.as_ref() != Some(&marker) {
                    let first = last.is_none();
                    last = Some(marker);
                    if !first {
                        let e = Event::default().event("changed").data("1");
                        return Some((Ok(e), (app, id, last, true)));
                    }
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `/metrics`: the newest rollout (a running one first) under the names and
/// labels `--metrics-file` writes, then every running rollout's progress,
/// waves, workers and pace, labelled by rollout.
pub(super) async fn metrics(State(app): State<Arc<App>>) -> Response {
    match exposition(&app).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The live series of the running rollouts, as labels and values.
#[derive(Default)]
struct Series {
    /// By rollout and status, summed over its waves.
    by: std::collections::BTreeMap<(String, crate::state::RunStatus), usize>,
    waves: Vec<(String, String)>,
    beats: Vec<(String, String)>,
    claims: Vec<(String, String)>,
    pace: Vec<(String, String)>,
}

async fn exposition(app: &App) -> Result<String, Error> {
    let rollouts = app.store.rollouts(50).await?;
    let running: Vec<_> = rollouts
        .iter()
        .filter(|r| r.status == RolloutStatus::Running)
        .collect();
    let mut m = String::new();
    let newest = running.first().copied().or(rollouts.first());
    if let Some(r) = newest.filter(|r| r.pruned.is_none()) {
        m += &app.report(&r.id).await?.metrics();
    }
    let mut s = Series::default();
    let now = now_ms();
    for r in &running {
        s.gather(app, &r.id, now).await?;
    }
    if !running.is_empty() {
        s.write(&mut m);
    }
    Ok(m)
}

impl Series {
    /// Adds the series of running rollout `id`.
    async fn gather(&mut self, app: &App, rollout: &str, now: i64) -> Result<(), Error> {
        let id = label(rollout);
        let names = app.store.waves(rollout).await?;
        for (wave, status, n) in app.store.wave_counts(rollout).await? {
            let name = names
                .iter()
                .find(|w| w.wave == wave)
                .map_or("refused", |w| w.name.as_str());
            *self.by.entry((id.clone(), status)).or_insert(0) += n;
            self.waves.push((
                format!(
                    "{{rollout=\"{id}\",wave=\"{}\",status=\"{status}\"}}",
                    label(name)
                ),
                n.to_string(),
            ));
        }
        let workers = app.store.workers(rollout).await?;
        for w in workers.iter().filter(|w| w.stopped_at.is_none()) {
            let l = format!("{{rollout=\"{id}\",worker=\"{}\"}}", label(&w.worker));
            self.beats.push((
                l.clone(),
                format!("{:.3}", (now - w.heartbeat_at) as f64 / 1000.0),
            ));
            self.claims.push((l, w.claimed.to_string()));
        }
        let minute = app.store.finished_since(rollout, now - 60_000).await?;
        self.pace.push((
            format!("{{rollout=\"{id}\"}}"),
            format!("{:.3}", minute as f64 / 60.0),
        ));
        Ok(())
    }

    /// Writes the series in the exposition format.
    fn write(self, m: &mut String) {
        let tenants: Vec<(String, String)> = self
            .by
            .into_iter()
            .map(|((id, s), n)| {
                (
                    format!("{{rollout=\"{id}\",status=\"{s}\"}}"),
                    n.to_string(),
                )
            })
            .collect();
        gauge(
            m,
            "fleetmig_rollout_tenants",
            "Tenants of each running rollout by status.",
            tenants,
        );
        gauge(
            m,
            "fleetmig_wave_tenants",
            "Tenants of each wave of a running rollout by status.",
            self.waves,
        );
        gauge(
            m,
            "fleetmig_worker_heartbeat_age_seconds",
            "Seconds since each live worker's last heartbeat.",
            self.beats,
        );
        gauge(
            m,
            "fleetmig_worker_claims",
            "Tenants each live worker holds a claim on.",
            self.claims,
        );
        gauge(
            m,
            "fleetmig_tenants_per_second",
            "Tenants finished per second over the last minute.",
            self.pace,
        );
    }
}
