//! One validated `Config` from three sources, in order of precedence: command
//! line flags, environment (`FLEETMIG_*`, read with each flag), and
//! `fleetmig.toml` (or `--config PATH`). Every bad value is reported with the
//! flag or the file that carried it. The result is made of plain option values
//! (`options`); this module imports no engine type.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::Error;
use crate::options::{
    ExecOptions, Gates, PreflightLimits, RetryPolicy, RolloutRequest, Settings, TxMode,
};
use crate::tenant::{DEFAULT_PATTERN, DiscoverOptions, FleetSpec};

/// The settings keys, all optional: what `fleetmig.toml` may hold (unknown
/// keys are errors), and what flags and `FLEETMIG_*` variables give, so the
/// layering is one `over` instead of a second list of the same fields.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub fleet: Option<String>,
    pub migrations: Option<PathBuf>,
    pub reports: Option<PathBuf>,
    pub tenant_pattern: Option<String>,
    pub tenant_query: Option<String>,
    pub concurrency: Option<usize>,
    pub per_server: Option<usize>,
    pub max_attempts: Option<u32>,
    pub retry_backoff: Option<String>,
    pub max_failures: Option<usize>,
    pub lock_timeout: Option<String>,
    pub statement_timeout: Option<String>,
    pub tx_mode: Option<TxMode>,
    pub pool_size: Option<u32>,
    pub create_missing: Option<bool>,
    pub allow_empty: Option<bool>,
    pub connect_timeout: Option<String>,
    pub state: Option<String>,
    pub waves: Option<String>,
    pub gate_max_failures: Option<usize>,
    pub gate_max_failure_rate: Option<f64>,
    pub gate_sql: Option<PathBuf>,
    pub bake: Option<String>,
    pub lease: Option<String>,
    pub backup: Option<PathBuf>,
    pub analyze: Option<bool>,
    pub preflight: Option<bool>,
    pub preflight_max_xact_age: Option<String>,
    pub preflight_min_free_connections: Option<i64>,
}

impl FileConfig {
    /// `self`, with the keys it lacks taken from `lower`.
    pub fn over(self, lower: FileConfig) -> FileConfig {
        FileConfig {
            fleet: self.fleet.or(lower.fleet),
            migrations: self.migrations.or(lower.migrations),
            reports: self.reports.or(lower.reports),
            tenant_pattern: self.tenant_pattern.or(lower.tenant_pattern),
            tenant_query: self.tenant_query.or(lower.tenant_query),
            concurrency: self.concurrency.or(lower.concurrency),
            per_server: self.per_server.or(lower.per_server),
            max_attempts: self.max_attempts.or(lower.max_attempts),
            retry_backoff: self.retry_backoff.or(lower.retry_backoff),
            max_failures: self.max_failures.or(lower.max_failures),
            lock_timeout: self.lock_timeout.or(lower.lock_timeout),
            statement_timeout: self.statement_timeout.or(lower.statement_timeout),
            tx_mode: self.tx_mode.or(lower.tx_mode),
            pool_size: self.pool_size.or(lower.pool_size),
            create_missing: self.create_missing.or(lower.create_missing),
            allow_empty: self.allow_empty.or(lower.allow_empty),
            connect_timeout: self.connect_timeout.or(lower.connect_timeout),
            state: self.state.or(lower.state),
            waves: self.waves.or(lower.waves),
            gate_max_failures: self.gate_max_failures.or(lower.gate_max_failures),
            gate_max_failure_rate: self.gate_max_failure_rate.or(lower.gate_max_failure_rate),
            gate_sql: self.gate_sql.or(lower.gate_sql),
            bake: self.bake.or(lower.bake),
            lease: self.lease.or(lower.lease),
            backup: self.backup.or(lower.backup),
            analyze: self.analyze.or(lower.analyze),
            preflight: self.preflight.or(lower.preflight),
            preflight_max_xact_age: self.preflight_max_xact_age.or(lower.preflight_max_xact_age),
            preflight_min_free_connections: self
                .preflight_min_free_connections
                .or(lower.preflight_min_free_connections),
        }
    }

    /// Reads `path`; a missing default file is an empty config, a missing
    /// explicit one is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<FileConfig, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(FileConfig::default());
            }
            Err(e) => {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                });
            }
        };
        // toml's message points at the line with a caret: keep its lines
        toml::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: format!("\n{}", e.to_string().trim_end()),
        })
    }
}

/// Values given on the command line or in the environment (`None`: not
/// given): the same keys as the file, and what only a flag can say.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub keys: FileConfig,
    pub pause_after: Option<String>,
    pub revert_on_halt: bool,
    pub target: Option<i64>,
}

/// Which settings were given rather than defaulted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Given {
    pub migrations: bool,
    pub reports: bool,
    pub concurrency: bool,
    pub per_server: bool,
}

/// Everything a command needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The fleet, when one was given (commands on a recorded rollout take
    /// it from the record; see `fleet()`).
    pub fleet: Option<FleetSpec>,
    pub migrations: PathBuf,
    pub reports: PathBuf,
    /// Which of the migration and report folders were given (by flag,
    /// environment or file) rather than defaulted.
    pub given: Given,
    pub discover: DiscoverOptions,
    pub exec: ExecOptions,
    pub settings: Settings,
    /// The state store: a file path or a postgres:// URL.
    pub state: String,
    /// Waves and gates for `rollout` (sync ignores the waves).
    pub rollout: RolloutRequest,
    /// How long a rollout's claim lives without a heartbeat.
    pub lease: Duration,
}

/// What `rollout` (or `sync`) is asked for: waves, gates, bake, pause.
fn rollout_request(
    k: &FileConfig,
    pause_after: Option<String>,
    revert_on_halt: bool,
) -> Result<RolloutRequest, Error> {
    let rate = k.gate_max_failure_rate;
    if let Some(r) = rate
        && !(0.0..=1.0).contains(&r)
    {
        return Err(Error::Usage(format!(
            "--gate-max-failure-rate {r}: a fraction between 0 and 1 (0.05 is 5%)"
        )));
    }
    Ok(RolloutRequest {
        waves: k.waves.clone(),
        gates: Gates {
            max_failures: k.gate_max_failures,
            max_failure_rate: rate,
        },
        gate_sql: k.gate_sql.clone(),
        bake: or_default(&k.bake, "--bake", Duration::ZERO)?,
        pause_after,
        revert_on_halt,
        allow_contract: false,
        allow_lint_findings: false,
    })
}

/// `--preflight`'s limits, when it is on.
fn preflight(k: &FileConfig) -> Result<Option<PreflightLimits>, Error> {
    if !k.preflight.unwrap_or(false) {
        return Ok(None);
    }
    Ok(Some(PreflightLimits {
        max_xact_age: or_default(
            &k.preflight_max_xact_age,
            "--preflight-max-xact-age",
            Duration::from_secs(60),
        )?,
        min_free_connections: k.preflight_min_free_connections.unwrap_or(3),
    }))
}

/// The duration `value` gives (`flag` names it in an error), else `default`.
fn or_default(value: &Option<String>, flag: &str, default: Duration) -> Result<Duration, Error> {
    match value {
        Some(v) => duration(v, flag),
        None => Ok(default),
    }
}

/// `or_default`, and at least `min`.
fn bounded(
    value: &Option<String>,
    flag: &str,
    default: Duration,
    min: Duration,
) -> Result<Duration, Error> {
    match value {
        Some(v) => at_least(duration(v, flag)?, flag, v, min),
        None => Ok(default),
    }
}

/// `d` (given as `text` to `flag`), refused when under `min`.
fn at_least(d: Duration, flag: &str, text: &str, min: Duration) -> Result<Duration, Error> {
    if d < min {
        return Err(Error::Usage(format!(
            "{flag} {text}: at least {}",
            humantime::format_duration(min)
        )));
    }
    Ok(d)
}

pub fn duration(value: &str, name: &str) -> Result<Duration, Error> {
    fleetmig_parse::duration::parse(value, name).map_err(Error::Usage)
}

impl Config {
    /// The fleet; a usage error saying how to give one when none was.
    pub fn fleet(&self) -> Result<&FleetSpec, Error> {
        self.fleet.as_ref().ok_or_else(|| {
            Error::Usage(
                "no fleet given: pass --fleet KIND:WHERE (e.g. --fleet sqlite-dir:tenants/demo), \
                 set FLEETMIG_FLEET, or put `fleet = \"...\"` in fleetmig.toml"
                    .into(),
            )
        })
    }

    /// Merges flags/env over the file over the defaults.
    pub fn resolve(o: Overrides, file: FileConfig) -> Result<Config, Error> {
        let k = o.keys.over(file);
        let fleet: Option<FleetSpec> = k.fleet.as_deref().map(str::parse).transpose()?;
        let given = Given {
            migrations: k.migrations.is_some(),
            reports: k.reports.is_some(),
            concurrency: k.concurrency.is_some(),
            per_server: k.per_server.is_some(),
        };
        let concurrency = k.concurrency.unwrap_or(8);
        if concurrency == 0 {
            return Err(Error::Usage("--concurrency must be at least 1".into()));
        }
        let per_server = k.per_server.unwrap_or(concurrency);
        if per_server == 0 {
            return Err(Error::Usage("--per-server must be at least 1".into()));
        }
        let max_attempts = k.max_attempts.unwrap_or(3);
        if max_attempts == 0 {
            return Err(Error::Usage("--max-attempts must be at least 1".into()));
        }
        let backoff = or_default(
            &k.retry_backoff,
            "--retry-backoff",
            Duration::from_millis(500),
        )?;
        let lock_timeout = or_default(&k.lock_timeout, "--lock-timeout", Duration::from_secs(5))?;
        let statement_timeout = match &k.statement_timeout {
            Some(v) => Some(duration(v, "--statement-timeout")?),
            None => None,
        };
        let connect_timeout = bounded(
            &k.connect_timeout,
            "--connect-timeout",
            Duration::from_secs(10),
            Duration::from_millis(100),
        )?;
        let max_failures = k.max_failures;
        if max_failures == Some(0) {
            return Err(Error::Usage("--max-failures must be at least 1".into()));
        }
        if let Some(t) = o.target
            && t <= 0
        {
            return Err(Error::Usage(format!("--to {t}: versions are positive")));
        }
        let rollout = rollout_request(&k, o.pause_after, o.revert_on_halt)?;
        let preflight = preflight(&k)?;
        // a worker heartbeats a few times a lease: under a second, no
        // heartbeat keeps up and no tenant ever starts
        let lease = bounded(
            &k.lease,
            "--lease",
            Duration::from_secs(30),
            Duration::from_secs(1),
        )?;
        let pool_size = k.pool_size.unwrap_or(per_server.min(concurrency) as u32);
        Ok(Config {
            fleet,
            given,
            migrations: k.migrations.unwrap_or_else(|| "migrations".into()),
            reports: k.reports.unwrap_or_else(|| "reports".into()),
            discover: DiscoverOptions {
                pattern: k.tenant_pattern.unwrap_or_else(|| DEFAULT_PATTERN.into()),
                query: k.tenant_query,
                allow_empty: k.allow_empty.unwrap_or(false),
                connect_timeout,
            },
            exec: ExecOptions {
                concurrency,
                per_server,
                retry: RetryPolicy {
                    max_attempts,
                    backoff,
                    max_backoff: Duration::from_secs(30),
                },
                max_failures,
                target: o.target,
                tx_mode: k.tx_mode.unwrap_or_default(),
                backup_dir: k.backup,
                analyze: k.analyze.unwrap_or(false),
                hold_versions: Vec::new(),
                preflight,
            },
            settings: Settings {
                lock_timeout,
                statement_timeout,
                pool_size: pool_size.max(1),
                connect_timeout,
                create_missing: k.create_missing.unwrap_or(false),
            },
            state: k.state.unwrap_or_else(|| ".fleetmig/state.db".into()),
            rollout,
            lease,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beat_defaults() {
        let file: FileConfig =
            toml::from_str("fleet = \"sqlite-dir:a\"\nconcurrency = 4\nlock_timeout = \"2s\"")
                .unwrap();
        let o = Overrides {
            keys: FileConfig {
                concurrency: Some(16),
                ..Default::default()
            },
            ..Default::default()
        };
        let c = Config::resolve(o, file).unwrap();
        assert_eq!(c.exec.concurrency, 16);
        assert_eq!(c.settings.lock_timeout, Duration::from_secs(2));
        assert_eq!(c.fleet, Some(FleetSpec::SqliteDir("a".into())));
        assert_eq!(c.migrations, PathBuf::from("migrations"));
    }

    #[test]
    fn bad_values_name_the_flag_or_file() {
        let e = toml::from_str::<FileConfig>("flete = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flete"));
        let o = Overrides {
            keys: FileConfig {
                fleet: Some("sqlite-dir:x".into()),
                lock_timeout: Some("5 parsecs".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = Config::resolve(o, FileConfig::default()).unwrap_err();
        assert!(e.to_string().contains("--lock-timeout"));
        assert_eq!(e.exit_code(), 2);
        let c = Config::resolve(Overrides::default(), FileConfig::default()).unwrap();
        assert!(c.fleet().unwrap_err().to_string().contains("--fleet"));
    }
}
