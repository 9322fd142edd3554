//! Dates and timestamps as a move carries them: a calendar day and a time
//! of day to the nanosecond, over every year any of the three systems can
//! hold (PostgreSQL's 4713 BC to 5874897 AD, which no date library here
//! covers), or an infinity (PostgreSQL), or a MySQL zero date
//! (`0000-00-00`, and the partial ones with a zero month or day). Read from
//! and written as text in each system's own spelling; compared by value.

use std::fmt::Write;

/// A day, or a moment on it. `year` is astronomical: 0 is 1 BC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum When {
    NegInfinity,
    At {
        year: i64,
        /// 0 only in a MySQL zero date.
        month: u8,
        /// 0 only in a MySQL zero date.
        day: u8,
        nanos: u64,
    },
    Infinity,
}

const DAY_NANOS: u64 = 86_400 * 1_000_000_000;

impl When {
    pub fn day(year: i64, month: u8, day: u8) -> When {
        When::At {
            year,
            month,
            day,
            nanos: 0,
        }
    }

    /// A MySQL zero date: its month or its day is 0.
    pub fn is_zero(&self) -> bool {
        matches!(self, When::At { month, day, .. } if *month == 0 || *day == 0)
    }

    pub fn is_infinite(&self) -> bool {
        !matches!(self, When::At { .. })
    }

    pub fn year(&self) -> Option<i64> {
        match self {
            When::At { year, .. } => Some(*year),
            _ => None,
        }
    }

    pub fn nanos(&self) -> u64 {
        match self {
            When::At { nanos, .. } => *nanos,
            _ => 0,
        }
    }

    /// The same moment with its fraction of a second cut to `digits`.
    pub fn truncated(self, digits: u32) -> When {
        match self {
            When::At {
                year,
                month,
                day,
                nanos,
            } => {
                let unit = 10u64.pow(9 - digits.min(9));
                When::At {
                    year,
                    month,
                    day,
                    nanos: nanos / unit * unit,
                }
            }
            w => w,
        }
    }

    /// Parses a date or timestamp as PostgreSQL (ISO DateStyle, `BC`,
    /// `infinity`, years past 9999), MySQL (zero dates) or SQLite (`T`,
    /// `Z`, offsets) write it. An offset is applied: the result is UTC.
    /// `None`: not a date.
    pub fn parse(text: &str) -> Option<When> {
        let t = text.trim();
        match t {
            "infinity" | "+infinity" => return Some(When::Infinity),
            "-infinity" => return Some(When::NegInfinity),
            _ => {}
        }
        let (t, bc) = match t.strip_suffix(" BC") {
            Some(rest) => (rest, true),
            None => (t, false),
        };
        let neg = t.starts_with('-');
        let body = t.trim_start_matches(['-', '+']);
        let (year_text, rest) = body.split_once('-')?;
        if year_text.len() < 4 || !year_text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut year: i64 = year_text.parse().ok()?;
        if neg {
            year = -year;
        }
        if bc {
            if neg || year == 0 {
                return None;
            }
            year = 1 - year;
        }
        let month = two(rest.get(0..2)?)?;
        let rest = rest.get(2..)?.strip_prefix('-')?;
        let day = two(rest.get(0..2)?)?;
        let rest = rest.get(2..)?;
        let (nanos, offset) = if rest.is_empty() {
            (0, 0)
        } else {
            time_of_day(rest.strip_prefix([' ', 'T'])?)?
        };
        // zeros (MySQL's zero dates) pass; past the month's end does not
        if month > 12 || day > days_in(year, month) || (month == 0 || day == 0) && offset != 0 {
            return None;
        }
        let w = When::At {
            year,
            month,
            day,
            nanos,
        };
        Some(if offset == 0 { w } else { w.shifted(-offset)? })
    }

    /// This moment `seconds` later (an offset applied); zero dates and
    /// infinities do not move.
    fn shifted(self, seconds: i64) -> Option<When> {
        let When::At {
            year,
            month,
            day,
            nanos,
        } = self
        else {
            return Some(self);
        };
        let total = nanos as i128 + seconds as i128 * 1_000_000_000;
        let days = total.div_euclid(DAY_NANOS as i128) as i64;
        let nanos = total.rem_euclid(DAY_NANOS as i128) as u64;
        let (year, month, day) = civil(days_from_civil(year, month, day) + days);
        Some(When::At {
            year,
            month,
            day,
            nanos,
        })
    }

    /// The day only (the time of day must be midnight).
    pub fn date_part(self) -> Option<When> {
        match self {
            When::At { nanos: 0, .. } => Some(self),
            When::At { .. } => None,
            w => Some(w),
        }
    }

    /// `2026-03-01`, or `-0043-03-15` (astronomical), `infinity`; with the
    /// time of day when `time` (`10:20:30.5`, the fraction without
    /// trailing zeros), and ` BC` instead of a sign when `bc`.
    pub fn write(&self, out: &mut String, time: bool, bc: bool) {
        match self {
            When::Infinity => out.push_str("infinity"),
            When::NegInfinity => out.push_str("-infinity"),
            When::At {
                year,
                month,
                day,
                nanos,
            } => {
                let shown = if bc && *year <= 0 { 1 - year } else { *year };
                if shown < 0 {
                    let _ = write!(out, "-{:04}", -shown);
                } else {
                    let _ = write!(out, "{shown:04}");
                }
                let _ = write!(out, "-{month:02}-{day:02}");
                if time {
                    let s = nanos / 1_000_000_000;
                    let _ = write!(out, " {:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
                    let frac = nanos % 1_000_000_000;
                    if frac > 0 {
                        let digits = format!("{frac:09}");
                        out.push('.');
                        out.push_str(digits.trim_end_matches('0'));
                    }
                }
                if bc && *year <= 0 {
                    out.push_str(" BC");
                }
            }
        }
    }

    /// As PostgreSQL reads it: ` BC` after the time and the zone (`+00`
    /// when `zone`).
    pub fn write_pg(&self, out: &mut String, time: bool, zone: bool) {
        let bc = matches!(self, When::At { year, .. } if *year <= 0);
        let mut s = String::new();
        self.write(&mut s, time, true);
        out.push_str(s.strip_suffix(" BC").unwrap_or(&s));
        if zone && !self.is_infinite() {
            out.push_str("+00");
        }
        if bc {
            out.push_str(" BC");
        }
    }

    /// The fraction of a second with exactly `digits` digits (for systems
    /// that want a fixed width, such as SQLite's readers of sqlx's text).
    pub fn fraction(&self, digits: usize) -> String {
        let frac = self.nanos() % 1_000_000_000;
        let all = format!("{frac:09}");
        all[..digits.min(9)].to_string()
    }
}

/// `hh:mm[:ss[.fff…]]` and an optional zone (`Z`, `+02`, `+02:00`,
/// `-0530`): (nanoseconds into the day, the offset in seconds).
fn time_of_day(t: &str) -> Option<(u64, i64)> {
    let zone_at = t
        .char_indices()
        .skip(1)
        .find(|(_, c)| matches!(c, 'Z' | 'z' | '+' | '-'))
        .map(|(i, _)| i);
    let (clock, zone) = match zone_at {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let clock = clock.trim_end();
    let mut parts = clock.splitn(3, ':');
    let h = two(parts.next()?)? as u64;
    let m = two(parts.next()?)? as u64;
    let (s, frac) = match parts.next() {
        Some(sec) => {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
            if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
                return None;
            }
            let digits = format!("{frac:0<9}");
            (two(whole)? as u64, digits.parse::<u64>().ok()?)
        }
        None => (0, 0),
    };
    // 24:00:00 is PostgreSQL's end of a day
    if h > 24 || m > 59 || s > 60 || (h == 24 && (m > 0 || s > 0 || frac > 0)) || s == 60 {
        return None;
    }
    let nanos = ((h * 60 + m) * 60 + s) * 1_000_000_000 + frac;
    if nanos >= DAY_NANOS {
        return None;
    }
    let offset = match zone {
        "" | "Z" | "z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let (hh, mm, ss) = match digits.len() {
                2 => (digits.parse::<i64>().ok()?, 0, 0),
                4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?, 0),
                6 => (
                    digits[..2].parse().ok()?,
                    digits[2..4].parse().ok()?,
                    digits[4..].parse().ok()?,
                ),
                _ => return None,
            };
            sign * (hh * 3600 + mm * 60 + ss)
        }
    };
    Some((nanos, offset))
}

fn two(s: &str) -> Option<u8> {
    if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn leap(year: i64) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

/// Days in `month` of `year` (31 for MySQL's month 0, which holds zeros).
fn days_in(year: i64, month: u8) -> u8 {
    match month {
        0 => 31,
        2 if leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm, over any i64 year).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let (m, d) = (month as i64, day as i64);
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(w: When, time: bool, bc: bool) -> String {
        let mut s = String::new();
        w.write(&mut s, time, bc);
        s
    }

    #[test]
    fn every_systems_spelling_reads_and_writes_back() {
        let w = When::parse("2026-03-01 10:20:30.5").unwrap();
        assert_eq!(shown(w, true, true), "2026-03-01 10:20:30.5");
        assert_eq!(When::parse("2026-03-01T10:20:30.500Z"), Some(w));
        assert_eq!(When::parse("2026-03-01 12:20:30.5+02:00"), Some(w));
        assert_eq!(When::parse("2026-03-01 12:20:30.5+02"), Some(w));
        assert_eq!(When::parse("2026-03-01 05:50:30.5-0430"), Some(w));
        // an offset across midnight and a year's end
        let w = When::parse("2026-12-31 23:30:00-01:00").unwrap();
        assert_eq!(shown(w, true, true), "2027-01-01 00:30:00");
        // PostgreSQL: BC, years past 9999, infinities
        let bc = When::parse("0044-03-15 BC").unwrap();
        assert_eq!(bc.year(), Some(-43));
        assert_eq!(shown(bc, false, true), "0044-03-15 BC");
        let far = When::parse("294276-12-31 23:59:59.999999").unwrap();
        assert_eq!(shown(far, true, true), "294276-12-31 23:59:59.999999");
        assert_eq!(
            When::parse("5874897-12-31").unwrap().year(),
            Some(5_874_897)
        );
        assert_eq!(When::parse("infinity"), Some(When::Infinity));
        assert_eq!(When::parse("-infinity"), Some(When::NegInfinity));
        // MySQL's zero dates
        let z = When::parse("0000-00-00").unwrap();
        assert!(z.is_zero());
        assert_eq!(shown(z, false, false), "0000-00-00");
        assert!(When::parse("2020-00-15 00:00:00").unwrap().is_zero());
        // not dates
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "26-01-01",
            "2026-01-01 25:00",
            "x",
            "",
        ] {
            assert_eq!(When::parse(bad), None, "{bad}");
        }
        assert!(When::parse("2024-02-29").is_some());
        assert!(When::parse("2023-02-29").is_none());
    }

    #[test]
    fn the_calendar_holds_over_every_year() {
        for days in [-3_000_000_000i64, -719_468, -1, 0, 1, 20_000, 2_000_000_000] {
            let (y, m, d) = civil(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn fractions_are_cut_not_rounded() {
        let w = When::parse("2026-01-01 00:00:00.123456789").unwrap();
        assert_eq!(w.truncated(6).nanos(), 123_456_000);
        assert_eq!(w.truncated(0).nanos(), 0);
        assert_eq!(w.fraction(6), "123456");
    }
}
