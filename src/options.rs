//! The engine's settings as plain, validated values: how tenants are
//! connected to (`Settings`), how a run executes (`ExecOptions`, with its
//! `RetryPolicy` and `TxMode`), how a rollout is gated (`Gates`,
//! `RolloutPolicy`), and what a new rollout is asked for (`RolloutRequest`).
//! `config` fills them from flags, environment and file; the engine reads
//! them; neither imports the other. `Frozen` is their serde form, stored with
//! a rollout so that `resume` runs it exactly as it was planned; its JSON keys
//! are those of earlier fleetmig versions, so their rollouts still resume.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use fleetmig_parse::duration::MAX_DURATION;

/// Session settings applied to every tenant connection.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long DDL may wait for a lock before failing (transient, retried):
    /// PostgreSQL `lock_timeout`, MySQL `lock_wait_timeout`, SQLite busy timeout.
    pub lock_timeout: Duration,
    /// PostgreSQL `statement_timeout`, MariaDB `max_statement_time`.
    pub statement_timeout: Option<Duration>,
    /// Connections per PostgreSQL pool (schema-per-tenant databases).
    pub pool_size: u32,
    /// How long to wait to connect.
    pub connect_timeout: Duration,
    /// Create missing SQLite tenant files (and their folders) on sync.
    pub create_missing: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lock_timeout: Duration::from_secs(5),
            statement_timeout: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
            create_missing: false,
        }
    }
}

/// How each tenant's pending migrations are grouped into transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxMode {
    /// Each migration in its own transaction (sqlx's behaviour).
    #[default]
    Migration,
    /// All of a tenant's pending migrations in one transaction where DDL is
    /// transactional (PostgreSQL, SQLite); a `-- no-transaction` migration
    /// runs on its own. MySQL commits DDL implicitly: there it behaves as
    /// `migration`.
    Tenant,
}

impl fmt::Display for TxMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TxMode::Migration => "migration",
            TxMode::Tenant => "tenant",
        })
    }
}

impl FromStr for TxMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "migration" => Ok(TxMode::Migration),
            "tenant" => Ok(TxMode::Tenant),
            other => Err(format!(
                "tx mode {other:?}: expected `migration` or `tenant`"
            )),
        }
    }
}

/// Which failures get another attempt and how long to wait (see
/// `rollout::retry`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles for each further one.
    #[serde(rename = "retry_backoff_ms", with = "millis")]
    pub backoff: Duration,
    /// No wait is longer than this.
    #[serde(skip, default = "max_backoff")]
    pub max_backoff: Duration,
}

fn max_backoff() -> Duration {
    Duration::from_secs(30)
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_millis(500),
            max_backoff: max_backoff(),
        }
    }
}

/// Preflight thresholds: the oldest transaction allowed to hold what the
/// migrations touch, and the fewest free server connections to go ahead with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreflightLimits {
    pub max_xact_age: Duration,
    pub min_free_connections: i64,
}

/// Stored as `[max_xact_age_ms, min_free_connections]`.
impl Serialize for PreflightLimits {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (
            self.max_xact_age.as_millis() as u64,
            self.min_free_connections,
        )
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for PreflightLimits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (ms, free) = <(u64, i64)>::deserialize(d)?;
        Ok(PreflightLimits {
            max_xact_age: Duration::from_millis(ms),
            min_free_connections: free,
        })
    }
}

/// How a run is executed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecOptions {
    pub concurrency: usize,
    pub per_server: usize,
    #[serde(flatten)]
    pub retry: RetryPolicy,
    /// Stop starting tenants once this many have failed.
    pub max_failures: Option<usize>,
    pub tx_mode: TxMode,
    /// Back each tenant up into this folder before its first migration.
    #[serde(default)]
    pub backup_dir: Option<PathBuf>,
    /// ANALYZE the tables a tenant's migrations changed, after them.
    #[serde(default)]
    pub analyze: bool,
    /// Preflight before a tenant is touched.
    #[serde(default)]
    pub preflight: Option<PreflightLimits>,
    /// Contract versions held back: a tenant that needs one stops below it.
    #[serde(default)]
    pub hold_versions: Vec<i64>,
}

impl ExecOptions {
    /// `per_server` when no `--per-server` was given: a process's
    /// `--concurrency` is its only bound, and workers on a rollout take no
    /// slots in the state store. (Rollouts frozen before this read their
    /// default as the concurrency: see `RunOptions::limits`.)
    pub const UNBOUNDED: usize = usize::MAX;
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            concurrency: 8,
            per_server: ExecOptions::UNBOUNDED,
            retry: RetryPolicy::default(),
            max_failures: None,
            tx_mode: TxMode::Migration,
            backup_dir: None,
            analyze: false,
            preflight: None,
            hold_versions: Vec::new(),
        }
    }
}

/// Failure gates of a wave.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    #[serde(rename = "gate_max_failures")]
    pub max_failures: Option<usize>,
    #[serde(rename = "gate_max_failure_rate")]
    pub max_failure_rate: Option<f64>,
}

/// How a rollout moves from wave to wave: its gates, bake time, where it
/// pauses, and whether a halted wave is reverted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutPolicy {
    #[serde(flatten)]
    pub gates: Gates,
    /// The gate query's text, run on every succeeded tenant of a wave.
    pub gate_sql: Option<String>,
    #[serde(rename = "bake_ms", with = "millis")]
    pub bake: Duration,
    pub pause_after: Option<String>,
    pub revert_on_halt: bool,
    /// Why the target was capped below a held contract migration, if it was.
    #[serde(default)]
    pub held: Option<String>,
    /// The version tenants are taken to when a contract migration is held
    /// (the set's last version before it); what reports call the target.
    #[serde(default)]
    pub reached: Option<i64>,
}

/// What `rollout` (or `sync`) was asked for, before it is frozen.
#[derive(Debug, Clone, Default)]
pub struct RolloutRequest {
    /// The version to take tenants to (`--to`); head when `None`. A
    /// rollout stores its target in its own column.
    pub target: Option<i64>,
    /// `canary=tag:canary,5%,25%,100%`; one wave of everything when `None`.
    pub waves: Option<String>,
    pub gates: Gates,
    /// The file of the gate query.
    pub gate_sql: Option<PathBuf>,
    pub bake: Duration,
    pub pause_after: Option<String>,
    pub revert_on_halt: bool,
    /// Apply `phase=contract` migrations (once every tenant has the expand steps).
    pub allow_contract: bool,
    /// Run even when `fleetmig lint` has findings.
    pub allow_lint_findings: bool,
}

/// The settings frozen with a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frozen {
    /// The shape of this struct (`Frozen::FORMAT` when written; rollouts
    /// of earlier versions, which did not say, are 1). A fleetmig meets a
    /// newer shape by refusing the rollout, never by ignoring what it does
    /// not know.
    #[serde(default = "first_format")]
    pub format: u32,
    #[serde(flatten)]
    pub exec: ExecOptions,
    #[serde(flatten)]
    pub policy: RolloutPolicy,
    /// The fleetmig that planned the rollout: a worker of another version
    /// does not join it (rollouts of earlier versions did not say).
    #[serde(default)]
    pub fleetmig_version: Option<String>,
    /// A rollout whose per-tenant step is a move (`fleetmig move
    /// --select`), not a migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<MoveSpec>,
}

fn first_format() -> u32 {
    1
}

impl Frozen {
    /// The shape this fleetmig writes: 2 since the settings keys became
    /// one set of groups (`config/keys.rs`) and `--to` left `ExecOptions`;
    /// 3 since a running rollout may hold folded tenants (recorded at
    /// head when it was planned, `rollout/prefold.rs`), which an older
    /// worker would not see when it judges a gate.
    pub const FORMAT: u32 = 3;
}

/// Where each tenant of a move rollout goes, and how it is copied: the
/// flags of `fleetmig move`, frozen with the rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveSpec {
    /// The target, `{tenant}` standing for the tenant's id: a URL (a
    /// SQLite path made absolute when the rollout was planned).
    pub to: String,
    /// The PostgreSQL schema of each target, `{tenant}` likewise.
    pub schema: Option<String>,
    pub batch_rows: usize,
    #[serde(rename = "pause_ms", with = "millis")]
    pub pause: Duration,
    pub drop_source: bool,
    pub zero_dates_null: bool,
    pub freeze_source: bool,
    pub jobs: usize,
    /// The machine that planned it: the registry file it switches is on
    /// this machine's disk, so no process elsewhere works on it.
    #[serde(default)]
    pub host: String,
}

impl MoveSpec {
    /// The placeholder a template holds for the tenant's id.
    pub const TENANT: &'static str = "{tenant}";

    /// `to` as the store keeps it: its password (if any) replaced by
    /// `***`, every other byte as given (the placeholder stays).
    pub fn redacted(to: &str) -> String {
        match url::Url::parse(to) {
            Ok(u) => match u.password() {
                Some(pw) => to.replacen(&format!(":{pw}@"), ":***@", 1),
                None => to.to_string(),
            },
            Err(_) => to.to_string(),
        }
    }

    /// Whether the kept `to` lost a password (`redacted`).
    pub fn needs_password(&self) -> bool {
        self.to.contains(":***@")
    }

    /// Where `tenant` goes: the URL and schema, the placeholder filled.
    pub fn place(&self, tenant: &str) -> (String, Option<String>) {
        (
            self.to.replace(Self::TENANT, tenant),
            self.schema
                .as_ref()
                .map(|s| s.replace(Self::TENANT, tenant)),
        )
    }
}

/// Durations stored as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rollout frozen by the previous fleetmig (flat JSON keys) resumes
    /// with the same settings.
    #[test]
    fn frozen_settings_of_earlier_versions_decode() {
        let old = r#"{"concurrency":4,"per_server":2,"max_attempts":5,"retry_backoff_ms":250,
            "max_failures":null,"tx_mode":"tenant","gate_max_failures":0,"gate_max_failure_rate":null,
            "gate_sql":"SELECT 1","bake_ms":1500,"pause_after":"canary","revert_on_halt":true,
            "held":null,"hold_versions":[9],"backup_dir":null,"analyze":false,"preflight":[60000,3]}"#;
        let f: Frozen = serde_json::from_str(old).unwrap();
        assert_eq!(f.format, 1);
        assert_eq!(f.exec.concurrency, 4);
        assert_eq!(f.exec.retry.max_attempts, 5);
        assert_eq!(f.exec.retry.backoff, Duration::from_millis(250));
        assert_eq!(f.exec.retry.max_backoff, Duration::from_secs(30));
        assert_eq!(f.exec.tx_mode, TxMode::Tenant);
        assert_eq!(f.exec.hold_versions, vec![9]);
        assert_eq!(
            f.exec.preflight,
            Some(PreflightLimits {
                max_xact_age: Duration::from_secs(60),
                min_free_connections: 3
            })
        );
        assert_eq!(f.policy.gates.max_failures, Some(0));
        assert_eq!(f.policy.bake, Duration::from_millis(1500));
        assert_eq!(f.policy.pause_after.as_deref(), Some("canary"));
        let again: Frozen = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(again, f);
    }

    #[test]
    fn damaged_settings_do_not_decode() {
        for bad in [
            "",
            "{}",
            r#"{"concurrency":"eight"}"#,
            r#"{"concurrency":4,"per_server":2,"max_attempts":5,"retry_backoff_ms":250,"tx_mode":"sideways","bake_ms":0,"revert_on_halt":false}"#,
        ] {
            assert!(
                serde_json::from_str::<Frozen>(bad).is_err(),
                "{bad} decoded"
            );
        }
    }
}

/// Which finished rollouts keep their tenant rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Those created within this long.
    Age(Duration),
    /// The newest this many rollouts (of any status).
    Newest(usize),
}

impl Keep {
    /// `30d`, `12h` (an age) or `60` (a count of rollouts).
    pub fn parse(text: &str) -> Result<Keep, String> {
        let t = text.trim();
        if let Ok(n) = t.parse::<usize>() {
            return Ok(Keep::Newest(n));
        }
        humantime::parse_duration(t)
            .map(Keep::Age)
            .map_err(|e| format!("{e}: an age (30d, 12h) or a number of rollouts to keep (60)"))
    }
}
