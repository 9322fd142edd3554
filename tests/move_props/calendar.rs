//! The calendar (proleptic Gregorian, astronomical years: 0 is 1 BC):
//! moments, how each system prints them, the span a column of each holds,
//! and random moments and zones within a span.

use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use crate::systems::{Lite, My, Pg, Sys};

pub const SEC: u64 = 1_000_000_000;
pub const DAY: u64 = 86_400 * SEC;

pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn civil(days: i64) -> (i64, u32, u32) {
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
pub struct Moment {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub nanos: u64,
}

impl Moment {
    pub const fn at(year: i64, month: u32, day: u32, nanos: u64) -> Moment {
        Moment {
            year,
            month,
            day,
            nanos,
        }
    }

    pub fn days(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    pub fn from_days(days: i64, nanos: u64) -> Moment {
        let (year, month, day) = civil(days);
        Moment::at(year, month, day, nanos)
    }

    pub fn shifted(&self, seconds: i64) -> Moment {
        let total =
            self.days() as i128 * DAY as i128 + self.nanos as i128 + seconds as i128 * SEC as i128;
        Moment::from_days(
            total.div_euclid(DAY as i128) as i64,
            total.rem_euclid(DAY as i128) as u64,
        )
    }

    /// Cut to the microsecond, as PostgreSQL and MariaDB columns hold it.
    pub fn micros(&self) -> Moment {
        Moment {
            nanos: self.nanos / 1000 * 1000,
            ..*self
        }
    }

    pub fn clock(&self) -> String {
        let s = self.nanos / SEC;
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }

    /// `.5`, `.123456`: the fraction of the second, trailing zeros dropped.
    pub fn fraction(&self) -> String {
        let f = format!("{:09}", self.nanos % SEC);
        let f = f.trim_end_matches('0');
        if f.is_empty() {
            String::new()
        } else {
            format!(".{f}")
        }
    }

    pub fn chrono(&self) -> chrono::NaiveDateTime {
        let s = (self.nanos / SEC) as u32;
        chrono::NaiveDate::from_ymd_opt(self.year as i32, self.month, self.day)
            .expect("a day chrono holds")
            .and_hms_nano_opt(s / 3600, s / 60 % 60, s % 60, (self.nanos % SEC) as u32)
            .expect("a time of day")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Col {
    Date,
    Ts,
    Tz,
}

/// As PostgreSQL prints it (`0044-03-15 12:00:00.5+00 BC`).
pub fn pg_text(m: &Moment, col: Col) -> String {
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
pub fn my_text(m: &Moment, col: Col) -> String {
    let mut s = format!("{:04}-{:02}-{:02}", m.year, m.month, m.day);
    if col != Col::Date {
        s += &format!(" {}.{:06}", m.clock(), m.nanos % SEC / 1000);
    }
    s
}

/// As sqlx writes a date or timestamp into SQLite (chrono's `%F %T%.f`,
/// `%:z`): what a typed value becomes in a SQLite column.
pub fn lite_text(m: &Moment, col: Col) -> String {
    let t = m.chrono();
    match col {
        Col::Date => t.format("%F").to_string(),
        Col::Ts => t.format("%F %T%.f").to_string(),
        Col::Tz => t.and_utc().format("%F %T%.f%:z").to_string(),
    }
}

/// The span of moments a column of `sys` holds.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub lo: Moment,
    pub hi: Moment,
}

impl Span {
    pub fn meet(self, o: Span) -> Span {
        Span {
            lo: self.lo.max(o.lo),
            hi: self.hi.min(o.hi),
        }
    }
}

/// PostgreSQL's first day: 4714-11-24 BC (Julian day 0).
pub const PG_FIRST: Moment = Moment::at(-4713, 11, 24, 0);
/// The first moment of a PostgreSQL timestamp column: its first day.
pub const PG_TS_FIRST: Moment = PG_FIRST;
pub const LAST_MICRO: u64 = DAY - 1000;

pub fn span(sys: Sys, col: Col) -> Span {
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

/// An offset from UTC in seconds: whole quarters of an hour up to ±14 h.
pub fn offset(rng: &mut StdRng) -> i64 {
    loop {
        let o = rng.random_range(-56..=56i64) * 15 * 60;
        if o != 0 {
            return o;
        }
    }
}

/// The zone of a moment given as local time `off` seconds east of UTC.
pub fn zone(rng: &mut StdRng, off: i64) -> String {
    let sign = if off < 0 { '-' } else { '+' };
    let (h, m) = (off.abs() / 3600, off.abs() / 60 % 60);
    match rng.random_range(0..3) {
        0 if m == 0 => format!("{sign}{h:02}"),
        1 => format!("{sign}{h:02}{m:02}"),
        _ => format!("{sign}{h:02}:{m:02}"),
    }
}

/// A day within `span`: its edges often, days people use often, any day.
pub fn day_in(rng: &mut StdRng, span: Span) -> Moment {
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
pub fn moment_in(rng: &mut StdRng, span: Span, nanos: bool) -> Moment {
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
