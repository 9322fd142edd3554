//! Typed errors of the library. Two families: errors that stop a command before
//! any tenant is touched (`Error`: bad usage, config, migration set, fleet), and
//! per-tenant failures (`TenantError`), which are data: they are recorded in the
//! report and set the exit code, but never stop the other tenants.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// An error that stops a command before it touches any tenant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, environment variable or config value is wrong.
    #[error("{0}")]
    Usage(String),
    /// `fleetmig.toml` could not be read or parsed.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// The migration set is broken; names the file and what is wrong.
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Migration {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    /// A registry file has a bad row; names the file and line.
    #[error("{path}:{line}: {message}")]
    Registry {
        path: PathBuf,
        line: u64,
        message: String,
    },
    /// The fleet could not be listed (server unreachable, folder missing).
    #[error("cannot discover the fleet {fleet}: {message}")]
    Discovery { fleet: String, message: String },
    /// The state store could not be opened, read or written.
    #[error("state store {location}: {message}")]
    State { location: String, message: String },
    /// The migration set has lint findings and the rollout was not told to
    /// go ahead anyway.
    #[error("{0}")]
    Lint(String),
    /// Another rollout holds the fleet, or the rollout cannot be taken over.
    #[error("{0}")]
    Busy(String),
    /// Reports or other local files could not be written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit code this error maps to (documented in the README).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_)
            | Error::Config { .. }
            | Error::Migration { .. }
            | Error::Registry { .. }
            | Error::Lint(_) => 2,
            Error::Discovery { .. } | Error::Io { .. } | Error::State { .. } => 3,
            Error::Busy(_) => 4,
        }
    }

    pub(crate) fn migration(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Migration {
            path: path.into(),
            line: None,
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a tenant failure is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Connection loss, busy database, lock timeout, deadlock, serialization
    /// failure: retried with backoff.
    Transient,
    /// Syntax error, conflicting object, checksum mismatch, dirty history: never
    /// retried; a person has to look.
    Permanent,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        })
    }
}

/// Why one tenant failed. `kind` is a short stable word (`busy`, `syntax`,
/// `duplicate_object`, `checksum_mismatch`, ...) that reports group by; `code`
/// is the database's own code (SQLSTATE, MySQL error number, SQLite extended
/// result code) when there is one.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TenantError {
    pub class: ErrorClass,
    pub kind: String,
    pub code: Option<String>,
    /// The migration version that was running, if any.
    pub version: Option<i64>,
    pub message: String,
}

impl TenantError {
    pub fn permanent(kind: &str, message: impl Into<String>) -> Self {
        TenantError {
            class: ErrorClass::Permanent,
            kind: kind.to_string(),
            code: None,
            version: None,
            message: message.into(),
        }
    }

    pub fn transient(kind: &str, message: impl Into<String>) -> Self {
        TenantError {
            class: ErrorClass::Transient,
            kind: kind.to_string(),
            code: None,
            version: None,
            message: message.into(),
        }
    }

    pub fn at_version(mut self, version: i64) -> Self {
        self.version.get_or_insert(version);
        self
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }
}

impl fmt::Display for TenantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.message, self.kind)?;
        if let Some(code) = &self.code {
            write!(f, " {code}")?;
        }
        f.write_str(")")
    }
}
