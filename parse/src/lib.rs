//! fleetmig's parsers of text it is given: migration file names and
//! `-- fleetmig:` directives, the statement splitters, the `:tenant_id`
//! binder, the registry CSV reader, the waves and duration parsers and the
//! URL redactor. Kept apart from the database drivers so that each can be
//! fuzzed on its own (`fuzz/`), and so that what reads input is small
//! enough to read whole.

use std::fmt;

use serde::Serialize;

pub mod bind;
pub mod directive;
pub mod duration;
pub mod name;
pub mod registry;
pub mod secrets;
pub mod split;
pub mod waves;

/// The database family a tenant lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    Sqlite,
    Postgres,
    Mysql,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::Mysql => "mysql",
        }
    }

    /// The dialect named by a URL's scheme.
    pub fn from_url(url: &str) -> Option<Dialect> {
        let scheme = url.split(':').next()?.to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Some(Dialect::Sqlite),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "mysql" | "mariadb" => Some(Dialect::Mysql),
            _ => None,
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
