//! The state store: where rollouts and per-tenant runs are kept durably, so
//! that a crashed or interrupted rollout resumes and one tenant can be retried
//! the next morning. A SQLite file by default (`.fleetmig/state.db`), or a
//! PostgreSQL URL for a control plane shared by several coordinators. Both go
//! through sqlx's `Any` driver with portable SQL (`$N` placeholders, epoch
//! milliseconds for times); the schema is versioned and migrates itself
//! (`schema`). Rows are typed records (`records`) whose statuses are enums
//! (`status`); `rollouts` holds what concerns a rollout and its waves and
//! claim, `runs` what concerns its tenants.
//!
//! The tenant's own history stays the truth about what is applied: this store
//! records what fleetmig did and decided (plans, waves, gates, attempts).

mod fold;
pub mod moves;
mod patience;
mod prune;
mod records;
mod rollouts;
mod runs;
mod schema;
pub mod status;
mod view;
mod waves;
mod workers;

pub use fold::{ASKED, Folded};

/// How many tenants one statement names by key (`tenant_in`).
const BY_KEY: usize = 500;

/// `tenant IN ($from, …)` for `n` tenants, the placeholders numbered from
/// `from` (the caller binds the tenants after its own parameters).
fn tenant_in(from: usize, n: usize) -> String {
    let marks: Vec<String> = (from..from + n).map(|i| format!("${i}")).collect();
    format!("tenant IN ({})", marks.join(", "))
}
pub use moves::MoveRecord;
use patience::passes;
pub use patience::{PATIENCE, patiently};
pub use prune::{Keep, PruneOutcome, Pruned};
pub use records::{
    Backfill, Earlier, Finish, RolloutRecord, RunError, TenantRun, TenantUpdate, WaveRecord,
    WaveTally,
};
pub use schema::SCHEMA_VERSION;
pub use status::{Request, RolloutStatus, RunStatus, WaveStatus};
pub use view::{Action, GateRecord, Requeue, TenantFilter};
pub use workers::{Seen, WorkerRecord};

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::error::Error;
use crate::tenant::redact_url;

/// The wave of the names discovery refused: they fail without running and
/// belong to no wave, so no wave's gate counts them.
pub const REFUSED_WAVE: i64 = -1;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn store_err<E: std::fmt::Display + 'static>(location: &str, e: E) -> Error {
    let transient = (&e as &dyn std::any::Any)
        .downcast_ref::<sqlx::Error>()
        .is_some_and(passes);
    Error::State {
        location: location.to_string(),
        message: crate::tenant::scrub_secrets(&e.to_string(), [location]),
        transient,
    }
}

/// Whether opening a store may create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Commands that record rollouts create the store where it is missing.
    Create,
    /// Commands that act on what was recorded (resume, retry, pause) need
    /// one, and bring its schema up to date.
    Existing,
    /// Commands that only read (status, history, report) need one at this
    /// fleetmig's schema, and write nothing to it (a role that may only read
    /// it is enough).
    Read,
}

/// Where a store is, from `--state`: a PostgreSQL URL (any case of
/// `postgres://` or `postgresql://`), a `sqlite:` URL, or a file path.
/// Anything else that looks like a URL is refused (with its password
/// redacted), never taken for a file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Postgres(String),
    File(std::path::PathBuf),
}

impl Location {
    pub fn parse(spec: &str) -> Result<Location, Error> {
        let bad = |why: &str| {
            Error::flag_value(
                "--state",
                crate::tenant::redact_loose(spec),
                format!("{why}; give a file path or a postgres:// URL"),
            )
        };
        let Some((scheme, rest)) = spec.split_once(':') else {
            return Ok(Location::File(spec.into()));
        };
        let scheme_like = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'));
        let server = matches!(
            scheme.to_ascii_lowercase().as_str(),
            "postgres" | "postgresql" | "mysql" | "mariadb"
        );
        if !scheme_like || (!rest.starts_with('/') && !server) {
            return Ok(Location::File(spec.into()));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => match rest.strip_prefix("//") {
                Some(r) if !r.is_empty() => {
                    let url = format!("postgres://{r}");
                    crate::tenant::check_server_url(&url).map_err(|e| {
                        Error::flag(
                            "--state",
                            format!("{e}; give a file path or a postgres:// URL"),
                        )
                    })?;
                    Ok(Location::Postgres(url))
                }
                _ => Err(bad("a postgres URL starts with postgres://")),
            },
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                Ok(Location::File(path.into()))
            }
            other => Err(bad(&format!(
                "{other}: is not a state store fleetmig knows"
            ))),
        }
    }
}

/// The open store.
#[derive(Clone)]
pub struct StateStore {
    pool: AnyPool,
    /// Where the store is, redacted, for messages.
    pub location: String,
    postgres: bool,
}

/// Who holds a rollout: `pid@host:nonce`.
pub fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!(
        "{}@{}:{:08x}",
        std::process::id(),
        host,
        rand::random::<u32>()
    )
}

/// Whether the claim `owner` is dead: its heartbeat is older than `lease`, or
/// it was taken on this host by a process that no longer exists.
pub fn claim_is_stale(owner: Option<&str>, heartbeat_at: Option<i64>, lease: Duration) -> bool {
    let Some(owner) = owner else { return true };
    if heartbeat_at.is_none_or(|h| now_ms() - h > lease.as_millis() as i64) {
        return true;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if let Some((pid, rest)) = owner.split_once('@') {
        let claim_host = rest.rsplit_once(':').map(|(h, _)| h).unwrap_or(rest);
        if claim_host == host
            && let Ok(pid) = pid.parse::<u32>()
        {
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
                && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| !s.contains(") Z "))
                    .unwrap_or(false);
            return !alive;
        }
    }
    false
}

/// One connection to the PostgreSQL store at `url` first: a refused port or
/// a wrong password is said at once, as the server says it (the pool
/// retries until its timeout and then says only "pool timed out").
async fn reachable(url: &str, location: &str, connect_timeout: Duration) -> Result<(), Error> {
    use sqlx::Connection;
    match tokio::time::timeout(connect_timeout, sqlx::AnyConnection::connect(url)).await {
        Ok(Ok(c)) => {
            let _ = c.close().await;
        }
        Ok(Err(e)) => {
            let said = crate::tenant::scrub_secrets(&e.to_string(), [url]);
            return Err(store_err(location, format!("cannot connect: {said}")));
        }
        Err(_) => {
            return Err(store_err(
                location,
                format!(
                    "connecting timed out after {} (--connect-timeout)",
                    humantime::format_duration(connect_timeout)
                ),
            ));
        }
    }
    Ok(())
}

impl StateStore {
    /// Opens the store at `spec` (a file path, or a `postgres://` URL),
    /// creating it where needed (`Open::Create`) or only if it exists
    /// (`Open::Existing`, for commands that read what rollouts recorded).
    /// Connecting is bounded by `connect_timeout`.
    pub async fn open(
        spec: &str,
        mode: Open,
        connect_timeout: Duration,
    ) -> Result<StateStore, Error> {
        sqlx::any::install_default_drivers();
        let (url, location, postgres) = match Location::parse(spec)? {
            Location::Postgres(url) => {
                let location = redact_url(&url);
                (url, location, true)
            }
            Location::File(path) => {
                let location = path.display().to_string();
                if !path.exists() {
                    if mode != Open::Create {
                        return Err(store_err(
                            &location,
                            "no state store here: no rollout has been recorded with it yet \
                             (check --state)",
                        ));
                    }
                    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                        std::fs::create_dir_all(parent).map_err(|e| store_err(&location, e))?;
                    }
                }
                (
                    format!("sqlite://{}?mode=rwc", path.display()),
                    location,
                    false,
                )
            }
        };
        if postgres {
            reachable(&url, &location, connect_timeout).await?;
        }
        let connecting = AnyPoolOptions::new()
            .max_connections(if postgres { 4 } else { 1 })
            .acquire_timeout(connect_timeout)
            // no maintenance task: see `dialect::postgres::Pools`
            .idle_timeout(None)
            .max_lifetime(None)
            .connect(&url);
        let pool = match tokio::time::timeout(connect_timeout, connecting).await {
            Ok(pool) => pool.map_err(|e| store_err(&location, e))?,
            Err(_) => {
                return Err(store_err(
                    &location,
                    format!(
                        "connecting timed out after {} (--connect-timeout)",
                        humantime::format_duration(connect_timeout)
                    ),
                ));
            }
        };
        let store = StateStore {
            pool,
            location,
            postgres,
        };
        if !postgres {
            store.refuse_foreign().await?;
            store.tune_sqlite().await?;
        }
        // a command that only reads neither creates nor upgrades the store:
        // it works with a role that may only read it
        if mode == Open::Read {
            store.readable().await?;
            return Ok(store);
        }
        match tokio::time::timeout(
            connect_timeout.max(Duration::from_secs(30)),
            store.migrate(),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => return Err(store.err("preparing the store's schema timed out")),
        }
        Ok(store)
    }

    /// WAL (readers such as status and report never wait for the writer),
    /// a busy timeout, and `synchronous = NORMAL`.
    async fn tune_sqlite(&self) -> Result<(), Error> {
        for pragma in [
            "PRAGMA journal_mode = WAL",
            "PRAGMA busy_timeout = 10000",
            "PRAGMA synchronous = NORMAL",
        ] {
            sqlx::query(pragma)
                .execute(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// A SQLite file that holds another application's tables is not a state
    /// store: refused, never extended.
    async fn refuse_foreign(&self) -> Result<(), Error> {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let ours = tables.iter().any(|t| t == "fleetmig_meta");
        let foreign: Vec<&str> = tables
            .iter()
            .filter(|t| !t.starts_with("fleetmig_"))
            .map(String::as_str)
            .collect();
        if !ours && !foreign.is_empty() {
            return Err(self.err(format!(
                "the file holds tables that are not fleetmig's ({}): refusing to use it as a state store \
                 (point --state at a file of its own)",
                foreign.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(())
    }

    fn err(&self, e: impl std::fmt::Display + 'static) -> Error {
        store_err(&self.location, e)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_store_errors_that_pass_are_tried_again() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(store_err("s", sqlx::Error::Io(reset)).is_transient_store());
        assert!(store_err("s", sqlx::Error::PoolTimedOut).is_transient_store());
        assert!(!store_err("s", sqlx::Error::RowNotFound).is_transient_store());
        // a message is never taken for a lost connection
        assert!(!store_err("s", "error communicating with database").is_transient_store());
    }

    #[tokio::test]
    async fn patiently_tries_again_only_while_it_passes() {
        let tries = std::sync::atomic::AtomicUsize::new(0);
        let got = patiently("test", || async {
            match tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 | 1 => Err(store_err("s", sqlx::Error::PoolTimedOut)),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!((got.ok(), tries.into_inner()), (Some(7), 3));
        let tries = std::sync::atomic::AtomicUsize::new(0);
        let got: Result<(), Error> = patiently("test", || async {
            tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(store_err("s", sqlx::Error::RowNotFound))
        })
        .await;
        assert!(got.is_err());
        assert_eq!(tries.into_inner(), 1);
    }

    #[test]
    fn claims_expire_by_lease_or_by_a_dead_local_process() {
        let lease = Duration::from_secs(30);
        assert!(claim_is_stale(None, None, lease));
        let me = owner_id();
        assert!(
            !claim_is_stale(Some(&me), Some(now_ms()), lease),
            "a live claim"
        );
        assert!(
            claim_is_stale(Some(&me), Some(now_ms() - 31_000), lease),
            "heartbeat too old"
        );
        let host = me
            .split_once('@')
            .unwrap()
            .1
            .rsplit_once(':')
            .unwrap()
            .0
            .to_string();
        let dead = format!("{}@{host}:00000000", u32::MAX - 7);
        assert!(
            claim_is_stale(Some(&dead), Some(now_ms()), lease),
            "a dead local pid"
        );
        let remote = "1@some-other-host:00000000";
        assert!(
            !claim_is_stale(Some(remote), Some(now_ms()), lease),
            "a remote claim lives by its lease"
        );
    }

    #[test]
    fn state_locations_parse_case_insensitively_and_refuse_lookalikes() {
        assert_eq!(
            Location::parse("POSTGRES://u:p@h/db").unwrap(),
            Location::Postgres("postgres://u:p@h/db".into())
        );
        assert_eq!(
            Location::parse("PostgreSQL://h/db").unwrap(),
            Location::Postgres("postgres://h/db".into())
        );
        assert_eq!(
            Location::parse(".fleetmig/state.db").unwrap(),
            Location::File(".fleetmig/state.db".into())
        );
        assert_eq!(
            Location::parse("sqlite://x/s.db").unwrap(),
            Location::File("x/s.db".into())
        );
        for bad in [
            "postgres:/u:hunter2@h/db",
            "postgress://u:hunter2@h/db",
            "mysql://u:hunter2@h/db",
        ] {
            let e = Location::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("--state"), "{e}");
        }
    }
}
