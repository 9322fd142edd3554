//! Rollouts: taking a fleet to a target version. `executor` fans out over
//! tenants (bounded, with retries and cancellation), `retry` is the retry
//! policy, `live` the per-tenant live state, `inspect` the read-only view used
//! by `status` and `plan`. `sync` here is the whole flow of one run: load and
//! validate the set, discover, execute, report.

pub mod driver;
pub mod executor;
pub mod inspect;
pub mod live;
pub mod retry;
pub mod waves;

pub use driver::{Ctx, Finished, RunOptions};
pub use executor::{Cancel, ExecOptions, Executor, Stops};
pub use inspect::{Inspection, TenantState, inspect};
pub use live::LiveState;
pub use retry::RetryPolicy;
pub use waves::{Gates, parse_waves, plan_waves};

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::dialect::Connector;
use crate::error::Error;
use crate::migration::{MigrationSet, load};
use crate::report::new_run_id;
use crate::state::{RolloutRecord, StateStore, owner_id};
use crate::tenant::{Tenant, TenantId, discover};

/// Loads the set, discovers the fleet and keeps only `only` (all when empty).
/// Nothing is written anywhere before this succeeds.
pub async fn prepare(
    config: &Config,
    only: &[String],
) -> Result<(Arc<MigrationSet>, Vec<Tenant>), Error> {
    let set = load(&config.migrations)?;
    let mut tenants = discover(&config.fleet, &config.discover).await?;
    if !only.is_empty() {
        let mut wanted = Vec::new();
        for id in only {
            let id = TenantId::new(id).map_err(|m| Error::Usage(format!("--tenant: {m}")))?;
            if !tenants.iter().any(|t| t.id == id) {
                return Err(Error::Usage(format!(
                    "--tenant {id}: no such tenant in fleet {}",
                    config.fleet
                )));
            }
            wanted.push(id);
        }
        tenants.retain(|t| wanted.contains(&t.id));
    }
    Ok((Arc::new(set), tenants))
}

/// What `rollout` (or `sync`) was asked for, before it is frozen.
#[derive(Debug, Clone, Default)]
pub struct RolloutRequest {
    /// `canary=tag:canary,5%,25%,100%`; one wave of everything when `None`.
    pub waves: Option<String>,
    pub gates: Gates,
    pub gate_sql: Option<PathBuf>,
    pub bake: std::time::Duration,
    pub pause_after: Option<String>,
    pub revert_on_halt: bool,
}

/// Plans and runs a new rollout (`sync` is a one-wave rollout).
pub async fn rollout(
    config: &Config,
    store: &StateStore,
    req: &RolloutRequest,
    command: &str,
    only: &[String],
    cancel: Cancel,
    opts: RunOptions,
) -> Result<Finished, Error> {
    let (set, tenants) = prepare(config, only).await?;
    let id = new_run_id();
    let specs = parse_waves(req.waves.as_deref().unwrap_or("all=rest"))?;
    let plan = plan_waves(&specs, &tenants, &id)?;
    let gate_sql = match &req.gate_sql {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| Error::Usage(format!("--gate-sql {}: {e}", p.display())))?,
        ),
        None => None,
    };
    if let Some(name) = &req.pause_after
        && !plan
            .iter()
            .enumerate()
            .any(|(i, w)| &w.name == name || (i + 1).to_string() == *name)
    {
        return Err(Error::Usage(format!("--pause-after {name}: no such wave")));
    }
    let target = config.exec.target.unwrap_or(set.head());
    if req.revert_on_halt {
        check_reversible(config, &set, &tenants, target).await?;
    }
    let settings = driver::freeze(
        config,
        &req.gates,
        gate_sql,
        req.bake,
        req.pause_after.clone(),
        req.revert_on_halt,
    );
    let ctx = Ctx {
        config,
        store,
        set,
        tenants,
        owner: owner_id(),
        cancel,
        opts,
    };
    driver::start(&ctx, command, target, settings, plan, id).await
}

/// `--revert-on-halt` is refused up front when a migration that some tenant
/// would apply has no `.down.sql` for that tenant's dialect.
async fn check_reversible(
    config: &Config,
    set: &Arc<MigrationSet>,
    tenants: &[Tenant],
    target: i64,
) -> Result<(), Error> {
    let connector = Arc::new(Connector::new(config.settings.clone()));
    let rows = inspect(
        connector.clone(),
        set.clone(),
        tenants.to_vec(),
        Some(target),
        config.exec.concurrency,
    )
    .await;
    connector.close().await;
    let mut missing = std::collections::BTreeSet::new();
    for r in &rows {
        for v in &r.pending {
            let m = set.get(*v).expect("pending versions are in the set");
            if m.down.as_ref().and_then(|d| d.get(r.dialect)).is_none() {
                missing.insert(format!("{} ({})", m.label(), r.dialect));
            }
        }
    }
    if !missing.is_empty() {
        return Err(Error::Usage(format!(
            "--revert-on-halt: these pending migrations have no .down.sql: {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

/// Loads what `resume` and `retry` need and builds the context.
pub async fn context<'a>(
    config: &'a Config,
    store: &'a StateStore,
    cancel: Cancel,
    opts: RunOptions,
) -> Result<Ctx<'a>, Error> {
    let (set, tenants) = prepare(config, &[]).await?;
    Ok(Ctx {
        config,
        store,
        set,
        tenants,
        owner: owner_id(),
        cancel,
        opts,
    })
}

/// The rollout a command means: `id`, or the newest one of this fleet that
/// matches `pick` (e.g. not finished).
pub async fn pick_rollout(
    store: &StateStore,
    config: &Config,
    id: Option<&str>,
    pick: impl Fn(&RolloutRecord) -> bool,
    what: &str,
) -> Result<String, Error> {
    if let Some(id) = id {
        return Ok(id.to_string());
    }
    let fleet = config.fleet.to_string();
    store
        .rollouts(1000)
        .await?
        .into_iter()
        .find(|r| r.fleet == fleet && pick(r))
        .map(|r| r.id)
        .ok_or_else(|| {
            Error::Usage(format!(
                "no {what} rollout of fleet {fleet} in the state store {}",
                store.location
            ))
        })
}
