//! How a SQLite column is read in a move: the kind fleetmig gives its
//! declared type (SQLite's affinity rules, with `BOOL`, `DATE`, `TIMESTAMP`,
//! `JSON` and `UUID` recognised), what it holds, and a cell by its storage
//! class.

use super::super::value::{Affinity, Spec};
use super::super::{Kind, Sql, Value};
use crate::dialect::quote_ident;
use crate::tenant::Dialect;

/// A cell by its storage class.
pub(super) fn stored(v: rusqlite::types::ValueRef<'_>) -> Result<Value, rusqlite::Error> {
    use rusqlite::types::ValueRef as R;
    Ok(match v {
        R::Null => Value::Null,
        R::Integer(i) => Value::Int(i),
        R::Real(f) => Value::Float(f),
        R::Text(t) => Value::Text(String::from_utf8(t.to_vec()).map_err(|_| {
            rusqlite::Error::InvalidColumnType(
                0,
                "text that is not UTF-8".into(),
                rusqlite::types::Type::Text,
            )
        })?),
        R::Blob(b) => Value::Bytes(b.to_vec()),
    })
}

/// What fleetmig reads a column declared `declared` as, for the other
/// systems (its cells are carried by storage class between SQLite files).
pub(super) fn kind(declared: &str) -> Kind {
    let d = declared.to_ascii_uppercase();
    let has = |s: &str| d.contains(s);
    if has("BOOL") {
        Kind::Bool
    } else if has("UUID") {
        Kind::Uuid
    } else if has("JSON") {
        Kind::Json
    } else if has("TIMESTAMPTZ") || has("WITH TIME ZONE") {
        Kind::TimestampTz
    } else if has("DATETIME") || has("TIMESTAMP") {
        Kind::Timestamp
    } else if has("DATE") {
        Kind::Date
    } else if has("INT") {
        Kind::Int
    } else if has("CHAR") || has("CLOB") || has("TEXT") || d.trim().is_empty() {
        Kind::Text
    } else if has("BLOB") {
        Kind::Bytes
    } else if has("REAL") || has("FLOA") || has("DOUB") {
        Kind::Float
    } else {
        Kind::Decimal
    }
}

pub(super) fn spec(declared: &str) -> Spec {
    let mut spec = Spec::of(Dialect::Sqlite).with_numeric_typmod(declared);
    // SQLite keeps every digit it is given: a declared NUMERIC(12,2) is a
    // hint, not a limit
    spec.scale = None;
    spec.precision = None;
    spec.affinity = Some(Affinity::of(declared));
    spec
}

pub(super) const SQL: Sql = Sql {
    quote: quote_ident,
    param: |_, _| "?".to_string(),
    read: |c| quote_ident(&c.name),
    max_params: 30_000,
    overriding: "",
};
