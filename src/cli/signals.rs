//! Ctrl-C and SIGTERM. Before a command starts work (reading flags,
//! connecting, discovering), the first signal ends the process at once:
//! there is nothing to stop gracefully, and a server that never answers must
//! not hold it. Once work has begun (`arm`), the first signal stops it
//! gracefully (no new tenant starts; tenants in flight stop after their
//! current migration; the report is written) and the second ends the process.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::rollout::Cancel;

static CANCEL: OnceLock<Cancel> = OnceLock::new();
static ARMED: AtomicBool = AtomicBool::new(false);

fn cancel() -> &'static Cancel {
    CANCEL.get_or_init(Cancel::default)
}

/// Listens for signals for the life of the process (needs the runtime).
pub fn install() {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut int =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        let next = async |term: &mut Option<tokio::signal::unix::Signal>,
                          int: &mut Option<tokio::signal::unix::Signal>| {
            tokio::select! {
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
                _ = async { match int.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
        };
        next(&mut term, &mut int).await;
        if !ARMED.load(Ordering::SeqCst) {
            errln!("fleetmig: stopped by a signal before any work began");
            std::process::exit(130);
        }
        errln!(
            "fleetmig: stopping: no new tenants start; tenants in flight stop after their current migration (a second Ctrl-C or SIGTERM ends the process at once)"
        );
        cancel().cancel();
        next(&mut term, &mut int).await;
        errln!("fleetmig: stopped by a second signal");
        std::process::exit(130);
    });
}

/// Work begins: the next signal stops it gracefully through the returned
/// handle.
pub fn arm() -> Cancel {
    ARMED.store(true, Ordering::SeqCst);
    cancel().clone()
}
