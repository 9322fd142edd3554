//! Into a SQLite column: the storage class SQLite's affinity gives a value
//! (its `Value` kept where SQLite holds it exactly, else refused by reason).

use super::super::value::{Affinity, Decimal, Kind, Spec, Value, float_text};
use super::super::when::When;
use super::{Rules, special_float, when};

/// Into a SQLite column: a storage class (NULL, INTEGER, REAL, TEXT, BLOB)
/// after the column's affinity. Storage classes from SQLite pass as they
/// are (SQLite holds whatever it was given); typed values from the other
/// systems are spelled as SQLite keeps them.
pub(super) fn sqlite(v: Value, kind: Kind, spec: &Spec, rules: &Rules) -> Result<Value, String> {
    let stored = match v {
        // SQLite binds a NaN as NULL, in any column (tests/move_props/
        // found it)
        Value::Float(f) if f.is_nan() => return Err("SQLite keeps NaN as NULL".into()),
        Value::Int(_) | Value::Float(_) | Value::Text(_) | Value::Bytes(_) => v,
        Value::Bool(b) => Value::Int(b as i64),
        Value::Decimal(t) if special_float(&t).is_some() => {
            return Err("SQLite holds no NaN or infinite decimal".into());
        }
        Value::Decimal(t) | Value::Json(t) | Value::Uuid(t) => Value::Text(t),
        Value::Date(w) => match when(Value::Date(w), spec, rules, false)? {
            // as SQLite and sqlx spell a day: 1 BC is `0000-01-01` (as in
            // `sqlite_timestamp`), never `0001-01-01 BC` (tests/move_props/
            // found it)
            Some(w) => {
                let mut s = String::new();
                w.write(&mut s, false, false);
                Value::Text(s)
            }
            None => Value::Null,
        },
        Value::Timestamp(w) | Value::TimestampTz(w) => {
            let zoned = matches!(v, Value::TimestampTz(_)) || kind == Kind::TimestampTz;
            match when(Value::Timestamp(w), spec, rules, true)? {
                Some(w) => Value::Text(sqlite_timestamp(&w, zoned)),
                None => Value::Null,
            }
        }
        Value::Null => Value::Null,
    };
    match spec.affinity {
        Some(a) => affinity(stored, a),
        None => Ok(stored),
    }
}

/// As sqlx writes a timestamp into SQLite (`%F %T%.f`, `%:z` with a zone):
/// the fraction in 3, 6 or 9 digits as needed.
fn sqlite_timestamp(w: &When, zoned: bool) -> String {
    let mut s = String::new();
    w.truncated(0).write(&mut s, true, false);
    let frac = w.nanos() % 1_000_000_000;
    if frac > 0 {
        let digits = if frac.is_multiple_of(1_000_000) {
            3
        } else if frac.is_multiple_of(1000) {
            6
        } else {
            9
        };
        s.push('.');
        s.push_str(&w.fraction(digits));
    }
    if zoned {
        s.push_str("+00:00");
    }
    s
}

/// What SQLite stores for `v` in a column of affinity `a`; refused where
/// SQLite would keep a number less exactly than it was given.
pub fn affinity(v: Value, a: Affinity) -> Result<Value, String> {
    match (a, v) {
        (Affinity::Blob, v) => Ok(v),
        (Affinity::Text, Value::Int(i)) => Ok(Value::Text(i.to_string())),
        (Affinity::Text, Value::Float(f)) => Ok(Value::Text(float_text(f))),
        (Affinity::Text, v) => Ok(v),
        (Affinity::Real, Value::Int(i)) if i.unsigned_abs() <= 1 << 53 => {
            Ok(Value::Float(i as f64))
        }
        (Affinity::Real, Value::Int(_)) => {
            Err("a SQLite REAL column cannot hold this integer exactly".into())
        }
        // SQLite writes a whole REAL as an integer: -0.0 would come back
        // 0.0 (tests/move_props/ found it)
        (Affinity::Real, Value::Float(f)) if f == 0.0 && f.is_sign_negative() => {
            Err("a SQLite REAL column keeps -0.0 as 0.0".into())
        }
        (Affinity::Real, Value::Text(t)) => match numeric_text(&t)? {
            Some(Value::Int(i)) => affinity(Value::Int(i), Affinity::Real),
            Some(n) => Ok(n),
            None => Ok(Value::Text(t)),
        },
        (Affinity::Integer | Affinity::Numeric, Value::Float(f)) => {
            Ok(integral(f).unwrap_or(Value::Float(f)))
        }
        (Affinity::Integer | Affinity::Numeric, Value::Text(t)) => {
            Ok(numeric_text(&t)?.unwrap_or(Value::Text(t)))
        }
        (_, v) => Ok(v),
    }
}

/// A float SQLite keeps as an INTEGER in an INTEGER or NUMERIC column.
fn integral(f: f64) -> Option<Value> {
    (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(Value::Int(f as i64))
}

/// A text SQLite reads as a number in a numeric column: an INTEGER when it
/// is a whole number that fits, else a REAL; refused when the REAL would
/// not hold its value exactly; `None`: not a number, kept as text.
fn numeric_text(t: &str) -> Result<Option<Value>, String> {
    let s = t.trim();
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return Ok(None);
    }
    let Some(d) = Decimal::parse(s) else {
        return Ok(None);
    };
    // a whole number an INTEGER holds is that INTEGER, however it is
    // spelled (`12.00`, `1e3`), and exactly: not the integer of the nearest
    // REAL (83636144784829300.0 is not 83636144784829296; tests/move_props/
    // found it)
    if let Some(i) = d.as_i64() {
        return Ok(Some(Value::Int(i)));
    }
    let f: f64 = d.text().parse().map_err(|_| "not a number")?;
    if Decimal::parse(&float_text(f)).map(|x| x.normalized()) != Some(d.normalized()) {
        return Err(format!(
            "SQLite's numeric column keeps {} as a REAL, which does not hold it exactly",
            d.text()
        ));
    }
    Ok(Some(integral(f).unwrap_or(Value::Float(f))))
}
