//! A lost connection to the store is an ordinary event: which store errors
//! may pass on their own, and an operation tried again while they do.

use std::time::Duration;

use crate::error::Error;

/// Whether a store's driver error may pass on its own: the connection
/// lost or refused (a server restarting), the server shutting down or
/// starting up, a transaction the server aborted (deadlock, serialization),
/// a busy SQLite file. What the store wrote before it is either committed
/// or rolled back whole, so the operation may run again.
pub(super) fn passes(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            // a SQLSTATE has five characters; SQLite's extended result
            // codes have at most four digits
            if code.len() == 5 {
                code.starts_with("08")
                    || matches!(
                        code.as_str(),
                        "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "53300"
                    )
            } else {
                // SQLite's extended result codes: BUSY and LOCKED
                code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
            }
        }
        _ => false,
    }
}

/// How long a state-store operation is tried again while it fails for a
/// reason that passes (`passes`): a PostgreSQL restart or a failover takes
/// seconds; past this, the error is the command's.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Runs the store operation `op` again, with a backoff of 50 ms doubling
/// to 2 s, while it fails for a reason that passes, for up to `PATIENCE`.
/// A lost connection to the store is an ordinary event: a worker waits it
/// out instead of exiting. `what` names the operation in the log.
pub async fn patiently<T, F, Fut>(what: &str, mut op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut wait = Duration::from_millis(50);
    loop {
        match op().await {
            Err(e) if e.is_transient_store() && std::time::Instant::now() + wait < deadline => {
                tracing::warn!("{what}: {e}; trying again in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            done => return done,
        }
    }
}
