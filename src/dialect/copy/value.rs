//! The values a move carries between databases: one `Kind` per column type
//! fleetmig can carry, one `Value` per cell, the coercion of a value read
//! on one system into the kind of the column it lands in on another, and the
//! canonical text of a value that both sides' checksums are computed from
//! (so that `12.50` from PostgreSQL and `12.5` from SQLite, or one JSON
//! document with its keys in two orders, compare equal).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// What fleetmig can carry, by the column type it maps from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Int,
    Float,
    Decimal,
    Text,
    Bool,
    Date,
    Timestamp,
    TimestampTz,
    Json,
    Bytes,
    Uuid,
}

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    /// A decimal number as text (`-12.50`).
    Decimal(String),
    Text(String),
    Bool(bool),
    Date(NaiveDate),
    Timestamp(NaiveDateTime),
    TimestampTz(DateTime<Utc>),
    Json(serde_json::Value),
    Bytes(Vec<u8>),
    /// Lower-case, hyphenated.
    Uuid(String),
}

impl Value {
    /// This value as a `kind` column holds it, or why it cannot be.
    pub fn coerce(self, kind: Kind) -> Result<Value, String> {
        use Value as V;
        let shown = |v: &Value| {
            let mut s = v.canonical();
            if s.len() > 40 {
                s = format!("{}…", s.chars().take(40).collect::<String>());
            }
            s
        };
        let fail = |v: &Value| Err(format!("cannot carry {} into a {kind:?} column", shown(v)));
        Ok(match (kind, self) {
            (_, V::Null) => V::Null,
            (Kind::Int, V::Int(i)) => V::Int(i),
            (Kind::Int, V::Bool(b)) => V::Int(b as i64),
            (Kind::Int, v @ (V::Text(_) | V::Decimal(_) | V::Float(_))) => {
                match v.canonical().parse::<i64>() {
                    Ok(i) => V::Int(i),
                    Err(_) => return fail(&v),
                }
            }
            (Kind::Float, V::Float(f)) => V::Float(f),
            (Kind::Float, V::Int(i)) => V::Float(i as f64),
            (Kind::Float, v @ (V::Decimal(_) | V::Text(_))) => match v.canonical().parse() {
                Ok(f) => V::Float(f),
                Err(_) => return fail(&v),
            },
            (Kind::Decimal, V::Decimal(d)) => V::Decimal(d),
            (Kind::Decimal, V::Int(i)) => V::Decimal(i.to_string()),
            (Kind::Decimal, V::Float(f)) => V::Decimal(float_decimal(f)),
            (Kind::Decimal, V::Text(t)) => match t.trim().parse::<f64>() {
                // `1.5e10` is a float's spelling, not a decimal's
                Ok(f) if t.contains(['e', 'E']) => V::Decimal(float_decimal(f)),
                Ok(_) => V::Decimal(t.trim().to_string()),
                Err(_) => return fail(&V::Text(t)),
            },
            (Kind::Text, V::Bytes(b)) => match String::from_utf8(b) {
                Ok(s) => V::Text(s),
                Err(e) => return fail(&V::Bytes(e.into_bytes())),
            },
            (Kind::Text, v) => V::Text(v.canonical()),
            (Kind::Bool, V::Bool(b)) => V::Bool(b),
            (Kind::Bool, V::Int(i @ (0 | 1))) => V::Bool(i == 1),
            (Kind::Bool, V::Text(t)) => match t.trim().to_ascii_lowercase().as_str() {
                "1" | "t" | "true" | "y" | "yes" | "on" => V::Bool(true),
                "0" | "f" | "false" | "n" | "no" | "off" => V::Bool(false),
                _ => return fail(&V::Text(t)),
            },
            (Kind::Date, V::Date(d)) => V::Date(d),
            (Kind::Date, V::Text(t)) => match NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d") {
                Ok(d) => V::Date(d),
                Err(_) => return fail(&V::Text(t)),
            },
            (Kind::Timestamp, V::Timestamp(t)) => V::Timestamp(t),
            (Kind::Timestamp, V::TimestampTz(t)) => V::Timestamp(t.naive_utc()),
            (Kind::Timestamp, V::Text(t)) => match parse_time(&t) {
                Some(at) => V::Timestamp(at.naive_utc()),
                None => return fail(&V::Text(t)),
            },
            (Kind::TimestampTz, V::TimestampTz(t)) => V::TimestampTz(t),
            (Kind::TimestampTz, V::Timestamp(t)) => V::TimestampTz(t.and_utc()),
            (Kind::TimestampTz, V::Text(t)) => match parse_time(&t) {
                Some(at) => V::TimestampTz(at),
                None => return fail(&V::Text(t)),
            },
            (Kind::Json, V::Json(j)) => V::Json(j),
            (Kind::Json, V::Text(t)) => match serde_json::from_str(&t) {
                Ok(j) => V::Json(j),
                Err(_) => return fail(&V::Text(t)),
            },
            (Kind::Bytes, V::Bytes(b)) => V::Bytes(b),
            (Kind::Bytes, V::Text(t)) => V::Bytes(t.into_bytes()),
            (Kind::Uuid, V::Uuid(u)) => V::Uuid(u),
            (Kind::Uuid, V::Text(t)) => match uuid_text(t.trim()) {
                Some(u) => V::Uuid(u),
                None => return fail(&V::Text(t)),
            },
            (Kind::Uuid, V::Bytes(b)) if b.len() == 16 => {
                V::Uuid(uuid_text(&crate::migration::hex(&b)).expect("16 bytes"))
            }
            (_, v) => return fail(&v),
        })
    }

    /// The text both sides of a move agree on for equal values.
    pub fn canonical(&self) -> String {
        let mut s = String::new();
        self.write_canonical(&mut s);
        s
    }

    /// `canonical`, appended to `out` (no allocation of its own for most
    /// kinds: a checksum runs it on every cell).
    pub fn write_canonical(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = match self {
            Value::Null => write!(out, "\u{0}null"),
            Value::Int(i) => write!(out, "{i}"),
            Value::Float(f) => write!(out, "{f:?}"),
            Value::Decimal(d) => write!(out, "{}", decimal(d)),
            Value::Text(t) | Value::Uuid(t) => write!(out, "{t}"),
            Value::Bool(b) => write!(out, "{b}"),
            Value::Date(d) => write_date(d, out),
            Value::Timestamp(t) => write_timestamp(t, out),
            Value::TimestampTz(t) => {
                write_timestamp(&t.naive_utc(), out).and_then(|_| write!(out, "Z"))
            }
            Value::Json(j) => write!(out, "{j}"),
            Value::Bytes(b) => write!(out, "{}", crate::migration::hex(b)),
        };
    }
}

/// `2026-03-01` without chrono's format-string parser (a move writes
/// millions of these).
pub fn write_date(d: &NaiveDate, out: &mut String) -> std::fmt::Result {
    use chrono::Datelike;
    use std::fmt::Write;
    write!(out, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// `2026-03-01 10:20:30.500000`.
pub fn write_timestamp(t: &NaiveDateTime, out: &mut String) -> std::fmt::Result {
    use chrono::Timelike;
    use std::fmt::Write;
    write_date(&t.date(), out)?;
    write!(
        out,
        " {:02}:{:02}:{:02}.{:06}",
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond().min(999_999_999) / 1000
    )
}

/// A float as the decimal it stands for: 15 significant digits, as SQLite
/// prints a REAL (a NUMERIC column SQLite keeps as `12.340000000000002` is
/// the `12.34` that was written).
fn float_decimal(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return decimal(&f.to_string());
    }
    let magnitude = f.abs().log10().floor() as i32;
    let places = (14 - magnitude).clamp(0, 30) as usize;
    decimal(&format!("{f:.places$}"))
}

/// `-012.500` → `-12.5`; `0.0` → `0`.
fn decimal(d: &str) -> String {
    let d = d.trim().trim_start_matches('+');
    let (neg, d) = match d.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, d),
    };
    let (int, frac) = d.split_once('.').unwrap_or((d, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let body = if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    };
    if neg && body != "0" {
        format!("-{body}")
    } else {
        body
    }
}

/// A timestamp as SQLite, MySQL or an ISO writer spells it; one without an
/// offset is UTC.
fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    let t = t.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Some(at.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%:z"] {
        if let Ok(at) = DateTime::parse_from_str(t, f) {
            return Some(at.with_timezone(&Utc));
        }
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(at) = NaiveDateTime::parse_from_str(t, f) {
            return Some(at.and_utc());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
}

/// A UUID in its canonical form, from 32 hex digits with or without
/// hyphens or braces.
fn uuid_text(t: &str) -> Option<String> {
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

/// An order-independent checksum of a table's rows: the wrapping sum of a
/// 64-bit FNV-1a hash of each row's canonical text, beside the row count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Checksum {
    pub rows: u64,
    pub sum: u64,
}

impl Checksum {
    pub fn add(&mut self, row: &[Value]) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut text = String::with_capacity(256);
        for v in row {
            text.clear();
            v.write_canonical(&mut text);
            for b in text.bytes().chain([0x1f]) {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        self.rows += 1;
        self.sum = self.sum.wrapping_add(h);
    }

    /// `rows:sum` in hex, as reports show it.
    pub fn text(&self) -> String {
        format!("{}:{:016x}", self.rows, self.sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_and_json_compare_by_value() {
        assert_eq!(decimal("12.50"), "12.5");
        assert_eq!(decimal("-0.00"), "0");
        assert_eq!(decimal("007"), "7");
        assert_eq!(float_decimal(12.340000000000002), "12.34");
        assert_eq!(float_decimal(-0.1 - 0.2), "-0.3");
        assert_eq!(float_decimal(1e20), "100000000000000000000");
        let e = Value::Text("1.5e10".into()).coerce(Kind::Decimal).unwrap();
        assert_eq!(e.canonical(), "15000000000");
        assert_ne!(
            Value::Text("1.5e1".into())
                .coerce(Kind::Decimal)
                .unwrap()
                .canonical(),
            e.canonical()
        );
        let a = Value::Text(r#"{"b": 1, "a": [true]}"#.into()).coerce(Kind::Json);
        let b = Value::Json(serde_json::json!({"a": [true], "b": 1}));
        assert_eq!(a.unwrap().canonical(), b.canonical());
    }

    #[test]
    fn values_coerce_across_systems() {
        assert_eq!(Value::Int(1).coerce(Kind::Bool), Ok(Value::Bool(true)));
        assert!(Value::Int(2).coerce(Kind::Bool).is_err());
        let t = Value::Text("2026-03-01 10:20:30.5".into()).coerce(Kind::TimestampTz);
        assert_eq!(
            t.unwrap().canonical(),
            "2026-03-01 10:20:30.500000Z".to_string()
        );
        let u = Value::Text("{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}".into()).coerce(Kind::Uuid);
        assert_eq!(
            u.unwrap(),
            Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
        );
        assert!(Value::Text("not json".into()).coerce(Kind::Json).is_err());
        assert_eq!(Value::Null.coerce(Kind::Uuid), Ok(Value::Null));
    }

    #[test]
    fn checksums_ignore_row_order_but_not_content() {
        let rows = [
            vec![Value::Int(1), Value::Text("a".into())],
            vec![Value::Int(2), Value::Text("b".into())],
        ];
        let (mut x, mut y, mut z) = (
            Checksum::default(),
            Checksum::default(),
            Checksum::default(),
        );
        x.add(&rows[0]);
        x.add(&rows[1]);
        y.add(&rows[1]);
        y.add(&rows[0]);
        z.add(&rows[0]);
        z.add(&[Value::Int(2), Value::Text("c".into())]);
        assert_eq!(x, y);
        assert_ne!(x, z);
    }
}
