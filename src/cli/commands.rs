//! One function per command: flags to `Config`, the engine's context, the
//! library call, the printing, the exit code.

use super::args::{
    BaselineArgs, CompletionsArgs, InspectOpts, LintArgs, NewArgs, PlanArgs, PruneArgs,
    RestoreArgs, RolloutArgs, RunArgs, ServeArgs, StatusArgs, VerifyArgs, config,
};
use super::output;
use super::run::{Invocation, finish, open_store, with_context};
use crate::config::{Config, Overrides};
use crate::dialect::Connector;
use crate::discover::Refused;
use crate::error::Error;
use crate::fanout::Fanout;
use crate::inspect::drift::DriftState;
use crate::inspect::{TenantState, inspect};
use crate::options::{Gates, Keep, RolloutRequest};
use crate::rollout::{apply_holds, only_these, parse_waves, plan_waves, prepare};
use crate::state::Open;

/// The refused names matter to a command on the whole fleet, not to one
/// given `--tenant`s.
fn refused_unless_only<'r>(refused: &'r [Refused], only: &[String]) -> &'r [Refused] {
    if only.is_empty() { refused } else { &[] }
}

pub async fn sync(a: RunArgs) -> Result<i32, Error> {
    let cfg = config(&a.common, a.exec.overrides())?;
    // sync is one wave of every tenant: the file's waves and gates are
    // for `rollout`
    let req = RolloutRequest {
        target: cfg.rollout.target,
        allow_contract: cfg.rollout.allow_contract,
        allow_lint_findings: cfg.rollout.allow_lint_findings,
        ..Default::default()
    };
    let inv = Invocation {
        progress_every: a.exec.progress_every,
        metrics_file: a.exec.metrics_file.clone(),
        override_gate: false,
        move_to: None,
    };
    let f = with_context(&cfg, inv, async |ctx| {
        crate::rollout::start(ctx, &req, &cfg.exec, "sync", &a.tenants).await
    })
    .await?;
    retain(&cfg).await;
    Ok(finish(&f))
}

/// `prune --keep`: the tenant rows of old finished rollouts removed.
/// `fleetmig serve`: until Ctrl-C or SIGTERM.
pub async fn serve(a: ServeArgs) -> Result<i32, Error> {
    use crate::serve::{ServeOptions, Server, Tokens};
    let cfg = config(&a.common, Overrides::default())?;
    let tokens = a.tokens_file.as_deref().map(Tokens::read).transpose()?;
    crate::serve::check_bind(&a.listen, tokens.as_ref())?;
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(crate::serve::acceptor(cert, key)?),
        _ => None,
    };
    // read-only, it writes nothing to the store (a role that may only read
    // it is enough)
    let mode = if tokens.is_some() {
        Open::Existing
    } else {
        Open::Read
    };
    let store = open_store(&cfg, mode).await?;
    let read_only = tokens.is_none();
    let opts = ServeOptions {
        listen: a.listen,
        tokens,
        reports: cfg.reports.clone(),
        lease: cfg.lease,
        tls,
    };
    let server = match Server::bind(store.clone(), opts).await {
        Ok(s) => s,
        Err(e) => {
            store.close().await;
            return Err(e);
        }
    };
    outln!(
        "fleetmig serve: {} over the state store {}{}",
        server.url(),
        store.location,
        if read_only {
            " (read-only: no --tokens-file)"
        } else {
            ""
        }
    );
    let cancel = super::signals::arm();
    server.run(async move { cancel.cancelled().await }).await;
    store.close().await;
    Ok(0)
}

pub async fn prune(a: PruneArgs) -> Result<i32, Error> {
    let keep = Keep::parse(&a.keep).map_err(|m| Error::flag_value("--keep", &a.keep, m))?;
    let cfg = config(&a.common, Overrides::default())?;
    let (r, location) = prune_store(&cfg, keep).await?;
    outln!(
        "pruned {} rollout(s): {} tenant row(s) removed from the state store {location}",
        r.rollouts,
        r.tenant_rows,
    );
    Ok(0)
}

/// The store of `cfg` pruned as `keep` says (a rollout once it was still
/// for the lease); what went, and where the store is (printable).
async fn prune_store(
    cfg: &Config,
    keep: Keep,
) -> Result<(crate::state::PruneOutcome, String), Error> {
    let store = open_store(cfg, Open::Existing).await?;
    let r = store.prune(keep, cfg.lease).await;
    store.close().await;
    Ok((r?, store.location.clone()))
}

/// After a run, the store pruned as `--retain` (or `retain`) says; a
/// failure is said and changes nothing of the run's outcome (its rollout
/// is recorded whole).
async fn retain(cfg: &Config) {
    let Some(keep) = cfg.retain else {
        return;
    };
    match prune_store(cfg, keep).await.map(|(r, _)| r) {
        Ok(r) if r.rollouts > 0 => errln!(
            "fleetmig: --retain: pruned {} rollout(s), {} tenant row(s)",
            r.rollouts,
            r.tenant_rows
        ),
        Ok(_) => {}
        Err(e) => errln!("fleetmig: --retain: the store was not pruned: {e}"),
    }
}

pub async fn rollout(a: RolloutArgs) -> Result<i32, Error> {
    let mut cfg = config(&a.run.common, a.overrides())?;
    // A waved rollout with no gate configured halts on the first failure:
    // the safe default for a canary.
    if cfg.rollout.gates == Gates::default() {
        cfg.rollout.gates.max_failures = Some(0);
    }
    let inv = Invocation {
        progress_every: a.run.exec.progress_every,
        metrics_file: a.run.exec.metrics_file.clone(),
        override_gate: false,
        move_to: None,
    };
    let f = with_context(&cfg, inv, async |ctx| {
        crate::rollout::start(ctx, &cfg.rollout, &cfg.exec, "rollout", &a.run.tenants).await
    })
    .await?;
    retain(&cfg).await;
    Ok(finish(&f))
}

/// `status` of the fleet (`status --rollout` is `recorded`'s).
pub async fn status(a: StatusArgs) -> Result<i32, Error> {
    let cfg = config(&a.common, a.opts.overrides())?;
    inspect_cmd(&cfg, &a.opts, View::Status { all: a.all }).await
}

pub async fn plan(a: PlanArgs) -> Result<i32, Error> {
    let cfg = config(&a.common, a.opts.overrides())?;
    let waves = a.waves.as_deref().or(cfg.rollout.waves.as_deref());
    inspect_cmd(&cfg, &a.opts, View::Plan { waves }).await
}

/// What `inspect_cmd` prints: `status` (every tenant with `--all`), or
/// `plan` (with its waves when given).
enum View<'a> {
    Status { all: bool },
    Plan { waves: Option<&'a str> },
}

/// `status` and `plan`: every tenant read, the contract holds applied.
async fn inspect_cmd(cfg: &Config, o: &InspectOpts, view: View<'_>) -> Result<i32, Error> {
    let is_plan = matches!(view, View::Plan { .. });
    let fleet = cfg.fleet()?;
    let (set, found) = prepare(&cfg.migrations, fleet, &cfg.discover).await?;
    let tenants = only_these(&found.tenants, &o.tenants, fleet)?;
    let refused = refused_unless_only(&found.refused, &o.tenants);
    if let Some(t) = cfg.rollout.target {
        set.check_target(t)?;
    }
    let wave_plan = match view {
        View::Plan { waves: Some(spec) } => {
            Some(plan_waves(&parse_waves(spec)?, &tenants, "plan")?)
        }
        _ => None,
    };
    let connector = Connector::new(cfg.settings.clone());
    let fanout = Fanout::new(cfg.exec.concurrency, cfg.exec.per_server);
    let mut rows = inspect(&connector, &fanout, &set, &tenants, cfg.rollout.target).await;
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
        match view {
            View::Plan { .. } => output::print_plan(&set, &rows, wave_plan.as_deref()),
            View::Status { all } => output::print_status(&set, &rows, all),
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
        let m = format!(
            "no backup of it in the state store {} (take them with --backup DIR)",
            store.location
        );
        Error::flag_value("--tenant", &a.tenant, m)
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
        let m = format!("no such migration in {}", cfg.migrations.display());
        return Err(Error::flag_value("--version", a.version, m));
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
