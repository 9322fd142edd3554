//! The three systems and the migration set of the tenants moved: one table
//! with a column of every carried kind.

use crate::common::migration_dir;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sys {
    Lite,
    Pg,
    My,
}
pub use Sys::{Lite, My, Pg};

impl Sys {
    pub fn name(self) -> &'static str {
        match self {
            Lite => "sqlite",
            Pg => "postgres",
            My => "mariadb",
        }
    }
}

/// One table with a column of every carried kind, in each system's
/// spelling.
pub fn values_set() -> tempfile::TempDir {
    migration_dir(&[
        (
            "0001_values.postgres.sql",
            "CREATE TABLE v (id bigint PRIMARY KEY, i bigint, f double precision, r real, \
             n numeric(38,10), t text, b boolean, d date, ts timestamp, tz timestamptz, \
             j json, jb jsonb, x bytea, u uuid);",
        ),
        (
            "0001_values.mysql.sql",
            "CREATE TABLE v (id BIGINT PRIMARY KEY, i BIGINT, f DOUBLE, r FLOAT, \
             n DECIMAL(38,10), t LONGTEXT, b BOOLEAN, d DATE, ts DATETIME(6), tz TIMESTAMP(6) NULL, \
             j JSON, jb JSON, x LONGBLOB, u UUID) CHARACTER SET utf8mb4;",
        ),
        (
            "0001_values.sql",
            "CREATE TABLE v (id INTEGER PRIMARY KEY, i INTEGER, f REAL, r REAL, \
             n NUMERIC(38,10), t TEXT, b BOOLEAN, d DATE, ts TIMESTAMP, tz TIMESTAMPTZ, \
             j JSON, jb JSON, x BLOB, u UUID);",
        ),
    ])
}

/// The columns after `id`, in order.
pub const COLUMNS: [&str; 13] = [
    "i", "f", "r", "n", "t", "b", "d", "ts", "tz", "j", "jb", "x", "u",
];

pub const ROWS: i64 = 2000;
