//! What the target holds, as it prints it: the documented conversions,
//! applied here independently of fleetmig.

use std::collections::HashMap;

use sqlx::Connection;

use crate::calendar::{Col, lite_text, my_text, pg_text};
use crate::common::*;
use crate::rows::{Num, Row, Stamp, Timed};
use crate::seeds::hex;
use crate::systems::{Lite, My, Pg, Sys};

/// A decimal `[-]int[.frac]` with 10 places, as NUMERIC(38,10) prints it.
pub fn scale10(neg: bool, int: &str, frac: &str) -> Option<String> {
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    if frac.len() > 10 || int.len() > 28 {
        return None;
    }
    let zero = int.is_empty() && frac.is_empty();
    Some(format!(
        "{}{}.{frac:0<10}",
        if neg && !zero { "-" } else { "" },
        if int.is_empty() { "0" } else { int }
    ))
}

pub fn split_decimal(s: &str) -> (bool, &str, &str) {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    (neg, int, frac)
}

/// `1.2345e-3` (Rust's `{:e}`) in plain digits: (sign, int, frac).
pub fn plain(sci: &str) -> (bool, String, String) {
    let (mantissa, exp) = sci.split_once('e').expect("an exponent");
    let exp: i64 = exp.parse().unwrap();
    let (neg, a, b) = split_decimal(mantissa);
    let digits = format!("{a}{b}");
    let point = a.len() as i64 + exp;
    let (int, frac) = if point <= 0 {
        (
            String::new(),
            format!("{}{digits}", "0".repeat((-point) as usize)),
        )
    } else if point as usize >= digits.len() {
        (
            format!("{digits}{}", "0".repeat(point as usize - digits.len())),
            String::new(),
        )
    } else {
        (
            digits[..point as usize].to_string(),
            digits[point as usize..].to_string(),
        )
    };
    (neg, int, frac)
}

/// The documented rule for a float into a decimal column of scale 10: its
/// shortest exact digits if they fit, else its 15 significant digits.
pub fn float_in_scale10(f: f64) -> Option<String> {
    let fit = |sci: String| {
        let (neg, int, frac) = plain(&sci);
        scale10(neg, &int, &frac)
    };
    fit(format!("{f:e}")).or_else(|| fit(format!("{f:.14e}")))
}

pub fn expect_decimal(n: &Num, dst: Sys) -> String {
    match (n, dst) {
        (Num::Dec(s), Lite) => {
            // SQLite's NUMERIC affinity: an INTEGER when it is a whole
            // number a 64-bit integer holds, else a REAL
            let (neg, int, frac) = split_decimal(s);
            let whole = frac.bytes().all(|b| b == b'0');
            let int: i128 = int.parse().unwrap_or(0);
            match i64::try_from(if neg { -int } else { int }) {
                Ok(v) if whole => format!("integer:{v}"),
                _ => format!("real:{:?}", s.parse::<f64>().unwrap()),
            }
        }
        (Num::Dec(s), _) if s == "NaN" => s.clone(),
        (Num::Dec(s), _) => {
            let (neg, int, frac) = split_decimal(s);
            scale10(neg, int, frac).unwrap_or_else(|| panic!("{s} is not within (38, 10)"))
        }
        (Num::Int(i), Lite) => format!("integer:{i}"),
        (Num::Int(i), _) => format!("{i}.0000000000"),
        (Num::Real(f), Lite) => format!("real:{f:?}"),
        (Num::Real(f), _) => float_in_scale10(*f).expect("generated to fit"),
    }
}

pub fn expect_stamp(t: &Timed, col: Col, src: Sys, dst: Sys) -> String {
    match (dst, &t.v) {
        (Lite, _) if src == Lite => format!("text:{}", t.text),
        (_, Stamp::Inf) => "infinity".into(),
        (_, Stamp::NegInf) => "-infinity".into(),
        (_, Stamp::Zero(shown)) => shown.to_string(),
        (Pg, Stamp::At(m)) => pg_text(&m.micros(), col),
        (My, Stamp::At(m)) => my_text(&m.micros(), col),
        (Lite, Stamp::At(m)) => format!("text:{}", lite_text(m, col)),
    }
}

/// Every cell of `row` after `id` as the target should print it; `jsonb`:
/// PostgreSQL's `::jsonb::text` of each document.
pub fn expected(
    row: &Row,
    src: Sys,
    dst: Sys,
    jsonb: &HashMap<String, String>,
) -> Vec<Option<String>> {
    let lite = dst == Lite;
    let text = |s: &str| {
        if lite {
            format!("text:{s}")
        } else {
            s.to_string()
        }
    };
    vec![
        row.i.map(|i| {
            if lite {
                format!("integer:{i}")
            } else {
                i.to_string()
            }
        }),
        row.f.map(|f| {
            if lite {
                format!("real:{f:?}")
            } else {
                format!("{f:?}")
            }
        }),
        // into a 4-byte float column: the nearest 4-byte float
        row.r.map(|r| {
            if lite {
                format!("real:{r:?}")
            } else {
                format!("{:?}", r as f32)
            }
        }),
        row.n.as_ref().map(|n| expect_decimal(n, dst)),
        row.t.as_deref().map(text),
        row.b.map(|b| match dst {
            Pg => b.to_string(),
            My => (b as i64).to_string(),
            Lite => format!("integer:{}", b as i64),
        }),
        row.d.as_ref().map(|t| expect_stamp(t, Col::Date, src, dst)),
        row.ts.as_ref().map(|t| expect_stamp(t, Col::Ts, src, dst)),
        row.tz.as_ref().map(|t| expect_stamp(t, Col::Tz, src, dst)),
        row.j.as_deref().map(text),
        row.jb.as_deref().map(|j| {
            if src == Pg || dst == Pg {
                text(&jsonb[j])
            } else {
                text(j)
            }
        }),
        row.x.as_ref().map(|x| {
            if lite {
                format!("blob:{}", hex(x))
            } else {
                hex(x)
            }
        }),
        row.u.as_ref().map(|u| match (src, dst) {
            (Lite, Lite) => format!("text:{}", u.text),
            _ => text(&u.canonical()),
        }),
    ]
}

/// PostgreSQL's `::jsonb::text` of each document.
pub async fn pg_jsonb(docs: Vec<String>) -> HashMap<String, String> {
    let mut c = pg_connect(&pg_base_url()).await;
    let out: Vec<String> = sqlx::query_scalar(
        "SELECT d::jsonb::text FROM unnest($1::text[]) WITH ORDINALITY AS u(d, n) ORDER BY n",
    )
    .bind(&docs)
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    docs.into_iter().zip(out).collect()
}
