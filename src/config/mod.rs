//! One validated `Config` from three sources, in order of precedence: command
//! line flags, environment (`FLEETMIG_*`, read with each flag), and
//! `fleetmig.toml` (or `--config PATH`). Every bad value is reported with the
//! flag or the file that carried it. The result is made of plain option values
//! (`options`); this module imports no engine type.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::options::{
    ExecOptions, Gates, Keep, PreflightLimits, RetryPolicy, RolloutRequest, Settings,
};
use crate::tenant::{DEFAULT_PATTERN, DiscoverOptions, FleetSpec};

mod keys;

pub use keys::{ExecKeys, FleetKeys, RolloutKeys};

/// What `fleetmig.toml` may hold: the keys of the three groups (unknown
/// keys are errors), and what flags and `FLEETMIG_*` variables give.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FileConfig {
    pub fleet: FleetKeys,
    pub exec: ExecKeys,
    pub rollout: RolloutKeys,
}

impl FileConfig {
    /// `self`, with the keys it lacks taken from `lower`.
    pub fn over(&self, lower: &FileConfig) -> Result<FileConfig, Error> {
        Ok(FileConfig {
            fleet: keys::over(&self.fleet, &lower.fleet)?,
            exec: keys::over(&self.exec, &lower.exec)?,
            rollout: keys::over(&self.rollout, &lower.rollout)?,
        })
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
        FileConfig::parse(&text).map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    /// The keys `text` holds. Each group is read from the whole text (so
    /// toml's message points at the line of a bad value, with a caret);
    /// a key of no group is refused by name.
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        // toml's message points at the line with a caret: keep its lines
        let toml_error = |e: toml::de::Error| format!("\n{}", e.to_string().trim_end());
        let table: toml::Table = toml::from_str(text).map_err(toml_error)?;
        let known = [
            keys::names::<FleetKeys>(),
            keys::names::<ExecKeys>(),
            keys::names::<RolloutKeys>(),
        ]
        .concat();
        if let Some(unknown) = table.keys().find(|k| !known.contains(k)) {
            return Err(format!(
                "unknown key `{unknown}`; the keys are {}",
                known.join(", ")
            ));
        }
        let rollout: RolloutKeys = toml::from_str(text).map_err(toml_error)?;
        if let Some(r) = rollout.gate_max_failure_rate
            && !r.is_finite()
        {
            return Err(format!(
                "gate_max_failure_rate = {r}: a fraction between 0 and 1"
            ));
        }
        Ok(FileConfig {
            fleet: toml::from_str(text).map_err(toml_error)?,
            exec: toml::from_str(text).map_err(toml_error)?,
            rollout,
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
    pub allow_contract: bool,
    pub allow_lint_findings: bool,
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
    /// Which finished rollouts keep their tenant rows after a run
    /// (`--retain`; none pruned when `None`).
    pub retain: Option<Keep>,
}

/// What `rollout` (or `sync`) is asked for: waves, gates, bake, pause.
fn rollout_request(k: &RolloutKeys) -> Result<RolloutRequest, Error> {
    let rate = k.gate_max_failure_rate;
    if let Some(r) = rate
        && !(0.0..=1.0).contains(&r)
    {
        return Err(setting(
            "--gate-max-failure-rate",
            Some(&r),
            "a fraction between 0 and 1 (0.05 is 5%)",
        ));
    }
    Ok(RolloutRequest {
        waves: k.waves.clone(),
        gates: Gates {
            max_failures: k.gate_max_failures,
            max_failure_rate: rate,
        },
        gate_sql: k.gate_sql.clone(),
        bake: or_default(&k.bake, "--bake", Duration::ZERO)?,
        ..Default::default()
    })
}

/// `--preflight`'s limits, when it is on.
fn preflight(k: &ExecKeys) -> Result<Option<PreflightLimits>, Error> {
    if !k.preflight {
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
        let m = format!("at least {}", humantime::format_duration(min));
        return Err(setting(flag, Some(&text), &m));
    }
    Ok(d)
}

/// A usage error about a setting that may come from a flag, a `FLEETMIG_*`
/// variable or the settings file: about the flag, the message naming the
/// other places the key defines, since the value may have come from any.
fn setting(flag: &str, value: Option<&dyn std::fmt::Display>, message: &str) -> Error {
    let others = keys::other_sources(flag);
    let m = match others.is_empty() {
        true => message.to_string(),
        false => format!("{message} (given as {flag}, {})", others.join(" or ")),
    };
    match value {
        Some(v) => Error::flag_value(flag, v, m),
        None => Error::flag(flag, m),
    }
}

pub fn duration(value: &str, name: &str) -> Result<Duration, Error> {
    fleetmig_parse::duration::parse(value)
        .map_err(|m| setting(name, Some(&format!("{value:?}")), &m))
}

impl Config {
    /// The fleet; a usage error saying how to give one when none was.
    pub fn fleet(&self) -> Result<&FleetSpec, Error> {
        self.fleet.as_ref().ok_or_else(|| {
            Error::flag(
                "--fleet",
                "no fleet given: pass --fleet KIND:WHERE (e.g. --fleet sqlite-dir:tenants/demo), \
                 set FLEETMIG_FLEET, or put `fleet = \"...\"` in fleetmig.toml",
            )
        })
    }

    /// Merges flags/env over the file over the defaults.
    pub fn resolve(o: Overrides, file: FileConfig) -> Result<Config, Error> {
        let FileConfig {
            fleet: f,
            exec: e,
            rollout: r,
        } = o.keys.over(&file)?;
        let fleet: Option<FleetSpec> = f.fleet.as_deref().map(str::parse).transpose()?;
        let given = Given {
            migrations: f.migrations.is_some(),
            reports: f.reports.is_some(),
            concurrency: f.concurrency.is_some(),
            per_server: f.per_server.is_some(),
        };
        if let Some(t) = o.target
            && t <= 0
        {
            return Err(Error::flag_value("--to", t, "versions are positive"));
        }
        let exec = exec_options(&e, &f)?;
        let settings = settings(&f, &exec)?;
        // a worker heartbeats a few times a lease: under a second, no
        // heartbeat keeps up and no tenant ever starts
        let lease = bounded(
            &f.lease,
            "--lease",
            Duration::from_secs(30),
            Duration::from_secs(1),
        )?;
        Ok(Config {
            fleet,
            given,
            migrations: f.migrations.unwrap_or_else(|| "migrations".into()),
            reports: f.reports.unwrap_or_else(|| "reports".into()),
            discover: DiscoverOptions {
                pattern: f.tenant_pattern.unwrap_or_else(|| DEFAULT_PATTERN.into()),
                query: f.tenant_query,
                allow_empty: f.allow_empty,
                connect_timeout: settings.connect_timeout,
            },
            exec,
            settings,
            state: f.state.unwrap_or_else(|| ".fleetmig/state.db".into()),
            rollout: RolloutRequest {
                target: o.target,
                pause_after: o.pause_after,
                revert_on_halt: o.revert_on_halt,
                allow_contract: o.allow_contract,
                allow_lint_findings: o.allow_lint_findings,
                ..rollout_request(&r)?
            },
            lease,
            retain: e
                .retain
                .as_deref()
                .map(|t| Keep::parse(t).map_err(|m| setting("--retain", Some(&t), &m)))
                .transpose()?,
        })
    }
}

/// How tenants are run: limits, retries, transactions, backup, preflight.
fn exec_options(e: &ExecKeys, f: &FleetKeys) -> Result<ExecOptions, Error> {
    let at_least_one = |v: Option<usize>, flag: &str| match v {
        Some(0) => Err(setting(flag, None, "must be at least 1")),
        v => Ok(v),
    };
    let concurrency = at_least_one(f.concurrency, "--concurrency")?.unwrap_or(8);
    let per_server = at_least_one(f.per_server, "--per-server")?.unwrap_or(ExecOptions::UNBOUNDED);
    let max_attempts = e.max_attempts.unwrap_or(3);
    if max_attempts == 0 {
        return Err(setting("--max-attempts", None, "must be at least 1"));
    }
    Ok(ExecOptions {
        concurrency,
        per_server,
        retry: RetryPolicy {
            max_attempts,
            backoff: or_default(
                &e.retry_backoff,
                "--retry-backoff",
                Duration::from_millis(500),
            )?,
            max_backoff: Duration::from_secs(30),
        },
        max_failures: at_least_one(e.max_failures, "--max-failures")?,
        tx_mode: e.tx_mode.unwrap_or_default(),
        backup_dir: e.backup.clone(),
        analyze: e.analyze,
        hold_versions: Vec::new(),
        preflight: preflight(e)?,
    })
}

/// The session settings of every tenant connection.
fn settings(f: &FleetKeys, exec: &ExecOptions) -> Result<Settings, Error> {
    let statement_timeout = match &f.statement_timeout {
        Some(v) => Some(duration(v, "--statement-timeout")?),
        None => None,
    };
    if f.pool_size == Some(0) {
        return Err(setting("--pool-size", None, "must be at least 1"));
    }
    Ok(Settings {
        lock_timeout: or_default(&f.lock_timeout, "--lock-timeout", Duration::from_secs(5))?,
        statement_timeout,
        pool_size: f
            .pool_size
            .unwrap_or(exec.per_server.min(exec.concurrency) as u32)
            .max(1),
        connect_timeout: bounded(
            &f.connect_timeout,
            "--connect-timeout",
            Duration::from_secs(10),
            Duration::from_millis(100),
        )?,
        create_missing: f.create_missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beat_defaults() {
        let file = FileConfig::parse(
            "fleet = \"sqlite-dir:a\"\nconcurrency = 4\nlock_timeout = \"2s\"\nbake = \"3s\"",
        )
        .unwrap();
        let mut o = Overrides::default();
        o.keys.fleet.concurrency = Some(16);
        let c = Config::resolve(o, file).unwrap();
        assert_eq!(c.exec.concurrency, 16);
        assert_eq!(c.settings.lock_timeout, Duration::from_secs(2));
        assert_eq!(c.fleet, Some(FleetSpec::SqliteDir("a".into())));
        assert_eq!(c.migrations, PathBuf::from("migrations"));
        assert_eq!(c.rollout.bake, Duration::from_secs(3));
    }

    #[test]
    fn bad_values_name_the_flag_or_file() {
        let e = FileConfig::parse("flete = 1").unwrap_err();
        assert!(e.contains("unknown key `flete`"), "{e}");
        let e = FileConfig::parse("fleet = \"x\"\n\nconcurrency = \"eight\"").unwrap_err();
        assert!(e.contains("line 3") && e.contains("concurrency"), "{e}");
        let mut o = Overrides::default();
        o.keys.fleet.fleet = Some("sqlite-dir:x".into());
        o.keys.fleet.lock_timeout = Some("5 parsecs".into());
        let e = Config::resolve(o, FileConfig::default()).unwrap_err();
        assert!(e.to_string().contains("--lock-timeout"));
        assert_eq!(e.exit_code(), 2);
        let c = Config::resolve(Overrides::default(), FileConfig::default()).unwrap();
        assert!(c.fleet().unwrap_err().to_string().contains("--fleet"));
    }
}
