//! One function per command: flags to `Config`, the engine's context, the
//! library call, the printing, the exit code.

use std::path::PathBuf;
use std::sync::Arc;

use super::args::{
    BaselineArgs, CompletionsArgs, InspectOpts, LintArgs, NewArgs, PlanArgs, RestoreArgs,
    RolloutArgs, RunArgs, StatusArgs, VerifyArgs, config, exec_overrides,
};
use super::output;
use super::progress::{Progress, ProgressMode};
use crate::config::{Config, Overrides};
use crate::dialect::Connector;
use crate::discover::Refused;
use crate::error::Error;
use crate::event::Bus;
use crate::fanout::Fanout;
use crate::inspect::drift::DriftState;
use crate::inspect::{TenantState, inspect};
use crate::options::{Gates, RolloutRequest};
use crate::rollout::{
    Ctx, Finished, RunOptions, apply_holds, only_these, parse_waves, plan_waves, prepare,
};
use crate::state::{Open, StateStore, owner_id};

/// The state store of `cfg`, connected within the connect timeout.
pub(super) async fn open_store(cfg: &Config, mode: Open) -> Result<StateStore, Error> {
    StateStore::open(&cfg.state, mode, cfg.settings.connect_timeout).await
}

fn progress_mode(every: Option<u64>) -> ProgressMode {
    match every {
        Some(0) => ProgressMode::Off,
        Some(n) => ProgressMode::Lines(std::time::Duration::from_secs(n)),
        None => ProgressMode::Auto,
    }
}

/// The context of a command that runs tenants: the fleet discovered and the
/// set loaded, one connector, the progress display subscribed, Ctrl-C and
/// SIGTERM handled.
async fn context<'a>(
    cfg: &Config,
    store: &'a StateStore,
    progress: &Progress,
    metrics_file: Option<PathBuf>,
    override_gate: bool,
    prepared: Option<Prepared>,
) -> Result<Ctx<'a>, Error> {
    let fleet = cfg.fleet()?;
    let (set, found) = match prepared {
        Some(p) => p,
        None => prepare(&cfg.migrations, fleet, &cfg.discover).await?,
    };
    tracing::debug!(tenants = found.tenants.len(), "discovered");
    let cancel = super::signals::arm();
    Ok(Ctx {
        store,
        set,
        tenants: found.tenants,
        refused: found.refused,
        fleet: fleet.clone(),
        connector: Arc::new(Connector::new(cfg.settings.clone())),
        bus: Bus::new(vec![progress.live()]),
        cancel,
        opts: RunOptions {
            concurrency: cfg.given.concurrency.then_some(cfg.exec.concurrency),
            per_server: cfg.given.per_server.then_some(cfg.exec.per_server),
            lease: cfg.lease,
            reports: cfg.reports.clone(),
            metrics_file,
            override_gate,
        },
        owner: owner_id(),
        mover: Some(crate::relocate::bulk::step()),
    })
}

/// The migration set loaded and the fleet discovered.
type Prepared = (
    std::sync::Arc<crate::migration::MigrationSet>,
    crate::discover::Fleet,
);

/// Runs `work` in a fresh context on `store` and closes what it opened,
/// whatever the outcome.
pub(super) async fn in_context<T>(
    cfg: &Config,
    store: &StateStore,
    progress_every: Option<u64>,
    metrics_file: Option<PathBuf>,
    override_gate: bool,
    work: impl AsyncFnOnce(&Ctx<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    run_in_context(
        cfg,
        store,
        None,
        progress_every,
        metrics_file,
        override_gate,
        work,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn run_in_context<T>(
    cfg: &Config,
    store: &StateStore,
    prepared: Option<Prepared>,
    progress_every: Option<u64>,
    metrics_file: Option<PathBuf>,
    override_gate: bool,
    work: impl AsyncFnOnce(&Ctx<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    let progress = Progress::start(progress_mode(progress_every));
    let r = match context(cfg, store, &progress, metrics_file, override_gate, prepared).await {
        Ok(ctx) => {
            let r = work(&ctx).await;
            ctx.connector.close().await;
            r
        }
        Err(e) => Err(e),
    };
    progress.finish();
    r
}

/// `in_context` with a store opened (and created where missing) for it.
pub(super) async fn with_context<T>(
    cfg: &Config,
    progress_every: Option<u64>,
    metrics_file: Option<PathBuf>,
    work: impl AsyncFnOnce(&Ctx<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    // bad input (a registry row, a migration file) is refused before the
    // state store is created
    let prepared = prepare(&cfg.migrations, cfg.fleet()?, &cfg.discover).await?;
    let store = open_store(cfg, Open::Create).await?;
    let r = run_in_context(
        cfg,
        &store,
        Some(prepared),
        progress_every,
        metrics_file,
        false,
        work,
    )
    .await;
    store.close().await;
    r
}

/// The refused names matter to a command on the whole fleet, not to one
/// given `--tenant`s.
fn refused_unless_only<'r>(refused: &'r [Refused], only: &[String]) -> &'r [Refused] {
    if only.is_empty() { refused } else { &[] }
}

pub(super) fn finish(f: &Finished) -> i32 {
    if let Some(h) = &f.report.rollout.settings.policy.held {
        errln!("fleetmig: {h}");
    }
    output::print_run(&f.report);
    outln!("{}", f.dir.display());
    f.exit_code()
}

pub async fn sync(a: RunArgs) -> Result<i32, Error> {
    let cfg = config(&a.common, exec_overrides(&a.exec))?;
    let req = RolloutRequest {
        allow_contract: a.exec.allow_contract,
        allow_lint_findings: a.exec.allow_lint_findings,
        ..Default::default()
    };
    let f = with_context(
        &cfg,
        a.exec.progress_every,
        a.exec.metrics_file.clone(),
        async |ctx| crate::rollout::start(ctx, &req, &cfg.exec, "sync", &a.tenants).await,
    )
    .await?;
    Ok(finish(&f))
}

pub async fn rollout(a: RolloutArgs) -> Result<i32, Error> {
    let mut o = exec_overrides(&a.run.exec);
    o.keys.waves = a.waves.clone();
    o.keys.gate_max_failures = a.gate_max_failures;
    o.keys.gate_max_failure_rate = a.gate_max_failure_rate;
    o.keys.gate_sql = a.gate_sql.clone();
    o.keys.bake = a.bake.clone();
    o.pause_after = a.pause_after.clone();
    o.revert_on_halt = a.revert_on_halt;
    let mut cfg = config(&a.run.common, o)?;
    // A waved rollout with no gate configured halts on the first failure:
    // the safe default for a canary.
    if cfg.rollout.gates == Gates::default() {
        cfg.rollout.gates.max_failures = Some(0);
    }
    cfg.rollout.allow_contract = a.run.exec.allow_contract;
    cfg.rollout.allow_lint_findings = a.run.exec.allow_lint_findings;
    let f = with_context(
        &cfg,
        a.run.exec.progress_every,
        a.run.exec.metrics_file.clone(),
        async |ctx| {
            crate::rollout::start(ctx, &cfg.rollout, &cfg.exec, "rollout", &a.run.tenants).await
        },
    )
    .await?;
    Ok(finish(&f))
}

pub async fn status(a: StatusArgs) -> Result<i32, Error> {
    let cfg = config(&a.common, a.opts.overrides())?;
    if let Some(id) = &a.rollout {
        return super::recorded::status(&cfg, id, a.opts.json).await;
    }
    inspect_cmd(&cfg, &a.opts, false, None).await
}

pub async fn plan(a: PlanArgs) -> Result<i32, Error> {
    let cfg = config(&a.common, a.opts.overrides())?;
    let waves = a.waves.as_deref().or(cfg.rollout.waves.as_deref());
    inspect_cmd(&cfg, &a.opts, true, waves).await
}

/// `status` and `plan`: every tenant read, the contract holds applied.
async fn inspect_cmd(
    cfg: &Config,
    o: &InspectOpts,
    is_plan: bool,
    waves: Option<&str>,
) -> Result<i32, Error> {
    let fleet = cfg.fleet()?;
    let (set, found) = prepare(&cfg.migrations, fleet, &cfg.discover).await?;
    let tenants = only_these(&found.tenants, &o.tenants, fleet)?;
    let refused = refused_unless_only(&found.refused, &o.tenants);
    if let Some(t) = cfg.exec.target {
        set.check_target(t)?;
    }
    let wave_plan = match waves.filter(|_| is_plan) {
        Some(spec) => Some(plan_waves(&parse_waves(spec)?, &tenants, "plan")?),
        None => None,
    };
    let connector = Connector::new(cfg.settings.clone());
    let fanout = Fanout::new(cfg.exec.concurrency, cfg.exec.per_server);
    let mut rows = inspect(&connector, &fanout, &set, &tenants, cfg.exec.target).await;
    connector.close().await;
    // contract migrations held back (judged on the tenants shown)
    let held = apply_holds(&set, &mut rows, o.allow_contract);
    if o.json {
        output::print_json(
            &set,
            &rows,
            refused,
            is_plan,
            wave_plan.as_deref(),
            held.as_deref(),
        );
    } else {
        if is_plan {
            output::print_plan(&set, &rows, wave_plan.as_deref());
        } else {
            output::print_status(&set, &rows);
        }
        output::print_refused(refused);
        if let Some(h) = &held {
            outln!("held: {h}");
        }
    }
    let bad = !refused.is_empty()
        || rows.iter().any(|r| {
            !matches!(
                r.state,
                TenantState::UpToDate | TenantState::Pending | TenantState::Missing
            )
        });
    Ok(if bad { 1 } else { 0 })
}

pub fn lint(a: LintArgs) -> Result<i32, Error> {
    let set = crate::migration::load(&a.migrations)?;
    let since = a.since.unwrap_or(i64::MIN);
    let findings = crate::lint::lint_versions(
        &set,
        &[
            crate::tenant::Dialect::Postgres,
            crate::tenant::Dialect::Mysql,
            crate::tenant::Dialect::Sqlite,
        ],
        |v| v >= since,
    );
    if a.format == "json" {
        outln!("{}", crate::lint::render_json(&findings));
    } else {
        out!("{}", crate::lint::render_text(&findings));
    }
    Ok(if findings.iter().any(|f| f.is_error()) {
        1
    } else {
        0
    })
}

pub async fn restore(a: RestoreArgs) -> Result<i32, Error> {
    let cfg = config(&a.common, Overrides::default())?;
    let fleet = cfg.fleet()?;
    let found = crate::discover::discover(fleet, &cfg.discover).await?;
    let tenants = only_these(&found.tenants, std::slice::from_ref(&a.tenant), fleet)?;
    let store = open_store(&cfg, Open::Existing).await?;
    let found = store.backup(&a.tenant, a.rollout.as_deref()).await;
    store.close().await;
    let (rollout, path) = found?.ok_or_else(|| {
        Error::Usage(format!(
            "no backup of tenant {} in the state store {} (take them with --backup DIR)",
            a.tenant, store.location
        ))
    })?;
    match crate::dialect::backup::restore(&tenants[0], std::path::Path::new(&path)) {
        Ok(()) => {
            outln!(
                "{}: restored from {path} (taken by rollout {rollout})",
                a.tenant
            );
            Ok(0)
        }
        Err(e) => {
            outln!("{}: restore from {path} failed: {e}", a.tenant);
            Ok(1)
        }
    }
}

pub async fn verify(a: VerifyArgs) -> Result<i32, Error> {
    let cfg = config(&a.common, Overrides::default())?;
    let fleet = cfg.fleet()?;
    let (set, found) = prepare(&cfg.migrations, fleet, &cfg.discover).await?;
    let tenants = only_these(&found.tenants, &a.tenants, fleet)?;
    let refused = refused_unless_only(&found.refused, &a.tenants);
    let connector = Connector::new(cfg.settings.clone());
    let fanout = Fanout::new(cfg.exec.concurrency, cfg.exec.per_server);
    let verdicts = crate::inspect::drift::verify(&connector, &fanout, &set, &tenants).await;
    connector.close().await;
    output::print_verify(&verdicts, a.json);
    if !a.json {
        output::print_refused(refused);
    }
    Ok(
        if refused.is_empty() && verdicts.iter().all(|v| v.state == DriftState::Ok) {
            0
        } else {
            1
        },
    )
}

pub async fn baseline(a: BaselineArgs) -> Result<i32, Error> {
    let cfg = config(&a.common, Overrides::default())?;
    let fleet = cfg.fleet()?;
    let (set, found) = prepare(&cfg.migrations, fleet, &cfg.discover).await?;
    let tenants = only_these(&found.tenants, &a.tenants, fleet)?;
    let refused = refused_unless_only(&found.refused, &a.tenants);
    if set.get(a.version).is_none() {
        return Err(Error::Usage(format!(
            "--version {}: no such migration in {}",
            a.version,
            cfg.migrations.display()
        )));
    }
    let connector = Connector::new(cfg.settings.clone());
    let fanout = Fanout::new(cfg.exec.concurrency, cfg.exec.per_server);
    let results =
        crate::rollout::baseline::baseline(&connector, &fanout, &set, &tenants, a.version).await;
    connector.close().await;
    output::print_refused(refused);
    let mut failed = refused.len();
    for (id, r) in results {
        match r {
            Ok(n) => outln!(
                "{id}: {n} migration(s) recorded as applied up to {}",
                a.version
            ),
            Err(e) => {
                failed += 1;
                outln!("{id}: failed: {e}");
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// `fleetmig completions SHELL`: the completion script on stdout.
pub fn completions(a: CompletionsArgs) -> Result<i32, Error> {
    let mut cmd = <super::Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "fleetmig", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    Ok(0)
}

/// `fleetmig man`: the manual page (roff) on stdout, every command a section.
pub fn man() -> Result<i32, Error> {
    let cmd = <super::Cli as clap::CommandFactory>::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(|e| Error::io("stdout", e))?;
    for sub in cmd.get_subcommands() {
        // clap names are &'static str; a page is printed once per process
        let name: &'static str = Box::leak(format!("fleetmig-{}", sub.get_name()).into_boxed_str());
        let sub = sub.clone().name(name);
        clap_mangen::Man::new(sub)
            .render(&mut page)
            .map_err(|e| Error::io("stdout", e))?;
    }
    out!("{}", String::from_utf8_lossy(&page));
    Ok(0)
}

pub fn new(a: NewArgs) -> Result<i32, Error> {
    for p in crate::migration::new_migration(
        &a.migrations,
        &a.description,
        a.reversible,
        a.no_transaction,
    )? {
        outln!("{}", p.display());
    }
    Ok(0)
}
