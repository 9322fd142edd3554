//! A server's connections, kept for one command between its tenant
//! databases. A tenant's session takes an idle connection to the same
//! server (the same URL but for the database: same user, password and
//! options), resets it to a new connection's state (`COM_RESET_CONNECTION`,
//! through the patched sqlx-mysql of `vendor/`) and moves to its database
//! with `USE` in the same round trip as the session's `SET`: two round trips
//! where connecting takes a TCP handshake, the server's greeting, the
//! authentication exchange and a server thread.
//!
//! The reset is what makes the reuse safe: the server rolls back any open
//! transaction, drops temporary tables, releases table and named locks,
//! frees prepared statements and user variables, and puts every session
//! variable back to its global value, so nothing one tenant's migrations
//! set reaches the next tenant. A connection is only given back after its
//! session released the tenant's lock; one whose reset fails or stalls is
//! dropped and the tenant connects afresh, so a connection the server
//! closed in the meantime costs a round trip, never a tenant. A server that
//! does not know the reset (before MySQL 5.7.3 or MariaDB 10.2.4) answers
//! with an error and its connections are not kept again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::mysql::MySqlConnection;
use sqlx::{Connection, Executor};

/// How long a connection may idle before it is closed instead of reused.
const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// At most this many idle connections per server.
const IDLE_CAP: usize = 64;

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
    /// An idle connection to `url`'s server, reset, in `database`, with
    /// `setup` sent; `None` when there is none to reuse. `Err` is the
    /// server's refusal of the `USE` or of `setup` (a database that is not
    /// there, no privilege on it), as connecting to it would have failed.
    pub(super) async fn take(
        &self,
        url: &str,
        database: &str,
        setup: &str,
        wait: Duration,
    ) -> Result<Option<MySqlConnection>, sqlx::Error> {
        let key = server_key(url);
        loop {
            let (mut conn, since) = match self.pop(&key) {
                Some(c) => c,
                None => return Ok(None),
            };
            if since.elapsed() > IDLE_LIMIT {
                let _ = tokio::time::timeout(wait, conn.close()).await;
                continue;
            }
            match tokio::time::timeout(wait, conn.reset_session()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    if e.as_database_error().is_some() {
                        self.refuse(&key);
                    }
                    continue;
                }
                Err(_) => continue,
            }
            let moved = format!("USE {}; {setup}", super::quote_ident(database));
            return match tokio::time::timeout(wait, conn.execute(sqlx::AssertSqlSafe(moved))).await
            {
                Ok(Ok(_)) => Ok(Some(conn)),
                Ok(Err(e)) if e.as_database_error().is_some() => {
                    self.put(url, conn).await;
                    Err(e)
                }
                _ => continue,
            };
        }
    }

    fn pop(&self, key: &str) -> Option<(MySqlConnection, Instant)> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.by_server.get_mut(key)?.pop()
    }

    fn refuse(&self, key: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.refused.insert(key.to_string());
        state.by_server.remove(key);
    }

    /// Keeps `conn`, whose session released its lock, for the next tenant of
    /// its server; closes it when the server refused the reset or enough
    /// are idle, and closes those of any server idle too long.
    pub(super) async fn put(&self, url: &str, conn: MySqlConnection) {
        let key = server_key(url);
        let surplus = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let mut surplus = Vec::new();
            for idle in state.by_server.values_mut() {
                while idle.first().is_some_and(|(_, t)| t.elapsed() > IDLE_LIMIT) {
                    surplus.push(idle.remove(0).0);
                }
            }
            let refused = state.refused.contains(&key);
            let idle = state.by_server.entry(key).or_default();
            match refused || idle.len() >= IDLE_CAP {
                true => surplus.push(conn),
                false => idle.push((conn, Instant::now())),
            }
            surplus
        };
        for c in surplus {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.close()).await;
        }
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
