//! The command line: clap types, turning flags into a `Config`, dispatching
//! to the library, and printing. Nothing below this module knows about clap.

mod output;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, FileConfig, Overrides};
use crate::dialect::{Connector, TxMode};
use crate::error::Error;
use crate::migration::new_migration;
use crate::report::progress::ProgressMode;
use crate::rollout::{Cancel, inspect, prepare, sync};

const EXIT_CODES: &str = "\
Exit codes:
  0  every tenant is at its target (or, for status/plan, every tenant could be read)
  1  one or more tenants failed, were interrupted or not started (see the report);
     for status: a tenant is dirty, drifted or unreadable
  2  bad usage, config or migration set (nothing was touched)
  3  the fleet could not be discovered or the report could not be written";

/// fleetmig: take one set of versioned SQL migrations to a whole fleet of
/// tenant databases (SQLite files, PostgreSQL schemas or databases,
/// MySQL/MariaDB databases), with bounded parallelism, retries and reports.
#[derive(Debug, Parser)]
#[command(name = "fleetmig", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring every tenant to head (or to --to VERSION) and write a report.
    Sync(SyncArgs),
    /// Show each tenant's version, pending count and health, then a histogram.
    Status(InspectArgs),
    /// Dry run: what would be applied where. Writes nothing to any tenant.
    Plan(InspectArgs),
    /// Create a new migration file in the migrations folder.
    New(NewArgs),
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
    /// Config file [default: fleetmig.toml when it exists].
    #[arg(long, env = "FLEETMIG_CONFIG")]
    pub config: Option<PathBuf>,
    /// LIKE pattern over schema/database names [default: tenant_%].
    #[arg(long, env = "FLEETMIG_TENANT_PATTERN")]
    pub tenant_pattern: Option<String>,
    /// SQL returning one text column of schema/database names.
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
    /// Only these tenants (repeatable).
    #[arg(long = "tenant", value_name = "ID")]
    pub tenants: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub common: Common,
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
    pub tx_mode: Option<TxMode>,
    /// Plain progress lines every N seconds instead of a bar (0: none).
    #[arg(long, value_name = "SECONDS")]
    pub progress_every: Option<u64>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub common: Common,
    /// Plan to this version instead of head.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<i64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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

fn config(common: &Common, mut o: Overrides) -> Result<Config, Error> {
    let (path, explicit) = match &common.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from("fleetmig.toml"), false),
    };
    let file = FileConfig::load(&path, explicit)?;
    o.fleet = common.fleet.clone();
    o.migrations = common.migrations.clone();
    o.reports = common.reports.clone();
    o.tenant_pattern = common.tenant_pattern.clone();
    o.tenant_query = common.tenant_query.clone();
    o.concurrency = common.concurrency;
    o.per_server = common.per_server;
    o.lock_timeout = common.lock_timeout.clone();
    o.statement_timeout = common.statement_timeout.clone();
    o.create_missing = common.create_missing.then_some(true);
    o.connect_timeout = common.connect_timeout.clone();
    Config::resolve(o, file, &path)
}

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Sync(a) => {
            let cfg = config(
                &a.common,
                Overrides {
                    target: a.to,
                    max_attempts: a.max_attempts,
                    retry_backoff: a.retry_backoff.clone(),
                    max_failures: a.max_failures,
                    tx_mode: a.tx_mode,
                    ..Default::default()
                },
            )?;
            let cancel = Cancel::default();
            spawn_signal_handler(cancel.clone());
            let mode = match a.progress_every {
                Some(0) => ProgressMode::Off,
                Some(n) => ProgressMode::Lines(std::time::Duration::from_secs(n)),
                None => ProgressMode::Auto,
            };
            let (report, dir) = sync(&cfg, &a.common.tenants, cancel, mode, Vec::new()).await?;
            output::print_sync(&report);
            println!("{}", dir.display());
            Ok(if report.all_ok() { 0 } else { 1 })
        }
        Command::Status(a) => inspect_cmd(a, false).await,
        Command::Plan(a) => inspect_cmd(a, true).await,
        Command::New(a) => {
            for p in new_migration(
                &a.migrations,
                &a.description,
                a.reversible,
                a.no_transaction,
            )? {
                println!("{}", p.display());
            }
            Ok(0)
        }
    }
}

async fn inspect_cmd(a: InspectArgs, is_plan: bool) -> Result<i32, Error> {
    let cfg = config(
        &a.common,
        Overrides {
            target: a.to,
            ..Default::default()
        },
    )?;
    let (set, tenants) = prepare(&cfg, &a.common.tenants).await?;
    let connector = Arc::new(Connector::new(cfg.settings.clone()));
    let rows = inspect(
        connector.clone(),
        set.clone(),
        tenants,
        cfg.exec.target,
        cfg.exec.concurrency,
    )
    .await;
    connector.close().await;
    if a.json {
        output::print_json(&set, &rows, is_plan);
    } else if is_plan {
        output::print_plan(&set, &rows);
    } else {
        output::print_status(&set, &rows);
    }
    let bad = rows.iter().any(|r| {
        !matches!(
            r.state,
            crate::rollout::TenantState::UpToDate | crate::rollout::TenantState::Pending
        )
    });
    Ok(if bad { 1 } else { 0 })
}

/// Ctrl-C or SIGTERM: stop gracefully (a second Ctrl-C kills at once).
fn spawn_signal_handler(cancel: Cancel) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        eprintln!(
            "fleetmig: stopping: no new tenants start; tenants in flight stop after their current migration (Ctrl-C again to kill)"
        );
        cancel.cancel();
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}
