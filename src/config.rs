//! One validated `Config` from three sources, in order of precedence: command
//! line flags, environment (`FLEETMIG_*`, read by clap for each flag), and
//! `fleetmig.toml` (or `--config PATH`). Every bad value is reported with the
//! flag or the file that carried it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::dialect::{Settings, TxMode};
use crate::error::Error;
use crate::rollout::{ExecOptions, Gates, RetryPolicy, RolloutRequest};
use crate::tenant::{DiscoverOptions, FleetSpec};

/// The keys `fleetmig.toml` may hold (all optional). Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
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
        toml::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })
    }
}

/// Values given on the command line or in the environment (`None`: not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
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
    pub connect_timeout: Option<String>,
    pub state: Option<String>,
    pub waves: Option<String>,
    pub gate_max_failures: Option<usize>,
    pub gate_max_failure_rate: Option<f64>,
    pub gate_sql: Option<PathBuf>,
    pub bake: Option<String>,
    pub lease: Option<String>,
    pub pause_after: Option<String>,
    pub revert_on_halt: bool,
    pub backup: Option<PathBuf>,
    pub analyze: bool,
    pub preflight: bool,
    pub preflight_max_xact_age: Option<String>,
    pub preflight_min_free_connections: Option<i64>,
    pub target: Option<i64>,
}

/// Everything a command needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub fleet: FleetSpec,
    pub migrations: PathBuf,
    pub reports: PathBuf,
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

fn duration(value: &str, name: &str) -> Result<Duration, Error> {
    humantime::parse_duration(value)
        .map_err(|e| Error::Usage(format!("{name} {value:?}: {e} (write e.g. 500ms, 5s, 2m)")))
}

impl Config {
    /// Merges flags/env over the file over the defaults.
    pub fn resolve(o: Overrides, file: FileConfig, file_path: &Path) -> Result<Config, Error> {
        let fleet_text = o.fleet.or(file.fleet).ok_or_else(|| {
            Error::Usage(
                "no fleet given: pass --fleet KIND:WHERE (e.g. --fleet sqlite-dir:tenants/demo), \
                 set FLEETMIG_FLEET, or put `fleet = \"...\"` in fleetmig.toml"
                    .into(),
            )
        })?;
        let fleet: FleetSpec = fleet_text.parse()?;
        let concurrency = o.concurrency.or(file.concurrency).unwrap_or(8);
        if concurrency == 0 {
            return Err(Error::Usage("--concurrency must be at least 1".into()));
        }
        let per_server = o.per_server.or(file.per_server).unwrap_or(concurrency);
        if per_server == 0 {
            return Err(Error::Usage("--per-server must be at least 1".into()));
        }
        let max_attempts = o.max_attempts.or(file.max_attempts).unwrap_or(3);
        if max_attempts == 0 {
            return Err(Error::Usage("--max-attempts must be at least 1".into()));
        }
        let backoff = match o.retry_backoff.or(file.retry_backoff) {
            Some(v) => duration(&v, "--retry-backoff")?,
            None => Duration::from_millis(500),
        };
        let lock_timeout = match o.lock_timeout.or(file.lock_timeout) {
            Some(v) => duration(&v, "--lock-timeout")?,
            None => Duration::from_secs(5),
        };
        let statement_timeout = match o.statement_timeout.or(file.statement_timeout) {
            Some(v) => Some(duration(&v, "--statement-timeout")?),
            None => None,
        };
        let connect_timeout = match o.connect_timeout.or(file.connect_timeout) {
            Some(v) => duration(&v, "--connect-timeout")?,
            None => Duration::from_secs(10),
        };
        let max_failures = o.max_failures.or(file.max_failures);
        if max_failures == Some(0) {
            return Err(Error::Usage("--max-failures must be at least 1".into()));
        }
        if let Some(t) = o.target
            && t <= 0
        {
            return Err(Error::Usage(format!("--to {t}: versions are positive")));
        }
        let rate = o.gate_max_failure_rate.or(file.gate_max_failure_rate);
        if let Some(r) = rate
            && !(0.0..=1.0).contains(&r)
        {
            return Err(Error::Usage(format!(
                "--gate-max-failure-rate {r}: a fraction between 0 and 1 (0.05 is 5%)"
            )));
        }
        let rollout = RolloutRequest {
            waves: o.waves.or(file.waves),
            gates: Gates {
                max_failures: o.gate_max_failures.or(file.gate_max_failures),
                max_failure_rate: rate,
            },
            gate_sql: o.gate_sql.or(file.gate_sql),
            bake: match o.bake.or(file.bake) {
                Some(v) => duration(&v, "--bake")?,
                None => Duration::ZERO,
            },
            pause_after: o.pause_after,
            revert_on_halt: o.revert_on_halt,
            allow_contract: false,
            allow_lint_findings: false,
        };
        let lease = match o.lease.or(file.lease) {
            Some(v) => duration(&v, "--lease")?,
            None => Duration::from_secs(30),
        };
        let pool_size = o
            .pool_size
            .or(file.pool_size)
            .unwrap_or(per_server.min(concurrency) as u32);
        let _ = file_path;
        Ok(Config {
            fleet,
            migrations: o
                .migrations
                .or(file.migrations)
                .unwrap_or_else(|| "migrations".into()),
            reports: o
                .reports
                .or(file.reports)
                .unwrap_or_else(|| "reports".into()),
            discover: DiscoverOptions {
                pattern: o
                    .tenant_pattern
                    .or(file.tenant_pattern)
                    .unwrap_or_else(|| "tenant_%".into()),
                query: o.tenant_query.or(file.tenant_query),
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
                tx_mode: o.tx_mode.or(file.tx_mode).unwrap_or_default(),
                backup_dir: o.backup.or(file.backup),
                analyze: o.analyze || file.analyze.unwrap_or(false),
                hold_versions: Vec::new(),
                preflight: if o.preflight || file.preflight.unwrap_or(false) {
                    Some((
                        match o.preflight_max_xact_age.or(file.preflight_max_xact_age) {
                            Some(v) => duration(&v, "--preflight-max-xact-age")?,
                            None => Duration::from_secs(60),
                        },
                        o.preflight_min_free_connections
                            .or(file.preflight_min_free_connections)
                            .unwrap_or(3),
                    ))
                } else {
                    None
                },
            },
            settings: Settings {
                lock_timeout,
                statement_timeout,
                pool_size: pool_size.max(1),
                connect_timeout,
                create_missing: o.create_missing.or(file.create_missing).unwrap_or(false),
            },
            state: o
                .state
                .or(file.state)
                .unwrap_or_else(|| ".fleetmig/state.db".into()),
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
            concurrency: Some(16),
            ..Default::default()
        };
        let c = Config::resolve(o, file, Path::new("fleetmig.toml")).unwrap();
        assert_eq!(c.exec.concurrency, 16);
        assert_eq!(c.settings.lock_timeout, Duration::from_secs(2));
        assert_eq!(c.fleet, FleetSpec::SqliteDir("a".into()));
        assert_eq!(c.migrations, PathBuf::from("migrations"));
    }

    #[test]
    fn bad_values_name_the_flag_or_file() {
        let e = toml::from_str::<FileConfig>("flete = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flete"));
        let o = Overrides {
            fleet: Some("sqlite-dir:x".into()),
            lock_timeout: Some("5 parsecs".into()),
            ..Default::default()
        };
        let e = Config::resolve(o, FileConfig::default(), Path::new("f")).unwrap_err();
        assert!(e.to_string().contains("--lock-timeout"));
        assert_eq!(e.exit_code(), 2);
        let e = Config::resolve(Overrides::default(), FileConfig::default(), Path::new("f"))
            .unwrap_err();
        assert!(e.to_string().contains("--fleet"));
    }
}
