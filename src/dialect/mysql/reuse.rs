//! A server's connections, kept for one command between its tenant
//! databases. When a tenant's session closes, its connection is reset to a
//! new connection's state (`COM_RESET_CONNECTION`, through the patched
//! sqlx-mysql of `vendor/`) and kept; the next session on the same server
//! (the same URL but for the database: same user, password and options)
//! takes it and moves to its database with `USE` in the round trip of the
//! session's `SET`. The reset takes the round trip of the `RELEASE_LOCK` it
//! replaces, and the `USE` rides with the `SET`, where connecting takes a
//! TCP handshake, the server's greeting, the authentication exchange and a
//! server thread.
//!
//! The reset is what makes the reuse safe: the server rolls back any open
//! transaction, drops temporary tables, releases table locks and named
//! locks (the tenant's `GET_LOCK` among them), frees prepared statements
//! and user variables, and puts every session variable back to its global
//! value, so nothing one tenant's migrations set reaches the next tenant,
//! and nothing is held once a session is over. A reset is not a login, so
//! what a login gives is given again (`Fresh`): the `sql_mode` from the
//! server's global one, and the check that the role is the login's; a
//! server with an `init_connect` is not reused, a session that met an
//! error does not give its connection back (an XA transaction left
//! prepared survives a reset), and a connection serves a minute at most.
//! A connection that fails its reset, or the `USE` and `SET` of its next
//! tenant, is dropped and the tenant connects afresh (a database that is
//! not there is told by a new connection's error), so a connection the
//! server closed while it was kept costs a round trip, never a tenant. A
//! server that does not know the reset (before MySQL 5.7.3 or MariaDB
//! 10.2.4) refuses it with `ER_UNKNOWN_COM_ERROR`: its sessions release
//! their lock and close as before, and its connections are not kept.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::mysql::MySqlConnection;

/// How long a connection may idle before it is closed instead of reused.
const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// At most this many idle connections per server.
const IDLE_CAP: usize = 64;
/// `ER_UNKNOWN_COM_ERROR`: a server without `COM_RESET_CONNECTION`.
const UNKNOWN_COMMAND: u16 = 1047;

/// The idle connections of one command, by login (`login_key`).
#[derive(Default)]
pub(crate) struct Idle {
    state: Mutex<State>,
}

/// What a connection's login gave its session that a reset does not give
/// back, and when it logged in. The login adds `IGNORE_SPACE` to the
/// server's `sql_mode` (sqlx's client flag; a reset drops it): a kept
/// connection is set as `reused_sql_mode` says, which `fresh` checks gives
/// what a login gave. The login sets the user's default role, and a reset
/// keeps whatever role a migration set: a kept connection whose role is not
/// its login's is closed.
#[derive(Clone)]
pub(super) struct Fresh {
    role: Option<String>,
    born: Instant,
}

/// What a new connection's `sql_mode` has beyond the server's global one:
/// the login's `IGNORE_SPACE` and sqlx's additions (`text::SQL_MODE_ADDED`).
const ADDED_MODES: [&str; 3] = ["IGNORE_SPACE", "PIPES_AS_CONCAT", "NO_ENGINE_SUBSTITUTION"];

/// A kept connection's `sql_mode` assignment: a new connection's, from the
/// server's global one as it is now (as a login would take it), not as it
/// was when the connection logged in.
fn reused_sql_mode() -> String {
    format!(
        "sql_mode = (SELECT CONCAT(@@global.sql_mode, ',{}'))",
        ADDED_MODES.join(",")
    )
}

/// How long a connection serves before it is closed: changes to its account
/// (a lock, revoked privileges, a new default role), which reach a new
/// connection only, reach the fleet's within this.
const LIFETIME: Duration = Duration::from_secs(60);

type Kept = (MySqlConnection, Fresh, Instant);

#[derive(Default)]
struct State {
    by_login: HashMap<String, Vec<Kept>>,
    /// Logins whose connections are not kept: their server refused the
    /// reset, runs an `init_connect` a reset would skip, or cannot say what
    /// a new session is.
    refused: HashSet<String>,
}

/// Whether the last row of a reuse's round trip says the role is the one
/// the connection had when new and the server has no `init_connect`.
fn as_new(rows: &[sqlx::mysql::MySqlRow]) -> bool {
    use sqlx::Row;
    rows.last()
        .and_then(|r| r.try_get::<i64, _>(0).ok())
        .is_some_and(|same| same == 1)
}

/// The words of an `sql_mode`.
fn modes(sql_mode: &str) -> HashSet<&str> {
    sql_mode.split(',').filter(|m| !m.is_empty()).collect()
}

/// What a connection is, whatever its database: a tenant URL without it
/// (server, user, password, options).
fn login_key(url: &str) -> String {
    super::super::with_database(url, "")
}

impl Idle {
    /// What `conn`, just connected to `url`'s server and set up, had from
    /// its login; `None` when its connections are not to be kept: the server
    /// has an `init_connect` (run on a new connection only), or its login's
    /// `sql_mode` is not what `reused_sql_mode` gives, or it cannot say.
    pub(super) async fn fresh(&self, url: &str, conn: &mut MySqlConnection) -> Option<Fresh> {
        let key = login_key(url);
        if self.refused(&key) {
            return None;
        }
        // as text: a prepared statement would cost a round trip more
        let read = sqlx::raw_sql(
            "SELECT CAST(@@session.sql_mode AS CHAR), CAST(@@global.sql_mode AS CHAR), \
             CAST(CURRENT_ROLE() AS CHAR), CAST(@@global.init_connect AS CHAR)",
        )
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| {
            use sqlx::Row;
            Ok((
                r.try_get::<String, _>(0)?,
                r.try_get::<String, _>(1)?,
                r.try_get::<Option<String>, _>(2)?,
                r.try_get::<Option<String>, _>(3)?,
            ))
        });
        match read {
            Ok((session, global, role, init))
                if init.as_deref().is_none_or(str::is_empty)
                    && modes(&session)
                        == modes(&global).into_iter().chain(ADDED_MODES).collect() =>
            {
                Some(Fresh {
                    role,
                    born: Instant::now(),
                })
            }
            _ => {
                self.refuse(&key);
                None
            }
        }
    }

    /// An idle connection to `url`'s server made as a new one, moved to
    /// `database`, its `sql_mode` and `setup` (`text::session_setup`) set,
    /// in one round trip; `None` when there is none to reuse. One that fails
    /// this (a database not there, no privilege on it: a new connection
    /// says so with the right error), whose role a migration changed, whose
    /// server has an `init_connect` now, or that served its lifetime, is
    /// closed instead.
    pub(super) async fn take(
        &self,
        url: &str,
        database: &str,
        setup: &str,
        wait: Duration,
    ) -> Option<(MySqlConnection, Fresh)> {
        let key = login_key(url);
        while let Some((mut conn, fresh, since)) = self.pop(&key) {
            if since.elapsed() > IDLE_LIMIT || fresh.born.elapsed() > LIFETIME {
                let _ = tokio::time::timeout(wait, conn.close()).await;
                continue;
            }
            let role = fresh.role.as_deref().map_or("NULL".into(), super::literal);
            // roles are told apart by case: compared as bytes
            let moved = format!(
                "USE {}; SET {}, {setup}; \
                 SELECT CAST(CURRENT_ROLE() AS BINARY) <=> CAST({role} AS BINARY) \
                 AND COALESCE(@@global.init_connect, '') = ''",
                super::quote_ident(database),
                reused_sql_mode(),
            );
            let sent = sqlx::raw_sql(sqlx::AssertSqlSafe(moved)).fetch_all(&mut conn);
            match tokio::time::timeout(wait, sent).await {
                Ok(Ok(rows)) if as_new(&rows) => return Some((conn, fresh)),
                _ => {
                    let _ = tokio::time::timeout(wait, conn.close()).await;
                }
            }
        }
        // a new connection follows: none kept for other users or options
        // of the same server stays idle beside it, so a command holds no
        // more of a server's connections than it has sessions on it
        for c in self.evict_server(&key) {
            let _ = tokio::time::timeout(wait, c.close()).await;
        }
        None
    }

    /// Takes out every idle connection to the server of `key`
    /// (`tenant::server_of`, the per-server limit's key), whatever its
    /// user or options.
    fn evict_server(&self, key: &str) -> Vec<MySqlConnection> {
        let server = crate::tenant::server_of(key);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (k, idle) in state.by_login.iter_mut() {
            if crate::tenant::server_of(k) == server {
                out.extend(idle.drain(..).map(|(c, _, _)| c));
            }
        }
        out
    }

    /// The newest idle connection to the server `key`, with when it was
    /// kept.
    fn pop(&self, key: &str) -> Option<Kept> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.by_login.get_mut(key)?.pop()
    }

    /// Resets `conn`, whose session is over, and keeps it for the next
    /// tenant of its server with what it was like when new. The reset rolls
    /// back what the session left open and releases its locks, the
    /// tenant's own among them, now rather than when the connection is next
    /// used. `Err` gives the connection back, for the caller to release the
    /// tenant's lock and close it, when it is not to be kept (`fresh` is
    /// `None`: the caller's session failed, and may have left a state the
    /// reset does not clear, such as an XA transaction prepared) or its
    /// server refused the reset. A connection that fails otherwise is
    /// dropped (the server ends its session, releasing everything).
    pub(super) async fn put(
        &self,
        url: &str,
        mut conn: MySqlConnection,
        fresh: Option<Fresh>,
        wait: Duration,
    ) -> Result<(), MySqlConnection> {
        let key = login_key(url);
        let Some(fresh) = fresh.filter(|_| !self.refused(&key)) else {
            return Err(conn);
        };
        match tokio::time::timeout(wait, conn.reset_session()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if super::error_number(&e) == Some(UNKNOWN_COMMAND) => {
                self.refuse(&key);
                return Err(conn);
            }
            _ => return Ok(()),
        }
        let surplus = self.keep(key, (conn, fresh, Instant::now()));
        for c in surplus {
            let _ = tokio::time::timeout(wait, c.close()).await;
        }
        Ok(())
    }

    /// Keeps `conn` as the server `key`'s newest idle connection; what is to
    /// be closed instead: any server's connections idle too long, `conn`
    /// when enough are idle.
    fn keep(&self, key: String, kept: Kept) -> Vec<MySqlConnection> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut surplus = Vec::new();
        for idle in state.by_login.values_mut() {
            while idle
                .first()
                .is_some_and(|(_, _, t)| t.elapsed() > IDLE_LIMIT)
            {
                surplus.push(idle.remove(0).0);
            }
        }
        let idle = state.by_login.entry(key).or_default();
        match idle.len() >= IDLE_CAP {
            true => surplus.push(kept.0),
            false => idle.push(kept),
        }
        surplus
    }

    fn refused(&self, key: &str) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.refused.contains(key)
    }

    fn refuse(&self, key: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.refused.insert(key.to_string());
        state.by_login.remove(key);
    }

    /// Closes every idle connection (end of a command).
    pub(crate) async fn close(&self) {
        let all: Vec<MySqlConnection> = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .by_login
                .drain()
                .flat_map(|(_, v)| v.into_iter().map(|(c, _, _)| c))
                .collect()
        };
        for c in all {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.close()).await;
        }
    }
}
