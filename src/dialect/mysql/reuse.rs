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

use sqlx::mysql::MySqlConnection;
use sqlx::{Connection, Executor};

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

#[derive(Default)]
struct State {
    by_server: HashMap<String, Vec<(MySqlConnection, Instant)>>,
    /// Servers that refused the reset.
    refused: HashSet<String>,
}

/// The server part of a tenant URL: the URL without its database.
fn server_key(url: &str) -> String {
    super::super::with_database(url, "")
}

impl Idle {
    /// An idle connection to `url`'s server, moved to `database` with
    /// `setup` sent, in one round trip; `None` when there is none to reuse.
    /// `Err` is the server's refusal of the `USE` or of `setup` (a database
    /// that is not there, no privilege on it), as connecting to it would
    /// have failed.
    pub(super) async fn take(
        &self,
        url: &str,
        database: &str,
        setup: &str,
        wait: Duration,
    ) -> Result<Option<MySqlConnection>, sqlx::Error> {
        let key = server_key(url);
        while let Some((mut conn, since)) = self.pop(&key) {
            if since.elapsed() > IDLE_LIMIT {
                let _ = tokio::time::timeout(wait, conn.close()).await;
                continue;
            }
            let moved = format!("USE {}; {setup}", super::quote_ident(database));
            match tokio::time::timeout(wait, conn.execute(sqlx::AssertSqlSafe(moved))).await {
                Ok(Ok(_)) => return Ok(Some(conn)),
                Ok(Err(e)) if e.as_database_error().is_some() => {
                    let _ = conn.close().await;
                    return Err(e);
                }
                // closed by the server meanwhile, or stalled: connect anew
                _ => continue,
            }
        }
        Ok(None)
    }

    /// The newest idle connection to the server `key`, with when it was
    /// kept.
    fn pop(&self, key: &str) -> Option<(MySqlConnection, Instant)> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.by_server.get_mut(key)?.pop()
    }

    /// Resets `conn`, whose session is over, and keeps it for the next
    /// tenant of its server. The reset rolls back what the session left
    /// open and releases its locks, the tenant's own among them, now rather
    /// than when the connection is next used. `Err` gives the connection
    /// back when its server refused the reset: the caller releases the
    /// tenant's lock and closes it. A connection that fails otherwise is
    /// dropped (the server ends its session, releasing everything).
    pub(super) async fn put(
        &self,
        url: &str,
        mut conn: MySqlConnection,
        wait: Duration,
    ) -> Result<(), MySqlConnection> {
        let key = server_key(url);
        if self.refused(&key) {
            return Err(conn);
        }
        match tokio::time::timeout(wait, conn.reset_session()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if super::error_number(&e) == Some(UNKNOWN_COMMAND) => {
                self.refuse(&key);
                return Err(conn);
            }
            _ => return Ok(()),
        }
        let surplus = self.keep(key, conn);
        for c in surplus {
            let _ = tokio::time::timeout(wait, c.close()).await;
        }
        Ok(())
    }

    /// Keeps `conn` as the server `key`'s newest idle connection; what is to
    /// be closed instead: any server's connections idle too long, `conn`
    /// when enough are idle.
    fn keep(&self, key: String, conn: MySqlConnection) -> Vec<MySqlConnection> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut surplus = Vec::new();
        for idle in state.by_server.values_mut() {
            while idle.first().is_some_and(|(_, t)| t.elapsed() > IDLE_LIMIT) {
                surplus.push(idle.remove(0).0);
            }
        }
        let idle = state.by_server.entry(key).or_default();
        match idle.len() >= IDLE_CAP {
            true => surplus.push(conn),
            false => idle.push((conn, Instant::now())),
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
                .flat_map(|(_, v)| v.into_iter().map(|(c, _)| c))
                .collect()
        };
        for c in all {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.close()).await;
        }
    }
}
