//! fleetmig's own log subscriber: log lines go to stderr with every URL
//! password and `password=`-like parameter redacted (drivers echo URLs),
//! coloured only on a terminal, and sqlx's own chatter (slow acquires,
//! statement logs, "no transaction in progress") kept out unless asked for.
//! `RUST_LOG` (or `FLEETMIG_LOG`) takes full control; `--log-level` sets
//! fleetmig's level and keeps sqlx quiet.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::tenant::redact_text;

/// A stderr writer that redacts each line it is given.
struct Redacting;

impl Write for Redacting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        // a failed write to stderr has nowhere to go
        let _ = std::io::stderr()
            .lock()
            .write_all(redact_text(&text).as_bytes());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().lock().flush()
    }
}

struct MakeRedacting;

impl<'a> MakeWriter<'a> for MakeRedacting {
    type Writer = Redacting;

    fn make_writer(&'a self) -> Redacting {
        Redacting
    }
}

/// Installs the subscriber; `level` is `--log-level`.
pub fn init(level: Option<&str>) {
    let from_env = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("FLEETMIG_LOG"))
        .ok()
        .filter(|v| !v.trim().is_empty());
    let directives = match (from_env, level) {
        (Some(env), _) => env,
        (None, Some(level)) => format!("warn,fleetmig={level},sqlx=off"),
        (None, None) => "warn,sqlx=off".to_string(),
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        errln!("fleetmig: ignoring the log filter {directives:?}: {e}");
        EnvFilter::new("warn,sqlx=off")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(MakeRedacting)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
