//! Generated JSON documents and the pieces of them (whitespace, strings,
//! keys, numbers) that the jsonb property test builds on too.

use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use crate::seeds::any_char;

pub fn ws(rng: &mut StdRng, out: &mut String) {
    if rng.random_bool(0.7) {
        return;
    }
    out.push_str(["", " ", "\n", "\t", "\r\n ", "  "].choose(rng).unwrap());
}

/// The inside of a JSON string (valid: no lone surrogate, no `\u0000`).
pub fn json_chars(rng: &mut StdRng, out: &mut String, n: usize) {
    for _ in 0..n {
        match rng.random_range(0..12) {
            0 => out.push_str(
                ["\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"]
                    .choose(rng)
                    .unwrap(),
            ),
            1 => {
                let c = rng.random_range(1..0x20u32);
                if rng.random_bool(0.5) {
                    out.push_str(&format!("\\u{c:04x}"));
                } else {
                    out.push_str(&format!("\\u{c:04X}"));
                }
            }
            2 => loop {
                let c = rng.random_range(1..0x1_0000u32);
                if !(0xd800..0xe000).contains(&c) {
                    out.push_str(&format!("\\u{c:04x}"));
                    break;
                }
            },
            3 => {
                let hi = rng.random_range(0xd800..0xdc00u32);
                let lo = rng.random_range(0xdc00..0xe000u32);
                out.push_str(&format!("\\u{hi:04x}\\u{lo:04X}"));
            }
            4 | 5 => loop {
                let c = any_char(rng);
                if c as u32 >= 0x20 && c != '"' && c != '\\' {
                    out.push(c);
                    break;
                }
            },
            _ => loop {
                let c = rng.random_range(0x20..0x7fu8) as char;
                if c != '"' && c != '\\' {
                    out.push(c);
                    break;
                }
            },
        }
    }
}

pub fn json_string(rng: &mut StdRng, out: &mut String) {
    out.push('"');
    let n = rng.random_range(0..12);
    json_chars(rng, out, n);
    out.push('"');
}

/// A key: often one of a few (so that objects repeat keys, some spelled
/// with escapes), else any.
pub fn json_key(rng: &mut StdRng, out: &mut String) {
    const KEYS: [&str; 14] = [
        "a",
        "b",
        "aa",
        "ab",
        "é",
        "\\u00e9",
        "",
        "ключ",
        "😀",
        "\\ud83d\\ude00",
        "A",
        "a\\\"b",
        "id",
        "\\u0061",
    ];
    if rng.random_bool(0.6) {
        out.push('"');
        out.push_str(KEYS.choose(rng).unwrap());
        out.push('"');
    } else {
        json_string(rng, out);
    }
}

/// A JSON number with up to `digits` digits before and after the point and
/// an exponent up to `exp`.
pub fn json_number(rng: &mut StdRng, out: &mut String, digits: usize, exp: i64) {
    if rng.random_bool(0.3) {
        out.push('-');
    }
    if rng.random_bool(0.25) {
        out.push('0');
    } else {
        out.push(rng.random_range(b'1'..=b'9') as char);
        for _ in 0..rng.random_range(0..digits) {
            out.push(rng.random_range(b'0'..=b'9') as char);
        }
    }
    if rng.random_bool(0.5) {
        out.push('.');
        for _ in 0..rng.random_range(1..=digits) {
            out.push(rng.random_range(b'0'..=b'9') as char);
        }
        if rng.random_bool(0.2) {
            out.push_str("000");
        }
    }
    if rng.random_bool(0.35) {
        out.push(if rng.random_bool(0.5) { 'e' } else { 'E' });
        out.push_str(["", "+", "-"].choose(rng).unwrap());
        if rng.random_bool(0.1) {
            out.push('0');
        }
        out.push_str(&rng.random_range(0..=exp).to_string());
    }
}

pub fn json_value(rng: &mut StdRng, out: &mut String, depth: usize, max_depth: usize) {
    let k = if depth >= max_depth {
        rng.random_range(2..6)
    } else {
        rng.random_range(0..6)
    };
    match k {
        0 => {
            out.push('{');
            ws(rng, out);
            for i in 0..rng.random_range(0..5) {
                if i > 0 {
                    out.push(',');
                    ws(rng, out);
                }
                json_key(rng, out);
                ws(rng, out);
                out.push(':');
                ws(rng, out);
                json_value(rng, out, depth + 1, max_depth);
                ws(rng, out);
            }
            out.push('}');
        }
        1 => {
            out.push('[');
            ws(rng, out);
            for i in 0..rng.random_range(0..5) {
                if i > 0 {
                    out.push(',');
                    ws(rng, out);
                }
                json_value(rng, out, depth + 1, max_depth);
                ws(rng, out);
            }
            out.push(']');
        }
        2 => json_string(rng, out),
        3 => json_number(rng, out, 25, 60),
        _ => out.push_str(["true", "false", "null"].choose(rng).unwrap()),
    }
}

/// A document for a move: an object, an array, a string or a literal at the
/// top (a number alone is left out: SQLite's NUMERIC affinity, which a
/// `JSON` column has, would keep it as a number).
pub fn doc(rng: &mut StdRng, max_depth: usize) -> String {
    let mut s = String::new();
    ws(rng, &mut s);
    match rng.random_range(0..10) {
        0..=5 => {
            // an object at the top
            let mut inner = String::new();
            while !inner.starts_with('{') {
                inner.clear();
                json_value(rng, &mut inner, 0, max_depth);
            }
            s.push_str(&inner);
        }
        6 | 7 => {
            let mut inner = String::new();
            while !inner.starts_with('[') {
                inner.clear();
                json_value(rng, &mut inner, 0, max_depth);
            }
            s.push_str(&inner);
        }
        8 => json_string(rng, &mut s),
        _ => s.push_str(["true", "false", "null"].choose(rng).unwrap()),
    }
    ws(rng, &mut s);
    s
}
