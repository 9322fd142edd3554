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
    /// A flag, environment variable or config value is wrong, or the
    /// command names a tenant, rollout or store that does not fit:
    /// `about` is what the person fixes, `message` what is wrong with it.
    #[error("{about}: {message}")]
    Usage { about: About, message: String },
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
    /// `transient` when it may pass on its own (the connection lost, the
    /// server restarting, a busy file): `state::patiently` tries again.
    #[error("state store {location}: {message}")]
    State {
        location: String,
        message: String,
        transient: bool,
    },
    /// The migration set has lint findings and the rollout was not told to
    /// go ahead anyway.
    #[error("{0}")]
    Lint(String),
    /// Another rollout holds the fleet, or the rollout cannot be taken over.
    #[error("{0}")]
    Busy(String),
    /// A signal stopped the command before it recorded anything.
    #[error("{0}")]
    Stopped(String),
    /// Reports or other local files could not be written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether this is a state-store failure that may pass on its own.
    pub fn is_transient_store(&self) -> bool {
        matches!(
            self,
            Error::State {
                transient: true,
                ..
            }
        )
    }

    /// The process exit code this error maps to (documented in the README).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. }
            | Error::Config { .. }
            | Error::Migration { .. }
            | Error::Registry { .. }
            | Error::Lint(_) => 2,
            Error::Discovery { .. } | Error::Io { .. } | Error::State { .. } => 3,
            Error::Busy(_) => 4,
            Error::Stopped(_) => 130,
        }
    }

    /// A usage error about `flag` (also its environment variable and
    /// settings-file key).
    pub(crate) fn flag(flag: impl Into<String>, message: impl Into<String>) -> Self {
        Error::usage(
            About::Flag {
                flag: flag.into(),
                value: None,
            },
            message,
        )
    }

    /// A usage error about the value `value` given to `flag`.
    pub(crate) fn flag_value(
        flag: impl Into<String>,
        value: impl fmt::Display,
        message: impl Into<String>,
    ) -> Self {
        let value = Some(value.to_string());
        Error::usage(
            About::Flag {
                flag: flag.into(),
                value,
            },
            message,
        )
    }

    pub(crate) fn usage(about: About, message: impl Into<String>) -> Self {
        Error::Usage {
            about,
            message: message.into(),
        }
    }

    /// What a usage error is about (`None` for every other error).
    pub fn about(&self) -> Option<&About> {
        match self {
            Error::Usage { about, .. } => Some(about),
            _ => None,
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

/// What a usage error is about: the thing on the command line (or in the
/// environment, or the settings file) a person changes to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum About {
    /// A flag, with the value it was given where that helps (a secret in
    /// it is redacted by whoever builds the error).
    Flag { flag: String, value: Option<String> },
    /// The move of one tenant.
    Move(String),
    /// A rollout the command names or finds.
    Rollout(String),
    /// The state store (named by where it is, without a password).
    Store(String),
    /// The command itself (its arguments together).
    Command(&'static str),
}

impl fmt::Display for About {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            About::Flag { flag, value: None } => f.write_str(flag),
            About::Flag {
                flag,
                value: Some(v),
            } => write!(f, "{flag} {v}"),
            About::Move(t) => write!(f, "move {t}"),
            About::Rollout(id) => write!(f, "rollout {id}"),
            About::Store(at) => write!(f, "state store {at}"),
            About::Command(c) => write!(f, "fleetmig {c}"),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

text_enum! {
    /// Whether retrying can help.
    pub enum ErrorClass {
        /// Connection loss, busy database, lock timeout, deadlock,
        /// serialization failure: retried with backoff.
        Transient = "transient",
        /// Syntax error, conflicting object, checksum mismatch, dirty
        /// history: never retried; a person has to look.
        Permanent = "permanent",
    }
}

text_enum! {
    /// Why a tenant failed: one stable snake_case word, written in reports,
    /// the state store and the `fleetmig_failures{kind}` metric, that
    /// reports group failures by. Rows written by earlier versions are
    /// read back through `FailureKind::read` (renamed words map to their
    /// new names: docs/configuration.md lists them).
    pub enum FailureKind {
        AbortedTransaction = "aborted_transaction",
        Backup = "backup",
        Busy = "busy",
        CannotOpen = "cannot_open",
        ChecksumMismatch = "checksum_mismatch",
        Configuration = "configuration",
        Connection = "connection",
        ConstraintViolation = "constraint_violation",
        CopyIncomplete = "copy_incomplete",
        Corrupt = "corrupt",
        DataException = "data_exception",
        Deadlock = "deadlock",
        Dirty = "dirty",
        DiskFull = "disk_full",
        Driver = "driver",
        DuplicateObject = "duplicate_object",
        ForeignKeyViolation = "foreign_key_violation",
        GateQueryFailed = "gate_query_failed",
        History = "history",
        Interrupted = "interrupted",
        InterruptedStatement = "interrupted_statement",
        InvalidIdentifier = "invalid_identifier",
        InvalidTenant = "invalid_tenant",
        Io = "io",
        LockTimeout = "lock_timeout",
        Locked = "locked",
        Migrate = "migrate",
        MissingMigration = "missing_migration",
        MoveBusy = "move_busy",
        MoveFailed = "move_failed",
        MoveRefused = "move_refused",
        MoveVerificationFailed = "move_verification_failed",
        NoDown = "no_down",
        NoVariant = "no_variant",
        NotStarted = "not_started",
        OutOfMemory = "out_of_memory",
        PermissionDenied = "permission_denied",
        PreflightDeferred = "preflight_deferred",
        ReadOnly = "read_only",
        Restore = "restore",
        RevertFailed = "revert_failed",
        SchemaMismatch = "schema_mismatch",
        SerializationFailure = "serialization_failure",
        ServerShutdown = "server_shutdown",
        SourceChanged = "source_changed",
        SqlError = "sql_error",
        StateStore = "state_store",
        StatementRecord = "statement_record",
        StatementTimeout = "statement_timeout",
        Syntax = "syntax",
        TenantGone = "tenant_gone",
        TenantLocked = "tenant_locked",
        TooManyConnections = "too_many_connections",
        UndefinedObject = "undefined_object",
        Unsupported = "unsupported",
        UnsupportedType = "unsupported_type",
        UnsupportedValue = "unsupported_value",
        VerifyQueryFailed = "verify_query_failed",
    }
}

impl FailureKind {
    /// The words earlier versions wrote for kinds renamed since (besides
    /// `revert_<kind>` → `revert_failed` and `gate_sql_<kind>` →
    /// `gate_query_failed`).
    pub const RENAMED: &'static [(&'static str, FailureKind)] = &[
        ("verify_failed", FailureKind::VerifyQueryFailed),
        ("verification_failed", FailureKind::MoveVerificationFailed),
    ];

    /// A kind as stored, by this version or an earlier one (a failed
    /// revert was `revert_<kind>`).
    pub fn read(word: &str) -> Result<FailureKind, String> {
        if let Some((_, k)) = Self::RENAMED.iter().find(|(w, _)| *w == word) {
            return Ok(*k);
        }
        if word.starts_with("revert_") && word != "revert_failed" {
            return Ok(FailureKind::RevertFailed);
        }
        if word.starts_with("gate_sql_") {
            return Ok(FailureKind::GateQueryFailed);
        }
        word.parse()
    }
}

/// Why one tenant failed. `kind` is a short stable word (`busy`, `syntax`,
/// `duplicate_object`, `checksum_mismatch`, ...) that reports group by; `code`
/// is the database's own code (SQLSTATE, MySQL error number, SQLite extended
/// result code) when there is one.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TenantError {
    pub class: ErrorClass,
    pub kind: FailureKind,
    pub code: Option<String>,
    /// The migration version that was running, if any.
    pub version: Option<i64>,
    pub message: String,
}

impl TenantError {
    pub fn permanent(kind: FailureKind, message: impl Into<String>) -> Self {
        TenantError {
            class: ErrorClass::Permanent,
            kind,
            code: None,
            version: None,
            message: message.into(),
        }
    }

    pub fn transient(kind: FailureKind, message: impl Into<String>) -> Self {
        TenantError {
            class: ErrorClass::Transient,
            kind,
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

#[cfg(test)]
mod kind_tests {
    use super::FailureKind;

    #[test]
    fn every_kind_is_documented_and_old_words_read_back() {
        let doc = include_str!("../docs/configuration.md");
        for k in FailureKind::ALL {
            assert!(
                doc.contains(&format!("| `{k}` |")),
                "{k} is not in docs/configuration.md"
            );
            assert_eq!(FailureKind::read(k.as_str()), Ok(*k));
        }
        for (old, new) in FailureKind::RENAMED {
            assert_eq!(FailureKind::read(old), Ok(*new));
            assert!(doc.contains(&format!("`{old}` → `{new}`")), "{old}");
        }
        assert_eq!(
            FailureKind::read("revert_syntax"),
            Ok(FailureKind::RevertFailed)
        );
        assert_eq!(
            FailureKind::read("gate_sql_syntax"),
            Ok(FailureKind::GateQueryFailed)
        );
        assert!(FailureKind::read("no_such_kind").is_err());
    }
}
