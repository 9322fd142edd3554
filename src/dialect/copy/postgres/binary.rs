//! Rows in `COPY … FROM STDIN WITH (FORMAT binary)`: each value in the
//! target column's own binary form (the server's `*_recv` functions read
//! it without parsing text), the format pgloader and `pg_dump -Fc` restore
//! with. Values reach here already converted to what the column holds
//! (`convert.rs`); one that does not fit its column is an error naming both,
//! never a guess.

use super::super::value::{JsonStore, Spec};
use super::super::when::When;
use super::super::{Column, Kind, Value};
use crate::error::{FailureKind, TenantError};

/// The stream's header: signature, flags, header extension length.
pub(super) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The stream's trailer: a field count of -1.
pub(super) const TRAILER: &[u8] = &[0xff, 0xff];

/// PostgreSQL's epoch for dates and timestamps: 2000-01-01, in days from
/// 1970-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

/// Appends one row of `row` (values in `columns`' order) to `out`.
pub(super) fn row(columns: &[Column], row: &[Value], out: &mut Vec<u8>) -> Result<(), TenantError> {
    out.extend_from_slice(&(row.len() as i16).to_be_bytes());
    for (c, v) in columns.iter().zip(row) {
        field(c, v, out)?;
    }
    Ok(())
}

/// One field: its length (-1: NULL), then its bytes.
fn field(c: &Column, v: &Value, out: &mut Vec<u8>) -> Result<(), TenantError> {
    if matches!(v, Value::Null) {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return Ok(());
    }
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    encode(c, v, out)?;
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn encode(c: &Column, v: &Value, out: &mut Vec<u8>) -> Result<(), TenantError> {
    let spec = &c.spec;
    match (c.kind, v) {
        (Some(Kind::Int), Value::Int(i)) => int(*i, spec, c, out),
        (Some(Kind::Float), Value::Float(f)) if spec.single => {
            let single = *f as f32;
            if f64::from(single) != *f && !f.is_nan() {
                return Err(misfit(c, &format!("{f:?}")));
            }
            out.extend_from_slice(&single.to_be_bytes());
            Ok(())
        }
        (Some(Kind::Float), Value::Float(f)) => {
            out.extend_from_slice(&f.to_be_bytes());
            Ok(())
        }
        (Some(Kind::Decimal), Value::Decimal(d)) => numeric(d, out).ok_or_else(|| misfit(c, d)),
        (Some(Kind::Text), Value::Text(s)) => {
            out.extend_from_slice(s.as_bytes());
            Ok(())
        }
        (Some(Kind::Bool), Value::Bool(b)) => {
            out.push(u8::from(*b));
            Ok(())
        }
        (Some(Kind::Date), Value::Date(w)) => {
            let days = date(w).ok_or_else(|| misfit(c, &format!("{w:?}")))?;
            out.extend_from_slice(&days.to_be_bytes());
            Ok(())
        }
        (
            Some(Kind::Timestamp | Kind::TimestampTz),
            Value::Timestamp(w) | Value::TimestampTz(w),
        ) => {
            let us = micros(w).ok_or_else(|| misfit(c, &format!("{w:?}")))?;
            out.extend_from_slice(&us.to_be_bytes());
            Ok(())
        }
        (Some(Kind::Json), Value::Json(s)) => {
            if spec.json == JsonStore::Jsonb {
                // jsonb's binary form: a version byte, then the text
                out.push(1);
            }
            out.extend_from_slice(s.as_bytes());
            Ok(())
        }
        (Some(Kind::Bytes), Value::Bytes(b)) => {
            out.extend_from_slice(b);
            Ok(())
        }
        (Some(Kind::Uuid), Value::Uuid(u)) => uuid(u, out).ok_or_else(|| misfit(c, u)),
        _ => Err(misfit(c, &v.canonical())),
    }
}

fn misfit(c: &Column, what: &str) -> TenantError {
    TenantError::permanent(
        FailureKind::UnsupportedValue,
        format!(
            "column {} ({}): {what} is not a value of its type",
            c.name, c.type_name
        ),
    )
}

/// An integer in the width of its column (`int_range` says which).
fn int(i: i64, spec: &Spec, c: &Column, out: &mut Vec<u8>) -> Result<(), TenantError> {
    let (lo, hi) = spec.int_range;
    if i128::from(i) < lo || i128::from(i) > hi {
        return Err(misfit(c, &i.to_string()));
    }
    match hi {
        h if h == i128::from(i16::MAX) => out.extend_from_slice(&(i as i16).to_be_bytes()),
        h if h == i128::from(i32::MAX) => out.extend_from_slice(&(i as i32).to_be_bytes()),
        _ => out.extend_from_slice(&i.to_be_bytes()),
    }
    Ok(())
}

/// Days from 1970-01-01 to the proleptic Gregorian `year-month-day`
/// (astronomical years; any i64 year): Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A date as PostgreSQL's `date_recv` reads it: days from 2000-01-01, the
/// infinities at the ends of `int4`.
fn date(w: &When) -> Option<i32> {
    match *w {
        When::NegInfinity => Some(i32::MIN),
        When::Infinity => Some(i32::MAX),
        When::At {
            year, month, day, ..
        } if month > 0 && day > 0 => {
            i32::try_from(days_from_civil(year, month, day) - PG_EPOCH_DAYS).ok()
        }
        When::At { .. } => None,
    }
}

/// A timestamp as `timestamp_recv` reads it: microseconds from
/// 2000-01-01 00:00:00 (UTC for `timestamptz`), the infinities at the ends
/// of `int8`. A fraction finer than a microsecond is not PostgreSQL's to
/// hold: refused (the conversion cut it to the column's digits before).
fn micros(w: &When) -> Option<i64> {
    match *w {
        When::NegInfinity => Some(i64::MIN),
        When::Infinity => Some(i64::MAX),
        When::At {
            year,
            month,
            day,
            nanos,
        } if month > 0 && day > 0 && nanos % 1_000 == 0 => {
            let days = days_from_civil(year, month, day) - PG_EPOCH_DAYS;
            days.checked_mul(86_400_000_000)?
                .checked_add((nanos / 1_000) as i64)
        }
        When::At { .. } => None,
    }
}

/// A decimal as `numeric_recv` reads it: base-10000 digits with a weight,
/// a sign (or NaN, ±Infinity) and the scale the text shows.
fn numeric(text: &str, out: &mut Vec<u8>) -> Option<()> {
    let head = |n: i16, weight: i16, sign: u16, scale: i16, out: &mut Vec<u8>| {
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&scale.to_be_bytes());
    };
    match text {
        "NaN" => {
            head(0, 0, 0xC000, 0, out);
            return Some(());
        }
        "Infinity" => {
            head(0, 0, 0xD000, 0, out);
            return Some(());
        }
        "-Infinity" => {
            head(0, 0, 0xF000, 0, out);
            return Some(());
        }
        _ => {}
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let scale = i16::try_from(frac.len()).ok()?;
    let int = int.trim_start_matches('0');
    let mut groups: Vec<i16> = Vec::new();
    let lead = (4 - int.len() % 4) % 4;
    let padded_int = format!("{}{int}", "0".repeat(lead));
    for g in padded_int.as_bytes().chunks(4) {
        groups.push(std::str::from_utf8(g).ok()?.parse().ok()?);
    }
    let mut weight = groups.len() as i64 - 1;
    let tail = (4 - frac.len() % 4) % 4;
    let padded_frac = format!("{frac}{}", "0".repeat(tail));
    for g in padded_frac.as_bytes().chunks(4) {
        groups.push(std::str::from_utf8(g).ok()?.parse().ok()?);
    }
    // no leading or trailing zero groups (the weight says where the point is)
    let first = groups.iter().position(|g| *g != 0);
    let Some(first) = first else {
        head(0, 0, 0, scale, out);
        return Some(());
    };
    weight -= first as i64;
    let last = groups.iter().rposition(|g| *g != 0)?;
    let kept = &groups[first..=last];
    let sign = if negative { 0x4000 } else { 0 };
    head(
        i16::try_from(kept.len()).ok()?,
        i16::try_from(weight).ok()?,
        sign,
        scale,
        out,
    );
    for g in kept {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Some(())
}

/// A UUID's 16 bytes from its hyphenated text.
fn uuid(text: &str, out: &mut Vec<u8>) -> Option<()> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    for i in (0..32).step_by(2) {
        out.push(u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()?);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(t: &str) -> Vec<u8> {
        let mut out = Vec::new();
        numeric(t, &mut out).unwrap();
        out
    }

    fn words(b: &[u8]) -> Vec<i16> {
        b.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numerics_as_numeric_send_writes_them() {
        // (ndigits, weight, sign, dscale, digits…)
        assert_eq!(words(&num("12.50")), [2, 0, 0, 2, 12, 5000]);
        assert_eq!(words(&num("0.0001")), [1, -1, 0, 4, 1]);
        assert_eq!(words(&num("-100000000")), [1, 2, 0x4000, 0, 1]);
        assert_eq!(words(&num("0")), [0, 0, 0, 0]);
        assert_eq!(words(&num("-0.00")), [0, 0, 0, 2]);
        assert_eq!(
            words(&num("12345678901234567890.123")),
            [6, 4, 0, 3, 1234, 5678, 9012, 3456, 7890, 1230]
        );
        assert_eq!(words(&num("NaN")), [0, 0, 0xC000u16 as i16, 0]);
        assert!(numeric("1e5", &mut Vec::new()).is_none());
        assert!(numeric("", &mut Vec::new()).is_none());
    }

    #[test]
    fn days_and_microseconds_from_postgresql_s_epoch() {
        assert_eq!(date(&When::day(2000, 1, 1)), Some(0));
        assert_eq!(date(&When::day(1999, 12, 31)), Some(-1));
        assert_eq!(date(&When::day(1970, 1, 1)), Some(-10_957));
        // Julian day 0 (4714-11-24 BC, astronomical -4713) is
        // POSTGRES_EPOCH_JDATE (2451545) days before 2000-01-01
        assert_eq!(date(&When::day(-4713, 11, 24)), Some(-2_451_545));
        assert_eq!(date(&When::Infinity), Some(i32::MAX));
        assert_eq!(
            micros(&When::At {
                year: 2000,
                month: 1,
                day: 2,
                nanos: 1_500,
            }),
            None,
            "a fraction below a microsecond is refused"
        );
        assert_eq!(
            micros(&When::At {
                year: 2000,
                month: 1,
                day: 2,
                nanos: 1_000,
            }),
            Some(86_400_000_001)
        );
    }
}
