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

/// The idle connections of one command, by server.
#[derive(Default)]
pub(crate) struct Idle {
    state: Mutex<State>,
}

/// What a connection's login gave its session that a reset does not give
/// back, and when it logged in. The login adds `IGNORE_SPACE` to the
/// server's `sql_mode` (sqlx's client flag; a reset drops it): a kept
/// connection is set as `REUSED_SQL_MODE` says, which `fresh` checks gives
/// what a login gave. The login sets the user's default role, and a reset
/// keeps whatever role a migration set: a kept connection whose role is not
/// its login's is closed.
#[derive(Clone)]
pub(super) struct Fresh {
    role: Option<String>,
    born: Instant,
}

/// A kept connection's `sql_mode`: a new connection's, from the server's
/// global one as it is now (as a login would take it), not as it was when
/// the connection logged in.
const REUSED_SQL_MODE: &str = "sql_mode = (SELECT CONCAT(@@global.sql_mode, \
     ',IGNORE_SPACE,PIPES_AS_CONCAT,NO_ENGINE_SUBSTITUTION'))";
/// The words `REUSED_SQL_MODE` adds to the global `sql_mode`.
const ADDED_MODES: [&str; 3] = ["IGNORE_SPACE", "PIPES_AS_CONCAT", "NO_ENGINE_SUBSTITUTION"];

/// How long a connection serves before it is closed: changes to its account
/// (a lock, revoked privileges, a new default role), which reach a new
/// connection only, reach the fleet's within this.
const LIFETIME: Duration = Duration::from_secs(60);

type Kept = (MySqlConnection, Fresh, Instant);

#[derive(Default)]
struct State {
    by_server: HashMap<String, Vec<Kept>>,
    /// Servers whose connections are not kept: they refused the reset, run
    /// an `init_connect` a reset would skip, or cannot say what a fresh
    /// session is.
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

/// The host and port of a server key.
fn host_of(key: &str) -> Option<(String, Option<u16>)> {
    let u = url::Url::parse(key).ok()?;
    Some((u.host_str()?.to_string(), u.port()))
}

/// The server part of a tenant URL: the URL without its database.
fn server_key(url: &str) -> String {
    super::super::with_database(url, "")
}

impl Idle {
    /// What `conn`, just connected to `url`'s server and set up, had from
    /// its login; `None` when its connections are not to be kept: the server
    /// has an `init_connect` (run on a new connection only), or its login's
    /// `sql_mode` is not what `REUSED_SQL_MODE` gives, or it cannot say.
    pub(super) async fn fresh(&self, url: &str, conn: &mut MySqlConnection) -> Option<Fresh> {
        let key = server_key(url);
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
                        == modes(&global)
                            .union(&modes(&ADDED_MODES.join(",")))
                            .copied()
                            .collect() =>
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
        let key = server_key(url);
        while let Some((mut conn, fresh, since)) = self.pop(&key) {
            if since.elapsed() > IDLE_LIMIT || fresh.born.elapsed() > LIFETIME {
                let _ = tokio::time::timeout(wait, conn.close()).await;
                continue;
            }
            let role = fresh.role.as_deref().map_or("NULL".into(), super::literal);
            // roles are told apart by case: compared as bytes
            let moved = format!(
                "USE {}; SET {REUSED_SQL_MODE}, {setup}; \
                 SELECT CAST(CURRENT_ROLE() AS BINARY) <=> CAST({role} AS BINARY) \
                 AND COALESCE(@@global.init_connect, '') = ''",
                super::quote_ident(database),
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
        for c in self.evict_host(&key) {
            let _ = tokio::time::timeout(wait, c.close()).await;
        }
        None
    }

    /// Takes out every idle connection to the host and port of `key`.
    fn evict_host(&self, key: &str) -> Vec<MySqlConnection> {
        let host = host_of(key);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (k, idle) in state.by_server.iter_mut() {
            if host_of(k) == host {
                out.extend(idle.drain(..).map(|(c, _, _)| c));
            }
        }
        out
    }

    /// The newest idle connection to the server `key`, with when it was
    /// kept.
    fn pop(&self, key: &str) -> Option<Kept> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.by_server.get_mut(key)?.pop()
    }

    /// Resets `conn`, whose session is over, and keeps it for the next
    /// tenant of its server with what it was like when new (`None`: not
    /// to be kept, the caller passes `None` for a session that failed, as
    /// a connection may be left in a state the reset does not clear, such
    /// as an XA transaction prepared; `Err` gives it back). The reset rolls back what the session left
    /// open and releases its locks, the tenant's own among them, now rather
    /// than when the connection is next used. `Err` gives the connection
    /// back when its server refused the reset: the caller releases the
    /// tenant's lock and closes it. A connection that fails otherwise is
    /// dropped (the server ends its session, releasing everything).
    pub(super) async fn put(
        &self,
        url: &str,
        mut conn: MySqlConnection,
        fresh: Option<Fresh>,
        wait: Duration,
    ) -> Result<(), MySqlConnection> {
        let key = server_key(url);
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
        for idle in state.by_server.values_mut() {
            while idle
                .first()
                .is_some_and(|(_, _, t)| t.elapsed() > IDLE_LIMIT)
            {
                surplus.push(idle.remove(0).0);
            }
        }
        let idle = state.by_server.entry(key).or_default();
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
        state.by_server.remove(key);
    }

    /// Closes every idle connection (end of a command).
    pub(crate) async fn close(&self) {
        let all: Vec<MySqlConnection> = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .by_server
                .drain()
                .flat_map(|(_, v)| v.into_iter().map(|(c, _, _)| c))
                .collect()
        };
        for c in all {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.close()).await;
        }
    }
}
