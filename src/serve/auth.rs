//! Who is asking: the operators' tokens (`--tokens-file`), the session
//! cookie the login form sets, a `Authorization: Bearer` token for scripts
//! and Prometheus, and the guard every request passes: an action needs an
//! operator and a request from this server's own origin; bound beyond
//! loopback, every page needs an operator.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Form, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::App;
use super::pages::page;
use crate::error::Error;

/// The session cookie's name.
const COOKIE: &str = "fleetmig_session";

/// How long a sign-in lasts: a cookie taken from a browser is no key for
/// ever (the cookie's Max-Age says the same to the browser).
pub(super) const SESSION_LIFE: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// How long a sign-in with an unknown token waits before it is answered:
/// guessing is slow.
const REFUSED_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a session signed in at `at` still holds at `now`.
fn fresh(at: std::time::Instant, now: std::time::Instant) -> bool {
    now.saturating_duration_since(at) < SESSION_LIFE
}

/// A token shorter than this is refused (guessable).
const MIN_TOKEN: usize = 16;

/// The operators and their tokens, from `--tokens-file`: one `NAME TOKEN`
/// per line, `#` comments. Never printed (Debug shows the names only).
#[derive(Clone)]
pub struct Tokens(Vec<(String, String)>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "Tokens({names:?})")
    }
}

impl Tokens {
    /// Reads `path`, refusing (naming the file and line, never the token)
    /// a file others may read, a line without a name and a token, a short
    /// token, a name or token given twice, or a file with no token.
    pub fn read(path: &Path) -> Result<Tokens, Error> {
        let shown = path.display().to_string();
        let bad = |m: String| Error::flag_value("--tokens-file", &shown, m);
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(bad(format!(
                    "may be read by others (mode {:o}): chmod 600 it",
                    meta.permissions().mode() & 0o777
                )));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut tokens: Vec<(String, String)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |m: &str| bad(format!("line {}: {m}", i + 1));
            let mut words = line.split_whitespace();
            let (Some(name), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err(at(
                    "want `NAME TOKEN` (an operator's name, one space, their token)",
                ));
            };
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
            {
                return Err(at("a name is letters, digits and . _ @ -"));
            }
            if token.len() < MIN_TOKEN {
                return Err(at(&format!(
                    "the token is shorter than {MIN_TOKEN} characters (openssl rand -hex 24 makes one)"
                )));
            }
            if tokens.iter().any(|(n, _)| n == name) {
                return Err(at(&format!("{name} is named twice")));
            }
            if tokens.iter().any(|(_, t)| t == token) {
                return Err(at(
                    "this token is given twice (each operator has their own)",
                ));
            }
            tokens.push((name.to_string(), token.to_string()));
        }
        if tokens.is_empty() {
            return Err(bad("holds no token".into()));
        }
        Ok(Tokens(tokens))
    }

    /// The operator whose token is `given` (every token compared in full:
    /// the time taken does not say how much of one matched).
    fn operator(&self, given: &str) -> Option<&str> {
        let mut found = None;
        for (name, token) in &self.0 {
            if same(token.as_bytes(), given.as_bytes()) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// Constant-time equality of two byte strings of the same length.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The operator a request comes from, by its session cookie or bearer
/// token; and whether it came by the cookie (a browser).
pub(super) fn who(app: &App, headers: &HeaderMap) -> Option<(String, bool)> {
    let tokens = app.opts.tokens.as_ref()?;
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return tokens
            .operator(token.trim())
            .map(|n| (n.to_string(), false));
    }
    let session = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")))?;
    let (name, at) = app.sessions.get(session).map(|s| s.clone())?;
    if !fresh(at, std::time::Instant::now()) {
        app.sessions.remove(session);
        return None;
    }
    Some((name, true))
}

/// Whether a browser's request comes from this server's own pages: its
/// `Origin` is this host (a form posted from another site carries that
/// site's origin; SameSite=Strict already keeps the cookie from it).
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s != "same-origin" && s != "none")
    {
        return false;
    }
    match (host, origin) {
        (Some(host), Some(origin)) => origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o == host),
        _ => false,
    }
}

/// Whether the request's `Host` names this machine: localhost, a
/// loopback address, with or without a port.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The operator of this request, for the handlers (the guard put it there).
#[derive(Clone, Debug)]
pub(super) struct Operator(pub Option<String>);

/// Every request passes here first.
pub(super) async fn guard(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    // bound to loopback, a page is only for this machine: a request that
    // names another host is a page elsewhere that rebound its name to
    // 127.0.0.1 (DNS rebinding) to read this one
    if !app.gated && !loopback_host(req.headers()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "refused: this server listens on loopback and answers only to its own address",
        );
    }
    let who = who(&app, req.headers());
    let path = req.uri().path().to_string();
    let open = path == "/login" || path.starts_with("/static/");
    if req.method() == Method::POST && path != "/login" {
        if app.opts.tokens.is_none() {
            return refuse(
                StatusCode::FORBIDDEN,
                "read-only: this fleetmig serve was started without --tokens-file",
            );
        }
        let Some((_, by_cookie)) = &who else {
            return refuse(StatusCode::FORBIDDEN, "sign in first: actions need a token");
        };
        if *by_cookie && !same_origin(req.headers()) {
            return refuse(
                StatusCode::FORBIDDEN,
                "refused: the request did not come from this server's own pages",
            );
        }
    } else if app.gated && who.is_none() && !open {
        if path == "/metrics" || path.ends_with("events") {
            return refuse(StatusCode::UNAUTHORIZED, "a token is needed");
        }
        return Redirect::to("/login").into_response();
    }
    req.extensions_mut().insert(Operator(who.map(|w| w.0)));
    let mut res = next.run(req).await;
    // no page of this server inside another's frame (a page on another
    // port of this host is the same site for the cookie)
    let h = res.headers_mut();
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("frame-ancestors 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    res
}

fn refuse(status: StatusCode, why: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        why,
    )
        .into_response()
}

pub(super) async fn login_form(State(app): State<Arc<App>>) -> Response {
    let body = if app.opts.tokens.is_none() {
        html! { p { "This server is read-only: it was started without --tokens-file." } }
    } else {
        html! {
            form method="post" action="/login" class="login" {
                label for="token" { "Your operator token" }
                input type="password" id="token" name="token" autocomplete="current-password" required;
                button type="submit" id="sign-in" { "Sign in" }
            }
        }
    };
    page("Sign in", None, None, body).into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

pub(super) async fn login(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if headers.contains_key(header::ORIGIN) && !same_origin(&headers) {
        return refuse(StatusCode::FORBIDDEN, "refused: another origin");
    }
    let Some(name) = app
        .opts
        .tokens
        .as_ref()
        .and_then(|t| t.operator(f.token.trim()))
    else {
        tracing::warn!("serve: a sign-in with an unknown token");
        tokio::time::sleep(REFUSED_WAIT).await;
        return (
            StatusCode::UNAUTHORIZED,
            page(
                "Sign in",
                None,
                None,
                html! { p.error { "That token is not one of this server's." } a href="/login" { "Try again" } },
            ),
        )
            .into_response();
    };
    let session: String = rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let now = std::time::Instant::now();
    app.sessions.retain(|_, (_, at)| fresh(*at, now));
    app.sessions
        .insert(session.clone(), (name.to_string(), now));
    tracing::info!("serve: {name} signed in");
    let secure = if app.opts.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_LIFE.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

pub(super) async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    for c in headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
    {
        if let Some(s) = c.trim().strip_prefix(&format!("{COOKIE}=")) {
            app.sessions.remove(s);
        }
    }
    let gone = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, gone)], Redirect::to("/")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str, mode: u32) -> tempfile::NamedTempFile {
        use std::os::unix::fs::PermissionsExt;
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn a_session_lasts_twelve_hours_and_no_longer() {
        let at = std::time::Instant::now();
        assert!(fresh(at, at));
        assert!(fresh(
            at,
            at + SESSION_LIFE - std::time::Duration::from_secs(1)
        ));
        assert!(!fresh(at, at + SESSION_LIFE));
        assert!(!fresh(at, at + SESSION_LIFE * 2));
    }

    #[test]
    fn only_this_machine_s_names_reach_a_loopback_server() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, v.parse().unwrap());
            loopback_host(&m)
        };
        for ok in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:8080",
            "127.5.5.5",
        ] {
            assert!(h(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "[::2]:80",
        ] {
            assert!(!h(bad), "{bad}");
        }
        assert!(!loopback_host(&HeaderMap::new()));
    }

    #[test]
    fn a_tokens_file_is_read_or_refused_by_line_never_showing_a_token() {
        let ok = file(
            "# ops\nalice 0123456789abcdef0123\n\nbob   fedcba9876543210fedc\n",
            0o600,
        );
        let t = Tokens::read(ok.path()).unwrap();
        assert_eq!(t.operator("fedcba9876543210fedc"), Some("bob"));
        assert_eq!(t.operator("fedcba9876543210fedd"), None);
        assert!(!format!("{t:?}").contains("0123456789"));
        for (text, mode, says) in [
            ("alice 0123456789abcdef0123\n", 0o644, "chmod 600"),
            ("alice\n", 0o600, "line 1: want `NAME TOKEN`"),
            ("alice short-token\n", 0o600, "line 1: the token is shorter"),
            (
                "a 0123456789abcdef0123\na 1123456789abcdef0123\n",
                0o600,
                "line 2: a is named twice",
            ),
            (
                "a 0123456789abcdef0123\nb 0123456789abcdef0123\n",
                0o600,
                "line 2: this token is given twice",
            ),
            ("# nobody\n", 0o600, "holds no token"),
        ] {
            let f = file(text, mode);
            let e = Tokens::read(f.path()).unwrap_err().to_string();
            assert!(e.contains("--tokens-file") && e.contains(says), "{e}");
            assert!(!e.contains("0123456789abcdef"), "{e}");
        }
    }
}
