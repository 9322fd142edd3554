//! Generating values for one pair of systems: what the source can hold and
//! the target can hold exactly (or by a documented conversion), edge
//! values often.

use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};

use crate::calendar::{Col, Moment, SEC, day_in, moment_in, my_text, offset, pg_text, span, zone};
use crate::json::doc;
use crate::rows::{Num, Row, Stamp, Timed, Uid};
use crate::seeds::{any_char, hex, rng_for};
use crate::systems::{Lite, My, Pg, Sys};

/// Values for one pair of systems: what the source can hold and the target
/// can hold exactly (or by a documented conversion).
pub struct Gen {
    pub rng: StdRng,
    src: Sys,
    dst: Sys,
}

impl Gen {
    pub fn new(seed: u64, src: Sys, dst: Sys, what: &str) -> Gen {
        Gen {
            rng: rng_for(seed, &format!("{what} {} {}", src.name(), dst.name())),
            src,
            dst,
        }
    }

    fn both(&self, s: Sys) -> bool {
        self.src == s && self.dst == s
    }

    /// Whether both ends hold a float's infinities (PostgreSQL, SQLite).
    fn infinities(&self) -> bool {
        self.src != My && self.dst != My
    }

    /// A value, not NULL.
    fn some(&mut self) -> bool {
        !self.rng.random_bool(0.07)
    }

    pub fn row(&mut self, id: i64) -> Row {
        Row {
            id,
            i: self.some().then(|| self.int()),
            f: self.some().then(|| self.float()),
            r: self.some().then(|| self.real()),
            n: self.some().then(|| self.decimal()),
            t: self.some().then(|| self.text()),
            b: self.some().then(|| self.rng.random()),
            d: self.some().then(|| self.date()),
            ts: self.some().then(|| self.stamp(Col::Ts)),
            tz: self.some().then(|| self.stamp(Col::Tz)),
            j: self.some().then(|| doc(&mut self.rng, 3)),
            jb: self.some().then(|| doc(&mut self.rng, 3)),
            x: self.some().then(|| self.bytes()),
            u: self.some().then(|| self.uuid()),
        }
    }

    fn int(&mut self) -> i64 {
        const EDGES: [i64; 10] = [
            i64::MIN,
            i64::MAX,
            0,
            -1,
            1,
            i64::MIN + 1,
            i64::MAX - 1,
            1 << 53,
            -(1 << 53) - 1,
            i32::MAX as i64 + 1,
        ];
        match self.rng.random_range(0..4) {
            0 => *EDGES.choose(&mut self.rng).unwrap(),
            1 => self.rng.random_range(-1000..1000),
            _ => self.rng.random(),
        }
    }

    fn sign(&mut self) -> f64 {
        if self.rng.random_bool(0.5) { -1.0 } else { 1.0 }
    }

    fn float(&mut self) -> f64 {
        const EDGES: [f64; 17] = [
            0.0,
            -0.0,
            0.1 + 0.2,
            5e-324,
            -5e-324,
            f64::MIN_POSITIVE,
            // the largest subnormal
            f64::from_bits(0x000f_ffff_ffff_ffff),
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            1e22,
            1e23,
            9_007_199_254_740_993.0,
            0.1,
            1.0 / 3.0,
            1e-7,
            123_456.789,
        ];
        loop {
            let sign = self.sign();
            let f = match self.rng.random_range(0..10) {
                0 | 1 => *EDGES.choose(&mut self.rng).unwrap(),
                // a subnormal
                2 => sign * f64::from_bits(self.rng.random_range(1..1u64 << 52)),
                3 => {
                    self.rng.random_range(-1_000_000i64..1_000_000) as f64
                        / 10f64.powi(self.rng.random_range(0..8))
                }
                4 => *[f64::NAN, f64::INFINITY, f64::NEG_INFINITY]
                    .choose(&mut self.rng)
                    .unwrap(),
                _ => f64::from_bits(self.rng.random()),
            };
            if (f.is_nan() && !self.both(Pg)) || (f.is_infinite() && !self.infinities()) {
                continue;
            }
            // a SQLite REAL column keeps -0.0 as 0.0 (it stores a whole
            // REAL as an integer), and so do MariaDB's DOUBLE and FLOAT:
            // -0.0 only between two PostgreSQL tenants
            if !self.both(Pg) && f == 0.0 && f.is_sign_negative() {
                continue;
            }
            return f;
        }
    }

    /// For a 4-byte float column: from PostgreSQL and MariaDB a 4-byte
    /// float; from SQLite (which has none) any double within its range,
    /// which lands as the nearest 4-byte float.
    fn real(&mut self) -> f64 {
        loop {
            let sign = self.sign();
            let f: f64 = if self.src == Lite {
                match self.rng.random_range(0..5) {
                    0 => *[
                        0.1,
                        1.0 / 3.0,
                        16_777_217.0,
                        1e-40,
                        1e-50,
                        3.4e38,
                        -0.0,
                        0.0,
                        f32::MAX as f64,
                        f32::MIN_POSITIVE as f64,
                        1.4e-45,
                        0.1 + 0.2,
                    ]
                    .choose(&mut self.rng)
                    .unwrap(),
                    1 => {
                        // any double from 2^-160 to 2^128
                        let exp = self.rng.random_range(1023 - 160..=1023 + 127u64);
                        let mantissa = self.rng.random_range(0..1u64 << 52);
                        sign * f64::from_bits(exp << 52 | mantissa)
                    }
                    2 => f32::from_bits(self.rng.random()) as f64,
                    3 => *[f64::INFINITY, f64::NEG_INFINITY]
                        .choose(&mut self.rng)
                        .unwrap(),
                    _ => {
                        self.rng.random_range(-1_000_000i64..1_000_000) as f64
                            / 10f64.powi(self.rng.random_range(0..8))
                    }
                }
            } else {
                let r: f32 = match self.rng.random_range(0..5) {
                    0 => *[
                        0.0f32,
                        -0.0,
                        f32::MIN_POSITIVE,
                        f32::from_bits(1),
                        f32::MAX,
                        f32::MIN,
                        0.1,
                        16_777_216.0,
                        f32::EPSILON,
                    ]
                    .choose(&mut self.rng)
                    .unwrap(),
                    1 => f32::from_bits(self.rng.random_range(1..1u32 << 23)) * sign as f32,
                    2 => *[f32::NAN, f32::INFINITY, f32::NEG_INFINITY]
                        .choose(&mut self.rng)
                        .unwrap(),
                    3 => {
                        (self.rng.random_range(-1_000_000i64..1_000_000) as f64
                            / 10f64.powi(self.rng.random_range(0..8)))
                            as f32
                    }
                    _ => f32::from_bits(self.rng.random()),
                };
                r as f64
            };
            if (f.is_nan() && !self.both(Pg))
                || (f.is_infinite() && !self.infinities())
                || (f.is_finite() && f.abs() > f32::MAX as f64)
                || (!self.both(Pg) && f == 0.0 && f.is_sign_negative())
                // a tiny negative double is -0.0 as a 4-byte float, which
                // MariaDB's FLOAT keeps as 0.0
                || (self.dst == My && (f as f32) == 0.0 && (f as f32).is_sign_negative())
            {
                continue;
            }
            return f;
        }
    }

    /// For a NUMERIC(38,10) / DECIMAL(38,10) column.
    fn decimal(&mut self) -> Num {
        if self.src == Lite {
            // SQLite's NUMERIC column holds an INTEGER, or a REAL that is no
            // whole number (a whole one it keeps as an INTEGER)
            return if self.rng.random_bool(0.4) {
                Num::Int(self.int())
            } else {
                Num::Real(self.real_in_numeric())
            };
        }
        if self.both(Pg) && self.rng.random_bool(0.02) {
            return Num::Dec("NaN".into());
        }
        // into SQLite, a decimal lands as a REAL: 15 significant digits
        // hold exactly
        let sig = if self.dst == Lite { 15 } else { 38 };
        const EDGES: [&str; 12] = [
            "0",
            "1",
            "-1",
            "0.0000000001",
            "-0.0000000001",
            "9999999999999999999999999999.9999999999",
            "-9999999999999999999999999999.9999999999",
            "1.5000000000",
            "-12.50",
            "100000000000000000000000000",
            "999999999999999.0",
            "0.1234567890",
        ];
        if self.rng.random_bool(0.15) {
            let e = *EDGES.choose(&mut self.rng).unwrap();
            if significant(e) <= sig {
                return Num::Dec(e.to_string());
            }
        }
        let k = self.rng.random_range(0..=28usize);
        let m = self.rng.random_range(0..=10usize);
        let mut digits: Vec<u8> = (0..k + m)
            .map(|_| b'0' + self.rng.random_range(0..10u8))
            .collect();
        if let Some(first) = digits.iter().position(|d| *d != b'0') {
            for d in digits.iter_mut().skip(first + sig) {
                *d = b'0';
            }
        }
        if self.rng.random_bool(0.3) {
            let z = self.rng.random_range(0..=m);
            for d in &mut digits[k + m - z..] {
                *d = b'0';
            }
        }
        let int = String::from_utf8(digits[..k].to_vec()).unwrap();
        let int = int.trim_start_matches('0');
        let frac = String::from_utf8(digits[k..].to_vec()).unwrap();
        let zero = digits.iter().all(|d| *d == b'0');
        let neg = !zero && self.rng.random_bool(0.5);
        let mut s = String::new();
        if neg {
            s.push('-');
        }
        s.push_str(if int.is_empty() { "0" } else { int });
        if m > 0 {
            s.push('.');
            s.push_str(&frac);
        }
        Num::Dec(s)
    }

    /// A REAL in a SQLite NUMERIC column that no target refuses: its
    /// shortest digits fit 10 places, or its 15 significant digits do.
    fn real_in_numeric(&mut self) -> f64 {
        loop {
            let sign = self.sign();
            let f = if self.rng.random_bool(0.5) {
                let digits = self.rng.random_range(1..=15);
                let mantissa = self.rng.random_range(1..10u64.pow(digits));
                let places = self.rng.random_range(1..=10);
                format!("{mantissa}e-{places}").parse::<f64>().unwrap()
            } else {
                self.rng.random_range(1e5..1e15)
            };
            if f.fract() != 0.0 {
                return sign * f;
            }
        }
    }

    fn text(&mut self) -> String {
        const EDGES: [&str; 33] = [
            "",
            " ",
            "'",
            "''",
            "\"",
            "\\",
            "\\\\",
            "\\N",
            "\\.",
            "\t",
            "\n",
            "\r\n",
            "a\tb\nc\\d\re",
            "NULL",
            "null",
            "123",
            "-0",
            "1e5",
            "é",
            "😀",
            "\u{10FFFF}",
            "\u{FEFF}bom",
            "\u{7f}",
            "\u{1}\u{1f}",
            "O'Reilly \"quoted\" \\back\\slash",
            "ß",
            "日本語",
            "\u{202E}rtl",
            "e\u{301}",
            "🏳️‍🌈",
            "\u{FFFD}",
            "\u{FFFF}",
            "\u{2028}\u{2029}",
        ];
        let mut s = match self.rng.random_range(0..10) {
            0 | 1 => EDGES.choose(&mut self.rng).unwrap().to_string(),
            2 => {
                let n = self.rng.random_range(1000..4000);
                (0..n).map(|_| any_char(&mut self.rng)).collect()
            }
            _ => {
                let n = self.rng.random_range(0..40);
                (0..n).map(|_| any_char(&mut self.rng)).collect()
            }
        };
        // only MariaDB's text holds NUL among the three
        if self.both(My) && self.rng.random_bool(0.1) {
            let at = s.char_indices().map(|(i, _)| i).collect::<Vec<_>>();
            let i = at.choose(&mut self.rng).copied().unwrap_or(0);
            s.insert(i, '\0');
        }
        s
    }

    fn date(&mut self) -> Timed {
        if self.both(Pg) && self.rng.random_bool(0.04) {
            return self.infinity();
        }
        if self.both(My) && self.rng.random_bool(0.04) {
            let z = *["0000-00-00", "2020-00-15", "2019-07-00"]
                .choose(&mut self.rng)
                .unwrap();
            return Timed {
                v: Stamp::Zero(z),
                text: z.to_string(),
            };
        }
        let span = span(self.src, Col::Date).meet(span(self.dst, Col::Date));
        let m = loop {
            let m = day_in(&mut self.rng, span);
            if !self.no_such_day(&m) {
                break m;
            }
        };
        let text = match self.src {
            Pg => pg_text(&m, Col::Date),
            _ => my_text(&m, Col::Date),
        };
        Timed {
            v: Stamp::At(m),
            text,
        }
    }

    /// MySQL takes year 0 (1 BC) for a common year: no 0000-02-29 where
    /// MariaDB is one end.
    fn no_such_day(&self, m: &Moment) -> bool {
        (self.src == My || self.dst == My) && (m.year, m.month, m.day) == (0, 2, 29)
    }

    fn infinity(&mut self) -> Timed {
        if self.rng.random_bool(0.5) {
            Timed {
                v: Stamp::Inf,
                text: "infinity".into(),
            }
        } else {
            Timed {
                v: Stamp::NegInf,
                text: "-infinity".into(),
            }
        }
    }

    fn stamp(&mut self, col: Col) -> Timed {
        if self.both(Pg) && self.rng.random_bool(0.04) {
            return self.infinity();
        }
        if self.both(My) && self.rng.random_bool(0.04) {
            let zeros: &[(&str, &'static str)] = if col == Col::Tz {
                &[("0000-00-00 00:00:00", "0000-00-00 00:00:00.000000")]
            } else {
                &[
                    ("0000-00-00 00:00:00", "0000-00-00 00:00:00.000000"),
                    ("2020-00-15 10:20:30.5", "2020-00-15 10:20:30.500000"),
                ]
            };
            let (given, shown) = *zeros.choose(&mut self.rng).unwrap();
            return Timed {
                v: Stamp::Zero(shown),
                text: given.to_string(),
            };
        }
        let span = span(self.src, col).meet(span(self.dst, col));
        let m = loop {
            let m = moment_in(&mut self.rng, span, self.src == Lite);
            if !self.no_such_day(&m) {
                break m;
            }
        };
        let text = match self.src {
            Pg => {
                if col == Col::Tz && (2..=294_275).contains(&m.year) && self.rng.random_bool(0.5) {
                    // spelled in another zone, which PostgreSQL applies
                    let off = offset(&mut self.rng);
                    let local = m.shifted(off);
                    format!(
                        "{:04}-{:02}-{:02} {}{}{}",
                        local.year,
                        local.month,
                        local.day,
                        local.clock(),
                        local.fraction(),
                        zone(&mut self.rng, off)
                    )
                } else {
                    pg_text(&m, col)
                }
            }
            My => my_text(&m, col),
            Lite => self.lite_spelling(&m, col),
        };
        Timed {
            v: Stamp::At(m),
            text,
        }
    }

    /// How a SQLite tenant may hold a moment: ` ` or `T`, seconds or not,
    /// fractions of any length, and (with a zone) an offset or `Z`.
    fn lite_spelling(&mut self, m: &Moment, col: Col) -> String {
        let off = if col == Col::Tz && (1..=9998).contains(&m.year) && self.rng.random_bool(0.6) {
            offset(&mut self.rng)
        } else {
            0
        };
        let local = m.shifted(off);
        let sep = if self.rng.random_bool(0.5) { ' ' } else { 'T' };
        let clock = local.clock();
        let mut s = format!("{:04}-{:02}-{:02}{sep}", local.year, local.month, local.day);
        if local.nanos.is_multiple_of(60 * SEC) && self.rng.random_bool(0.3) {
            s.push_str(&clock[..5]);
        } else {
            s.push_str(&clock);
            if !local.nanos.is_multiple_of(SEC) {
                if self.rng.random_bool(0.5) {
                    s.push_str(&local.fraction());
                } else {
                    s.push_str(&format!(".{:09}", local.nanos % SEC));
                }
            }
        }
        match col {
            Col::Tz if off != 0 => s.push_str(&zone(&mut self.rng, off)),
            Col::Tz => s.push_str(["", "Z", "+00:00"].choose(&mut self.rng).unwrap()),
            _ if self.rng.random_bool(0.1) => s.push('Z'),
            _ => {}
        }
        s
    }

    fn bytes(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..20) {
            0 => (0..=255u8).collect(),
            1 => Vec::new(),
            2 => {
                let mut all: Vec<u8> = (0..=255u8).collect();
                all.shuffle(&mut self.rng);
                all
            }
            _ => {
                let n = self.rng.random_range(0..48);
                (0..n).map(|_| self.rng.random()).collect()
            }
        }
    }

    fn uuid(&mut self) -> Uid {
        let bytes: [u8; 16] = loop {
            let b = match self.rng.random_range(0..10) {
                0 => [0; 16],
                1 => [0xff; 16],
                _ => self.rng.random(),
            };
            // MariaDB's UUID type holds no UUID of version 8 to 15 with
            // variant 0 (sql_type_uuid.h: `m_buffer[6] & -m_buffer[8] & 0x80`)
            let mariadb_refuses = b[6] >= 0x80 && (0x01..=0x80).contains(&b[8]);
            if !(mariadb_refuses && (self.src == My || self.dst == My)) {
                break b;
            }
        };
        let mut u = Uid {
            hex: hex(&bytes),
            text: String::new(),
        };
        let canon = u.canonical();
        let mut spellings = vec![canon.clone(), canon.to_uppercase()];
        if self.src != My {
            spellings.push(format!("{{{canon}}}"));
        }
        // 32 digits without hyphens; with a letter, so that SQLite's NUMERIC
        // affinity does not take it for a number
        if self.src == Lite && u.hex.bytes().any(|b| b.is_ascii_alphabetic()) {
            spellings.push(u.hex.to_uppercase());
        }
        u.text = spellings.choose(&mut self.rng).unwrap().clone();
        u
    }
}

fn significant(dec: &str) -> usize {
    let digits: String = dec.chars().filter(|c| c.is_ascii_digit()).collect();
    let t = digits.trim_start_matches('0').trim_end_matches('0');
    t.len()
}
