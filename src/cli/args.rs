//! The command line as clap types: every command, its flags and their
//! environment variables, and how flags become the `Overrides` that
//! `config` merges over the file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, FileConfig, Overrides};
use crate::error::Error;
use crate::options::TxMode;

/// `--tx-mode`, as clap parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TxModeArg {
    /// Each migration in its own transaction (sqlx's behaviour).
    Migration,
    /// All of a tenant's pending migrations in one transaction.
    Tenant,
}

impl From<TxModeArg> for TxMode {
    fn from(a: TxModeArg) -> TxMode {
        match a {
            TxModeArg::Migration => TxMode::Migration,
            TxModeArg::Tenant => TxMode::Tenant,
        }
    }
}

const EXIT_CODES: &str = "\
Exit codes:
  0  every tenant is at its target (or, for status/plan, every tenant could be read)
  1  one or more tenants failed, were interrupted or not started (see the report);
     for status: a tenant is dirty, drifted or unreadable
  2  bad usage, config or migration set (nothing was touched)
  3  the fleet could not be discovered, or the state store or report could not be used
  4  another process holds this rollout or fleet (the message names it)";

/// fleetmig: take one set of versioned SQL migrations to a whole fleet of
/// tenant databases (SQLite files, PostgreSQL schemas or databases,
/// MySQL/MariaDB databases), with bounded parallelism, retries and reports.
#[derive(Debug, Parser)]
#[command(name = "fleetmig", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// fleetmig's log level on stderr (error, warn, info, debug, trace)
    /// [default: warn]; RUST_LOG, when set, takes full control.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring every tenant to head (or --to VERSION): a one-wave rollout with a
    /// failure budget, recorded in the state store, with a report.
    Sync(RunArgs),
    /// Start a waved rollout: canary waves, gates after each, halt on a bad wave.
    Rollout(RolloutArgs),
    /// Continue a paused, halted or crashed rollout from where it stood.
    Resume(ResumeArgs),
    /// Run some tenants of a rollout again (recorded as further attempts).
    Retry(RetryArgs),
    /// Give up a rollout: tenants not yet run are marked skipped. A process
    /// running it stops at its next heartbeat; this waits until it has.
    Abort(AbortArgs),
    /// Stop a running rollout after the tenants in flight (another process
    /// running it stops at its next heartbeat); `resume` continues it.
    Pause(PauseArgs),
    /// Work on the active rollout of a shared (PostgreSQL) state store from
    /// this machine, beside the other workers; or wait for one.
    Worker(WorkerArgs),
    /// Each tenant's version, pending count and health, then a histogram; or,
    /// with --rollout, a rollout's waves and tenants from the state store.
    Status(StatusArgs),
    /// Dry run: what would be applied where (and in which wave, with --waves).
    /// Writes nothing to any tenant.
    Plan(PlanArgs),
    /// Past rollouts, newest first.
    History(HistoryArgs),
    /// Write a rollout's reports again from the state store.
    Report(ReportArgs),
    /// Create a new migration file in the migrations folder.
    New(NewArgs),
    /// Check the migration set for changes that lock or break a live system.
    Lint(LintArgs),
    /// Compare every tenant's history with the files and its actual schema
    /// with the other tenants at the same version: report edited and drifted
    /// tenants with the difference spelled out.
    Verify(VerifyArgs),
    /// Put a tenant back as its backup (taken by `--backup`) left it.
    Restore(RestoreArgs),
    /// Record migrations up to a version as applied without running them
    /// (tenants created from a dump that already has the schema).
    Baseline(BaselineArgs),
    /// Move one tenant to another server or database system: the target is
    /// created and migrated to the source's version, rows are copied from a
    /// snapshot and verified by checksums, a registry row is switched.
    Move(MoveArgs),
    /// Print a shell completion script: `fleetmig completions bash >
    /// /etc/bash_completion.d/fleetmig` (also zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the manual page (roff): `fleetmig man > fleetmig.1`.
    Man,
}

/// Options every fleet command takes.
#[derive(Debug, Args, Clone)]
pub struct Common {
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
    /// Config file [default: fleetmig.toml when it exists].
    #[arg(long, env = "FLEETMIG_CONFIG")]
    pub config: Option<PathBuf>,
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
    /// Tenants of one database server worked on at once [default: --concurrency].
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

/// Options of commands that run tenants.
#[derive(Debug, Args, Clone)]
pub struct Exec {
    /// Stop at this version instead of head.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<i64>,
    /// Attempts per tenant for transient errors, the first included [default: 3].
    #[arg(long, env = "FLEETMIG_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// Wait before the first retry; doubles each time, with jitter [default: 500ms].
    #[arg(long, env = "FLEETMIG_RETRY_BACKOFF")]
    pub retry_backoff: Option<String>,
    /// Start no new tenant once this many have failed.
    #[arg(long, env = "FLEETMIG_MAX_FAILURES")]
    pub max_failures: Option<usize>,
    /// migration: one transaction per migration; tenant: one per tenant.
    #[arg(long, value_enum, env = "FLEETMIG_TX_MODE")]
    pub tx_mode: Option<TxModeArg>,
    /// Plain progress lines every N seconds instead of a bar (0: none).
    #[arg(long, value_name = "SECONDS")]
    pub progress_every: Option<u64>,
    /// Also write the run's figures in Prometheus text format to this file.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Apply `phase=contract` migrations: the application no longer uses the
    /// old schema. They still wait until every tenant has the expand steps.
    #[arg(long, env = "FLEETMIG_ALLOW_CONTRACT")]
    pub allow_contract: bool,
    /// Run even though `fleetmig lint` has findings.
    #[arg(long)]
    pub allow_lint_findings: bool,
    /// Back each tenant up into DIR/<rollout-id>/ before its first migration
    /// (pg_dump, mysqldump, SQLite VACUUM INTO); `fleetmig restore` puts it back.
    #[arg(long, value_name = "DIR", env = "FLEETMIG_BACKUP")]
    pub backup: Option<PathBuf>,
    /// After a tenant's migrations, ANALYZE the tables they changed.
    #[arg(long)]
    pub analyze: bool,
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

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub exec: Exec,
    /// Only these tenants (repeatable).
    #[arg(long = "tenant", value_name = "ID")]
    pub tenants: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Waves, e.g. 'canary=tag:canary,5%,25%,100%' (tag:K[=V], ids:a+b, N, N%, rest).
    #[arg(long, env = "FLEETMIG_WAVES")]
    pub waves: Option<String>,
    /// Gate: halt when more than N tenants of a wave fail [default: 0 when no
    /// gate is configured].
    #[arg(long)]
    pub gate_max_failures: Option<usize>,
    /// Gate: halt when more than this fraction of a wave fails (0.05 = 5%).
    #[arg(long)]
    pub gate_max_failure_rate: Option<f64>,
    /// Gate: SQL run on every succeeded tenant of a wave; must return no rows
    /// (or a single true).
    #[arg(long, value_name = "FILE")]
    pub gate_sql: Option<PathBuf>,
    /// Wait this long after each wave before the next [default: 0s].
    #[arg(long)]
    pub bake: Option<String>,
    /// Stop in `paused` after this wave (name or number) until `fleetmig resume`.
    #[arg(long, value_name = "WAVE")]
    pub pause_after: Option<String>,
    /// When a gate halts the rollout, take the halted wave's succeeded tenants
    /// back down with their .down.sql.
    #[arg(long)]
    pub revert_on_halt: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The rollout [default: the newest unfinished one of --fleet, or the
    /// store's only unfinished one].
    pub id: Option<String>,
    #[command(flatten)]
    pub common: Common,
    /// Pass the failed gate of the wave the rollout halted on, on purpose.
    #[arg(long)]
    pub override_gate: bool,
    /// A move rollout's `--to` again, when it held a password (fleetmig
    /// never stores one).
    #[arg(long = "to", value_name = "URL")]
    pub move_to: Option<String>,
    /// Plain progress lines every N seconds instead of a bar (0: none).
    #[arg(long, value_name = "SECONDS")]
    pub progress_every: Option<u64>,
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Taken as `sync` and `rollout` take it, so that one command line
    /// serves all three: the lint gate ran when the rollout started, and
    /// `resume` runs none.
    #[arg(long)]
    pub allow_lint_findings: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub common: Common,
    /// The rollout [default: the newest of this fleet].
    #[arg(long)]
    pub rollout: Option<String>,
    /// Tenants to retry (repeatable).
    #[arg(long = "tenant", value_name = "ID", required_unless_present = "failed")]
    pub tenants: Vec<String>,
    /// A move rollout's `--to` again, when it held a password (fleetmig
    /// never stores one).
    #[arg(long = "to", value_name = "URL")]
    pub move_to: Option<String>,
    /// Retry every failed tenant of the rollout.
    #[arg(long, conflicts_with = "tenants")]
    pub failed: bool,
    #[arg(long, value_name = "SECONDS")]
    pub progress_every: Option<u64>,
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AbortArgs {
    /// The rollout [default: the newest unfinished one of --fleet, or the
    /// store's only unfinished one].
    pub id: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub common: Common,
    /// Work on this rollout and exit when it ends (0 when it completed);
    /// a paused rollout is waited for.
    #[arg(long)]
    pub rollout: Option<String>,
    /// Without --rollout: exit once the first rollout joined stops, instead
    /// of waiting for the next one.
    #[arg(long)]
    pub once: bool,
    /// A move rollout's `--to` again, when it held a password (fleetmig
    /// never stores one).
    #[arg(long = "to", value_name = "URL")]
    pub move_to: Option<String>,
    /// Plain progress lines every N seconds instead of a bar (0: none).
    #[arg(long, value_name = "SECONDS")]
    pub progress_every: Option<u64>,
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The rollout [default: the newest unfinished one of --fleet, or the
    /// store's only unfinished one].
    pub id: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

/// Flags `status` and `plan` share.
#[derive(Debug, Args)]
pub struct InspectOpts {
    /// Plan to this version instead of head.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<i64>,
    /// Show contract migrations as applicable (see `sync --allow-contract`).
    #[arg(long)]
    pub allow_contract: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only these tenants (repeatable).
    #[arg(long = "tenant", value_name = "ID")]
    pub tenants: Vec<String>,
}

impl InspectOpts {
    pub(super) fn overrides(&self) -> Overrides {
        Overrides {
            target: self.to,
            ..Default::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: Common,
    /// Show this rollout's waves and tenants from the state store.
    #[arg(long)]
    pub rollout: Option<String>,
    #[command(flatten)]
    pub opts: InspectOpts,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub common: Common,
    /// Show the wave plan too.
    #[arg(long, env = "FLEETMIG_WAVES")]
    pub waves: Option<String>,
    #[command(flatten)]
    pub opts: InspectOpts,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub common: Common,
    /// How many rollouts [default: 20].
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The rollout.
    pub id: String,
    #[command(flatten)]
    pub common: Common,
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// The migration folder [default: migrations].
    #[arg(long, env = "FLEETMIG_MIGRATIONS", default_value = "migrations")]
    pub migrations: PathBuf,
    /// text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
    /// Judge only the migrations from this version on (those not yet in
    /// production); the gate before `sync`/`rollout` judges only what is
    /// pending on some tenant.
    #[arg(long, value_name = "VERSION")]
    pub since: Option<i64>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub common: Common,
    /// The tenant to restore.
    #[arg(long = "tenant", value_name = "ID")]
    pub tenant: String,
    /// Its backup from this rollout [default: the newest].
    #[arg(long)]
    pub rollout: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub common: Common,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Only these tenants (repeatable).
    #[arg(long = "tenant", value_name = "ID")]
    pub tenants: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BaselineArgs {
    #[command(flatten)]
    pub common: Common,
    /// Record every migration up to this version as applied.
    #[arg(long, value_name = "VERSION")]
    pub version: i64,
    /// Only these tenants (repeatable).
    #[arg(long = "tenant", value_name = "ID")]
    pub tenants: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MoveArgs {
    #[command(flatten)]
    pub common: Common,
    /// The tenant to move.
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "select",
        conflicts_with = "select"
    )]
    pub tenant: Option<String>,
    /// Move many tenants of a registry fleet as one rollout: those this
    /// selector takes (tag:K[=V], ids:a+b, N, N%), `{tenant}` in --to or
    /// --schema naming each one's target.
    #[arg(long, value_name = "SELECTOR")]
    pub select: Option<String>,
    /// Where to: sqlite:PATH, postgres://…/DB, mysql://…/DB (with --schema
    /// for a PostgreSQL schema tenant). Created when missing; must be empty.
    /// With --select, `{tenant}` stands for each tenant's id.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// The PostgreSQL schema of the new location (`{tenant}` with --select).
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Option<String>,
    /// With --select: waves, e.g. 'canary=ids:a+b,rest'.
    #[arg(long, requires = "select")]
    pub waves: Option<String>,
    /// With --select: halt when more than N tenants of a wave fail [default: 0].
    #[arg(long, requires = "select")]
    pub gate_max_failures: Option<usize>,
    /// With --select: halt when more than this fraction of a wave fails.
    #[arg(long, requires = "select")]
    pub gate_max_failure_rate: Option<f64>,
    /// With --select: stop starting moves after N failures.
    #[arg(long, requires = "select")]
    pub max_failures: Option<usize>,
    /// With --select: wait this long after each wave before the next.
    #[arg(long, requires = "select")]
    pub bake: Option<String>,
    /// With --select: stop in `paused` after this wave until `fleetmig resume`.
    #[arg(long, value_name = "WAVE", requires = "select")]
    pub pause_after: Option<String>,
    /// With --select: plain progress lines every N seconds (0: none).
    #[arg(long, value_name = "SECONDS", requires = "select")]
    pub progress_every: Option<u64>,
    /// Drop the source after the copy is verified.
    #[arg(long)]
    pub drop_source: bool,
    /// Rows per page read and per batch written.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub batch_rows: usize,
    /// Pause after each batch, to spare a busy source (e.g. 50ms).
    #[arg(long, value_name = "DURATION")]
    pub pause: Option<String>,
    /// What a MySQL zero date (`0000-00-00`) becomes where the target
    /// cannot hold it: `refuse` (the move fails, naming table, column and
    /// key) or `null`.
    #[arg(long, value_name = "WHAT", default_value = "refuse", value_parser = ["refuse", "null"])]
    pub zero_dates: String,
    /// Tables copied side by side, each with a session on the source and one
    /// on the target (their snapshots opened while the source's writes are
    /// held for a moment, so that all see one instant); 1 into SQLite.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub jobs: usize,
    /// Hold writes to the source (readers go on) from the final
    /// verification to the registry switch, copying again meanwhile the
    /// tables written to during the copy: a busy tenant can be moved.
    #[arg(long)]
    pub freeze_source: bool,
    /// Print the report as JSON (and nothing else).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// What the migration does, e.g. "add invoices due date".
    pub description: String,
    /// Create an .up.sql/.down.sql pair.
    #[arg(long)]
    pub reversible: bool,
    /// Start the file with `-- no-transaction` (e.g. CREATE INDEX CONCURRENTLY).
    #[arg(long)]
    pub no_transaction: bool,
    /// The migration folder [default: migrations].
    #[arg(long, env = "FLEETMIG_MIGRATIONS", default_value = "migrations")]
    pub migrations: PathBuf,
}

pub(super) fn config(common: &Common, mut o: Overrides) -> Result<Config, Error> {
    let (path, explicit) = match &common.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from("fleetmig.toml"), false),
    };
    let file = FileConfig::load(&path, explicit)?;
    o.keys.fleet = common.fleet.clone();
    o.keys.migrations = common.migrations.clone();
    o.keys.reports = common.reports.clone();
    o.keys.state = common.state.clone();
    o.keys.tenant_pattern = common.tenant_pattern.clone();
    o.keys.tenant_query = common.tenant_query.clone();
    o.keys.concurrency = common.concurrency;
    o.keys.per_server = common.per_server;
    o.keys.lock_timeout = common.lock_timeout.clone();
    o.keys.statement_timeout = common.statement_timeout.clone();
    o.keys.create_missing = common.create_missing.then_some(true);
    o.keys.allow_empty = common.allow_empty.then_some(true);
    o.keys.connect_timeout = common.connect_timeout.clone();
    o.keys.lease = common.lease.clone();
    Config::resolve(o, file)
}

pub(super) fn exec_overrides(e: &Exec) -> Overrides {
    Overrides {
        target: e.to,
        keys: FileConfig {
            max_attempts: e.max_attempts,
            retry_backoff: e.retry_backoff.clone(),
            max_failures: e.max_failures,
            tx_mode: e.tx_mode.map(TxMode::from),
            backup: e.backup.clone(),
            analyze: e.analyze.then_some(true),
            preflight: e.preflight.then_some(true),
            preflight_max_xact_age: e.preflight_max_xact_age.clone(),
            preflight_min_free_connections: e.preflight_min_free_connections,
            ..Default::default()
        },
        ..Default::default()
    }
}
