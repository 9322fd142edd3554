//! `fleetmig move`: flags into a move, a progress bar on a terminal (rows
//! and tables), the report written and printed.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::{MoveArgs, config};
use super::run::{Invocation, finish, open_store, with_context};
use crate::config::{Overrides, RolloutKeys};
use crate::dialect::Connector;
use crate::error::Error;
use crate::event::{Bus, Event, Subscriber};
use crate::options::MoveSpec;
use crate::relocate::{MoveOptions, MoveReport, MoveStatus, Mover};
use crate::state::Open;
use crate::tenant::{FleetSpec, Locator, locator_from, redact_url};

/// Rows and tables copied, on a terminal.
struct Bar(Option<ProgressBar>);

impl Subscriber for Bar {
    fn on_event(&self, e: &Event) {
        if let (
            Some(b),
            Event::MoveProgress {
                table,
                tables_done,
                tables,
                rows,
            },
        ) = (&self.0, e)
        {
            b.set_length(*tables as u64);
            b.set_position(*tables_done as u64);
            b.set_message(format!("{table}: {rows} rows"));
        }
    }
}

pub async fn run(a: MoveArgs) -> Result<i32, Error> {
    if a.batch_rows == 0 {
        return Err(Error::flag("--batch-rows", "must be at least 1"));
    }
    if a.jobs == 0 || a.jobs > 64 {
        return Err(Error::flag("--jobs", "must be 1 to 64"));
    }
    let pause = match &a.pause {
        Some(p) => crate::config::duration(p, "--pause")?,
        None => std::time::Duration::ZERO,
    };
    if let Some(select) = a.select.clone() {
        return run_many(a, select, pause).await;
    }
    // waves and gates are for --select (FLEETMIG_WAVES, set for rollouts,
    // is not held against one move)
    let from_env = std::env::var("FLEETMIG_WAVES").ok();
    let rollout_flag = RolloutKeys {
        waves: a
            .rollout
            .waves
            .clone()
            .filter(|w| Some(w) != from_env.as_ref()),
        ..a.rollout.clone()
    };
    if let Some(flag) = rollout_flag.first_given() {
        return Err(Error::flag(flag, "for a move of many tenants (--select)"));
    }
    let cfg = config(&a.common, Overrides::default())?;
    let Some(wanted) = a.tenant.as_deref() else {
        return Err(Error::flag(
            "--tenant",
            "which tenant to move (or --select for many)",
        ));
    };
    let fleet = cfg.fleet()?;
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let to = locator_from(&a.to, a.schema.clone(), &cwd)
        .map_err(|m| Error::flag_value("--to", redact_url(&a.to), m))?;
    // a registry row says where the tenant now is, from wherever it is read
    let to_text = match &to {
        Locator::Sqlite { path } => format!("sqlite:{}", path.display()),
        _ => a.to.clone(),
    };
    crate::report::check_folder(&cfg.reports)?;
    let (set, found) = crate::rollout::prepare(&cfg.migrations, fleet, &cfg.discover).await?;
    let Some(tenant) = found.tenants.iter().find(|t| t.id.as_str() == wanted) else {
        let m = format!("no such tenant in the fleet {fleet}");
        return Err(Error::flag_value("--tenant", wanted, m));
    };
    let store = open_store(&cfg, Open::Create).await?;
    let connector = Connector::new(cfg.settings.clone());
    let bar = progress_bar();
    let bus = Bus::new(vec![Arc::new(Bar(bar.clone()))]);
    let opts = options(&a, fleet, to_text, pause);
    let cancel = super::signals::arm();
    let mover = Mover {
        connector: &connector,
        set: &set,
        store: &store,
        bus: &bus,
        fleet: &found.tenants,
        opts: &opts,
        cancel: &cancel,
    };
    let r = mover.run(tenant, to).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    connector.close().await;
    let mut r = r?;
    let dir = crate::report::moves::write_move(&cfg.reports, &mut r)?;
    Ok(told(&r, &a, fleet, &dir))
}

/// Prints move `r` (its report in `dir`); the exit code: 0 only for a
/// move that did all it was told (done, and the source dropped if asked).
fn told(r: &MoveReport, a: &MoveArgs, fleet: &FleetSpec, dir: &std::path::Path) -> i32 {
    print(r, a.json);
    if !a.json {
        if r.status == MoveStatus::Done && r.registry_backup.is_none() {
            outln!(
                "the fleet {fleet} finds its tenants by discovery: point it at the new location \
                 (fleetmig changes only a registry's row)"
            );
        }
        outln!("{}", dir.display());
    }
    let whole = r.status == MoveStatus::Done && (r.source_dropped || !a.drop_source);
    if whole { 0 } else { 1 }
}

/// Tables and rows copied, drawn on a terminal only.
fn progress_bar() -> Option<ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} tables {pos}/{len} {wide_msg}")
                .expect("valid template"),
        );
        b
    })
}

/// The options of one move of `fleet`'s tenant to `to_text`.
fn options(
    a: &MoveArgs,
    fleet: &FleetSpec,
    to_text: String,
    pause: std::time::Duration,
) -> MoveOptions {
    MoveOptions {
        batch_rows: a.batch_rows,
        pause,
        drop_source: a.drop_source,
        registry: match fleet {
            FleetSpec::Registry(p) => Some(p.clone()),
            _ => None,
        },
        to_text,
        to_schema: a.schema.clone(),
        rules: crate::dialect::copy::Rules {
            zero_dates_null: a.zero_dates == "null",
        },
        freeze_source: a.freeze_source,
        jobs: a.jobs,
        report_dir: None,
    }
}

fn print(r: &MoveReport, json: bool) {
    if json {
        outln!("{}", serde_json::to_string_pretty(r).expect("serialises"));
        return;
    }
    outln!(
        "fleetmig move {}: {} {} → {}: {}, version {}, {} rows in {} tables, {:.1} s",
        r.id,
        r.tenant,
        r.source,
        r.target,
        r.status.as_str(),
        r.version,
        r.rows,
        r.tables.len(),
        r.duration_ms as f64 / 1000.0
    );
    for t in &r.tables {
        outln!("  {:<30} {:>10} rows  {}", t.table, t.rows, t.checksum);
    }
    if let Some(e) = &r.error {
        outln!("error: {e}");
    }
    if let Some(b) = &r.registry_backup {
        outln!("registry switched (old file kept: {b})");
    }
    if r.source_dropped {
        outln!("source dropped");
    }
}

/// `fleetmig move --select`: a rollout of the selected tenants of a
/// registry fleet whose per-tenant step is a move, `{tenant}` in `--to` or
/// `--schema` naming each one's target.
async fn run_many(a: MoveArgs, select: String, pause: std::time::Duration) -> Result<i32, Error> {
    let mut o = Overrides {
        pause_after: a.pause_after.clone(),
        ..Default::default()
    };
    o.keys.rollout = a.rollout.clone();
    o.keys.exec.max_failures = a.max_failures;
    let mut cfg = config(&a.common, o)?;
    if !matches!(cfg.fleet()?, FleetSpec::Registry(_)) {
        let m = format!(
            "moves tenants of a registry fleet (registry:FILE.csv), whose rows the moves switch; \
             the fleet {} finds its tenants by discovery and would go on finding the old copies",
            cfg.fleet()?
        );
        return Err(Error::flag("--select", m));
    }
    let placeholder = MoveSpec::TENANT;
    if !a.to.contains(placeholder) && !a.schema.as_deref().is_some_and(|s| s.contains(placeholder))
    {
        let m = format!(
            "with --select, say where each tenant goes with {placeholder} in --to (a database or \
             a file) or in --schema"
        );
        return Err(Error::flag_value("--to", redact_url(&a.to), m));
    }
    if a.json {
        return Err(Error::flag(
            "--json",
            "for one move; a move rollout writes its report under --reports",
        ));
    }
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    // each tenant's target is checked when the rollout is planned; here the
    // template's form (a schema named by the placeholder alone is a name)
    let schema = a.schema.as_ref().map(|s| s.replace(placeholder, "t"));
    let to = match locator_from(&a.to, schema, &cwd) {
        Ok(Locator::Sqlite { path }) => format!("sqlite:{}", path.display()),
        Ok(_) => a.to.clone(),
        Err(m) => return Err(Error::flag_value("--to", redact_url(&a.to), m)),
    };
    let spec = MoveSpec {
        to,
        schema: a.schema.clone(),
        batch_rows: a.batch_rows,
        pause,
        drop_source: a.drop_source,
        zero_dates_null: a.zero_dates == "null",
        freeze_source: a.freeze_source,
        jobs: a.jobs,
        host: crate::rollout::host(),
    };
    // as for a rollout: with no gate, the first failure halts
    if cfg.rollout.gates == crate::options::Gates::default() {
        cfg.rollout.gates.max_failures = Some(0);
    }
    let inv = Invocation {
        progress_every: a.progress_every,
        move_to: Some(spec.to.clone()),
        ..Invocation::default()
    };
    // the store keeps the target without its password
    let spec = MoveSpec {
        to: MoveSpec::redacted(&spec.to),
        ..spec
    };
    let f = with_context(&cfg, inv, async |ctx| {
        crate::rollout::start_move(ctx, &cfg.rollout, &cfg.exec, spec, &select).await
    })
    .await?;
    Ok(finish(&f))
}
