//! A generated row: a value (or NULL) for every column, as given to the
//! source.

use crate::calendar::Moment;
use crate::seeds::{cut, hex};

/// A date or timestamp and the text its source was given.
#[derive(Clone, Debug)]
pub struct Timed {
    pub v: Stamp,
    pub text: String,
}

#[derive(Clone, Debug)]
pub enum Stamp {
    At(Moment),
    Inf,
    NegInf,
    /// A MySQL zero date, as MariaDB prints it.
    Zero(&'static str),
}

/// A decimal: its text (PostgreSQL and MariaDB), or what a SQLite NUMERIC
/// column holds (an INTEGER or a REAL).
#[derive(Clone, Debug)]
pub enum Num {
    Dec(String),
    Int(i64),
    Real(f64),
}

#[derive(Clone, Debug)]
pub struct Uid {
    /// 32 hex digits, lower case.
    pub hex: String,
    /// As the source was given it.
    pub text: String,
}

impl Uid {
    pub fn canonical(&self) -> String {
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
pub struct Row {
    pub id: i64,
    pub i: Option<i64>,
    pub f: Option<f64>,
    /// A 4-byte float from PostgreSQL and MariaDB; any double SQLite holds.
    pub r: Option<f64>,
    pub n: Option<Num>,
    pub t: Option<String>,
    pub b: Option<bool>,
    pub d: Option<Timed>,
    pub ts: Option<Timed>,
    pub tz: Option<Timed>,
    pub j: Option<String>,
    pub jb: Option<String>,
    pub x: Option<Vec<u8>>,
    pub u: Option<Uid>,
}

impl Row {
    /// The value given to the source for `col`, as a person reads it.
    pub fn given(&self, col: &str) -> String {
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
