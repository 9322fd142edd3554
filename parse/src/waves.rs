//! The `--waves` spec: `canary=tag:canary,5%,25%,100%` (names optional;
//! `ids:a+b`, `N`, `N%`, `rest`/`all`).

use std::fmt;

/// How one wave picks its tenants.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// Every remaining tenant with this tag (and value, if given).
    Tag { key: String, value: Option<String> },
    /// These tenant ids (those still remaining).
    Ids(Vec<String>),
    /// The next N remaining tenants.
    Count(usize),
    /// This percent of the remaining tenants, rounded up.
    Percent(f64),
    /// Everything that remains.
    Rest,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Tag { key, value: None } => write!(f, "tag:{key}"),
            Selector::Tag {
                key,
                value: Some(v),
            } => write!(f, "tag:{key}={v}"),
            Selector::Ids(ids) => write!(f, "ids:{}", ids.join("+")),
            Selector::Count(n) => write!(f, "{n}"),
            Selector::Percent(p) => write!(f, "{p}%"),
            Selector::Rest => write!(f, "rest"),
        }
    }
}

/// One wave of a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct WaveSpec {
    pub name: String,
    pub selector: Selector,
}

/// Parses `canary=tag:canary,5%,25%,100%` (names optional; `ids:a+b`, `N`,
/// `N%`, `rest`/`all`). Errors name the flag and the piece that is wrong.
pub fn parse(spec: &str) -> Result<Vec<WaveSpec>, String> {
    let bad = |piece: &str, why: &str| {
        format!("--waves: {piece:?}: {why} (expected e.g. canary=tag:canary,5%,25%,100%)")
    };
    let mut out = Vec::new();
    for (i, piece) in spec.split(',').map(str::trim).enumerate() {
        if piece.is_empty() {
            return Err(bad(piece, "empty wave"));
        }
        let (name, sel) = match piece.split_once('=') {
            Some((n, s)) if !n.contains(':') => {
                if n.trim().is_empty() {
                    return Err(bad(piece, "the wave name before '=' is empty"));
                }
                (n.trim().to_string(), s.trim())
            }
            _ => (String::new(), piece),
        };
        if out
            .last()
            .is_some_and(|w: &WaveSpec| w.selector == Selector::Rest)
        {
            return Err(bad(
                piece,
                "comes after a wave that takes every remaining tenant (100% or rest), so it would be empty",
            ));
        }
        let selector = if let Some(t) = sel.strip_prefix("tag:") {
            let (k, v) = match t.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (t.to_string(), None),
            };
            if k.is_empty() {
                return Err(bad(piece, "tag: needs a tag name"));
            }
            Selector::Tag { key: k, value: v }
        } else if let Some(ids) = sel.strip_prefix("ids:") {
            let ids: Vec<String> = ids
                .split('+')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if ids.is_empty() {
                return Err(bad(piece, "ids: needs ids separated by +"));
            }
            Selector::Ids(ids)
        } else if sel == "rest" || sel == "all" {
            Selector::Rest
        } else if let Some(p) = sel.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad(piece, "not a percent"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad(piece, "percent must be in (0, 100]"));
            }
            if p == 100.0 {
                Selector::Rest
            } else {
                Selector::Percent(p)
            }
        } else if let Ok(n) = sel.parse::<usize>() {
            if n == 0 {
                return Err(bad(piece, "a count must be at least 1"));
            }
            Selector::Count(n)
        } else {
            return Err(bad(piece, "not tag:, ids:, a count, a percent or rest"));
        };
        let name = if name.is_empty() {
            match &selector {
                Selector::Tag { key, .. } if i == 0 => key.clone(),
                _ => format!("wave{}", i + 1),
            }
        } else {
            name
        };
        if out.iter().any(|w: &WaveSpec| w.name == name) {
            return Err(bad(piece, "two waves have the same name"));
        }
        out.push(WaveSpec { name, selector });
    }
    Ok(out)
}
