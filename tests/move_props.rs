//! Property tests of the value layer on values nobody chose.
//!
//! 1. For every ordered pair of systems (SQLite, PostgreSQL, MariaDB, same
//!    system included), one `fleetmig move` of a tenant holding 2,000
//!    generated rows over every carried type and its edge values, of which
//!    the source can hold each and the target can hold each exactly or by a
//!    documented conversion; every cell read back from the target and
//!    compared with what was inserted, as the target prints it (the
//!    documented conversions applied here independently: PostgreSQL's own
//!    `::jsonb::text` for `jsonb`, chrono's spelling of a timestamp for
//!    SQLite, the nearest 4-byte float, the decimal digits of a float).
//!    Then, for values a target cannot hold, the move refuses naming table,
//!    column and key, and leaves no target behind.
//! 2. `jsonb::normalize` against PostgreSQL's `::jsonb::text` on thousands
//!    of generated documents (valid and not): the same text, or both refuse.
//! 3. `When::parse` and `write_pg` against PostgreSQL's `::date::text`,
//!    `::timestamp::text` and `::timestamptz::text` over its whole range.
//!
//! Every test prints its seed; `FLEETMIG_PROP_SEED=<seed>` replays it.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use fleetmig::dialect::copy::jsonb;
use fleetmig::dialect::copy::when::When;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};
use sqlx::{Connection, Row as _, TypeInfo, ValueRef};

// ---------------------------------------------------------------------------
// seeds

/// The seed of a property test: `FLEETMIG_PROP_SEED` when set, to replay a
/// failure, else a fresh one. Printed either way.
fn seed(test: &str) -> u64 {
    let seed = match std::env::var("FLEETMIG_PROP_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FLEETMIG_PROP_SEED={s} is not a u64")),
        Err(_) => rand::random(),
    };
    eprintln!("seed {seed}");
    eprintln!("({test}: replay with FLEETMIG_PROP_SEED={seed})");
    seed
}

/// A generator of its own for each use of a seed (a pair of systems, a
/// refused value), so that one does not shift the values of another.
fn rng_for(seed: u64, label: &str) -> StdRng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in label.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    StdRng::seed_from_u64(h)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `s` cut for a message.
fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!(
            "{}… ({} chars)",
            s.chars().take(n).collect::<String>(),
            s.chars().count()
        )
    }
}

// ---------------------------------------------------------------------------
// systems and the migration set

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sys {
    Lite,
    Pg,
    My,
}
use Sys::{Lite, My, Pg};

impl Sys {
    fn name(self) -> &'static str {
        match self {
            Lite => "sqlite",
            Pg => "postgres",
            My => "mariadb",
        }
    }
}

/// One table with a column of every carried kind, in each system's
/// spelling.
fn values_set() -> tempfile::TempDir {
    migration_dir(&[
        (
            "0001_values.postgres.sql",
            "CREATE TABLE v (id bigint PRIMARY KEY, i bigint, f double precision, r real, \
             n numeric(38,10), t text, b boolean, d date, ts timestamp, tz timestamptz, \
             j json, jb jsonb, x bytea, u uuid);",
        ),
        (
            "0001_values.mysql.sql",
            "CREATE TABLE v (id BIGINT PRIMARY KEY, i BIGINT, f DOUBLE, r FLOAT, \
             n DECIMAL(38,10), t LONGTEXT, b BOOLEAN, d DATE, ts DATETIME(6), tz TIMESTAMP(6) NULL, \
             j JSON, jb JSON, x LONGBLOB, u UUID) CHARACTER SET utf8mb4;",
        ),
        (
            "0001_values.sql",
            "CREATE TABLE v (id INTEGER PRIMARY KEY, i INTEGER, f REAL, r REAL, \
             n NUMERIC(38,10), t TEXT, b BOOLEAN, d DATE, ts TIMESTAMP, tz TIMESTAMPTZ, \
             j JSON, jb JSON, x BLOB, u UUID);",
        ),
    ])
}

/// The columns after `id`, in order.
const COLUMNS: [&str; 13] = [
    "i", "f", "r", "n", "t", "b", "d", "ts", "tz", "j", "jb", "x", "u",
];

const ROWS: i64 = 2000;

// ---------------------------------------------------------------------------
// the calendar (proleptic Gregorian, astronomical years: 0 is 1 BC)

const SEC: u64 = 1_000_000_000;
const DAY: u64 = 86_400 * SEC;

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A moment in UTC, to the nanosecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Moment {
    year: i64,
    month: u32,
    day: u32,
    nanos: u64,
}

impl Moment {
    const fn at(year: i64, month: u32, day: u32, nanos: u64) -> Moment {
        Moment {
            year,
            month,
            day,
            nanos,
        }
    }

    fn days(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    fn from_days(days: i64, nanos: u64) -> Moment {
        let (year, month, day) = civil(days);
        Moment::at(year, month, day, nanos)
    }

    fn shifted(&self, seconds: i64) -> Moment {
        let total =
            self.days() as i128 * DAY as i128 + self.nanos as i128 + seconds as i128 * SEC as i128;
        Moment::from_days(
            total.div_euclid(DAY as i128) as i64,
            total.rem_euclid(DAY as i128) as u64,
        )
    }

    /// Cut to the microsecond, as PostgreSQL and MariaDB columns hold it.
    fn micros(&self) -> Moment {
        Moment {
            nanos: self.nanos / 1000 * 1000,
            ..*self
        }
    }

    fn clock(&self) -> String {
        let s = self.nanos / SEC;
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }

    /// `.5`, `.123456`: the fraction of the second, trailing zeros dropped.
    fn fraction(&self) -> String {
        let f = format!("{:09}", self.nanos % SEC);
        let f = f.trim_end_matches('0');
        if f.is_empty() {
            String::new()
        } else {
            format!(".{f}")
        }
    }

    fn chrono(&self) -> chrono::NaiveDateTime {
        let s = (self.nanos / SEC) as u32;
        chrono::NaiveDate::from_ymd_opt(self.year as i32, self.month, self.day)
            .expect("a day chrono holds")
            .and_hms_nano_opt(s / 3600, s / 60 % 60, s % 60, (self.nanos % SEC) as u32)
            .expect("a time of day")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Date,
    Ts,
    Tz,
}

/// As PostgreSQL prints it (`0044-03-15 12:00:00.5+00 BC`).
fn pg_text(m: &Moment, col: Col) -> String {
    let bc = m.year <= 0;
    let year = if bc { 1 - m.year } else { m.year };
    let mut s = format!("{year:04}-{:02}-{:02}", m.month, m.day);
    if col != Col::Date {
        s += &format!(" {}{}", m.clock(), m.fraction());
    }
    if col == Col::Tz {
        s += "+00";
    }
    if bc {
        s += " BC";
    }
    s
}

/// As MariaDB prints a DATE, or a DATETIME(6)/TIMESTAMP(6) (six digits).
fn my_text(m: &Moment, col: Col) -> String {
    let mut s = format!("{:04}-{:02}-{:02}", m.year, m.month, m.day);
    if col != Col::Date {
        s += &format!(" {}.{:06}", m.clock(), m.nanos % SEC / 1000);
    }
    s
}

/// As sqlx writes a date or timestamp into SQLite (chrono's `%F %T%.f`,
/// `%:z`): what a typed value becomes in a SQLite column.
fn lite_text(m: &Moment, col: Col) -> String {
    let t = m.chrono();
    match col {
        Col::Date => t.format("%F").to_string(),
        Col::Ts => t.format("%F %T%.f").to_string(),
        Col::Tz => t.and_utc().format("%F %T%.f%:z").to_string(),
    }
}

/// The span of moments a column of `sys` holds.
#[derive(Clone, Copy, Debug)]
struct Span {
    lo: Moment,
    hi: Moment,
}

impl Span {
    fn meet(self, o: Span) -> Span {
        Span {
            lo: self.lo.max(o.lo),
            hi: self.hi.min(o.hi),
        }
    }
}

/// PostgreSQL's first day: 4714-11-24 BC (Julian day 0).
const PG_FIRST: Moment = Moment::at(-4713, 11, 24, 0);
/// The first moment of a PostgreSQL timestamp column: its first day.
const PG_TS_FIRST: Moment = PG_FIRST;
const LAST_MICRO: u64 = DAY - 1000;

fn span(sys: Sys, col: Col) -> Span {
    let (lo, hi) = match (sys, col) {
        (Pg, Col::Date) => (PG_FIRST, Moment::at(5_874_897, 12, 31, 0)),
        (Pg, _) => (PG_TS_FIRST, Moment::at(294_276, 12, 31, LAST_MICRO)),
        (_, Col::Date) => (Moment::at(0, 1, 1, 0), Moment::at(9999, 12, 31, 0)),
        // MySQL's TIMESTAMP: 1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC
        (My, Col::Tz) => (
            Moment::at(1970, 1, 1, SEC),
            Moment::at(2038, 1, 19, (3 * 3600 + 14 * 60 + 7) * SEC + 999_999_000),
        ),
        (My, _) => (Moment::at(0, 1, 1, 0), Moment::at(9999, 12, 31, LAST_MICRO)),
        (Lite, _) => (Moment::at(0, 1, 1, 0), Moment::at(9999, 12, 31, DAY - 1)),
    };
    Span { lo, hi }
}

// ---------------------------------------------------------------------------
// rows

/// A date or timestamp and the text its source was given.
#[derive(Clone, Debug)]
struct Timed {
    v: Stamp,
    text: String,
}

#[derive(Clone, Debug)]
enum Stamp {
    At(Moment),
    Inf,
    NegInf,
    /// A MySQL zero date, as MariaDB prints it.
    Zero(&'static str),
}

/// A decimal: its text (PostgreSQL and MariaDB), or what a SQLite NUMERIC
/// column holds (an INTEGER or a REAL).
#[derive(Clone, Debug)]
enum Num {
    Dec(String),
    Int(i64),
    Real(f64),
}

#[derive(Clone, Debug)]
struct Uid {
    /// 32 hex digits, lower case.
    hex: String,
    /// As the source was given it.
    text: String,
}

impl Uid {
    fn canonical(&self) -> String {
        let h = &self.hex;
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }
}

#[derive(Clone, Debug)]
struct Row {
    id: i64,
    i: Option<i64>,
    f: Option<f64>,
    /// A 4-byte float from PostgreSQL and MariaDB; any double SQLite holds.
    r: Option<f64>,
    n: Option<Num>,
    t: Option<String>,
    b: Option<bool>,
    d: Option<Timed>,
    ts: Option<Timed>,
    tz: Option<Timed>,
    j: Option<String>,
    jb: Option<String>,
    x: Option<Vec<u8>>,
    u: Option<Uid>,
}

impl Row {
    /// The value given to the source for `col`, as a person reads it.
    fn given(&self, col: &str) -> String {
        let t = |t: &Option<Timed>| format!("{:?}", t.as_ref().map(|t| &t.text));
        let s = match col {
            "i" => format!("{:?}", self.i),
            "f" => format!("{:?}", self.f),
            "r" => format!("{:?}", self.r),
            "n" => format!("{:?}", self.n),
            "t" => format!("{:?}", self.t),
            "b" => format!("{:?}", self.b),
            "d" => t(&self.d),
            "ts" => t(&self.ts),
            "tz" => t(&self.tz),
            "j" => format!("{:?}", self.j),
            "jb" => format!("{:?}", self.jb),
            "x" => format!("{:?}", self.x.as_ref().map(|x| hex(x))),
            "u" => format!("{:?}", self.u.as_ref().map(|u| &u.text)),
            _ => String::new(),
        };
        cut(&s, 300)
    }
}

// ---------------------------------------------------------------------------
// generating values

/// Values for one pair of systems: what the source can hold and the target
/// can hold exactly (or by a documented conversion).
struct Gen {
    rng: StdRng,
    src: Sys,
    dst: Sys,
}

impl Gen {
    fn new(seed: u64, src: Sys, dst: Sys, what: &str) -> Gen {
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

    fn row(&mut self, id: i64) -> Row {
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

fn any_char(rng: &mut StdRng) -> char {
    let pick = |rng: &mut StdRng, lo: u32, hi: u32| loop {
        if let Some(c) = char::from_u32(rng.random_range(lo..hi)) {
            return c;
        }
    };
    match rng.random_range(0..10) {
        0..=3 => pick(rng, 0x20, 0x7f),
        4 => *['\'', '"', '\\', '\t', '\n', '\r', '`', '%', '_']
            .choose(rng)
            .unwrap(),
        5 => {
            if rng.random_bool(0.2) {
                '\u{7f}'
            } else {
                pick(rng, 1, 0x20)
            }
        }
        6 => pick(rng, 0xa0, 0x800),
        7 => pick(rng, 0x4e00, 0xa000),
        8 => pick(rng, 0x1f300, 0x1fb00),
        _ => pick(rng, 1, 0x11_0000),
    }
}

/// An offset from UTC in seconds: whole quarters of an hour up to ±14 h.
fn offset(rng: &mut StdRng) -> i64 {
    loop {
        let o = rng.random_range(-56..=56i64) * 15 * 60;
        if o != 0 {
            return o;
        }
    }
}

/// The zone of a moment given as local time `off` seconds east of UTC.
fn zone(rng: &mut StdRng, off: i64) -> String {
    let sign = if off < 0 { '-' } else { '+' };
    let (h, m) = (off.abs() / 3600, off.abs() / 60 % 60);
    match rng.random_range(0..3) {
        0 if m == 0 => format!("{sign}{h:02}"),
        1 => format!("{sign}{h:02}{m:02}"),
        _ => format!("{sign}{h:02}:{m:02}"),
    }
}

/// A day within `span`: its edges often, days people use often, any day.
fn day_in(rng: &mut StdRng, span: Span) -> Moment {
    let (lo, hi) = (span.lo.days(), span.hi.days());
    const SPECIAL: [(i64, u32, u32); 10] = [
        (1970, 1, 1),
        (2000, 2, 29),
        (1900, 2, 28),
        (0, 2, 29),
        (-4, 2, 29),
        (1582, 10, 10),
        (1, 1, 1),
        (1000, 1, 1),
        (2038, 1, 19),
        (9999, 12, 31),
    ];
    let recent = (
        lo.max(days_from_civil(1, 1, 1)),
        hi.min(days_from_civil(2100, 12, 31)),
    );
    let d = match rng.random_range(0..10) {
        0 => lo,
        1 => hi,
        2 => {
            let (y, m, d) = *SPECIAL.choose(rng).unwrap();
            let d = days_from_civil(y, m, d);
            if (lo..=hi).contains(&d) {
                d
            } else {
                rng.random_range(lo..=hi)
            }
        }
        3..=5 if recent.0 <= recent.1 => rng.random_range(recent.0..=recent.1),
        _ => rng.random_range(lo..=hi),
    };
    Moment::from_days(d, 0)
}

/// A moment within `span` (`nanos`: to the nanosecond, else to the
/// microsecond).
fn moment_in(rng: &mut StdRng, span: Span, nanos: bool) -> Moment {
    let day = day_in(
        rng,
        Span {
            lo: Moment {
                nanos: 0,
                ..span.lo
            },
            hi: Moment {
                nanos: 0,
                ..span.hi
            },
        },
    );
    let secs = rng.random_range(0..86_400u64) * SEC;
    let t = match rng.random_range(0..10) {
        0 => 0,
        1 => {
            if nanos {
                DAY - 1
            } else {
                LAST_MICRO
            }
        }
        2 | 3 => secs,
        4 => secs + rng.random_range(0..1000u64) * 1_000_000,
        5 if nanos => secs + rng.random_range(0..SEC),
        _ => secs + rng.random_range(0..1_000_000u64) * 1000,
    };
    let m = Moment { nanos: t, ..day };
    m.max(span.lo).min(span.hi)
}

// ---------------------------------------------------------------------------
// JSON documents

fn ws(rng: &mut StdRng, out: &mut String) {
    if rng.random_bool(0.7) {
        return;
    }
    out.push_str(["", " ", "\n", "\t", "\r\n ", "  "].choose(rng).unwrap());
}

/// The inside of a JSON string (valid: no lone surrogate, no `\u0000`).
fn json_chars(rng: &mut StdRng, out: &mut String, n: usize) {
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

fn json_string(rng: &mut StdRng, out: &mut String) {
    out.push('"');
    let n = rng.random_range(0..12);
    json_chars(rng, out, n);
    out.push('"');
}

/// A key: often one of a few (so that objects repeat keys, some spelled
/// with escapes), else any.
fn json_key(rng: &mut StdRng, out: &mut String) {
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
fn json_number(rng: &mut StdRng, out: &mut String, digits: usize, exp: i64) {
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

fn json_value(rng: &mut StdRng, out: &mut String, depth: usize, max_depth: usize) {
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
fn doc(rng: &mut StdRng, max_depth: usize) -> String {
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

// ---------------------------------------------------------------------------
// what the target holds, as it prints it

/// A decimal `[-]int[.frac]` with 10 places, as NUMERIC(38,10) prints it.
fn scale10(neg: bool, int: &str, frac: &str) -> Option<String> {
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

fn split_decimal(s: &str) -> (bool, &str, &str) {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    (neg, int, frac)
}

/// `1.2345e-3` (Rust's `{:e}`) in plain digits: (sign, int, frac).
fn plain(sci: &str) -> (bool, String, String) {
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
fn float_in_scale10(f: f64) -> Option<String> {
    let fit = |sci: String| {
        let (neg, int, frac) = plain(&sci);
        scale10(neg, &int, &frac)
    };
    fit(format!("{f:e}")).or_else(|| fit(format!("{f:.14e}")))
}

fn expect_decimal(n: &Num, dst: Sys) -> String {
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

fn expect_stamp(t: &Timed, col: Col, src: Sys, dst: Sys) -> String {
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
fn expected(row: &Row, src: Sys, dst: Sys, jsonb: &HashMap<String, String>) -> Vec<Option<String>> {
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
async fn pg_jsonb(docs: Vec<String>) -> HashMap<String, String> {
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

type Cells = Vec<(i64, Vec<Option<String>>)>;

async fn read_pg(url: &str, table: &str) -> Cells {
    let mut c = pg_connect(url).await;
    sqlx::raw_sql("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
        .execute(&mut c)
        .await
        .unwrap();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, i, f, r, n::text, t, b, d::text, ts::text, tz::text, j::text, jb::text, x, u::text \
         FROM {table} ORDER BY id"
    )))
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    rows.iter()
        .map(|r| {
            let s = |i: usize| r.get::<Option<String>, _>(i);
            (
                r.get(0),
                vec![
                    r.get::<Option<i64>, _>(1).map(|v| v.to_string()),
                    r.get::<Option<f64>, _>(2).map(|v| format!("{v:?}")),
                    r.get::<Option<f32>, _>(3).map(|v| format!("{v:?}")),
                    s(4),
                    s(5),
                    r.get::<Option<bool>, _>(6).map(|v| v.to_string()),
                    s(7),
                    s(8),
                    s(9),
                    s(10),
                    s(11),
                    r.get::<Option<Vec<u8>>, _>(12).map(|v| hex(&v)),
                    s(13),
                ],
            )
        })
        .collect()
}

async fn read_my(url: &str) -> Cells {
    let mut c = mysql_connect(url).await;
    sqlx::raw_sql("SET SESSION time_zone = '+00:00'")
        .execute(&mut c)
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT id, i, f, r, CAST(n AS CHAR), t, CAST(b AS SIGNED), CAST(d AS CHAR), CAST(ts AS CHAR), \
         CAST(tz AS CHAR), CAST(j AS CHAR), CAST(jb AS CHAR), x, CAST(u AS CHAR) FROM v ORDER BY id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    rows.iter()
        .map(|r| {
            let s = |i: usize| r.get::<Option<String>, _>(i);
            (
                r.get(0),
                vec![
                    r.get::<Option<i64>, _>(1).map(|v| v.to_string()),
                    r.get::<Option<f64>, _>(2).map(|v| format!("{v:?}")),
                    r.get::<Option<f32>, _>(3).map(|v| format!("{v:?}")),
                    s(4),
                    s(5),
                    r.get::<Option<i64>, _>(6).map(|v| v.to_string()),
                    s(7),
                    s(8),
                    s(9),
                    s(10),
                    s(11),
                    r.get::<Option<Vec<u8>>, _>(12).map(|v| hex(&v)),
                    s(13),
                ],
            )
        })
        .collect()
}

/// Every cell by its storage class: `integer:…`, `real:…`, `text:…`,
/// `blob:…`.
async fn read_lite(path: &Path) -> Cells {
    let mut c = sqlite(path).await;
    let rows =
        sqlx::query("SELECT id, i, f, r, n, t, b, d, ts, tz, j, jb, x, u FROM v ORDER BY id")
            .fetch_all(&mut c)
            .await
            .unwrap();
    c.close().await.unwrap();
    rows.iter()
        .map(|r| {
            let cells = (1..=13)
                .map(|i| {
                    let raw = r.try_get_raw(i).unwrap();
                    if raw.is_null() {
                        return None;
                    }
                    let class = raw.type_info().name().to_string();
                    Some(match class.as_str() {
                        "INTEGER" => format!("integer:{}", r.get::<i64, _>(i)),
                        "REAL" => format!("real:{:?}", r.get::<f64, _>(i)),
                        "BLOB" => format!("blob:{}", hex(&r.get::<Vec<u8>, _>(i))),
                        _ => format!("text:{}", r.get::<String, _>(i)),
                    })
                })
                .collect();
            (r.get(0), cells)
        })
        .collect()
}

/// The mismatches between what was inserted and what the target holds.
fn compare(label: &str, rows: &[Row], want: &[Vec<Option<String>>], got: &Cells) -> Vec<String> {
    let mut out = Vec::new();
    if got.len() != rows.len() {
        out.push(format!(
            "{label}: the target holds {} rows, {} were inserted",
            got.len(),
            rows.len()
        ));
    }
    for ((row, want), (id, got)) in rows.iter().zip(want).zip(got) {
        if row.id != *id {
            out.push(format!("{label}: row id={} arrived as id={id}", row.id));
            break;
        }
        for (c, (w, g)) in COLUMNS.iter().zip(want.iter().zip(got)) {
            if w != g {
                out.push(format!(
                    "{label}: row id={id}, column {c}: expected {:?}, the target holds {:?}; the source was given {}",
                    w.as_deref().map(|s| cut(s, 200)),
                    g.as_deref().map(|s| cut(s, 200)),
                    row.given(c)
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// sources, targets and moves

/// Databases to drop when the test ends, however it ends.
#[derive(Default)]
struct Cleanup {
    pg: Vec<String>,
    my: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (pg, my) = (std::mem::take(&mut self.pg), std::mem::take(&mut self.my));
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if !pg.is_empty()
                    && let Ok(mut c) = sqlx::PgConnection::connect(&pg_base_url()).await
                {
                    for d in pg {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{d}\" WITH (FORCE)"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                    let _ = c.close().await;
                }
                if !my.is_empty()
                    && let Ok(mut c) = sqlx::MySqlConnection::connect(&mysql_base_url()).await
                {
                    for d in my {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS `{d}`"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}

fn name(prefix: &str) -> String {
    format!("fm_{prefix}_{:08x}", rand::random::<u32>())
}

/// A tenant of `sys`: its URL (SQLite: a file in `dir`).
struct Place {
    sys: Sys,
    url: String,
    /// The SQLite file.
    path: PathBuf,
    /// The PostgreSQL table to read (`v`, or `schema.v`).
    table: String,
}

async fn source(sys: Sys, dir: &Path, clean: &mut Cleanup) -> Place {
    let (url, path) = match sys {
        Lite => {
            let path = dir.join("src.db");
            std::fs::write(&path, b"").unwrap();
            ("sqlite://src.db".to_string(), path)
        }
        Pg => {
            let db = pg_database("mprop").await;
            clean.pg.push(db.name.clone());
            (db.url.clone(), PathBuf::new())
        }
        My => {
            let n = name("mprop");
            clean.my.push(n.clone());
            mysql_exec(&mysql_base_url(), &format!("CREATE DATABASE `{n}`")).await;
            (with_db(&mysql_base_url(), &n), PathBuf::new())
        }
    };
    Place {
        sys,
        url,
        path,
        table: "v".into(),
    }
}

/// A place for a move's target that does not exist yet (`schema`: a new
/// schema in a PostgreSQL database made here), and the `--to` arguments.
async fn target(sys: Sys, dir: &Path, clean: &mut Cleanup, schema: bool) -> (Place, Vec<String>) {
    match sys {
        Lite => {
            let file = format!("{}.db", name("dst"));
            let path = dir.join(&file);
            let to = format!("sqlite:{file}");
            (
                Place {
                    sys,
                    url: to.clone(),
                    path,
                    table: "v".into(),
                },
                vec!["--to".into(), to],
            )
        }
        Pg if schema => {
            let db = pg_database("mpropt").await;
            clean.pg.push(db.name.clone());
            (
                Place {
                    sys,
                    url: db.url.clone(),
                    path: PathBuf::new(),
                    table: "tenant_t1.v".into(),
                },
                vec![
                    "--to".into(),
                    db.url.clone(),
                    "--schema".into(),
                    "tenant_t1".into(),
                ],
            )
        }
        Pg => {
            let n = name("mpropt");
            clean.pg.push(n.clone());
            let url = with_db(&pg_base_url(), &n);
            (
                Place {
                    sys,
                    url: url.clone(),
                    path: PathBuf::new(),
                    table: "v".into(),
                },
                vec!["--to".into(), url],
            )
        }
        My => {
            let n = name("mpropt");
            clean.my.push(n.clone());
            let url = with_db(&mysql_base_url(), &n);
            (
                Place {
                    sys,
                    url: url.clone(),
                    path: PathBuf::new(),
                    table: "v".into(),
                },
                vec!["--to".into(), url],
            )
        }
    }
}

/// Whether the target the move was given exists (a file, a database, the
/// schema of a schema target).
async fn exists(p: &Place) -> bool {
    match p.sys {
        Lite => p.path.exists(),
        Pg => {
            let db = url::Url::parse(&p.url)
                .unwrap()
                .path()
                .trim_start_matches('/')
                .to_string();
            let mut c = pg_connect(&pg_base_url()).await;
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
                .bind(&db)
                .fetch_one(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
            if n == 0 || !p.table.contains('.') {
                return n > 0;
            }
            let mut c = pg_connect(&p.url).await;
            let s: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_t1'")
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
            c.close().await.unwrap();
            s > 0
        }
        My => {
            let db = url::Url::parse(&p.url)
                .unwrap()
                .path()
                .trim_start_matches('/')
                .to_string();
            let mut c = mysql_connect(&mysql_base_url()).await;
            let n: i64 = sqlx::query_scalar(
                "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            )
            .bind(&db)
            .fetch_one(&mut c)
            .await
            .unwrap();
            c.close().await.unwrap();
            n > 0
        }
    }
}

/// The registry says t1 is at `url`.
fn point(dir: &Path, url: &str) {
    std::fs::write(
        dir.join("fleet.csv"),
        format!("id,url,schema,tags\nt1,{url},,\n"),
    )
    .unwrap();
}

fn mv(dir: &Path, set: &Path, args: &[String]) -> Output {
    let mut a: Vec<&str> = vec![
        "move",
        "--fleet",
        "registry:fleet.csv",
        "--tenant",
        "t1",
        "--state",
        "state.db",
        "--migrations",
        set.to_str().unwrap(),
    ];
    a.extend(args.iter().map(String::as_str));
    run_in(dir, &a)
}

fn said(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// Empties the source's table and inserts `rows`.
async fn fill(p: &Place, rows: &[Row]) {
    match p.sys {
        Pg => fill_pg(&p.url, rows).await,
        My => fill_my(&p.url, rows).await,
        Lite => fill_lite(&p.path, rows).await,
    }
}

fn placeholders(n: usize, row: impl Fn(usize) -> String) -> String {
    (0..n).map(row).collect::<Vec<_>>().join(", ")
}

async fn fill_pg(url: &str, rows: &[Row]) {
    let mut c = pg_connect(url).await;
    sqlx::raw_sql("SET TimeZone = 'UTC'; DELETE FROM v")
        .execute(&mut c)
        .await
        .unwrap();
    for chunk in rows.chunks(400) {
        let values = placeholders(chunk.len(), |k| {
            let p: Vec<usize> = (1..=14).map(|c| k * 14 + c).collect();
            format!(
                "(${}, ${}, ${}, ${}, CAST(${} AS numeric), ${}, ${}, CAST(${} AS date), \
                 CAST(${} AS timestamp), CAST(${} AS timestamptz), CAST(${} AS json), \
                 CAST(${} AS jsonb), ${}, CAST(${} AS uuid))",
                p[0],
                p[1],
                p[2],
                p[3],
                p[4],
                p[5],
                p[6],
                p[7],
                p[8],
                p[9],
                p[10],
                p[11],
                p[12],
                p[13]
            )
        });
        let sql =
            format!("INSERT INTO v (id, i, f, r, n, t, b, d, ts, tz, j, jb, x, u) VALUES {values}");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            let text = |t: &Option<Timed>| t.as_ref().map(|t| t.text.clone());
            q = q
                .bind(r.id)
                .bind(r.i)
                .bind(r.f)
                .bind(r.r.map(|v| v as f32))
                .bind(r.n.as_ref().map(|n| match n {
                    Num::Dec(s) => s.clone(),
                    _ => unreachable!("a SQLite value"),
                }))
                .bind(r.t.clone())
                .bind(r.b)
                .bind(text(&r.d))
                .bind(text(&r.ts))
                .bind(text(&r.tz))
                .bind(r.j.clone())
                .bind(r.jb.clone())
                .bind(r.x.clone())
                .bind(r.u.as_ref().map(|u| u.text.clone()));
        }
        q.execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("filling the PostgreSQL source: {e}"));
    }
    c.close().await.unwrap();
}

async fn fill_my(url: &str, rows: &[Row]) {
    let mut c = mysql_connect(url).await;
    sqlx::raw_sql(
        "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'; \
         DELETE FROM v",
    )
    .execute(&mut c)
    .await
    .unwrap();
    for chunk in rows.chunks(400) {
        let values = placeholders(chunk.len(), |_| {
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)".to_string()
        });
        let sql =
            format!("INSERT INTO v (id, i, f, r, n, t, b, d, ts, tz, j, jb, x, u) VALUES {values}");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            let text = |t: &Option<Timed>| t.as_ref().map(|t| t.text.clone());
            q = q
                .bind(r.id)
                .bind(r.i)
                .bind(r.f)
                .bind(r.r.map(|v| v as f32))
                .bind(r.n.as_ref().map(|n| match n {
                    Num::Dec(s) => s.clone(),
                    _ => unreachable!("a SQLite value"),
                }))
                .bind(r.t.clone())
                .bind(r.b)
                .bind(text(&r.d))
                .bind(text(&r.ts))
                .bind(text(&r.tz))
                .bind(r.j.clone())
                .bind(r.jb.clone())
                .bind(r.x.clone())
                .bind(r.u.as_ref().map(|u| u.text.clone()));
        }
        q.execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("filling the MariaDB source: {e}"));
    }
    c.close().await.unwrap();
}

async fn fill_lite(path: &Path, rows: &[Row]) {
    let mut c = sqlite(path).await;
    sqlx::raw_sql("DELETE FROM v")
        .execute(&mut c)
        .await
        .unwrap();
    let mut tx = c.begin().await.unwrap();
    for chunk in rows.chunks(400) {
        let values = placeholders(chunk.len(), |_| {
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)".to_string()
        });
        let sql =
            format!("INSERT INTO v (id, i, f, r, n, t, b, d, ts, tz, j, jb, x, u) VALUES {values}");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            let text = |t: &Option<Timed>| t.as_ref().map(|t| t.text.clone());
            q = q.bind(r.id).bind(r.i).bind(r.f).bind(r.r);
            q = match &r.n {
                Some(Num::Int(i)) => q.bind(Some(*i)),
                Some(Num::Real(f)) => q.bind(Some(*f)),
                Some(Num::Dec(_)) => unreachable!("not a SQLite value"),
                None => q.bind(None::<i64>),
            };
            q = q
                .bind(r.t.clone())
                .bind(r.b.map(i64::from))
                .bind(text(&r.d))
                .bind(text(&r.ts))
                .bind(text(&r.tz))
                .bind(r.j.clone())
                .bind(r.jb.clone())
                .bind(r.x.clone())
                .bind(r.u.as_ref().map(|u| u.text.clone()));
        }
        q.execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("filling the SQLite source: {e}"));
    }
    tx.commit().await.unwrap();
    c.close().await.unwrap();
}

/// Runs `sql` on the source.
async fn exec(p: &Place, sql: &str) {
    match p.sys {
        Pg => {
            let mut c = pg_connect(&p.url).await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            c.close().await.unwrap();
        }
        My => {
            mysql_exec(
                &p.url,
                &format!("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'; {sql}"),
            )
            .await
        }
        Lite => {
            let mut c = sqlite(&p.path).await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            c.close().await.unwrap();
        }
    }
}

/// A tenant on `src` and its migrated table: the registry in `dir` says so.
async fn synced_source(src: Sys, dir: &Path, set: &Path, clean: &mut Cleanup) -> Place {
    let p = source(src, dir, clean).await;
    point(dir, &p.url);
    let out = sync_fleet(dir, "registry:fleet.csv", set, &["--state", "state.db"]);
    assert_eq!(out.status.code(), Some(0), "sync: {}", said(&out));
    p
}

// ---------------------------------------------------------------------------
// 1. every pair of systems, value for value

/// One move from `src` into each system, each of 2,000 rows generated for
/// that pair, read back and compared cell by cell.
async fn moves_from(src: Sys) {
    let seed = seed(&format!("moves from {}", src.name()));
    let dir = tempfile::tempdir().unwrap();
    let set = values_set();
    let mut clean = Cleanup::default();
    let source = synced_source(src, dir.path(), set.path(), &mut clean).await;
    let mut failures = Vec::new();
    for dst in [Lite, Pg, My] {
        let label = format!("seed {seed}, {} → {}", src.name(), dst.name());
        let mut g = Gen::new(seed, src, dst, "move");
        let rows: Vec<Row> = (1..=ROWS).map(|id| g.row(id)).collect();
        let batch = g.rng.random_range(200..=1000usize).to_string();
        fill(&source, &rows).await;
        // the expected jsonb, from the server itself
        let jsonb = if src == Pg || dst == Pg {
            pg_jsonb(rows.iter().filter_map(|r| r.jb.clone()).collect()).await
        } else {
            HashMap::new()
        };
        point(dir.path(), &source.url);
        // a SQLite tenant goes to a schema of a PostgreSQL database, the
        // others to a database of their own
        let (to, mut args) = target(dst, dir.path(), &mut clean, src == Lite).await;
        args.extend(["--batch-rows".to_string(), batch.clone()]);
        let t0 = std::time::Instant::now();
        let out = mv(dir.path(), set.path(), &args);
        eprintln!(
            "{} → {}: moved {ROWS} rows in {:.1} s (batch {batch})",
            src.name(),
            dst.name(),
            t0.elapsed().as_secs_f64()
        );
        if out.status.code() != Some(0) {
            failures.push(format!(
                "{label}: the move exited {:?}: {}",
                out.status.code(),
                cut(&said(&out), 3000)
            ));
            continue;
        }
        let got = match dst {
            Pg => read_pg(&to.url, &to.table).await,
            My => read_my(&to.url).await,
            Lite => read_lite(&to.path).await,
        };
        let want: Vec<_> = rows.iter().map(|r| expected(r, src, dst, &jsonb)).collect();
        let wrong = compare(&label, &rows, &want, &got);
        if !wrong.is_empty() {
            failures.push(format!(
                "{label}: {} cells differ:\n{}",
                wrong.len(),
                wrong
                    .iter()
                    .take(12)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    drop(clean);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_tenant_arrives_value_for_value_in_every_system() {
    moves_from(Lite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgresql_tenant_arrives_value_for_value_in_every_system() {
    moves_from(Pg).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mariadb_tenant_arrives_value_for_value_in_every_system() {
    moves_from(My).await;
}

// ---------------------------------------------------------------------------
// 1b. what a target cannot hold is refused by name

/// One value the target cannot hold: set on a random row of generated
/// ones; the move must refuse naming `v.<col> at id=<key>` and `says`.
struct Refused {
    dst: Sys,
    col: &'static str,
    /// SQL for the source's value.
    value: String,
    says: &'static str,
}

fn refused(dst: Sys, col: &'static str, value: &str, says: &'static str) -> Refused {
    Refused {
        dst,
        col,
        value: value.to_string(),
        says,
    }
}

async fn refusals_from(src: Sys, cases: impl FnOnce(&mut StdRng) -> Vec<Refused>) {
    let seed = seed(&format!("refusals from {}", src.name()));
    let cases = cases(&mut rng_for(seed, "cases"));
    let dir = tempfile::tempdir().unwrap();
    let set = values_set();
    let mut clean = Cleanup::default();
    let source = synced_source(src, dir.path(), set.path(), &mut clean).await;
    let mut failures = Vec::new();
    for case in cases {
        let mut g = Gen::new(seed, src, case.dst, &format!("refused {}", case.col));
        let rows: Vec<Row> = (1..=40).map(|id| g.row(id)).collect();
        let key = g.rng.random_range(1..=40);
        fill(&source, &rows).await;
        exec(
            &source,
            &format!(
                "UPDATE v SET {} = {} WHERE id = {key}",
                case.col, case.value
            ),
        )
        .await;
        point(dir.path(), &source.url);
        let (to, args) = target(case.dst, dir.path(), &mut clean, src == Lite).await;
        let out = mv(dir.path(), set.path(), &args);
        let text = said(&out);
        let label = format!(
            "seed {seed}, {} → {}, {} = {} at id={key}",
            src.name(),
            case.dst.name(),
            case.col,
            case.value
        );
        let named = format!("v.{} at id={key}: cannot carry", case.col);
        if !matches!(out.status.code(), Some(1 | 2)) {
            failures.push(format!(
                "{label}: the move exited {:?}, not 1 or 2: {}",
                out.status.code(),
                cut(&text, 2000)
            ));
        } else if !text.contains(&named) || !text.contains(case.says) {
            failures.push(format!(
                "{label}: the refusal does not say {named:?} and {:?}: {}",
                case.says,
                cut(&text, 2000)
            ));
        }
        if text.contains("panicked") {
            failures.push(format!("{label}: a panic: {}", cut(&text, 2000)));
        }
        if exists(&to).await {
            failures.push(format!("{label}: the target {} is left behind", to.url));
        }
    }
    drop(clean);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_target_cannot_hold_of_a_postgresql_tenant_is_refused_by_name() {
    refusals_from(Pg, |_| {
        vec![
            refused(
                My,
                "d",
                "'infinity'",
                "into date (mysql): the column holds no infinity",
            ),
            refused(
                My,
                "d",
                "'0044-03-15 BC'",
                "the column holds years 0 to 9999 only",
            ),
            refused(
                My,
                "tz",
                "'1969-12-31 23:59:59.999999+00'",
                "a MySQL TIMESTAMP holds 1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC only",
            ),
            refused(
                My,
                "f",
                "'NaN'",
                "this system's floats hold no NaN or infinity",
            ),
            refused(
                My,
                "r",
                "'-Infinity'",
                "this system's floats hold no NaN or infinity",
            ),
            refused(My, "n", "'NaN'", "the column cannot hold it"),
            refused(
                My,
                "d",
                "'0001-02-29 BC'",
                "MySQL's calendar has no 0000-02-29",
            ),
            refused(My, "f", "'-0'", "a MySQL float column keeps -0.0 as 0.0"),
            refused(
                Lite,
                "ts",
                "'10000-01-01 00:00:00'",
                "the column holds years 0 to 9999 only",
            ),
            refused(
                Lite,
                "d",
                "'0002-01-01 BC'",
                "the column holds years 0 to 9999 only",
            ),
            refused(
                Lite,
                "n",
                "'NaN'",
                "SQLite holds no NaN or infinite decimal",
            ),
            refused(Lite, "f", "'NaN'", "SQLite keeps NaN as NULL"),
            refused(Lite, "r", "'-0'", "a SQLite REAL column keeps -0.0 as 0.0"),
            refused(
                My,
                "u",
                "'00000000-0000-8000-0100-000000000000'",
                "MariaDB's UUID type holds no UUID of version 8 to 15",
            ),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_target_cannot_hold_of_a_mariadb_tenant_is_refused_by_name() {
    refusals_from(My, |rng| {
        // 20 digits before the point: a REAL does not hold them
        let twenty: String = (0..20)
            .map(|i| rng.random_range(u8::from(i == 0)..10).to_string())
            .collect();
        vec![
            refused(Pg, "d", "'0000-00-00'", "--zero-dates null"),
            refused(Pg, "ts", "'2020-00-15 10:00:00'", "--zero-dates null"),
            refused(Lite, "tz", "'0000-00-00 00:00:00'", "--zero-dates null"),
            refused(
                Pg,
                "t",
                "CONCAT('a', CHAR(0 USING utf8mb4), 'b')",
                "PostgreSQL text cannot hold a NUL character",
            ),
            refused(
                Pg,
                "jb",
                "CONCAT('{\"a\": \"', CHAR(92 USING utf8mb4), 'u0000\"}')",
                "PostgreSQL's jsonb cannot hold",
            ),
            refused(
                Lite,
                "n",
                &format!("'{twenty}.5'"),
                "as a REAL, which does not hold it exactly",
            ),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_target_cannot_hold_of_a_sqlite_tenant_is_refused_by_name() {
    refusals_from(Lite, |_| {
        vec![
            refused(Pg, "i", "'abc'", "not an integer"),
            refused(Pg, "r", "1e300", "out of a 4-byte float's range"),
            // SQLite keeps it as a REAL, whose digits do not fit (38, 10)
            refused(
                Pg,
                "n",
                "'12345678901234567890123456789.5'",
                "it does not fit (38, 10) without losing digits",
            ),
            refused(My, "u", "'not-a-uuid'", "not a UUID"),
            refused(My, "d", "'2026-02-30'", "not a date or timestamp"),
            refused(
                My,
                "tz",
                "'2038-01-19 03:14:08Z'",
                "a MySQL TIMESTAMP holds",
            ),
            // -0.0 as a 4-byte float
            refused(My, "r", "-1e-50", "a MySQL float column keeps -0.0 as 0.0"),
            refused(Pg, "f", "'1,5'", "not a number"),
        ]
    })
    .await;
}

/// Two failures these property tests found outside the value layer, now
/// fixed: PostgreSQL's first timestamp, and MariaDB's JSON columns.
#[tokio::test(flavor = "multi_thread")]
async fn postgresqls_first_timestamp_and_mariadbs_json_columns() {
    // PostgreSQL's first timestamp, 4714-11-24 00:00:00 BC, between two
    // PostgreSQL tenants (catalog.rs gave timestamps years from -4712)
    let dir = tempfile::tempdir().unwrap();
    let set = values_set();
    let mut clean = Cleanup::default();
    let source = synced_source(Pg, dir.path(), set.path(), &mut clean).await;
    exec(
        &source,
        "INSERT INTO v (id, ts, tz) VALUES (1, '4714-11-24 00:00:00 BC', '4714-11-24 00:00:00+00 BC')",
    )
    .await;
    let (to, args) = target(Pg, dir.path(), &mut clean, false).await;
    let out = mv(dir.path(), set.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let got = read_pg(&to.url, &to.table).await;
    assert_eq!(got[0].1[7].as_deref(), Some("4714-11-24 00:00:00 BC"));
    assert_eq!(got[0].1[8].as_deref(), Some("4714-11-24 00:00:00+00 BC"));
    drop(clean);
    // invalid JSON from a SQLite tenant into a MariaDB JSON column: refused
    // by name (MariaDB reports a JSON column as `longtext` with a
    // json_valid CHECK; the server's CHECK refused it naming no key)
    refusals_from(Lite, |_| vec![refused(My, "j", "'not json'", "not JSON")]).await;
}

// ---------------------------------------------------------------------------
// 2. jsonb: normalize against the server

/// A number with an exponent anywhere near numeric's limits now and then.
fn prop_number(rng: &mut StdRng, out: &mut String) {
    match rng.random_range(0..20) {
        0 => {
            // past or at the limits: 131072 digits before the point, 16383
            // after, exponents of ±1000 and more
            let (int, frac, exp) = *[
                ("1", "", 1000i64),
                ("1", "", 1001),
                ("1", "", -1000),
                ("1", "", -1001),
                ("1", "", 131_071),
                ("1", "", 131_072),
                ("10", "", 131_070),
                ("10", "", 131_071),
                ("0", "001", 131_074),
                ("0", "001", 131_075),
                ("1", "", -16_383),
                ("1", "", -16_384),
                ("1", "5", -16_382),
                ("1", "5", -16_383),
                ("0", "", -16_383),
                ("0", "", -16_384),
                ("0", "", 5000),
                ("0", "0", 1_073_741_822),
                ("0", "", 1_073_741_823),
                ("1", "", 1_073_741_822),
                ("1", "", -1_073_741_822),
                ("123456789", "", -1005),
            ]
            .choose(rng)
            .unwrap();
            if rng.random_bool(0.3) {
                out.push('-');
            }
            out.push_str(int);
            if !frac.is_empty() {
                out.push('.');
                out.push_str(frac);
            }
            out.push_str(&format!("e{exp}"));
        }
        1 => {
            // long digit strings
            out.push(rng.random_range(b'1'..=b'9') as char);
            for _ in 0..rng.random_range(100..3000) {
                out.push(rng.random_range(b'0'..=b'9') as char);
            }
            if rng.random_bool(0.5) {
                out.push('.');
                for _ in 0..rng.random_range(1..3000) {
                    out.push(rng.random_range(b'0'..=b'9') as char);
                }
            }
            if rng.random_bool(0.5) {
                out.push_str(&format!("e{}", rng.random_range(-20_000..20_000)));
            }
        }
        2 => out.push_str(&format!("1e{}", rng.random_range(-20_000i64..140_000))),
        _ => json_number(rng, out, 40, 2000),
    }
}

fn prop_value(rng: &mut StdRng, out: &mut String, depth: usize, max_depth: usize) {
    let k = if depth >= max_depth {
        rng.random_range(2..6)
    } else {
        rng.random_range(0..6)
    };
    match k {
        0 => {
            out.push('{');
            ws(rng, out);
            for i in 0..rng.random_range(0..7) {
                if i > 0 {
                    out.push(',');
                    ws(rng, out);
                }
                json_key(rng, out);
                ws(rng, out);
                out.push(':');
                ws(rng, out);
                prop_value(rng, out, depth + 1, max_depth);
                ws(rng, out);
            }
            out.push('}');
        }
        1 => {
            out.push('[');
            ws(rng, out);
            for i in 0..rng.random_range(0..6) {
                if i > 0 {
                    out.push(',');
                    ws(rng, out);
                }
                prop_value(rng, out, depth + 1, max_depth);
                ws(rng, out);
            }
            out.push(']');
        }
        2 => {
            out.push('"');
            let n = rng.random_range(0..16);
            json_chars(rng, out, n);
            out.push('"');
        }
        3 => prop_number(rng, out),
        _ => out.push_str(["true", "false", "null"].choose(rng).unwrap()),
    }
}

/// Any text, mostly JSON: a generated document, now and then spoiled by a
/// character put anywhere, or given an escape neither side can read.
fn prop_doc(rng: &mut StdRng) -> String {
    let mut s = String::new();
    ws(rng, &mut s);
    let depth = if rng.random_bool(0.05) { 30 } else { 6 };
    prop_value(rng, &mut s, 0, depth);
    ws(rng, &mut s);
    match rng.random_range(0..12) {
        0 => {
            // a character somewhere
            let at: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
            let i = *at.choose(rng).unwrap();
            let c = *[
                ',', ']', '}', '[', '{', '"', '\\', ':', 'x', '0', ' ', '\u{1}', '-', '.', 'e',
                '\u{a0}',
            ]
            .choose(rng)
            .unwrap();
            s.insert(i, c);
        }
        1 => {
            // an escape at the end of a string: lone surrogates, NUL, bad
            // hex, and the good ones beside them
            let e = *[
                "\\ud83d",
                "\\ude00",
                "\\ud83d\\u0041",
                "\\ud83dx",
                "\\ud83d\\ud83d",
                "\\u0000",
                "\\u12",
                "\\u12g4",
                "\\x",
                "\\ud83d\\ude00",
                "\\uDBFF\\uDFFF",
                "\\u0001",
            ]
            .choose(rng)
            .unwrap();
            s = format!("[\"a{e}\", {s}]");
        }
        _ => {}
    }
    s
}

/// Documents at the edges, every run.
fn edge_docs() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "{",
        "[1,]",
        "01",
        "1.",
        ".5",
        "+1",
        "NaN",
        "Infinity",
        "-Infinity",
        "tru",
        "nul",
        "\"\t\"",
        "1 2",
        "[1] x",
        "\u{feff}{}",
        "{\"a\":1,}",
        "{,}",
        "{\"a\" 1}",
        "-",
        "-01",
        "1e",
        "1e+",
        "0x10",
        "\"\\u0000\"",
        "{\"a\\u0000\": 1}",
        "\"\\ud83d\"",
        "\"\\ude00\"",
        "\"\\ud83d\\ude00\"",
        "{\"é\": 1, \"\\u00e9\": 2}",
        "{\"\\u00e9\": 1, \"é\": 2, \"e\": 0}",
        "{\"b\": 1, \"a\": 2, \"aa\": 3, \"\": 4, \"b\": 5}",
        "-0",
        "-0.0",
        "-0e-5",
        "0.0e5",
        "1.50e1",
        "1E+2",
        "1e-0",
        "[1e1001, {\"a\": 1e-1001}]",
        "\n\t {\"a\" :\r\n1 } \n",
        "\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"",
        "\"\\u001f\\u007f\\u0080\\u2028\"",
        "[[], {}, [{}], {\"\": []}]",
        "1e99999999999999999999",
        "0e-99999999999999999999",
        "1e0000000000000000000000001",
        "\"\u{7f}\u{80}\u{10ffff}\"",
        "{\"a\":{\"a\":{\"a\":[1,2,{\"a\":null}]}}}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // nesting to normalize's limit (deeper ones: below)
    for n in [500, 1000, 1001] {
        v.push(format!("{}{}", "[".repeat(n), "]".repeat(n)));
        v.push(format!("{}1{}", "[".repeat(n - 1), "]".repeat(n - 1)));
    }
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn jsonb_normalisation_is_what_postgresql_makes_of_any_document() {
    let seed = seed("jsonb normalisation");
    let mut rng = rng_for(seed, "jsonb");
    let mut docs: Vec<String> = (0..3000).map(|_| prop_doc(&mut rng)).collect();
    docs.extend(edge_docs());
    let mut c = pg_connect(&pg_base_url()).await;
    // one statement: what the server makes of each, NULL where it refuses
    sqlx::raw_sql(
        "CREATE FUNCTION pg_temp.fm_jsonb(t text) RETURNS text LANGUAGE plpgsql AS $$ \
         BEGIN RETURN t::jsonb::text; EXCEPTION WHEN others THEN RETURN NULL; END $$",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let server: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT pg_temp.fm_jsonb(d) FROM unnest($1::text[]) WITH ORDINALITY AS u(d, n) ORDER BY n",
    )
    .bind(&docs)
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut wrong = Vec::new();
    let (mut agreed, mut refused) = (0, 0);
    for (i, (doc, server)) in docs.iter().zip(&server).enumerate() {
        let ours = jsonb::normalize(doc);
        match (&ours, server) {
            (Ok(a), Some(b)) if a == b => agreed += 1,
            (Err(_), None) => refused += 1,
            _ => wrong.push(format!(
                "seed {seed}, document {i} {:?}:\n  normalize: {:?}\n  PostgreSQL: {:?}",
                cut(doc, 300),
                ours.as_ref().map(|s| cut(s, 300)).map_err(|e| cut(e, 300)),
                server.as_ref().map(|s| cut(s, 300))
            )),
        }
    }
    eprintln!(
        "{} documents: {agreed} the same, {refused} refused by both, {} differ",
        docs.len(),
        wrong.len()
    );
    // deeper than normalize's limit: refused, by name, though the server
    // (up to its max_stack_depth) reads them
    let deep = format!("{}{}", "[".repeat(1002), "]".repeat(1002));
    let e = jsonb::normalize(&deep).unwrap_err();
    assert!(e.contains("nested too deeply"), "{e}");
    let server: Option<String> = sqlx::query_scalar("SELECT pg_temp.fm_jsonb($1)")
        .bind(&deep)
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(server.as_deref(), Some(deep.as_str()));
    c.close().await.unwrap();
    assert!(
        wrong.is_empty(),
        "{} of {} documents differ:\n{}",
        wrong.len(),
        docs.len(),
        wrong
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        agreed > 1000 && refused > 100,
        "{agreed} agreed, {refused} refused"
    );
}

// ---------------------------------------------------------------------------
// 3. When against the server

/// A moment spelled as PostgreSQL reads it: its fraction in 0 to 6 digits,
/// BC, for `Tz` an offset now and then; and the moment in UTC.
fn pg_input(rng: &mut StdRng, col: Col) -> (String, Option<Moment>) {
    if rng.random_bool(0.01) {
        return (
            ["infinity", "-infinity"].choose(rng).unwrap().to_string(),
            None,
        );
    }
    // PostgreSQL's whole range (When has none of fleetmig's column limits)
    let span = Span {
        lo: PG_FIRST,
        ..span(Pg, col)
    };
    let m = match rng.random_range(0..4) {
        // around the turn of the era, where BC and leap years meet
        0 => moment_in(
            rng,
            Span {
                lo: Moment::at(-10, 1, 1, 0),
                hi: Moment::at(10, 12, 31, LAST_MICRO),
            },
            false,
        ),
        _ => moment_in(rng, span, false),
    };
    let m = if col == Col::Date {
        Moment { nanos: 0, ..m }
    } else {
        m
    };
    let off = if col == Col::Tz && (1..=294_275).contains(&m.year) && rng.random_bool(0.5) {
        offset(rng)
    } else {
        0
    };
    let local = m.shifted(off);
    let bc = local.year <= 0;
    let year = if bc { 1 - local.year } else { local.year };
    let mut s = format!("{year:04}-{:02}-{:02}", local.month, local.day);
    if col != Col::Date {
        s.push(if rng.random_bool(0.8) { ' ' } else { 'T' });
        s.push_str(&local.clock());
        let micros = local.nanos % SEC / 1000;
        // the fraction in as many digits as it needs, or more
        let need = format!("{micros:06}").trim_end_matches('0').len();
        let digits = rng.random_range(need..=6);
        if digits > 0 {
            s.push_str(&format!(".{}", &format!("{micros:06}")[..digits]));
        }
    }
    if col == Col::Tz {
        s.push_str(&if off == 0 {
            ["+00", "+00:00", "Z", "-00"]
                .choose(rng)
                .unwrap()
                .to_string()
        } else {
            zone(rng, off)
        });
    }
    if bc {
        s.push_str(" BC");
    }
    (s, Some(m))
}

#[tokio::test(flavor = "multi_thread")]
async fn dates_and_timestamps_read_and_write_as_postgresql_prints_them() {
    let seed = seed("When against PostgreSQL");
    let mut rng = rng_for(seed, "when");
    let mut c = pg_connect(&pg_base_url()).await;
    sqlx::raw_sql("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
        .execute(&mut c)
        .await
        .unwrap();
    let mut wrong = Vec::new();
    let mut compared = 0;
    for (col, cast) in [
        (Col::Date, "date"),
        (Col::Ts, "timestamp"),
        (Col::Tz, "timestamptz"),
    ] {
        let inputs: Vec<(String, Option<Moment>)> =
            (0..2000).map(|_| pg_input(&mut rng, col)).collect();
        let texts: Vec<String> = inputs.iter().map(|(s, _)| s.clone()).collect();
        let printed: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT x::{cast}::text FROM unnest($1::text[]) WITH ORDINALITY AS u(x, n) ORDER BY n"
        )))
        .bind(&texts)
        .fetch_all(&mut c)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {cast}: {e}"));
        let (time, zone) = (col != Col::Date, col == Col::Tz);
        compared += printed.len();
        for ((input, m), pg) in inputs.iter().zip(&printed) {
            let mut fail = |what: String| {
                wrong.push(format!(
                    "seed {seed}, {cast} {input:?} (PostgreSQL prints {pg:?}): {what}"
                ))
            };
            // what PostgreSQL prints is what this test expects of it
            let want = match m {
                Some(m) => pg_text(m, col),
                None => input.clone(),
            };
            if *pg != want {
                fail(format!("the test expected PostgreSQL to print {want:?}"));
            }
            // PostgreSQL's print, read and written back
            let Some(w) = When::parse(pg) else {
                fail("When::parse reads nothing".into());
                continue;
            };
            let mut back = String::new();
            w.write_pg(&mut back, time, zone);
            if back != *pg {
                fail(format!("write_pg gives {back:?}"));
            }
            // the input read as PostgreSQL read it
            match When::parse(input) {
                Some(v) if v == w => {}
                other => fail(format!(
                    "When::parse of the input gives {other:?}, of the print {w:?}"
                )),
            }
        }
    }
    c.close().await.unwrap();
    eprintln!("{compared} dates and timestamps: {} differ", wrong.len());
    assert_eq!(compared, 6000);
    assert!(
        wrong.is_empty(),
        "{} differ:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
