//! The command line as clap types: every command, its flags and their
//! environment variables, and how flags become the `Overrides` that
//! `config` merges over the file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ExecKeys, FileConfig, FleetKeys, Overrides, RolloutKeys};
use crate::error::Error;

const EXIT_CODES: &str = "\
Exit codes:
  0  every tenant is at its target (or, for status/plan, every tenant could be read)
  1  one or more tenants failed, were interrupted or not started (see the report);
     for status: a tenant is dirty, drifted or unreadable
  2  bad usage, config or migration set (nothing was touched)
  3  the fleet could not be discovered, or the state store or report could not be used
  4  another process holds this rollout, fleet or tenant (the message names it)";

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
    /// Keep the state store small: remove the tenant rows of finished
    /// rollouts older than --keep (each rollout's row, waves and counts stay).
    Prune(PruneArgs),
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
    /// A live view of every rollout of a state store in the browser, with
    /// its controls for operators (--tokens-file), and /metrics.
    Serve(ServeArgs),
    /// Print a shell completion script: `fleetmig completions bash >
    /// /etc/bash_completion.d/fleetmig` (also zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the manual page (roff): `fleetmig man > fleetmig.1`.
    Man,
}

/// Options every fleet command takes.
#[derive(Debug, Args, Clone)]
pub struct Common {
    #[command(flatten)]
    pub keys: FleetKeys,
    /// Config file [default: fleetmig.toml when it exists].
    #[arg(long, env = "FLEETMIG_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Options of commands that run tenants.
#[derive(Debug, Args, Clone)]
pub struct Exec {
    #[command(flatten)]
    pub keys: ExecKeys,
    /// Stop at this version instead of head.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<i64>,
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
}

impl Exec {
    /// What these flags give over the file.
    pub(super) fn overrides(&self) -> Overrides {
        let mut o = Overrides {
            target: self.to,
            allow_contract: self.allow_contract,
            allow_lint_findings: self.allow_lint_findings,
            ..Default::default()
        };
        o.keys.exec = self.keys.clone();
        o
    }
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
    #[command(flatten)]
    pub keys: RolloutKeys,
    /// Stop in `paused` after this wave (name or number) until `fleetmig resume`.
    #[arg(long, value_name = "WAVE")]
    pub pause_after: Option<String>,
    /// When a gate halts the rollout, take the halted wave's succeeded tenants
    /// back down with their .down.sql.
    #[arg(long)]
    pub revert_on_halt: bool,
}

impl RolloutArgs {
    /// What these flags give over the file.
    pub(super) fn overrides(&self) -> Overrides {
        let mut o = self.run.exec.overrides();
        o.keys.rollout = self.keys.clone();
        o.pause_after = self.pause_after.clone();
        o.revert_on_halt = self.revert_on_halt;
        o
    }
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
pub struct PruneArgs {
    #[command(flatten)]
    pub common: Common,
    /// Keep the tenant rows of rollouts created within this age (30d, 12h)
    /// or of the newest N rollouts (60); older finished ones are pruned.
    #[arg(long, value_name = "AGE|N")]
    pub keep: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Where to listen. Beyond loopback needs --tokens-file (every page then
    /// needs a token).
    #[arg(
        long,
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:8080",
        env = "FLEETMIG_LISTEN"
    )]
    pub listen: std::net::SocketAddr,
    /// The operators: one `NAME TOKEN` line each (chmod 600). Without it the
    /// server is read-only; with it, a signed-in operator may pause, resume,
    /// abort and retry, each recorded under their name.
    #[arg(long, value_name = "FILE", env = "FLEETMIG_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM); with --tls-key.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        env = "FLEETMIG_TLS_CERT"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        env = "FLEETMIG_TLS_KEY"
    )]
    pub tls_key: Option<PathBuf>,
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
    /// List every tenant (by default: those not at their target, the
    /// version histogram and the count by state; `--json` lists every one).
    #[arg(long)]
    pub all: bool,
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
    /// With --select: waves and gates, as `rollout` takes them.
    #[command(flatten)]
    pub rollout: RolloutKeys,
    /// With --select: stop starting moves after N failures.
    #[arg(long, requires = "select")]
    pub max_failures: Option<usize>,
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
    o.keys.fleet = common.keys.clone();
    Config::resolve(o, file)
}
