//! `fleetmig move`: flags into a move, a progress bar on a terminal (rows
//! and tables), the report written and printed.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::{MoveArgs, config};
use super::commands::open_store;
use crate::config::Overrides;
use crate::dialect::Connector;
use crate::error::Error;
use crate::event::{Bus, Event, Subscriber};
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
    let cfg = config(&a.common, Overrides::default())?;
    if a.batch_rows == 0 {
        return Err(Error::Usage("--batch-rows must be at least 1".into()));
    }
    if a.jobs == 0 || a.jobs > 64 {
        return Err(Error::Usage("--jobs must be 1 to 64".into()));
    }
    let pause = match &a.pause {
        Some(p) => crate::config::duration(p, "--pause")?,
        None => std::time::Duration::ZERO,
    };
    let fleet = cfg.fleet()?;
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let to = locator_from(&a.to, a.schema.clone(), &cwd)
        .map_err(|m| Error::Usage(format!("--to {}: {m}", redact_url(&a.to))))?;
    // a registry row says where the tenant now is, from wherever it is read
    let to_text = match &to {
        Locator::Sqlite { path } => format!("sqlite:{}", path.display()),
        _ => a.to.clone(),
    };
    crate::report::check_folder(&cfg.reports)?;
    let (set, found) = crate::rollout::prepare(&cfg.migrations, fleet, &cfg.discover).await?;
    let Some(tenant) = found.tenants.iter().find(|t| t.id.as_str() == a.tenant) else {
        return Err(Error::Usage(format!(
            "--tenant {}: no such tenant in the fleet {fleet}",
            a.tenant
        )));
    };
    let store = open_store(&cfg, Open::Create).await?;
    let connector = Connector::new(cfg.settings.clone());
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} tables {pos}/{len} {wide_msg}")
                .expect("valid template"),
        );
        b
    });
    let bus = Bus::new(vec![Arc::new(Bar(bar.clone()))]);
    let opts = MoveOptions {
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
    };
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
    print(&r, a.json);
    if !a.json {
        if r.status == MoveStatus::Done && r.registry_backup.is_none() {
            outln!(
                "the fleet {fleet} finds its tenants by discovery: point it at the new location \
                 (fleetmig changes only a registry's row)"
            );
        }
        outln!("{}", dir.display());
    }
    // a move that is done but whose source could not be dropped as asked
    // did not do all it was told
    let whole = r.status == MoveStatus::Done && (r.source_dropped || !a.drop_source);
    Ok(if whole { 0 } else { 1 })
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
