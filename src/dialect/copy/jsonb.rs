//! JSON documents as text, never through a float: a check that a text is
//! one JSON value (RFC 8259, as PostgreSQL's `json` and MariaDB's
//! `json_valid` read it), and PostgreSQL's `jsonb` normalisation done the
//! way the server does it, so that a move into a `jsonb` column can say
//! beforehand what the server will hold and verify that it does: keys
//! sorted by length then bytes, the last of duplicate keys kept, `", "`
//! and `": "` between items, strings re-escaped (only `"`, `\`, and
//! control characters), and numbers as PostgreSQL's `numeric` prints them
//! (`1.50` stays `1.50`, `1e2` is `100`, `1.5e-3` is `0.0015`, digits kept
//! however many).
//!
//! A hand-written parser because this is the server's normalisation rule,
//! which no JSON library applies; the property test in `tests/move_props/`
//! compares it with the server's own `::jsonb::text` on generated documents.

/// Why a text is not a document fleetmig can carry into a column.
pub type Refusal = String;

/// Whether `text` is one JSON value (surrounding whitespace allowed).
pub fn validate(text: &str) -> Result<(), Refusal> {
    let mut p = Parser::new(text);
    p.ws();
    p.value(None, 0)?;
    p.ws();
    p.end()
}

/// `text` as PostgreSQL's `jsonb` output prints it.
pub fn normalize(text: &str) -> Result<String, Refusal> {
    let mut p = Parser::new(text);
    p.ws();
    let v = p.value(Some(()), 0)?.expect("built");
    p.ws();
    p.end()?;
    let mut out = String::with_capacity(text.len());
    v.write(&mut out);
    Ok(out)
}

enum Node {
    Literal(&'static str),
    Number(String),
    Str(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    fn write(&self, out: &mut String) {
        match self {
            Node::Literal(l) => out.push_str(l),
            Node::Number(n) => out.push_str(n),
            Node::Str(s) => escape(s, out),
            Node::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Node::Object(items) => {
                out.push('{');
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    escape(k, out);
                    out.push_str(": ");
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// A string as PostgreSQL's `escape_json` writes it.
fn escape(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    at: usize,
}

/// Deeper than this is refused (the server has a stack limit too).
const MAX_DEPTH: usize = 1000;

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            s: text.as_bytes(),
            text,
            at: 0,
        }
    }

    fn fail<T>(&self, what: &str) -> Result<T, Refusal> {
        Err(format!("not JSON at byte {}: {what}", self.at))
    }

    fn ws(&mut self) {
        while self.at < self.s.len() && matches!(self.s[self.at], b' ' | b'\t' | b'\n' | b'\r') {
            self.at += 1;
        }
    }

    fn end(&self) -> Result<(), Refusal> {
        if self.at == self.s.len() {
            Ok(())
        } else {
            self.fail("text after the value")
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    /// One value; built into a `Node` when `build` is set.
    fn value(&mut self, build: Option<()>, depth: usize) -> Result<Option<Node>, Refusal> {
        if depth > MAX_DEPTH {
            return self.fail("nested too deeply");
        }
        match self.peek() {
            Some(b'{') => self.object(build, depth),
            Some(b'[') => self.array(build, depth),
            Some(b'"') => Ok(self.string(build.is_some())?.map(Node::Str)),
            Some(b't') => self.literal("true", build),
            Some(b'f') => self.literal("false", build),
            Some(b'n') => self.literal("null", build),
            Some(b'-' | b'0'..=b'9') => {
                let n = self.number(build.is_some())?;
                Ok(n.map(Node::Number))
            }
            _ => self.fail("a value was expected"),
        }
    }

    fn literal(&mut self, word: &'static str, build: Option<()>) -> Result<Option<Node>, Refusal> {
        if self.s[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(build.map(|_| Node::Literal(word)))
        } else {
            self.fail("unknown literal")
        }
    }

    fn array(&mut self, build: Option<()>, depth: usize) -> Result<Option<Node>, Refusal> {
        self.at += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(build.map(|_| Node::Array(items)));
        }
        loop {
            self.ws();
            if let Some(v) = self.value(build, depth + 1)? {
                items.push(v);
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(build.map(|_| Node::Array(items)));
                }
                _ => return self.fail("`,` or `]` was expected"),
            }
        }
    }

    fn object(&mut self, build: Option<()>, depth: usize) -> Result<Option<Node>, Refusal> {
        self.at += 1;
        let mut items: Vec<(String, Node)> = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(build.map(|_| Node::Object(items)));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return self.fail("a key was expected");
            }
            let key = self.string(build.is_some())?;
            self.ws();
            if self.peek() != Some(b':') {
                return self.fail("`:` was expected");
            }
            self.at += 1;
            self.ws();
            let v = self.value(build, depth + 1)?;
            if let (Some(k), Some(v)) = (key, v) {
                // the last of duplicate keys is kept
                items.retain(|(o, _)| *o != k);
                items.push((k, v));
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    // jsonb's order: shorter keys first, then by bytes
                    items.sort_by(|(a, _), (b, _)| {
                        a.len()
                            .cmp(&b.len())
                            .then_with(|| a.as_bytes().cmp(b.as_bytes()))
                    });
                    return Ok(build.map(|_| Node::Object(items)));
                }
                _ => return self.fail("`,` or `}` was expected"),
            }
        }
    }

    /// A string, its escapes decoded when `build`.
    fn string(&mut self, build: bool) -> Result<Option<String>, Refusal> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let start = self.at;
            while self.at < self.s.len() && !matches!(self.s[self.at], b'"' | b'\\' | 0..=0x1f) {
                self.at += 1;
            }
            if build {
                out.push_str(&self.text[start..self.at]);
            }
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(build.then_some(out));
                }
                Some(b'\\') => {
                    self.at += 1;
                    let c = self.escape(build)?;
                    if build {
                        out.push(c);
                    }
                }
                Some(_) => return self.fail("a control character in a string"),
                None => return self.fail("an unterminated string"),
            }
        }
    }

    /// One escape after `\`; `\u0000` only where no jsonb is built.
    fn escape(&mut self, jsonb: bool) -> Result<char, Refusal> {
        let c = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.at += 1;
                let hi = self.hex4()?;
                let code = if (0xd800..0xdc00).contains(&hi) {
                    if !self.s[self.at..].starts_with(b"\\u") {
                        return self.fail("a lone surrogate");
                    }
                    self.at += 2;
                    let lo = self.hex4()?;
                    if !(0xdc00..0xe000).contains(&lo) {
                        return self.fail("a lone surrogate");
                    }
                    0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                } else {
                    hi
                };
                if code == 0 && jsonb {
                    // jsonb (a text value) cannot hold NUL
                    return self.fail("\\u0000, which PostgreSQL's jsonb cannot hold");
                }
                return char::from_u32(code).map_or_else(|| self.fail("a lone surrogate"), Ok);
            }
            _ => return self.fail("an unknown escape"),
        };
        self.at += 1;
        Ok(c)
    }

    fn hex4(&mut self) -> Result<u32, Refusal> {
        let Some(h) = self.text.get(self.at..self.at + 4) else {
            return self.fail("a short \\u escape");
        };
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.fail("a bad \\u escape");
        }
        let v = u32::from_str_radix(h, 16).or_else(|_| self.fail("a bad \\u escape"))?;
        self.at += 4;
        Ok(v)
    }

    /// A number; when `build`, as PostgreSQL's `numeric` prints it.
    fn number(&mut self, build: bool) -> Result<Option<String>, Refusal> {
        let start = self.at;
        let neg = self.peek() == Some(b'-');
        if neg {
            self.at += 1;
        }
        let int_start = self.at;
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return self.fail("a digit was expected"),
        }
        let int = &self.text[int_start..self.at];
        let mut frac = "";
        if self.peek() == Some(b'.') {
            self.at += 1;
            let f = self.at;
            self.digits();
            if self.at == f {
                return self.fail("a digit was expected after `.`");
            }
            frac = &self.text[f..self.at];
        }
        let mut exp: i64 = 0;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            let sign = match self.peek() {
                Some(b'-') => {
                    self.at += 1;
                    -1
                }
                Some(b'+') => {
                    self.at += 1;
                    1
                }
                _ => 1,
            };
            let e = self.at;
            self.digits();
            if self.at == e {
                return self.fail("a digit was expected in the exponent");
            }
            exp = sign
                * self.text[e..self.at]
                    .parse::<i64>()
                    .or_else(|_| self.fail("an exponent too large"))?;
        }
        if !build {
            return Ok(Some(self.text[start..self.at].to_string()));
        }
        numeric_text(neg, int, frac, exp).map(Some).ok_or_else(|| {
            format!(
                "the number {} is out of PostgreSQL's numeric range",
                &self.text[start..self.at]
            )
        })
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
    }
}

/// A decimal `[-]int.frac × 10^exp` as PostgreSQL's `numeric_out` prints
/// it: plain notation, `max(0, len(frac) - exp)` digits after the point,
/// no sign on zero. `None` past numeric's limits.
pub fn numeric_text(neg: bool, int: &str, frac: &str, exp: i64) -> Option<String> {
    // numeric_in's limits (numeric.c, set_var_from_str and make_result):
    // an exponent within ±(INT_MAX / 2) (the old ±1000 limit went in 2016,
    // in every branch: `1e1001` is a number), then what the stored form
    // holds: 16383 digits after the point, and a first nonzero digit at
    // most 131071 places before it (a base-10000 weight of 32767). Zero
    // has no weight: `0e5000` is 0. (tests/move_props/ found these.)
    const HALF_INT_MAX: i64 = i32::MAX as i64 / 2;
    let scale = (frac.len() as i64 - exp).max(0);
    if exp >= HALF_INT_MAX || exp <= -HALF_INT_MAX || scale > 16_383 {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    match digits.bytes().position(|b| b != b'0') {
        Some(first) if int.len() as i64 - 1 - first as i64 + exp > 131_071 => return None,
        Some(_) => {}
        // zero: its zeros after the point only (never a string of `exp`
        // zeros before it)
        None => {
            return Some(format!(
                "0{}{}",
                if scale > 0 { "." } else { "" },
                "0".repeat(scale as usize)
            ));
        }
    }
    // the point sits `point` digits into `digits`
    let point = int.len() as i64 + exp;
    let (whole, fraction) = if point <= 0 {
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
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let mut fraction = fraction;
    fraction.truncate(scale as usize);
    while (fraction.len() as i64) < scale {
        fraction.push('0');
    }
    let zero = whole == "0" && fraction.bytes().all(|b| b == b'0');
    let mut out = String::new();
    if neg && !zero {
        out.push('-');
    }
    out.push_str(whole);
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(&fraction);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_normalise_as_jsonb_does() {
        let n = |t: &str| normalize(t).unwrap();
        assert_eq!(n(r#"{"b":1,"a":2,"aa":3}"#), r#"{"a": 2, "b": 1, "aa": 3}"#);
        assert_eq!(n(r#"{"a":1,"a":2}"#), r#"{"a": 2}"#);
        assert_eq!(n(" [1 ,2,[ ],{ }] "), "[1, 2, [], {}]");
        assert_eq!(
            n("12345678901234567890123456789"),
            "12345678901234567890123456789"
        );
        assert_eq!(
            n("0.1000000000000000055511151231257827"),
            "0.1000000000000000055511151231257827"
        );
        assert_eq!(n("1.50"), "1.50");
        assert_eq!(n("1e2"), "100");
        assert_eq!(n("1.5E-3"), "0.0015");
        assert_eq!(n("1.50e1"), "15.0");
        assert_eq!(n("-0"), "0");
        assert_eq!(n("-0.0"), "0.0");
        assert_eq!(n("-12e-1"), "-1.2");
        assert_eq!(n(r#""a\/b\u00e9\n\u0001""#), "\"a/bé\\n\\u0001\"");
        assert_eq!(n(r#""\ud83d\ude00""#), "\"😀\"");
        assert!(normalize(r#""\u0000""#).is_err());
        assert!(normalize(r#""\ud83d""#).is_err());
    }

    #[test]
    fn what_is_not_json_is_refused() {
        for bad in [
            "", "{", "[1,]", "01", "1.", ".5", "+1", "{a:1}", "'x'", "tru", "1 2", "\"\t\"", "NaN",
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
        for good in [
            "0",
            "-1.5e+3",
            " {\"a\" : [true, false, null]} ",
            "\"\\u0000\"",
        ] {
            assert!(validate(good).is_ok(), "{good:?}");
        }
    }
}
