//! Every setting key, defined once: its flag and environment variable
//! (clap), its `fleetmig.toml` key (serde) and its help text are the same
//! field. The keys come in three groups, as commands take them: what every
//! fleet command takes (`FleetKeys`), what commands that run tenants take
//! (`ExecKeys`), and a rollout's waves and gates (`RolloutKeys`). A field is
//! `None` (or a switch `false`) when not given; `Config::resolve` layers
//! flags over file over defaults and validates, in one place. Adding a
//! setting is a field here and its reading in `resolve`.

use std::path::PathBuf;

use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::options::TxMode;

/// The keys of every fleet command.
#[derive(Debug, Default, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetKeys {
    /// How tenants are found: sqlite-dir:PATH, registry:FILE.csv,
    /// postgres-schemas:URL, postgres-databases:URL, mysql-databases:URL.
    #[arg(long, env = "FLEETMIG_FLEET")]
    pub fleet: Option<String>,
    /// The migration folder [default: migrations].
    #[arg(long, env = "FLEETMIG_MIGRATIONS")]
    pub migrations: Option<PathBuf>,
    /// Where reports are written [default: reports].
    #[arg(long, env = "FLEETMIG_REPORTS")]
    pub reports: Option<PathBuf>,
    /// The state store: a file, or a postgres:// URL [default: .fleetmig/state.db].
    #[arg(long, env = "FLEETMIG_STATE")]
    pub state: Option<String>,
    /// LIKE pattern over schema/database names: `%` any run, `_` any one
    /// character, `\_` a literal underscore [default: tenant\_%, the names
    /// that start with tenant_].
    #[arg(long, env = "FLEETMIG_TENANT_PATTERN")]
    pub tenant_pattern: Option<String>,
    /// SQL returning one text column of schema/database names (run in a
    /// read-only transaction).
    #[arg(long, env = "FLEETMIG_TENANT_QUERY")]
    pub tenant_query: Option<String>,
    /// Tenants worked on at once [default: 8].
    #[arg(long, env = "FLEETMIG_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Tenants of one database server worked on at once; with several
    /// workers on a rollout, across all of them (slots in the state store)
    /// [default: none beyond each process's --concurrency].
    #[arg(long, env = "FLEETMIG_PER_SERVER")]
    pub per_server: Option<usize>,
    /// How long DDL waits for a lock before failing and being retried [default: 5s].
    #[arg(long, env = "FLEETMIG_LOCK_TIMEOUT")]
    pub lock_timeout: Option<String>,
    /// How long connecting to a tenant's server may take [default: 10s].
    #[arg(long, env = "FLEETMIG_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<String>,
    /// Longest a statement may run (PostgreSQL, MariaDB) [default: none].
    #[arg(long, env = "FLEETMIG_STATEMENT_TIMEOUT")]
    pub statement_timeout: Option<String>,
    /// Connections per PostgreSQL pool of a schema fleet [default: the
    /// smaller of --per-server and --concurrency].
    #[arg(long, env = "FLEETMIG_POOL_SIZE")]
    pub pool_size: Option<u32>,
    /// Create missing SQLite tenant files on sync (the demo fleet does).
    #[arg(long, env = "FLEETMIG_CREATE_MISSING")]
    pub create_missing: bool,
    /// A fleet with no tenant is expected: not an error (exit 3) but a rollout
    /// of nothing.
    #[arg(long, env = "FLEETMIG_ALLOW_EMPTY")]
    pub allow_empty: bool,
    /// A rollout's claim expires after this long without a heartbeat [default: 30s].
    #[arg(long, env = "FLEETMIG_LEASE")]
    pub lease: Option<String>,
}

/// The keys of commands that run tenants (`sync`, `rollout`).
#[derive(Debug, Default, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecKeys {
    /// Attempts per tenant for transient errors, the first included [default: 3].
    #[arg(long, env = "FLEETMIG_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// Wait before the first retry; doubles each time, with jitter [default: 500ms].
    #[arg(long, env = "FLEETMIG_RETRY_BACKOFF")]
    pub retry_backoff: Option<String>,
    /// Start no new tenant once this many have failed.
    #[arg(long, env = "FLEETMIG_MAX_FAILURES")]
    pub max_failures: Option<usize>,
    /// migration: one transaction per migration (sqlx's behaviour); tenant:
    /// all of a tenant's pending migrations in one [default: migration].
    #[arg(long, env = "FLEETMIG_TX_MODE", value_parser = tx_mode())]
    pub tx_mode: Option<TxMode>,
    /// Back each tenant up into DIR/<rollout-id>/ before its first migration
    /// (pg_dump, mysqldump, SQLite VACUUM INTO); `fleetmig restore` puts it back.
    #[arg(long, value_name = "DIR", env = "FLEETMIG_BACKUP")]
    pub backup: Option<PathBuf>,
    /// After a tenant's migrations, ANALYZE the tables they changed.
    #[arg(long)]
    pub analyze: bool,
    /// After the run, prune the tenant rows of finished rollouts older than
    /// this age (30d) or beyond the newest N (60), as `fleetmig prune --keep`.
    #[arg(long, value_name = "AGE|N", env = "FLEETMIG_RETAIN")]
    pub retain: Option<String>,
    /// Before a tenant is touched (PostgreSQL): report its size and largest
    /// tables, and defer it (retried later) while an old transaction holds a
    /// table its migrations touch, or the server is short of connections.
    #[arg(long)]
    pub preflight: bool,
    /// Preflight: the oldest transaction allowed to hold a touched table [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub preflight_max_xact_age: Option<String>,
    /// Preflight: the fewest free server connections to go ahead with [default: 3].
    #[arg(long, value_name = "N")]
    pub preflight_min_free_connections: Option<i64>,
}

/// A rollout's waves, gates and bake (`rollout`, `move --select`).
#[derive(Debug, Default, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(default)]
pub struct RolloutKeys {
    /// Waves, e.g. 'canary=tag:canary,5%,25%,100%' (tag:K[=V], ids:a+b, N, N%, rest).
    #[arg(long, env = "FLEETMIG_WAVES")]
    pub waves: Option<String>,
    /// Gate: halt when more than N tenants of a wave fail [default: 0 when no
    /// gate is configured].
    #[arg(long)]
    pub gate_max_failures: Option<usize>,
    /// Gate: halt when more than this fraction of a wave fails (0.05 = 5%).
    #[arg(long, value_parser = finite)]
    pub gate_max_failure_rate: Option<f64>,
    /// Gate: SQL run on every succeeded tenant of a wave; must return no rows
    /// (or a single true).
    #[arg(long, value_name = "FILE")]
    pub gate_sql: Option<PathBuf>,
    /// Wait this long after each wave before the next [default: 0s].
    #[arg(long)]
    pub bake: Option<String>,
}

impl RolloutKeys {
    /// The flag of the first key given, if any.
    pub fn first_given(&self) -> Option<String> {
        given(self).into_iter().next()
    }
}

/// A number that is one (not NaN or infinite, which JSON, the layering's
/// form, cannot hold).
fn finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(f),
        Ok(_) => Err(format!("{s}: a finite number")),
        Err(e) => Err(e.to_string()),
    }
}

/// `--tx-mode`'s values, parsed into the engine's type.
fn tx_mode() -> impl TypedValueParser<Value = TxMode> {
    PossibleValuesParser::new(["migration", "tenant"]).try_map(|s| s.parse::<TxMode>())
}

/// `high`, with the keys it was not given taken from `low` (a key is given
/// when it is neither `None` nor a switch left off).
pub fn over<T: Serialize + DeserializeOwned>(high: &T, low: &T) -> Result<T, Error> {
    let mut merged = object(low)?;
    for (key, value) in object(high)? {
        if !matches!(
            value,
            serde_json::Value::Null | serde_json::Value::Bool(false)
        ) {
            merged.insert(key, value);
        }
    }
    serde_json::from_value(serde_json::Value::Object(merged)).map_err(internal)
}

/// The keys of `T` (its field names, as the file spells them).
pub fn names<T: Serialize + Default>() -> Vec<String> {
    object(&T::default())
        .map(|o| o.into_iter().map(|(k, _)| k).collect())
        .unwrap_or_default()
}

/// Where else than `--flag` the setting of that flag may come from: its
/// `FLEETMIG_*` variable and its `fleetmig.toml` key, as the key groups
/// define them (empty for a flag that is no settings key).
pub fn other_sources(flag: &str) -> Vec<String> {
    use clap::Args as _;
    let id = flag.trim_start_matches('-').replace('-', "_");
    let cmd = RolloutKeys::augment_args(ExecKeys::augment_args(FleetKeys::augment_args(
        clap::Command::new("fleetmig"),
    )));
    let Some(arg) = cmd.get_arguments().find(|a| a.get_id().as_str() == id) else {
        return Vec::new();
    };
    let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
    env.into_iter()
        .chain([format!("{id} in fleetmig.toml")])
        .collect()
}

/// The flags given in `keys`, as `--flag-name`.
fn given<T: Serialize>(keys: &T) -> Vec<String> {
    object(keys)
        .map(|o| {
            o.into_iter()
                .filter(|(_, v)| {
                    !matches!(v, serde_json::Value::Null | serde_json::Value::Bool(false))
                })
                .map(|(k, _)| format!("--{}", k.replace('_', "-")))
                .collect()
        })
        .unwrap_or_default()
}

fn object<T: Serialize>(keys: &T) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    match serde_json::to_value(keys).map_err(internal)? {
        serde_json::Value::Object(o) => Ok(o),
        other => Err(Error::Config {
            path: "fleetmig.toml".into(),
            message: format!("settings keys as {other}"),
        }),
    }
}

fn internal(e: serde_json::Error) -> Error {
    Error::Config {
        path: "fleetmig.toml".into(),
        message: format!("settings keys: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_keys_win_and_switches_only_turn_on() {
        let high = FleetKeys {
            concurrency: Some(16),
            create_missing: false,
            ..Default::default()
        };
        let low = FleetKeys {
            concurrency: Some(4),
            lock_timeout: Some("2s".into()),
            create_missing: true,
            ..Default::default()
        };
        let k = over(&high, &low).unwrap();
        assert_eq!(k.concurrency, Some(16));
        assert_eq!(k.lock_timeout.as_deref(), Some("2s"));
        assert!(k.create_missing);
    }

    #[test]
    fn a_flag_s_other_sources_are_those_its_key_defines() {
        assert_eq!(
            other_sources("--pool-size"),
            ["FLEETMIG_POOL_SIZE", "pool_size in fleetmig.toml"]
        );
        // no environment variable
        assert_eq!(
            other_sources("--preflight-max-xact-age"),
            ["preflight_max_xact_age in fleetmig.toml"]
        );
        // not a settings key (a flag of `move` only)
        assert!(other_sources("--pause").is_empty());
    }

    #[test]
    fn names_are_the_file_keys() {
        let n = names::<ExecKeys>();
        assert!(n.contains(&"tx_mode".to_string()));
        assert!(n.contains(&"preflight_min_free_connections".to_string()));
        assert!(n.contains(&"retain".to_string()));
        assert_eq!(n.len(), 10);
        let r = RolloutKeys {
            bake: Some("1s".into()),
            ..Default::default()
        };
        assert_eq!(r.first_given().as_deref(), Some("--bake"));
    }
}
