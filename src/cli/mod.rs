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
use crate::rollout::{
    Cancel, Finished, RolloutRequest, RunOptions, context, driver, inspect, parse_waves,
    pick_rollout, plan_waves, prepare, rollout,
};
use crate::state::{StateStore, status, tenant_status};

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
    /// Give up a rollout: tenants not yet run are marked skipped.
    Abort(AbortArgs),
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
    pub tx_mode: Option<TxMode>,
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
    /// The rollout [default: the newest unfinished one of this fleet].
    pub id: Option<String>,
    #[command(flatten)]
    pub common: Common,
    /// Pass the failed gate of the wave the rollout halted on, on purpose.
    #[arg(long)]
    pub override_gate: bool,
    /// Plain progress lines every N seconds instead of a bar (0: none).
    #[arg(long, value_name = "SECONDS")]
    pub progress_every: Option<u64>,
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
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
    /// The rollout [default: the newest unfinished one of this fleet].
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
    o.keys.connect_timeout = common.connect_timeout.clone();
    o.keys.lease = common.lease.clone();
    Config::resolve(o, file)
}

fn exec_overrides(e: &Exec) -> Overrides {
    Overrides {
        target: e.to,
        keys: FileConfig {
            max_attempts: e.max_attempts,
            retry_backoff: e.retry_backoff.clone(),
            max_failures: e.max_failures,
            tx_mode: e.tx_mode,
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

fn progress_mode(every: Option<u64>) -> ProgressMode {
    match every {
        Some(0) => ProgressMode::Off,
        Some(n) => ProgressMode::Lines(std::time::Duration::from_secs(n)),
        None => ProgressMode::Auto,
    }
}

fn run_options(
    cfg: &Config,
    progress: Option<u64>,
    metrics: Option<PathBuf>,
    override_gate: bool,
) -> RunOptions {
    RunOptions {
        progress: progress_mode(progress),
        lease: cfg.lease,
        reports: cfg.reports.clone(),
        metrics_file: metrics,
        override_gate,
    }
}

fn finish(f: &Finished) -> i32 {
    if let Some(h) = &f.report.rollout.settings.held {
        eprintln!("fleetmig: {h}");
    }
    output::print_run(&f.report);
    println!("{}", f.dir.display());
    f.exit_code()
}

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32, Error> {
    match cli.command {
        Command::Sync(a) => {
            let cfg = config(&a.common, exec_overrides(&a.exec))?;
            let store = StateStore::open(&cfg.state).await?;
            let cancel = Cancel::default();
            spawn_signal_handler(cancel.clone());
            let opts = run_options(
                &cfg,
                a.exec.progress_every,
                a.exec.metrics_file.clone(),
                false,
            );
            let req = RolloutRequest {
                allow_contract: a.exec.allow_contract,
                allow_lint_findings: a.exec.allow_lint_findings,
                ..Default::default()
            };
            let f = rollout(&cfg, &store, &req, "sync", &a.tenants, cancel, opts).await?;
            store.close().await;
            Ok(finish(&f))
        }
        Command::Rollout(a) => {
            let mut o = exec_overrides(&a.run.exec);
            o.keys.waves = a.waves.clone();
            o.keys.gate_max_failures = a.gate_max_failures;
            o.keys.gate_max_failure_rate = a.gate_max_failure_rate;
            o.keys.gate_sql = a.gate_sql.clone();
            o.keys.bake = a.bake.clone();
            o.pause_after = a.pause_after.clone();
            o.revert_on_halt = a.revert_on_halt;
            let mut cfg = config(&a.run.common, o)?;
            // A waved rollout with no gate configured halts on the first
            // failure: the safe default for a canary.
            if cfg.rollout.gates == crate::rollout::Gates::default() {
                cfg.rollout.gates.max_failures = Some(0);
            }
            cfg.rollout.allow_contract = a.run.exec.allow_contract;
            cfg.rollout.allow_lint_findings = a.run.exec.allow_lint_findings;
            let store = StateStore::open(&cfg.state).await?;
            let cancel = Cancel::default();
            spawn_signal_handler(cancel.clone());
            let opts = run_options(
                &cfg,
                a.run.exec.progress_every,
                a.run.exec.metrics_file.clone(),
                false,
            );
            let f = rollout(
                &cfg,
                &store,
                &cfg.rollout,
                "rollout",
                &a.run.tenants,
                cancel,
                opts,
            )
            .await?;
            store.close().await;
            Ok(finish(&f))
        }
        Command::Resume(a) => {
            let cfg = config(&a.common, Overrides::default())?;
            let store = StateStore::open(&cfg.state).await?;
            let id = pick_rollout(
                &store,
                &cfg,
                a.id.as_deref(),
                |r| !matches!(r.status.as_str(), status::COMPLETED | status::ABORTED),
                "unfinished",
            )
            .await?;
            let cancel = Cancel::default();
            spawn_signal_handler(cancel.clone());
            let opts = run_options(
                &cfg,
                a.progress_every,
                a.metrics_file.clone(),
                a.override_gate,
            );
            let ctx = context(&cfg, &store, cancel, opts).await?;
            let f = driver::resume(&ctx, &id).await?;
            store.close().await;
            Ok(finish(&f))
        }
        Command::Retry(a) => {
            let cfg = config(&a.common, Overrides::default())?;
            let store = StateStore::open(&cfg.state).await?;
            let id = pick_rollout(&store, &cfg, a.rollout.as_deref(), |_| true, "").await?;
            let tenants = if a.failed {
                store
                    .tenant_runs(&id)
                    .await?
                    .into_iter()
                    .filter(|t| t.status == tenant_status::FAILED)
                    .map(|t| t.tenant)
                    .collect()
            } else {
                a.tenants.clone()
            };
            if tenants.is_empty() {
                println!("rollout {id} has no failed tenant to retry");
                return Ok(0);
            }
            let cancel = Cancel::default();
            spawn_signal_handler(cancel.clone());
            let opts = run_options(&cfg, a.progress_every, a.metrics_file.clone(), false);
            let ctx = context(&cfg, &store, cancel, opts).await?;
            let f = driver::retry(&ctx, &id, &tenants).await?;
            store.close().await;
            output::print_run(&f.report);
            println!("{}", f.dir.display());
            let retried_ok = f
                .report
                .tenants
                .iter()
                .filter(|t| tenants.contains(&t.tenant))
                .all(|t| t.status == tenant_status::SUCCEEDED);
            Ok(if retried_ok { 0 } else { 1 })
        }
        Command::Abort(a) => {
            let cfg = config(&a.common, Overrides::default())?;
            let store = StateStore::open(&cfg.state).await?;
            let id = pick_rollout(
                &store,
                &cfg,
                a.id.as_deref(),
                |r| !matches!(r.status.as_str(), status::COMPLETED | status::ABORTED),
                "unfinished",
            )
            .await?;
            let f = driver::abort(&store, &id, &cfg.reports).await?;
            store.close().await;
            output::print_run(&f.report);
            println!("{}", f.dir.display());
            Ok(0)
        }
        Command::Status(a) => {
            let cfg = config(
                &a.common,
                Overrides {
                    target: a.opts.to,
                    ..Default::default()
                },
            )?;
            if let Some(id) = &a.rollout {
                let store = StateStore::open(&cfg.state).await?;
                let report = driver::load_report(&store, id).await?;
                store.close().await;
                output::print_rollout(&report, a.opts.json);
                return Ok(if report.all_ok() { 0 } else { 1 });
            }
            inspect_cmd(&cfg, &a.opts, false, None).await
        }
        Command::Plan(a) => {
            let cfg = config(
                &a.common,
                Overrides {
                    target: a.opts.to,
                    ..Default::default()
                },
            )?;
            inspect_cmd(
                &cfg,
                &a.opts,
                true,
                a.waves.as_deref().or(cfg.rollout.waves.as_deref()),
            )
            .await
        }
        Command::History(a) => {
            let cfg = config(&a.common, Overrides::default())?;
            let store = StateStore::open(&cfg.state).await?;
            let mut rows = Vec::new();
            for r in store.rollouts(a.limit).await? {
                let tenants = store.tenant_runs(&r.id).await?;
                rows.push((r, tenants));
            }
            store.close().await;
            output::print_history(&rows, a.json);
            Ok(0)
        }
        Command::Report(a) => {
            let cfg = config(&a.common, Overrides::default())?;
            let store = StateStore::open(&cfg.state).await?;
            let f = driver::write_report(&store, &a.id, &cfg.reports, a.metrics_file.as_deref())
                .await?;
            store.close().await;
            println!("{}", f.dir.display());
            Ok(0)
        }
        Command::Lint(a) => {
            let set = crate::migration::load(&a.migrations)?;
            let findings = crate::lint::lint_set(&set);
            if a.format == "json" {
                println!("{}", crate::lint::render_json(&findings));
            } else {
                print!("{}", crate::lint::render_text(&findings));
            }
            Ok(if findings.iter().any(|f| f.is_error()) {
                1
            } else {
                0
            })
        }
        Command::Restore(a) => {
            let cfg = config(&a.common, Overrides::default())?;
            let all = crate::tenant::discover(&cfg.fleet, &cfg.discover).await?;
            let tenants = crate::rollout::only_these(&all, std::slice::from_ref(&a.tenant), &cfg)?;
            let store = StateStore::open(&cfg.state).await?;
            let (rollout, path) = store.backup(&a.tenant, a.rollout.as_deref()).await?.ok_or_else(|| {
                Error::Usage(format!(
                    "no backup of tenant {} in the state store {} (take them with --backup DIR)",
                    a.tenant, store.location
                ))
            })?;
            store.close().await;
            match crate::dialect::backup::restore(&tenants[0], std::path::Path::new(&path)) {
                Ok(()) => {
                    println!(
                        "{}: restored from {path} (taken by rollout {rollout})",
                        a.tenant
                    );
                    Ok(0)
                }
                Err(e) => {
                    println!("{}: restore from {path} failed: {e}", a.tenant);
                    Ok(1)
                }
            }
        }
        Command::Verify(a) => {
            let cfg = config(&a.common, Overrides::default())?;
            let (set, tenants) = prepare(&cfg, &a.tenants).await?;
            let connector = Arc::new(Connector::new(cfg.settings.clone()));
            let verdicts = crate::rollout::drift::verify(
                connector.clone(),
                set,
                tenants,
                cfg.exec.concurrency,
            )
            .await;
            connector.close().await;
            output::print_verify(&verdicts, a.json);
            Ok(if verdicts.iter().all(|v| v.state == "ok") {
                0
            } else {
                1
            })
        }
        Command::Baseline(a) => {
            let cfg = config(&a.common, Overrides::default())?;
            let (set, tenants) = prepare(&cfg, &a.tenants).await?;
            if set.get(a.version).is_none() {
                return Err(Error::Usage(format!(
                    "--version {}: no such migration in {}",
                    a.version,
                    cfg.migrations.display()
                )));
            }
            let connector = Connector::new(cfg.settings.clone());
            let mut failed = 0;
            for t in &tenants {
                match crate::rollout::baseline(&connector, &set, t, a.version).await {
                    Ok(n) => println!(
                        "{}: {n} migration(s) recorded as applied up to {}",
                        t.id, a.version
                    ),
                    Err(e) => {
                        failed += 1;
                        println!("{}: failed: {e}", t.id);
                    }
                }
            }
            connector.close().await;
            Ok(if failed > 0 { 1 } else { 0 })
        }
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

async fn inspect_cmd(
    cfg: &Config,
    o: &InspectOpts,
    is_plan: bool,
    waves: Option<&str>,
) -> Result<i32, Error> {
    let (only, json, allow_contract) = (&o.tenants, o.json, o.allow_contract);
    let (set, tenants) = prepare(cfg, only).await?;
    let wave_plan = match waves.filter(|_| is_plan) {
        Some(spec) => Some(plan_waves(&parse_waves(spec)?, &tenants, "plan")?),
        None => None,
    };
    let connector = Arc::new(Connector::new(cfg.settings.clone()));
    let mut rows = inspect(
        connector.clone(),
        set.clone(),
        tenants,
        cfg.exec.target,
        cfg.exec.concurrency,
    )
    .await;
    connector.close().await;
    // contract migrations held back (judged on the tenants shown)
    let contracts: Vec<&crate::migration::Migration> = set
        .migrations
        .iter()
        .filter(|m| crate::rollout::is_contract(m))
        .collect();
    let (hold, held) = crate::rollout::hold_for(&contracts, &rows, allow_contract);
    for r in &mut rows {
        crate::rollout::cut_at_held(&mut r.pending, &hold);
        if r.state == crate::rollout::TenantState::Pending && r.pending.is_empty() {
            r.state = crate::rollout::TenantState::UpToDate;
        }
    }
    if json {
        output::print_json(&set, &rows, is_plan, wave_plan.as_deref(), held.as_deref());
    } else {
        if is_plan {
            output::print_plan(&set, &rows, wave_plan.as_deref());
        } else {
            output::print_status(&set, &rows);
        }
        if let Some(h) = &held {
            println!("held: {h}");
        }
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
