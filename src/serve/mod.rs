//! `fleetmig serve`: a live view of every rollout in a state store, and its
//! controls, in the browser. One axum server over the same `StateStore` the
//! other commands use (SQLite or PostgreSQL, any number of workers running):
//! pages rendered on the server (maud: every text from a database or a
//! tenant escaped), updated in place from a server-sent event stream that
//! fires when the rollout changes in the store; `/metrics` for Prometheus.
//!
//! Secure by default: read-only unless started with `--tokens-file`; an
//! action needs an operator's token (a login form sets an HttpOnly,
//! SameSite=Strict session cookie) and a request from this page's own
//! origin; bound beyond loopback, every page needs a token, and such a bind
//! without tokens is refused at start. Actions are recorded in the store
//! under the operator's name (`fleetmig_actions`).

mod actions;
mod auth;
mod live;
mod pages;
mod tenants;
mod tls;
mod view;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};

pub use auth::Tokens;
pub use tls::acceptor;

use crate::error::Error;
use crate::report::RunReport;
use crate::state::StateStore;

/// How `serve` runs.
#[derive(Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// The operators' tokens; none: read-only.
    pub tokens: Option<Tokens>,
    /// Where a pause or abort carried out here writes the rollout's report.
    pub reports: PathBuf,
    /// The workers' lease (whether a rollout is still held by one).
    pub lease: Duration,
    /// HTTPS with this certificate and key (`tls::acceptor`); none: HTTP.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// How old a rollout's report (plots, failure clusters) may be on a page:
/// it reads every tenant row, so it is gathered again at most this often,
/// and no more often than ten times the time its gathering took (at
/// 100,000 tenants a gathering takes most of a second: the server spends
/// at most a tenth of its time on it, however many pages watch).
const REPORT_AGE: Duration = Duration::from_secs(3);

/// What every handler shares.
pub(crate) struct App {
    store: StateStore,
    opts: ServeOptions,
    /// Every page needs a token (bound beyond loopback).
    gated: bool,
    /// Session cookie → operator name, and when they signed in (a session
    /// lasts `auth::SESSION_LIFE`).
    sessions: dashmap::DashMap<String, (String, std::time::Instant)>,
    /// Rollout id → its report as last gathered.
    reports: Mutex<HashMap<String, Gathered>>,
}

/// A rollout's report as gathered for the pages.
struct Gathered {
    at: Instant,
    /// How long gathering it took.
    took: Duration,
    report: Arc<RunReport>,
}

impl Gathered {
    /// How long it is shown before it is gathered again.
    fn keep(&self) -> Duration {
        REPORT_AGE.max(self.took * 10)
    }
}

impl App {
    /// Rollout `id`'s report, gathered again when older than `REPORT_AGE`.
    async fn report(&self, id: &str) -> Result<Arc<RunReport>, Error> {
        if let Some(g) = self.reports.lock().expect("reports lock").get(id)
            && g.at.elapsed() < g.keep()
        {
            return Ok(g.report.clone());
        }
        let t0 = Instant::now();
        let r = Arc::new(RunReport::load(&self.store, id).await?);
        let mut cache = self.reports.lock().expect("reports lock");
        // a handful of rollouts are looked at at once: keep the recent ones
        cache.retain(|_, g| g.at.elapsed() < g.keep() * 10);
        let g = Gathered {
            at: t0,
            took: t0.elapsed(),
            report: r.clone(),
        };
        cache.insert(id.to_string(), g);
        Ok(r)
    }
}

/// A bind beyond loopback without tokens would show the fleet to anyone
/// who can reach the port: refused at start.
pub fn check_bind(listen: &SocketAddr, tokens: Option<&Tokens>) -> Result<(), Error> {
    if !listen.ip().is_loopback() && tokens.is_none() {
        return Err(Error::flag_value(
            "--listen",
            listen.to_string(),
            "is beyond loopback: every page would be open to anyone who reaches the port; \
             give --tokens-file (every page then needs a token) or listen on 127.0.0.1",
        ));
    }
    Ok(())
}

/// The server's routes over `app`.
fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(pages::rollouts))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/static/{file}", get(pages::asset))
        .route("/metrics", get(live::metrics))
        .route("/events", get(live::events_all))
        .route("/rollouts/{id}", get(pages::rollout))
        .route("/rollouts/{id}/events", get(live::events))
        .route("/rollouts/{id}/tenants", get(tenants::tenants))
        .route("/rollouts/{id}/tenants/{tenant}", get(tenants::tenant))
        .route("/rollouts/{id}/{action}", post(actions::rollout))
        .route(
            "/rollouts/{id}/tenants/{tenant}/retry",
            post(actions::retry_tenant),
        )
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::guard,
        ))
        .with_state(app)
}

/// A bound server, ready to run (`addr` is where it listens: a port 0 is
/// the one the system gave).
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    pub addr: SocketAddr,
}

impl Server {
    /// Binds `opts.listen` over `store`, refusing a bind beyond loopback
    /// without tokens.
    pub async fn bind(store: StateStore, opts: ServeOptions) -> Result<Server, Error> {
        check_bind(&opts.listen, opts.tokens.as_ref())?;
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|e| Error::flag_value("--listen", opts.listen.to_string(), e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::flag_value("--listen", opts.listen.to_string(), e.to_string()))?;
        let app = Arc::new(App {
            gated: !opts.listen.ip().is_loopback(),
            store,
            opts,
            sessions: Default::default(),
            reports: Default::default(),
        });
        Ok(Server {
            listener,
            app,
            addr,
        })
    }

    /// `https://…` or `http://…`: where a browser finds it.
    pub fn url(&self) -> String {
        let scheme = if self.app.opts.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Serves until `stop` resolves (Ctrl-C, SIGTERM).
    pub async fn run(self, stop: impl std::future::Future<Output = ()> + Send + 'static) {
        let tls = self.app.opts.tls.clone();
        let app = router(self.app);
        let _ = match tls {
            Some(acceptor) => match tls::TlsListener::new(self.listener, acceptor) {
                Ok(l) => axum::serve(l, app).with_graceful_shutdown(stop).await,
                Err(e) => Err(e),
            },
            None => {
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
    }
}
