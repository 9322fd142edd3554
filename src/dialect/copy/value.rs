//! The values a move carries between databases: one `Kind` per column type
//! fleetmig can carry, a `Spec` of what one column can hold (its system,
//! scale, fractional seconds, ranges), one `Value` per cell, and the
//! canonical text of a value that checksums are computed from.
//!
//! Values are read exactly: decimals, JSON, UUIDs, dates and timestamps as
//! the database prints them (never through a float or a date library's
//! range), floats as the doubles they are, SQLite cells by their storage
//! class. `convert` turns a value into what the target column will hold;
//! verification compares that with what the target holds when read back.

use super::when::When;
use crate::tenant::Dialect;

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

/// How a JSON column keeps a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonStore {
    /// The text as given (PostgreSQL `json`, MariaDB, SQLite).
    Exact,
    /// PostgreSQL's `jsonb`: normalised (`jsonb::normalize`).
    Jsonb,
    /// MySQL's binary JSON, which keeps numbers as doubles: not filled.
    Lossy,
}

/// SQLite's type affinity of a declared column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

impl Affinity {
    /// SQLite's rules (section 3.1 of its datatype page), in order.
    pub fn of(declared: &str) -> Affinity {
        let d = declared.to_ascii_uppercase();
        if d.contains("INT") {
            Affinity::Integer
        } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
            Affinity::Text
        } else if d.contains("BLOB") || d.trim().is_empty() {
            Affinity::Blob
        } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
            Affinity::Real
        } else {
            Affinity::Numeric
        }
    }
}

/// What one column can hold, beyond its kind.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Spec {
    pub system: Dialect,
    /// Digits after the point a DECIMAL/NUMERIC(p, s) keeps.
    pub scale: Option<u32>,
    /// Digits in all, of a DECIMAL/NUMERIC(p, s).
    pub precision: Option<u32>,
    /// A 4-byte float (`real`, MySQL `FLOAT`).
    pub single: bool,
    /// Digits of a second a timestamp keeps.
    pub fsp: u32,
    pub json: JsonStore,
    /// The smallest and largest integer.
    pub int_range: (i128, i128),
    /// The first and last year a date or timestamp may have.
    pub years: (i64, i64),
    /// `infinity` and `-infinity` (PostgreSQL dates and timestamps).
    pub infinity: bool,
    /// MySQL's zero dates (`0000-00-00`).
    pub zero_dates: bool,
    /// MySQL's `TIMESTAMP`: 1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC.
    pub epoch_range: bool,
    /// A SQLite column's affinity.
    pub affinity: Option<Affinity>,
}

impl Spec {
    /// What any column of `system` holds, before its declared type narrows it.
    pub fn of(system: Dialect) -> Spec {
        Spec {
            system,
            scale: None,
            precision: None,
            single: false,
            fsp: match system {
                Dialect::Sqlite => 9,
                _ => 6,
            },
            json: JsonStore::Exact,
            int_range: (i64::MIN as i128, i64::MAX as i128),
            years: match system {
                // PostgreSQL dates: 4714-11-24 BC (Julian day 0, year
                // -4713; `convert` refuses the days before it) to
                // 5874897 AD. (Not -4712: that refused PostgreSQL's own
                // first year; tests/move_props/ found it.)
                Dialect::Postgres => (-4713, 5_874_897),
                // what SQLite's date functions and MySQL's DATETIME read
                Dialect::Sqlite => (0, 9999),
                Dialect::Mysql => (0, 9999),
            },
            infinity: system == Dialect::Postgres,
            zero_dates: system == Dialect::Mysql,
            epoch_range: false,
            affinity: None,
        }
    }

    /// `(p, s)` from a type spelled `numeric(12,2)` or `decimal(40,0) unsigned`.
    pub fn with_numeric_typmod(mut self, type_name: &str) -> Spec {
        if let Some((p, s)) = typmod(type_name) {
            self.precision = Some(p);
            self.scale = Some(s.unwrap_or(0));
        }
        self
    }
}

/// The numbers in a type's parentheses: `varchar(40)` → (40, None),
/// `numeric(12, 2)` → (12, Some(2)).
pub fn typmod(type_name: &str) -> Option<(u32, Option<u32>)> {
    let inner = type_name.split_once('(')?.1.split_once(')')?.0;
    let mut parts = inner.split(',').map(|p| p.trim().parse::<u32>());
    let first = parts.next()?.ok()?;
    let second = match parts.next() {
        Some(p) => Some(p.ok()?),
        None => None,
    };
    Some((first, second))
}

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    /// A decimal number as its database prints it (`-12.50`; PostgreSQL's
    /// `NaN`, `Infinity`, `-Infinity`).
    Decimal(String),
    Text(String),
    Bool(bool),
    Date(When),
    Timestamp(When),
    /// In UTC.
    TimestampTz(When),
    /// The document's text as the column holds it.
    Json(String),
    Bytes(Vec<u8>),
    /// Lower-case, hyphenated.
    Uuid(String),
}

impl Value {
    /// Its size as carried: the bytes of a text, a document or a blob, the
    /// width of a number or a date (what a move reports as its bytes).
    pub fn size(&self) -> u64 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Date(_) => 4,
            Value::Int(_) | Value::Float(_) | Value::Timestamp(_) | Value::TimestampTz(_) => 8,
            Value::Uuid(_) => 16,
            Value::Decimal(s) | Value::Text(s) | Value::Json(s) => s.len() as u64,
            Value::Bytes(b) => b.len() as u64,
        }
    }

    /// The text checksums compare: the value's kind, then its exact text
    /// (a float's shortest round-trip digits, a decimal as printed).
    pub fn canonical(&self) -> String {
        let mut s = String::new();
        self.write_canonical(&mut s);
        s
    }

    /// `canonical`, appended to `out`.
    pub fn write_canonical(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = match self {
            Value::Null => write!(out, "\u{0}null"),
            Value::Int(i) => write!(out, "i{i}"),
            Value::Float(f) => write!(out, "f{f:?}"),
            Value::Decimal(d) => write!(out, "n{d}"),
            Value::Text(t) => write!(out, "t{t}"),
            Value::Uuid(t) => write!(out, "u{t}"),
            Value::Bool(b) => write!(out, "b{b}"),
            Value::Date(d) => {
                out.push('d');
                d.write(out, false, false);
                Ok(())
            }
            Value::Timestamp(t) => {
                out.push('s');
                t.write(out, true, false);
                Ok(())
            }
            Value::TimestampTz(t) => {
                out.push('z');
                t.write(out, true, false);
                Ok(())
            }
            Value::Json(j) => write!(out, "j{j}"),
            Value::Bytes(b) => write!(out, "x{}", crate::migration::hex(b)),
        };
    }

    /// The value as a person reads it in a message (cut at 40 characters).
    pub fn shown(&self) -> String {
        let mut s = match self {
            Value::Null => "NULL".to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format!("{f:?}"),
            Value::Decimal(t) | Value::Text(t) | Value::Uuid(t) | Value::Json(t) => {
                format!("{t:?}")
            }
            Value::Bool(b) => b.to_string(),
            Value::Date(w) => {
                let mut s = String::new();
                // a zero date as MySQL spells it; else BC as PostgreSQL does
                w.write(&mut s, false, !w.is_zero());
                s
            }
            Value::Timestamp(w) | Value::TimestampTz(w) => {
                let mut s = String::new();
                w.write(&mut s, true, !w.is_zero());
                s
            }
            Value::Bytes(b) => format!("x'{}'", crate::migration::hex(b)),
        };
        if s.chars().count() > 40 {
            s = format!("{}…", s.chars().take(40).collect::<String>());
        }
        s
    }
}

/// A decimal number taken apart: sign, digits before and after the point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    pub neg: bool,
    /// No leading zeros ("" for zero).
    pub int: String,
    /// As given (trailing zeros kept: they are the number's scale).
    pub frac: String,
}

impl Decimal {
    /// `-12.50`, `+.5`, `1.5e10`, `7`: `None` when not a finite decimal.
    pub fn parse(text: &str) -> Option<Decimal> {
        let t = text.trim();
        let (neg, t) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (mantissa, exp) = match t.find(['e', 'E']) {
            Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
            None => (t, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
            || exp.abs() > 100_000
        {
            return None;
        }
        let text =
            super::jsonb::numeric_text(neg, if int.is_empty() { "0" } else { int }, frac, exp)?;
        let neg = text.starts_with('-');
        let body = text.trim_start_matches('-');
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        Some(Decimal {
            neg,
            int: int.trim_start_matches('0').to_string(),
            frac: frac.to_string(),
        })
    }

    /// The same number with `scale` digits after the point, or `None`
    /// when a nonzero digit would be cut.
    pub fn with_scale(&self, scale: usize) -> Option<Decimal> {
        let mut frac = self.frac.clone();
        if frac.len() > scale {
            if frac[scale..].bytes().any(|b| b != b'0') {
                return None;
            }
            frac.truncate(scale);
        }
        while frac.len() < scale {
            frac.push('0');
        }
        Some(Decimal {
            frac,
            ..self.clone()
        })
    }

    pub fn is_zero(&self) -> bool {
        self.int.is_empty() && self.frac.bytes().all(|b| b == b'0')
    }

    /// Its value alone: trailing zeros of the fraction dropped.
    pub fn normalized(&self) -> Decimal {
        Decimal {
            neg: self.neg && !self.is_zero(),
            int: self.int.clone(),
            frac: self.frac.trim_end_matches('0').to_string(),
        }
    }

    /// Plain notation, as PostgreSQL and MySQL print a decimal.
    pub fn text(&self) -> String {
        let mut s = String::new();
        if self.neg && !self.is_zero() {
            s.push('-');
        }
        s.push_str(if self.int.is_empty() { "0" } else { &self.int });
        if !self.frac.is_empty() {
            s.push('.');
            s.push_str(&self.frac);
        }
        s
    }

    /// The integer, when it is one that fits.
    pub fn as_i64(&self) -> Option<i64> {
        if self.frac.bytes().any(|b| b != b'0') {
            return None;
        }
        let int = if self.int.is_empty() { "0" } else { &self.int };
        let v: i128 = int.parse().ok()?;
        i64::try_from(if self.neg { -v } else { v }).ok()
    }
}

/// The shortest text that reads back as `f` (Rust's and every JSON
/// writer's round-trip digits), in plain notation.
pub fn float_text(f: f64) -> String {
    let s = format!("{f:?}");
    match Decimal::parse(&s) {
        Some(d) => d.normalized().text(),
        None => s,
    }
}

/// `f` as SQLite prints a REAL: 15 significant digits.
pub fn float_text15(f: f64) -> String {
    let s = format!("{f:.14e}");
    match Decimal::parse(&s) {
        Some(d) => d.normalized().text(),
        None => s,
    }
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
        self.rows += 1;
        self.sum = self.sum.wrapping_add(row_hash(row));
    }

    /// `rows:sum` in hex, as reports show it.
    pub fn text(&self) -> String {
        format!("{}:{:016x}", self.rows, self.sum)
    }
}

/// The hash of one row: each value's kind and its exact content (strings
/// length-prefixed, floats by their bits with one NaN, dates by their
/// fields) fed to a 64-bit FNV-1a, without building its text.
pub fn row_hash(row: &[Value]) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for v in row {
        match v {
            Value::Null => h.feed(b"0"),
            Value::Int(i) => {
                h.feed(b"i");
                h.feed(&i.to_le_bytes());
            }
            Value::Float(f) => {
                let bits = if f.is_nan() {
                    f64::NAN.to_bits()
                } else {
                    f.to_bits()
                };
                h.feed(b"f");
                h.feed(&bits.to_le_bytes());
            }
            Value::Bool(b) => h.feed(if *b { b"b1" } else { b"b0" }),
            Value::Decimal(t) => h.text(b'n', t.as_bytes()),
            Value::Text(t) => h.text(b't', t.as_bytes()),
            Value::Uuid(t) => h.text(b'u', t.as_bytes()),
            Value::Json(t) => h.text(b'j', t.as_bytes()),
            Value::Bytes(b) => h.text(b'x', b),
            Value::Date(w) => h.when(b'd', w),
            Value::Timestamp(w) => h.when(b's', w),
            Value::TimestampTz(w) => h.when(b'z', w),
        }
    }
    h.0
}

struct Fnv(u64);

impl Fnv {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn text(&mut self, tag: u8, bytes: &[u8]) {
        self.feed(&[tag]);
        self.feed(&(bytes.len() as u64).to_le_bytes());
        self.feed(bytes);
    }

    fn when(&mut self, tag: u8, w: &When) {
        self.feed(&[tag]);
        match w {
            When::NegInfinity => self.feed(b"-inf"),
            When::Infinity => self.feed(b"+inf"),
            When::At {
                year,
                month,
                day,
                nanos,
            } => {
                self.feed(&year.to_le_bytes());
                self.feed(&[*month, *day]);
                self.feed(&nanos.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_taken_apart_exactly() {
        let d = Decimal::parse("-012.500").unwrap();
        assert_eq!(d.text(), "-12.500");
        assert_eq!(d.normalized().text(), "-12.5");
        assert_eq!(d.with_scale(2).unwrap().text(), "-12.50");
        assert_eq!(d.with_scale(1).unwrap().text(), "-12.5");
        assert!(Decimal::parse("12.345").unwrap().with_scale(2).is_none());
        assert_eq!(Decimal::parse("1.5e10").unwrap().text(), "15000000000");
        assert_eq!(Decimal::parse(".5").unwrap().text(), "0.5");
        assert_eq!(Decimal::parse("-0.00").unwrap().text(), "0.00");
        assert_eq!(
            Decimal::parse("12345678901234567890123456789")
                .unwrap()
                .text(),
            "12345678901234567890123456789"
        );
        assert_eq!(
            Decimal::parse("9223372036854775807").unwrap().as_i64(),
            Some(i64::MAX)
        );
        assert_eq!(
            Decimal::parse("9223372036854775808").unwrap().as_i64(),
            None
        );
        for bad in ["", "-", "1.2.3", "abc", "1e", "NaN", "0x10"] {
            assert!(Decimal::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn floats_print_their_exact_shortest_digits() {
        assert_eq!(float_text(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(float_text15(0.1 + 0.2), "0.3");
        assert_eq!(float_text(1e20), "100000000000000000000");
        assert_eq!(float_text(-2.5e-7), "-0.00000025");
        assert_eq!(float_text15(12.340000000000002), "12.34");
        assert_eq!(float_text(12.5), "12.5");
    }

    #[test]
    fn sqlite_affinity_follows_its_rules() {
        assert_eq!(Affinity::of("BIGINT"), Affinity::Integer);
        assert_eq!(Affinity::of("VARCHAR(40)"), Affinity::Text);
        assert_eq!(Affinity::of(""), Affinity::Blob);
        assert_eq!(Affinity::of("DOUBLE PRECISION"), Affinity::Real);
        assert_eq!(Affinity::of("NUMERIC(12,2)"), Affinity::Numeric);
        assert_eq!(Affinity::of("DATE"), Affinity::Numeric);
        assert_eq!(Affinity::of("FLOATING POINT"), Affinity::Integer);
    }

    #[test]
    fn checksums_ignore_row_order_but_not_content_or_kind() {
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
        assert_ne!(
            Value::Int(1).canonical(),
            Value::Text("1".into()).canonical()
        );
    }
}
