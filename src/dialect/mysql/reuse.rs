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
//! and nothing is held once a session is over. A connection whose reset
//! fails or stalls is dropped (the server ends its session), and one the
//! server closed while it was kept costs the next tenant a fresh
//! connection, never a failure. A server that does not know the reset
//! (before MySQL 5.7.3 or MariaDB 10.2.4) refuses it with
//! `ER_UNKNOWN_COM_ERROR`: its sessions release their lock and close as
//! before, and its connections are not kept.

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

/// What a connection's session was right after connecting and the
/// session's `SET`, which a reset does not give back: the `sql_mode` (the
/// login adds `IGNORE_SPACE` for sqlx's client flag) and the current role
/// (the login sets the user's default role; a reset keeps whatever a
/// migration set).
#[derive(Clone)]
pub(super) struct Fresh {
    sql_mode: String,
    role: Option<String>,
}

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
/// the connection had when new.
fn same_role(rows: &[sqlx::mysql::MySqlRow]) -> bool {
    use sqlx::Row;
    rows.last()
        .and_then(|r| r.try_get::<i64, _>(0).ok())
        .is_some_and(|same| same == 1)
}

/// The server part of a tenant URL: the URL without its database.
fn server_key(url: &str) -> String {
    super::super::with_database(url, "")
}

impl Idle {
    /// What `conn`, just connected to `url`'s server and set up, is like,
    /// for a reused connection to be made so again; `None` when its
    /// connections are not to be kept (the server has an `init_connect`,
    /// which runs on a new connection only, or cannot say).
    pub(super) async fn fresh(&self, url: &str, conn: &mut MySqlConnection) -> Option<Fresh> {
        let key = server_key(url);
        if self.refused(&key) {
            return None;
        }
        // as text: a prepared statement would cost a round trip more
        let read = sqlx::raw_sql(
            "SELECT CAST(@@session.sql_mode AS CHAR), CAST(CURRENT_ROLE() AS CHAR), \
             CAST(@@global.init_connect AS CHAR)",
        )
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| {
            use sqlx::Row;
            Ok((
                r.try_get::<String, _>(0)?,
                r.try_get::<Option<String>, _>(1)?,
                r.try_get::<Option<String>, _>(2)?,
            ))
        });
        match read {
            Ok((sql_mode, role, init)) if init.as_deref().is_none_or(|i| i.trim().is_empty()) => {
                Some(Fresh { sql_mode, role })
            }
            _ => {
                self.refuse(&key);
                None
            }
        }
    }

    /// An idle connection to `url`'s server made as it was when new, moved
    /// to `database`, its `sql_mode` and `setup` (`text::session_setup`)
    /// set, in one round trip; `None` when
    /// there is none to reuse. One whose role a migration changed is
    /// closed instead. `Err` is the server's refusal of the `USE` or of
    /// `setup` (a database that is not there, no privilege on it), as
    /// connecting to it would have failed.
    pub(super) async fn take(
        &self,
        url: &str,
        database: &str,
        setup: &str,
        wait: Duration,
    ) -> Result<Option<(MySqlConnection, Fresh)>, sqlx::Error> {
        let key = server_key(url);
        while let Some((mut conn, fresh, since)) = self.pop(&key) {
            if since.elapsed() > IDLE_LIMIT {
                let _ = tokio::time::timeout(wait, conn.close()).await;
                continue;
            }
            let moved = format!(
                "USE {}; SET sql_mode = {}, {setup}; SELECT CURRENT_ROLE() <=> {}",
                super::quote_ident(database),
                super::literal(&fresh.sql_mode),
                fresh.role.as_deref().map_or("NULL".into(), super::literal),
            );
            let sent = sqlx::raw_sql(sqlx::AssertSqlSafe(moved)).fetch_all(&mut conn);
            match tokio::time::timeout(wait, sent).await {
                Ok(Ok(rows)) if same_role(&rows) => return Ok(Some((conn, fresh))),
                Ok(Err(e)) if e.as_database_error().is_some() => {
                    let _ = conn.close().await;
                    return Err(e);
                }
                // another role, closed by the server meanwhile, or stalled:
                // connect anew
                _ => {
                    let _ = tokio::time::timeout(wait, conn.close()).await;
                }
            }
        }
        Ok(None)
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
