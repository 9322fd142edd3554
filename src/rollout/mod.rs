//! The engine: taking a fleet to a target version. `start` below plans a new
//! rollout (lint gate, waves, contract holds, frozen settings) and hands it to
//! the `driver`, which runs it wave by wave and resumes, retries and aborts
//! it. `context` is what a command works with, `executor` takes tenants
//! through their migrations (with `retry`'s policy), `waves` plans who goes
//! when, `gate` judges a wave, `recorder` writes the event stream to the state
//! store, `revert`, `hold` and `baseline` are the safe-change pieces. The
//! engine takes options and an event bus; it never prints.

pub mod baseline;
pub mod context;
mod coord;
pub mod driver;
mod engine;
pub mod executor;
pub mod gate;
pub mod hold;
mod judge;
mod outcome;
mod prefold;
pub mod recorder;
pub mod retry;
pub mod revert;
pub mod waves;

pub use context::{Cancel, Ctx, MoveStep, RunOptions, Within, only_these, prepare};
pub use coord::{host, same_version};
pub use driver::{abort, join, resume, retry};
pub use executor::{Executor, Stops};
pub use hold::{apply_holds, is_contract};
pub use outcome::{Finished, rewrite_report, write_report};
pub use waves::{parse_waves, plan_waves};

use std::collections::BTreeSet;

use crate::error::Error;
use crate::fanout::Fanout;
use crate::options::{ExecOptions, Frozen, RolloutPolicy, RolloutRequest};
use crate::report::new_run_id;
use crate::tenant::Dialect;

/// A `scope=tenant` migration up to `target` needs a fleet of row tenants
/// (it says which rows with `:tenant_id`); on any other fleet it is refused
/// before anything runs, naming the file.
fn scopes_fit(ctx: &Ctx<'_>, target: i64) -> Result<(), Error> {
    let rows = |t: &crate::tenant::Tenant| matches!(t.locator, crate::tenant::Locator::Row { .. });
    if ctx.tenants.iter().all(rows) {
        return Ok(());
    }
    for m in ctx.set.migrations.iter().filter(|m| m.version <= target) {
        for d in [Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite] {
            if let Some(s) = m.up.get(d)
                && s.directives.scope == crate::migration::Scope::Tenant
            {
                return Err(Error::migration(
                    &s.path,
                    "`scope=tenant` runs once per row tenant, with :tenant_id bound; this fleet's \
                     tenants are databases, schemas or files (use postgres-rows:, mysql-rows: or \
                     sqlite-rows: with --tenant-query)",
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a rollout whose set has lint findings in a migration that some
/// tenant of this run still has to apply (a set already in production keeps
/// its old findings without blocking every sync). Tenants are read only when
/// the set has findings at all.
async fn lint_gate(
    ctx: &Ctx<'_>,
    fanout: &Fanout,
    tenants: &[crate::tenant::Tenant],
    target: i64,
) -> Result<(), Error> {
    let dialects: Vec<Dialect> = ctx
        .tenants
        .iter()
        .map(|t| t.locator.dialect())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !crate::lint::lint_for(&ctx.set, &dialects)
        .iter()
        .any(|f| f.is_error())
    {
        return Ok(());
    }
    let rows =
        crate::inspect::inspect(&ctx.connector, fanout, &ctx.set, tenants, Some(target)).await;
    let unread = rows.iter().any(|r| r.version.is_none());
    let pending: BTreeSet<i64> = rows
        .iter()
        .flat_map(|r| r.pending.iter().copied())
        .collect();
    let findings: Vec<_> =
        crate::lint::lint_versions(&ctx.set, &dialects, |v| unread || pending.contains(&v))
            .into_iter()
            .filter(|f| f.is_error())
            .collect();
    if findings.is_empty() {
        return Ok(());
    }
    Err(Error::Lint(format!(
        "the migrations this rollout would apply have {} lint finding(s); fix them, add a \
         `-- fleetmig-lint: ignore FMxxx` comment with the reason, or pass --allow-lint-findings:\n{}",
        findings.len(),
        crate::lint::render_text(&findings)
    )))
}

/// Plans and runs a new rollout of the fleet in `ctx` (`sync` is a one-wave
/// rollout): refused before anything is written when the set has lint
/// findings, the waves leave a tenant out, or a revert would be impossible.
/// A nightly job never needs a person after a crash: a `sync` of the whole
/// fleet that finds an earlier `sync` of it interrupted (its process gone)
/// takes it over and finishes it, when it was planned with the same
/// migration set and target; else closes it as superseded (recorded) and
/// starts anew (`None`).
async fn take_over(ctx: &Ctx<'_>, target: i64) -> Result<Option<Finished>, Error> {
    let fleet = ctx.fleet.recorded();
    let Some(old) = ctx.store.interrupted_sync(&fleet, ctx.opts.lease).await? else {
        return Ok(None);
    };
    if ctx.check_same_set(&old).is_ok() && old.target == target {
        tracing::info!(rollout = %old.id, "taking over the interrupted sync");
        return driver::resume(ctx, &old.id).await.map(Some);
    }
    let why = "superseded: a later sync found it interrupted and the migration set changed since";
    ctx.store
        .end(&old.id, crate::state::RolloutStatus::Aborted, Some(why))
        .await?;
    tracing::info!(rollout = %old.id, "closed the interrupted sync as superseded");
    Ok(None)
}

/// The text of the `--gate-sql` file, if one was given.
fn read_gate_sql(req: &RolloutRequest) -> Result<Option<String>, Error> {
    req.gate_sql
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map_err(|e| Error::flag_value("--gate-sql", p.display(), e.to_string()))
        })
        .transpose()
}

/// With a contract step held (`hold`), the version the tenants go to: the
/// one before the lowest held step at or below `target`.
fn reached_under_hold(
    set: &crate::migration::MigrationSet,
    hold: &[i64],
    target: i64,
) -> Option<i64> {
    hold.iter().min().filter(|h| **h <= target).map(|h| {
        set.migrations
            .iter()
            .map(|m| m.version)
            .filter(|v| v < h)
            .max()
            .unwrap_or(0)
    })
}

/// The tenants discovery refused, by name and reason; with `--tenant`
/// (`only`), the run is about those tenants only.
fn refused_tenants(ctx: &Ctx<'_>, only: &[String]) -> Vec<(String, String)> {
    match only.is_empty() {
        true => ctx
            .refused
            .iter()
            .map(|r| (r.name.clone(), r.reason.clone()))
            .collect(),
        false => Vec::new(),
    }
}

pub async fn start(
    ctx: &Ctx<'_>,
    req: &RolloutRequest,
    exec: &ExecOptions,
    command: &str,
    only: &[String],
) -> Result<Finished, Error> {
    let tenants = ctx.only(only)?;
    crate::report::check_folder(&ctx.opts.reports)?;
    let id = new_run_id();
    let specs = parse_waves(req.waves.as_deref().unwrap_or("all=rest"))?;
    let mut plan = plan_waves(&specs, &tenants, &id)?;
    let gate_sql = read_gate_sql(req)?;
    pause_after_fits(req, &plan)?;
    if let Some(t) = req.target {
        ctx.set.check_target(t)?;
    }
    let target = req.target.unwrap_or(ctx.set.head());
    if command == "sync"
        && only.is_empty()
        && let Some(f) = take_over(ctx, target).await?
    {
        return Ok(f);
    }
    scopes_fit(ctx, target)?;
    let fanout = ctx.fanout(exec);
    if !req.allow_lint_findings {
        lint_gate(ctx, &fanout, &tenants, target).await?;
    }
    let (hold, held) = hold::contract_hold(
        &ctx.connector,
        &fanout,
        &ctx.set,
        &ctx.tenants,
        target,
        req.allow_contract,
    )
    .await;
    if req.revert_on_halt {
        revert::check_reversible(&ctx.connector, &fanout, &ctx.set, &tenants, target).await?;
    }
    let reached = reached_under_hold(&ctx.set, &hold, target);
    let mut settings = frozen(exec, req, None);
    settings.exec.hold_versions = hold;
    settings.policy = RolloutPolicy {
        gate_sql,
        held,
        reached,
        ..settings.policy
    };
    let refused = refused_tenants(ctx, only);
    let held = settings.exec.hold_versions.clone();
    let folded = prefold::first_wave(ctx, &fanout, &mut plan, target, &held).await?;
    tracing::debug!(rollout = %id, tenants = tenants.len(), "planned");
    let plan = driver::Plan {
        waves: plan,
        folded,
    };
    driver::start(ctx, command, target, settings, plan, &refused, id).await
}

/// Plans and runs a rollout whose per-tenant step is a move (`fleetmig move
/// --select`): the tenants `select` takes (the wave selector syntax; the
/// list frozen now), in the waves `req` asks for, each moved as `spec`
/// says. Refused before anything is written when the selector takes no
/// tenant or a tenant's target is not a place.
pub async fn start_move(
    ctx: &Ctx<'_>,
    req: &RolloutRequest,
    exec: &ExecOptions,
    spec: crate::options::MoveSpec,
    select: &str,
) -> Result<Finished, Error> {
    crate::report::check_folder(&ctx.opts.reports)?;
    if req.gate_sql.is_some() || req.revert_on_halt {
        let flag = match req.gate_sql {
            Some(_) => "--gate-sql",
            None => "--revert-on-halt",
        };
        return Err(Error::flag(
            flag,
            "for migrations; a move rollout's gates count failures",
        ));
    }
    if select.contains(',') {
        return Err(Error::flag_value(
            "--select",
            select,
            "one selector (tag:K[=V], ids:a+b, N, N%); waves go in --waves",
        ));
    }
    let id = new_run_id();
    let tenants = waves::select(select, &ctx.tenants, &id)?;
    if tenants.is_empty() {
        let m = format!("no tenant of the fleet {} is selected", ctx.fleet);
        return Err(Error::flag_value("--select", select, m));
    }
    for t in &tenants {
        let (url, schema) = spec.place(t.id.as_str());
        crate::tenant::locator_from(&url, schema, std::path::Path::new("/")).map_err(|m| {
            let url = crate::tenant::redact_url(&url);
            Error::flag("--to", format!("tenant {}'s target {url}: {m}", t.id))
        })?;
    }
    let plan = plan_waves(
        &parse_waves(req.waves.as_deref().unwrap_or("all=rest"))?,
        &tenants,
        &id,
    )?;
    pause_after_fits(req, &plan)?;
    let settings = frozen(exec, req, Some(spec));
    let plan = driver::Plan {
        waves: plan,
        folded: Vec::new(),
    };
    driver::start(ctx, "move", ctx.set.head(), settings, plan, &[], id).await
}

/// The settings a rollout is frozen with: `exec` and the request's gates,
/// bake and pause (the gate query, holds and revert are the caller's).
fn frozen(
    exec: &ExecOptions,
    req: &RolloutRequest,
    moving: Option<crate::options::MoveSpec>,
) -> Frozen {
    Frozen {
        format: Frozen::FORMAT,
        fleetmig_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        moving,
        exec: exec.clone(),
        policy: RolloutPolicy {
            gates: req.gates.clone(),
            bake: req.bake,
            pause_after: req.pause_after.clone(),
            revert_on_halt: req.revert_on_halt,
            ..Default::default()
        },
    }
}

/// `--pause-after` names a wave of `plan` (by name or number).
fn pause_after_fits(req: &RolloutRequest, plan: &[waves::PlannedWave]) -> Result<(), Error> {
    match &req.pause_after {
        Some(name)
            if !plan
                .iter()
                .enumerate()
                .any(|(i, w)| &w.name == name || (i + 1).to_string() == *name) =>
        {
            Err(Error::flag_value("--pause-after", name, "no such wave"))
        }
        _ => Ok(()),
    }
}
