//! The error table: which database errors are transient (worth a retry with
//! backoff) and which are permanent, per dialect, with a short stable `kind`
//! word for reports. The tables follow SQLSTATE classes (PostgreSQL), MySQL
//! server/client error numbers and SQLite extended result codes.

use crate::error::FailureKind;
use sqlx::error::DatabaseError;

use crate::error::{ErrorClass, TenantError};
use crate::tenant::Dialect;

use ErrorClass::{Permanent, Transient};

/// Classifies a driver error met while working on a tenant.
pub fn classify(err: &sqlx::Error, dialect: Dialect) -> TenantError {
    let (class, kind, code) = match err {
        sqlx::Error::Database(db) => classify_db(db.as_ref(), dialect),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => {
            (Transient, FailureKind::Connection, None)
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            (Transient, FailureKind::Connection, None)
        }
        sqlx::Error::Configuration(_) => (Permanent, FailureKind::Configuration, None),
        _ => (Permanent, FailureKind::Driver, None),
    };
    // PostgreSQL's own message, without the " at line N" of its C source
    // that sqlx appends (the migration's file and line are added by the
    // session when the error points into a script); its DETAIL when given.
    let message = match (err, dialect) {
        (sqlx::Error::Database(db), Dialect::Postgres) => {
            let detail = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|pg| pg.detail())
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            format!("error returned from database: {}{detail}", db.message())
        }
        _ => err.to_string(),
    };
    TenantError {
        class,
        kind,
        code,
        version: None,
        message: one_line(&message),
    }
}

/// A driver error met on a tenant at `url`, classified, with the URL's
/// password scrubbed from the message.
pub(crate) fn tenant_error(err: &sqlx::Error, dialect: Dialect, url: Option<&str>) -> TenantError {
    let mut t = classify(err, dialect);
    t.message = crate::tenant::scrub_secrets(&t.message, url);
    t
}

/// An error of sqlx's `Migrate` trait, as a tenant error (see `tenant_error`).
pub(crate) fn migrate_error(
    err: sqlx::migrate::MigrateError,
    dialect: Dialect,
    url: Option<&str>,
) -> TenantError {
    use sqlx::migrate::MigrateError;
    match err {
        MigrateError::ExecuteMigration(e, v) => tenant_error(&e, dialect, url).at_version(v),
        MigrateError::Execute(e) => tenant_error(&e, dialect, url),
        other => TenantError::permanent(
            FailureKind::Migrate,
            crate::tenant::scrub_secrets(&other.to_string(), url),
        ),
    }
}

/// Folds a multi-line driver message onto one line for CSV cells and logs.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn classify_db(
    db: &dyn DatabaseError,
    dialect: Dialect,
) -> (ErrorClass, FailureKind, Option<String>) {
    match dialect {
        Dialect::Postgres => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let (class, kind) = postgres_sqlstate(&code);
            (class, kind, Some(code))
        }
        Dialect::Mysql => {
            let number = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|e| e.number())
                .unwrap_or(0);
            let (class, kind) = mysql_number(number);
            (class, kind, Some(number.to_string()))
        }
        Dialect::Sqlite => {
            let code: i32 = db.code().and_then(|c| c.parse().ok()).unwrap_or(1);
            let (class, kind) = sqlite_code(code, db.message());
            (class, kind, Some(code.to_string()))
        }
    }
}

/// PostgreSQL SQLSTATE → class and kind.
pub fn postgres_sqlstate(code: &str) -> (ErrorClass, FailureKind) {
    match code {
        "40001" => (Transient, FailureKind::SerializationFailure),
        "40P01" => (Transient, FailureKind::Deadlock),
        "55P03" => (Transient, FailureKind::LockTimeout),
        "57014" => (Transient, FailureKind::StatementTimeout),
        "53300" => (Transient, FailureKind::TooManyConnections),
        "53200" => (Transient, FailureKind::OutOfMemory),
        "57P01" | "57P02" | "57P03" => (Transient, FailureKind::ServerShutdown),
        "42601" => (Permanent, FailureKind::Syntax),
        "42P01" | "42703" | "42883" | "42704" | "3F000" => {
            (Permanent, FailureKind::UndefinedObject)
        }
        "42P07" | "42701" | "42710" | "42P06" | "42723" | "42P16" => {
            (Permanent, FailureKind::DuplicateObject)
        }
        "42501" => (Permanent, FailureKind::PermissionDenied),
        "53100" => (Permanent, FailureKind::DiskFull),
        "25P02" => (Permanent, FailureKind::AbortedTransaction),
        c if c.starts_with("08") => (Transient, FailureKind::Connection),
        c if c.starts_with("23") => (Permanent, FailureKind::ConstraintViolation),
        c if c.starts_with("22") => (Permanent, FailureKind::DataException),
        c if c.starts_with("42") => (Permanent, FailureKind::SqlError),
        _ => (Permanent, FailureKind::SqlError),
    }
}

/// MySQL/MariaDB error number → class and kind.
pub fn mysql_number(n: u16) -> (ErrorClass, FailureKind) {
    match n {
        1205 => (Transient, FailureKind::LockTimeout),
        1213 => (Transient, FailureKind::Deadlock),
        1040 | 1203 => (Transient, FailureKind::TooManyConnections),
        2002 | 2003 | 2006 | 2013 | 1053 | 1077 | 1927 => (Transient, FailureKind::Connection),
        3024 | 1969 => (Transient, FailureKind::StatementTimeout),
        1064 | 1149 => (Permanent, FailureKind::Syntax),
        1050 | 1060 | 1061 | 1826 | 1007 => (Permanent, FailureKind::DuplicateObject),
        1146 | 1054 | 1091 | 1049 | 1051 | 1305 => (Permanent, FailureKind::UndefinedObject),
        1062 | 1451 | 1452 | 1048 | 1364 | 3819 => (Permanent, FailureKind::ConstraintViolation),
        1044 | 1045 | 1142 | 1143 | 1227 => (Permanent, FailureKind::PermissionDenied),
        _ => (Permanent, FailureKind::SqlError),
    }
}

/// SQLite extended result code (and message, for the generic SQLITE_ERROR).
pub fn sqlite_code(code: i32, message: &str) -> (ErrorClass, FailureKind) {
    match code & 0xff {
        5 => (Transient, FailureKind::Busy),
        6 => (Transient, FailureKind::Locked),
        10 => (Transient, FailureKind::Io),
        7 => (Transient, FailureKind::OutOfMemory),
        13 => (Permanent, FailureKind::DiskFull),
        14 => (Permanent, FailureKind::CannotOpen),
        8 => (Permanent, FailureKind::ReadOnly),
        11 | 26 => (Permanent, FailureKind::Corrupt),
        19 => (Permanent, FailureKind::ConstraintViolation),
        _ => {
            let m = message.to_ascii_lowercase();
            if m.contains("already exists") || m.contains("duplicate column") {
                (Permanent, FailureKind::DuplicateObject)
            } else if m.contains("syntax error") || m.contains("incomplete input") {
                (Permanent, FailureKind::Syntax)
            } else if m.contains("no such") {
                (Permanent, FailureKind::UndefinedObject)
            } else {
                (Permanent, FailureKind::SqlError)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        assert_eq!(
            postgres_sqlstate("55P03"),
            (Transient, FailureKind::LockTimeout)
        );
        assert_eq!(
            postgres_sqlstate("08006"),
            (Transient, FailureKind::Connection)
        );
        assert_eq!(
            postgres_sqlstate("42P07"),
            (Permanent, FailureKind::DuplicateObject)
        );
        assert_eq!(
            postgres_sqlstate("23505"),
            (Permanent, FailureKind::ConstraintViolation)
        );
        assert_eq!(mysql_number(1213), (Transient, FailureKind::Deadlock));
        assert_eq!(mysql_number(2013), (Transient, FailureKind::Connection));
        assert_eq!(mysql_number(1064), (Permanent, FailureKind::Syntax));
        assert_eq!(sqlite_code(517, ""), (Transient, FailureKind::Busy));
        assert_eq!(
            sqlite_code(1, "table x already exists"),
            (Permanent, FailureKind::DuplicateObject)
        );
        assert_eq!(
            sqlite_code(1, "near \"x\": syntax error"),
            (Permanent, FailureKind::Syntax)
        );
        assert_eq!(
            sqlite_code(2067, ""),
            (Permanent, FailureKind::ConstraintViolation)
        );
    }
}
