//! How a MySQL/MariaDB column is read and written in a move: its kind and
//! what it holds (from `information_schema`), the SQL that reads it as a
//! value fleetmig carries exactly, and the decoding of that value.

use sqlx::Row;
use sqlx::mysql::MySqlRow;

use super::super::value::{JsonStore, Spec, typmod};
use super::super::when::When;
use super::super::{Kind, Sql, Value};
use crate::dialect::mysql::quote_ident;
use crate::tenant::Dialect;

/// The kind of a column from `DATA_TYPE` and `COLUMN_TYPE`, and what it
/// holds (`mariadb`: the server keeps JSON as text).
pub(super) fn column_kind(
    data_type: &str,
    column_type: &str,
    mariadb: bool,
) -> (Option<Kind>, Spec) {
    let unsigned = column_type.contains("unsigned");
    let mut spec = Spec::of(Dialect::Mysql);
    let range = |bits: u32| -> (i128, i128) {
        if unsigned {
            (0, (1i128 << bits) - 1)
        } else {
            (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
        }
    };
    let kind = match data_type {
        "tinyint" if column_type.starts_with("tinyint(1)") => Kind::Bool,
        "bigint" if unsigned => {
            spec.precision = Some(20);
            spec.scale = Some(0);
            Kind::Decimal
        }
        "tinyint" | "smallint" | "mediumint" | "int" | "bigint" => {
            spec.int_range = range(match data_type {
                "tinyint" => 8,
                "smallint" => 16,
                "mediumint" => 24,
                "int" => 32,
                _ => 64,
            });
            Kind::Int
        }
        "float" => {
            spec.single = true;
            Kind::Float
        }
        "double" => Kind::Float,
        "decimal" => {
            spec = spec.with_numeric_typmod(column_type);
            Kind::Decimal
        }
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => {
            Kind::Text
        }
        "date" => Kind::Date,
        "datetime" | "timestamp" => {
            spec.fsp = typmod(column_type).map_or(0, |(p, _)| p);
            if data_type == "timestamp" {
                spec.epoch_range = true;
                Kind::TimestampTz
            } else {
                Kind::Timestamp
            }
        }
        "json" => {
            if !mariadb {
                spec.json = JsonStore::Lossy;
            }
            Kind::Json
        }
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Bytes,
        "uuid" => Kind::Uuid,
        _ => return (None, spec),
    };
    (Some(kind), spec)
}

pub(super) const SQL: Sql = Sql {
    quote: quote_ident,
    // a decimal bound as text is compared as a decimal of the column's own
    // type (not as a double, and not through a wider DECIMAL that cannot
    // hold its digits)
    param: |_, c| match c.kind {
        Some(Kind::Decimal) if c.spec.scale.is_some() => format!(
            "CAST(? AS DECIMAL({}, {}))",
            c.spec.precision.unwrap_or(65),
            c.spec.scale.unwrap_or(0)
        ),
        _ => "?".to_string(),
    },
    read: |c| {
        let q = quote_ident(&c.name);
        match c.kind {
            Some(Kind::Int | Kind::Bool) => format!("CAST({q} AS SIGNED)"),
            Some(Kind::Float) => format!("CAST({q} AS DOUBLE)"),
            // dates as text: zero dates and all
            Some(
                Kind::Decimal
                | Kind::Json
                | Kind::Uuid
                | Kind::Date
                | Kind::Timestamp
                | Kind::TimestampTz,
            ) => format!("CAST({q} AS CHAR)"),
            Some(Kind::Text)
                if c.type_name.starts_with("enum") || c.type_name.starts_with("set") =>
            {
                format!("CAST({q} AS CHAR)")
            }
            _ => q,
        }
    },
    max_params: 60_000,
    overriding: "",
};

pub(super) fn decode(row: &MySqlRow, i: usize, kind: Kind) -> Result<Value, sqlx::Error> {
    let text = |i| row.try_get::<Option<String>, _>(i);
    let when = |t: String| {
        When::parse(&t).ok_or_else(|| sqlx::Error::Decode(format!("not a date: {t}").into()))
    };
    Ok(match kind {
        Kind::Int => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
        // as stored: a TINYINT(1) holding 2 is the integer 2, which a
        // boolean column refuses
        Kind::Bool => row.try_get::<Option<i64>, _>(i)?.map(|v| match v {
            0 | 1 => Value::Bool(v == 1),
            v => Value::Int(v),
        }),
        Kind::Float => row.try_get::<Option<f64>, _>(i)?.map(Value::Float),
        Kind::Decimal => text(i)?.map(Value::Decimal),
        Kind::Text => text(i)?.map(Value::Text),
        Kind::Uuid => text(i)?.map(Value::Uuid),
        Kind::Json => text(i)?.map(Value::Json),
        Kind::Date => text(i)?.map(when).transpose()?.map(Value::Date),
        Kind::Timestamp => text(i)?.map(when).transpose()?.map(Value::Timestamp),
        Kind::TimestampTz => text(i)?.map(when).transpose()?.map(Value::TimestampTz),
        Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i)?.map(Value::Bytes),
    }
    .unwrap_or(Value::Null))
}
