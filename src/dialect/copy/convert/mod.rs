//! What a value becomes in the column it lands in: exactly itself where the
//! column can hold it, a documented conversion only where the column's type
//! cannot hold more, and otherwise a refusal that says why. The conversions
//! (README, "What a move carries"):
//!
//! - a binary float into a decimal column of scale s: its shortest exact
//!   digits if they fit s places, else the 15 significant digits SQLite
//!   itself prints for it if those fit, else refused;
//! - a float into a 4-byte float column: the nearest 4-byte float;
//! - fractional seconds beyond the column's precision: cut (not rounded);
//! - a timestamp with a zone into one without: its UTC wall time; one
//!   without into one with: read as UTC;
//! - UUID text: lower case, hyphenated (what a `uuid` column holds);
//! - into PostgreSQL's `jsonb`: the server's normalisation (`jsonb.rs`);
//! - into a SQLite column: the storage class SQLite's affinity gives it
//!   (a decimal into a NUMERIC column is an INTEGER or a REAL when one holds
//!   it exactly, else refused).
//!
//! MySQL's zero dates are carried into MySQL; elsewhere they are refused
//! unless `--zero-dates null` says to write NULL.

use super::Column;
use super::jsonb;
use super::value::{Affinity, Decimal, JsonStore, Kind, Spec, Value, float_text, float_text15};
use super::when::When;
use crate::tenant::Dialect;

mod sqlite;

pub use sqlite::affinity;
use sqlite::sqlite;

/// Choices the operator made.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// `--zero-dates null`: a MySQL zero date becomes NULL where the target
    /// cannot hold it.
    pub zero_dates_null: bool,
}

/// `v` as column `to` will hold it, or why it cannot.
pub fn convert(v: Value, to: &Column, rules: &Rules) -> Result<Value, String> {
    if v == Value::Null {
        return Ok(Value::Null);
    }
    let kind = to.kind.unwrap_or(Kind::Text);
    let spec = &to.spec;
    // most cells land as they are: no copy of them for an error message
    if unchanged(&v, kind, spec) {
        return Ok(v);
    }
    let why = |v: &Value, reason: &str| {
        format!(
            "cannot carry {} into {} ({}): {reason}",
            v.shown(),
            to.type_name,
            spec.system.as_str()
        )
    };
    let r = if spec.system == Dialect::Sqlite {
        sqlite(v.clone(), kind, spec, rules)
    } else {
        typed(v.clone(), kind, spec, rules)
    };
    r.map_err(|reason| why(&v, &reason))
}

/// Whether `v` lands in a column of `kind` and `spec` exactly as it is
/// (what the slow path would also say: the property tests hold the two to
/// one answer).
fn unchanged(v: &Value, kind: Kind, spec: &Spec) -> bool {
    if spec.system == Dialect::Sqlite {
        return match (v, spec.affinity) {
            // SQLite binds a NaN as NULL: the slow path refuses it
            (Value::Float(f), _) if f.is_nan() => false,
            (Value::Bytes(_), _) | (_, Some(Affinity::Blob)) => true,
            (Value::Int(_), Some(Affinity::Integer | Affinity::Numeric)) => true,
            (Value::Float(f), Some(Affinity::Real)) => !(*f == 0.0 && f.is_sign_negative()),
            (Value::Text(_), Some(Affinity::Text)) => true,
            _ => false,
        };
    }
    match (kind, v) {
        (Kind::Int, Value::Int(i)) => {
            let (lo, hi) = spec.int_range;
            (lo..=hi).contains(&(*i as i128))
        }
        (Kind::Text, Value::Text(t)) => spec.system != Dialect::Postgres || !t.contains('\0'),
        (Kind::Float, Value::Float(f)) => {
            !spec.single
                && (f.is_finite() || spec.system == Dialect::Postgres)
                // MariaDB keeps -0.0 as 0.0: the slow path refuses it
                && !(spec.system == Dialect::Mysql && *f == 0.0 && f.is_sign_negative())
        }
        (Kind::Bool, Value::Bool(_)) | (Kind::Bytes, Value::Bytes(_)) => true,
        (Kind::Uuid, Value::Uuid(_)) => spec.system != Dialect::Mysql,
        (Kind::Json, Value::Json(_)) => spec.json == JsonStore::Exact,
        (Kind::Decimal, Value::Decimal(d)) => plain_decimal(d, spec),
        (Kind::Date, Value::Date(w))
        | (Kind::Timestamp, Value::Timestamp(w))
        | (Kind::TimestampTz, Value::TimestampTz(w)) => match w {
            When::At {
                year,
                month,
                day,
                nanos,
            } => {
                *month > 0
                    && *day > 0
                    && *year >= spec.years.0.max(-4712)
                    && *year <= spec.years.1
                    && !spec.epoch_range
                    && (kind != Kind::Date || *nanos == 0)
                    && nanos % 10u64.pow(9 - spec.fsp.min(9)) == 0
                    // MySQL has no 0000-02-29: the slow path refuses it
                    && !(spec.system == Dialect::Mysql && (*year, *month, *day) == (0, 2, 29))
            }
            _ => spec.infinity,
        },
        _ => false,
    }
}

/// A decimal printed as the column prints it: `-?digits(.digits)?` without
/// a leading zero, exactly the column's scale, within its precision.
fn plain_decimal(d: &str, spec: &Spec) -> bool {
    let body = d.strip_prefix('-').unwrap_or(d);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (int.len() > 1 && int.starts_with('0')) {
        return false;
    }
    if body.contains('.') && frac.is_empty() {
        return false;
    }
    // a negative zero prints without its sign
    if d.starts_with('-') && int == "0" && frac.bytes().all(|b| b == b'0') {
        return false;
    }
    // digits before the point: none in `0.50`
    let int_digits = if int == "0" { 0 } else { int.len() };
    match (spec.precision, spec.scale) {
        (Some(p), Some(s)) => {
            frac.len() == s as usize && int_digits <= p.saturating_sub(s) as usize
        }
        (_, Some(s)) => frac.len() == s as usize,
        _ => true,
    }
}

/// Into a PostgreSQL or MySQL column of `kind`.
fn typed(v: Value, kind: Kind, spec: &Spec, rules: &Rules) -> Result<Value, String> {
    match kind {
        Kind::Int => int(v, spec).map(Value::Int),
        Kind::Float => float(v, spec).map(Value::Float),
        Kind::Decimal => decimal(v, spec),
        Kind::Text => text(v, spec).map(Value::Text),
        Kind::Bool => boolean(v).map(Value::Bool),
        Kind::Date => when(v, spec, rules, false).map(|w| w.map_or(Value::Null, Value::Date)),
        Kind::Timestamp => {
            when(v, spec, rules, true).map(|w| w.map_or(Value::Null, Value::Timestamp))
        }
        Kind::TimestampTz => {
            when(v, spec, rules, true).map(|w| w.map_or(Value::Null, Value::TimestampTz))
        }
        Kind::Json => json(v, spec).map(Value::Json),
        Kind::Bytes => bytes(v).map(Value::Bytes),
        Kind::Uuid => uuid(v).and_then(|u| uuid_fits(u, spec)).map(Value::Uuid),
    }
}

fn int(v: Value, spec: &Spec) -> Result<i64, String> {
    let i = match v {
        Value::Int(i) => i,
        Value::Bool(b) => b as i64,
        Value::Decimal(t) | Value::Text(t) => Decimal::parse(&t)
            .and_then(|d| d.as_i64())
            .ok_or("not an integer")?,
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => f as i64,
        _ => return Err("not an integer".into()),
    };
    let (lo, hi) = spec.int_range;
    if (i as i128) < lo || (i as i128) > hi {
        return Err(format!("out of the column's range {lo}..{hi}"));
    }
    Ok(i)
}

fn float(v: Value, spec: &Spec) -> Result<f64, String> {
    let f = match v {
        Value::Float(f) => f,
        Value::Int(i) if i.unsigned_abs() <= 1 << 53 => i as f64,
        Value::Int(_) => return Err("a double cannot hold this integer exactly".into()),
        Value::Bool(b) => b as i64 as f64,
        Value::Decimal(t) | Value::Text(t) => special_float(&t)
            .or_else(|| Decimal::parse(&t).and_then(|d| d.text().parse().ok()))
            .ok_or("not a number")?,
        _ => return Err("not a number".into()),
    };
    if !f.is_finite() && spec.system != Dialect::Postgres {
        return Err("this system's floats hold no NaN or infinity".into());
    }
    let f = if spec.single {
        let s = f as f32;
        if f.is_finite() && !s.is_finite() {
            return Err("out of a 4-byte float's range".into());
        }
        s as f64
    } else {
        f
    };
    // MariaDB's DOUBLE and FLOAT columns store -0.0 as 0.0 (and a tiny
    // negative double is -0.0 as a 4-byte float; tests/move_props/ found
    // both)
    if f == 0.0 && f.is_sign_negative() && spec.system == Dialect::Mysql {
        return Err("a MySQL float column keeps -0.0 as 0.0".into());
    }
    Ok(f)
}

fn special_float(t: &str) -> Option<f64> {
    match t.trim() {
        "NaN" => Some(f64::NAN),
        "Infinity" | "inf" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

fn decimal(v: Value, spec: &Spec) -> Result<Value, String> {
    let fit = |d: Decimal| fit_decimal(d, spec);
    match v {
        Value::Decimal(t) | Value::Text(t) => {
            if let Some(s) = special_decimal(&t, spec)? {
                return Ok(Value::Decimal(s));
            }
            let d = Decimal::parse(&t).ok_or("not a decimal number")?;
            fit(d).ok_or_else(|| scale_reason(spec))
        }
        Value::Int(i) => fit(Decimal::parse(&i.to_string()).expect("an integer"))
            .ok_or_else(|| scale_reason(spec)),
        Value::Bool(b) => Ok(Value::Decimal((b as i64).to_string())),
        Value::Float(f) if !f.is_finite() => {
            let t = if f.is_nan() {
                "NaN"
            } else if f > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            };
            special_decimal(t, spec)?
                .map(Value::Decimal)
                .ok_or_else(|| "not a finite number".into())
        }
        Value::Float(f) => fit(Decimal::parse(&float_text(f)).expect("digits"))
            .or_else(|| fit(Decimal::parse(&float_text15(f)).expect("digits")))
            .ok_or_else(|| scale_reason(spec)),
        _ => Err("not a decimal number".into()),
    }
}

/// PostgreSQL's `NaN` and infinities, which only its numeric holds
/// (infinities only without a typmod).
fn special_decimal(t: &str, spec: &Spec) -> Result<Option<String>, String> {
    let s = match t.trim() {
        "NaN" => "NaN",
        "Infinity" => "Infinity",
        "-Infinity" => "-Infinity",
        _ => return Ok(None),
    };
    if spec.system != Dialect::Postgres || (s != "NaN" && spec.scale.is_some()) {
        return Err("the column cannot hold it".into());
    }
    Ok(Some(s.to_string()))
}

/// `d` in a column of the spec's precision and scale, as it prints there.
fn fit_decimal(d: Decimal, spec: &Spec) -> Option<Value> {
    let d = match spec.scale {
        Some(s) => d.with_scale(s as usize)?,
        None => d,
    };
    if let (Some(p), Some(s)) = (spec.precision, spec.scale)
        && d.int.len() > p.saturating_sub(s) as usize
    {
        return None;
    }
    Some(Value::Decimal(d.text()))
}

fn scale_reason(spec: &Spec) -> String {
    match (spec.precision, spec.scale) {
        (Some(p), Some(s)) => format!("it does not fit ({p}, {s}) without losing digits"),
        _ => "not a decimal number".into(),
    }
}

fn text(v: Value, spec: &Spec) -> Result<String, String> {
    let t = match v {
        Value::Text(t) | Value::Decimal(t) | Value::Uuid(t) | Value::Json(t) => t,
        Value::Int(i) => i.to_string(),
        Value::Float(f) if f.is_finite() => float_text(f),
        Value::Bool(b) => b.to_string(),
        Value::Date(w) => when_text(&w, false),
        Value::Timestamp(w) => when_text(&w, true),
        Value::TimestampTz(w) => when_text(&w, true) + "+00:00",
        Value::Bytes(b) => String::from_utf8(b).map_err(|_| "bytes that are not UTF-8 text")?,
        _ => return Err("no text for it".into()),
    };
    if spec.system == Dialect::Postgres && t.contains('\0') {
        return Err("PostgreSQL text cannot hold a NUL character".into());
    }
    Ok(t)
}

fn when_text(w: &When, time: bool) -> String {
    let mut s = String::new();
    w.write(&mut s, time, true);
    s
}

fn boolean(v: Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(b),
        Value::Int(i @ (0 | 1)) => Ok(i == 1),
        Value::Decimal(t) | Value::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
            "1" | "t" | "true" | "y" | "yes" | "on" => Ok(true),
            "0" | "f" | "false" | "n" | "no" | "off" => Ok(false),
            _ => Err("not a boolean".into()),
        },
        _ => Err("not a boolean".into()),
    }
}

/// A date (`time` false) or a timestamp; `None`: a zero date written NULL.
fn when(v: Value, spec: &Spec, rules: &Rules, time: bool) -> Result<Option<When>, String> {
    let w = match v {
        Value::Date(w) | Value::Timestamp(w) | Value::TimestampTz(w) => w,
        Value::Text(t) => When::parse(&t).ok_or("not a date or timestamp")?,
        _ => return Err("not a date or timestamp".into()),
    };
    let w = if time {
        w.truncated(spec.fsp)
    } else {
        w.date_part()
            .ok_or("it has a time of day, which a date column drops")?
    };
    if w.is_zero() {
        if spec.zero_dates {
            return Ok(Some(w));
        }
        if rules.zero_dates_null {
            return Ok(None);
        }
        return Err("a MySQL zero date, which this column cannot hold (--zero-dates null writes NULL instead)".into());
    }
    if w.is_infinite() {
        return if spec.infinity {
            Ok(Some(w))
        } else {
            Err("the column holds no infinity".into())
        };
    }
    let year = w.year().expect("a day");
    if year < spec.years.0 || year > spec.years.1 {
        return Err(format!(
            "the column holds years {} to {} only",
            spec.years.0, spec.years.1
        ));
    }
    // PostgreSQL's first day is 4714-11-24 BC (Julian day 0), within its
    // first year
    if spec.system == Dialect::Postgres && w < When::day(-4713, 11, 24) {
        return Err("PostgreSQL's dates begin 4714-11-24 BC".into());
    }
    // MySQL takes year 0 (1 BC) for a common year (calc_days_in_year):
    // refused here by name, not by the server mid-copy (tests/move_props/
    // found it)
    if spec.system == Dialect::Mysql
        && matches!(
            w,
            When::At {
                year: 0,
                month: 2,
                day: 29,
                ..
            }
        )
    {
        return Err("MySQL's calendar has no 0000-02-29 (year 0 is no leap year to it)".into());
    }
    if spec.epoch_range {
        let first = When::parse("1970-01-01 00:00:01").expect("a date");
        let last = When::parse("2038-01-19 03:14:07.999999").expect("a date");
        if w < first || w > last {
            return Err(
                "a MySQL TIMESTAMP holds 1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC only"
                    .into(),
            );
        }
    }
    Ok(Some(w))
}

fn json(v: Value, spec: &Spec) -> Result<String, String> {
    let t = match v {
        Value::Json(t) | Value::Text(t) | Value::Decimal(t) => t,
        Value::Int(i) => i.to_string(),
        Value::Float(f) if f.is_finite() => float_text(f),
        Value::Bool(b) => b.to_string(),
        _ => return Err("not a JSON document".into()),
    };
    match spec.json {
        JsonStore::Exact => jsonb::validate(&t).map(|_| t),
        JsonStore::Jsonb => jsonb::normalize(&t),
        JsonStore::Lossy => {
            Err("MySQL's JSON type keeps numbers as doubles: not carried exactly".into())
        }
    }
}

fn bytes(v: Value) -> Result<Vec<u8>, String> {
    match v {
        Value::Bytes(b) => Ok(b),
        Value::Text(t) | Value::Json(t) => Ok(t.into_bytes()),
        Value::Uuid(u) => uuid_bytes(&u).ok_or_else(|| "not a UUID".into()),
        _ => Err("not bytes".into()),
    }
}

fn uuid(v: Value) -> Result<String, String> {
    match v {
        Value::Uuid(u) => Ok(u),
        Value::Text(t) => uuid_text(t.trim()).ok_or_else(|| "not a UUID".into()),
        Value::Bytes(b) if b.len() == 16 => {
            Ok(uuid_text(&crate::migration::hex(&b)).expect("16 bytes"))
        }
        _ => Err("not a UUID".into()),
    }
}

/// MariaDB's UUID type (MySQL has none) refuses a UUID of version 8 to 15
/// with variant 0 (byte 8 from 0x01 to 0x80), which it could not tell from
/// its own byte-swapped storage (`m_buffer[6] & -m_buffer[8] & 0x80` in
/// sql_type_uuid.h): refused here, by name, rather than by the server in
/// the middle of the copy. (tests/move_props/ found it.)
fn uuid_fits(u: String, spec: &Spec) -> Result<String, String> {
    let b = uuid_bytes(&u).ok_or("not a UUID")?;
    if spec.system == Dialect::Mysql && b[6] >= 0x80 && (0x01..=0x80).contains(&b[8]) {
        return Err("MariaDB's UUID type holds no UUID of version 8 to 15 with variant 0".into());
    }
    Ok(u)
}

/// A UUID in its canonical form, from 32 hex digits with or without
/// hyphens or braces.
pub fn uuid_text(t: &str) -> Option<String> {
    let hex: String = t
        .trim_matches(|c| c == '{' || c == '}')
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

fn uuid_bytes(u: &str) -> Option<Vec<u8>> {
    let hex = uuid_text(u)?.replace('-', "");
    (0..16)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests;
