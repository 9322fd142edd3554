//! Migration file names in sqlx's format: `<VERSION>_<description>.sql`,
//! with an optional dialect (`.postgres`, `.mysql`, `.sqlite`) and
//! direction (`.up`, `.down`).

use crate::Dialect;

/// A migration's file: one script, or the up or down half of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Simple,
    Up,
    Down,
}

/// What a migration file's name says.
pub struct ParsedName {
    pub version: i64,
    pub description: String,
    pub dialect: Option<Dialect>,
    pub kind: Kind,
}

/// Parses a file name; `Ok(None)` for files that are not migrations at all.
pub fn parse_name(name: &str) -> Result<Option<ParsedName>, String> {
    let Some(stem) = name.strip_suffix(".sql") else {
        return Ok(None);
    };
    // `.verify.sql` files belong to a migration (see directive `verify`).
    if stem.ends_with(".verify") {
        return Ok(None);
    }
    let (version, rest) = stem.split_once('_').ok_or_else(|| {
        "expected <VERSION>_<description>.sql (e.g. 0001_create_users.sql)".to_string()
    })?;
    let version: i64 = version
        .parse()
        .ok()
        .filter(|v| *v > 0 && version.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| {
            format!(
                "version {version:?} is not a positive whole number; expected <VERSION>_<description>.sql"
            )
        })?;
    let (rest, kind) = if let Some(r) = rest.strip_suffix(".up") {
        (r, Kind::Up)
    } else if let Some(r) = rest.strip_suffix(".down") {
        (r, Kind::Down)
    } else {
        (rest, Kind::Simple)
    };
    let (rest, dialect) = match rest.rsplit_once('.') {
        Some((r, "sqlite")) => (r, Some(Dialect::Sqlite)),
        Some((r, "postgres")) => (r, Some(Dialect::Postgres)),
        Some((r, "mysql")) => (r, Some(Dialect::Mysql)),
        Some((_, other)) => {
            return Err(format!(
                "unknown dialect or suffix `.{other}`; expected .sqlite, .postgres, .mysql, .up or .down"
            ));
        }
        None => (rest, None),
    };
    if rest.is_empty() {
        return Err("the description after the version is empty".into());
    }
    Ok(Some(ParsedName {
        version,
        description: rest.replace('_', " "),
        dialect,
        kind,
    }))
}
