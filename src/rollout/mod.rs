//! Rollouts: taking a fleet to a target version. `executor` fans out over
//! tenants (bounded, with retries and cancellation), `retry` is the retry
//! policy, `live` the per-tenant live state, `inspect` the read-only view used
//! by `status` and `plan`. `sync` here is the whole flow of one run: load and
//! validate the set, discover, execute, report.

pub mod drift;
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
use crate::tenant::{Dialect, Tenant, TenantId, discover};

/// Expand/contract: which `phase=contract` migrations (at or below
/// `target`) are held, and why. Held contract versions are never applied: a
/// tenant that still needs one stops just below it (tenants that already
/// have it go on). Without `--allow-contract` every contract migration is
/// held, and no tenant is read for that. With it, the fleet is read and a
/// contract migration is held while any tenant of the whole fleet still lacks
/// a migration before it, so a contract step never reaches some tenants while
/// others lack the expand step.
pub async fn contract_hold(
    config: &Config,
    set: &Arc<MigrationSet>,
    all: &[Tenant],
    target: i64,
    allow: bool,
) -> Result<(Vec<i64>, Option<String>), Error> {
    let contracts: Vec<&crate::migration::Migration> = set
        .migrations
        .iter()
        .filter(|m| m.version <= target && is_contract(m))
        .collect();
    if contracts.is_empty() {
        return Ok((Vec::new(), None));
    }
    if !allow {
        return Ok(hold_for(&contracts, &[], false));
    }
    let connector = Arc::new(Connector::new(config.settings.clone()));
    let rows = inspect(
        connector.clone(),
        set.clone(),
        all.to_vec(),
        None,
        config.exec.concurrency,
    )
    .await;
    connector.close().await;
    Ok(hold_for(&contracts, &rows, true))
}

/// The pure part of `contract_hold`: the held contract versions (ascending)
/// and a message for the first one.
pub fn hold_for(
    contracts: &[&crate::migration::Migration],
    rows: &[Inspection],
    allow: bool,
) -> (Vec<i64>, Option<String>) {
    if !allow {
        let first = contracts.first().map(|c| {
            format!(
                "migration {} is phase=contract and is held: pass --allow-contract once the application no longer uses the old schema",
                c.label()
            )
        });
        return (contracts.iter().map(|c| c.version).collect(), first);
    }
    for (k, c) in contracts.iter().enumerate() {
        let lacking: Vec<&str> = rows
            .iter()
            .filter(|r| {
                r.version.is_none()
                    || r.pending.iter().any(|v| *v < c.version)
                    || !matches!(r.state, TenantState::Pending | TenantState::UpToDate)
            })
            .map(|r| r.tenant.as_str())
            .collect();
        if !lacking.is_empty() {
            return (
                contracts[k..].iter().map(|c| c.version).collect(),
                Some(format!(
                    "migration {} is phase=contract and is held: {} tenant(s) of the fleet still lack earlier migrations (e.g. {}); finish the expand steps everywhere first",
                    c.label(),
                    lacking.len(),
                    lacking
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
        }
    }
    (Vec::new(), None)
}

/// Cuts `pending` before the first held contract version it contains.
pub fn cut_at_held(pending: &mut Vec<i64>, held: &[i64]) {
    if let Some(pos) = pending.iter().position(|v| held.contains(v)) {
        pending.truncate(pos);
    }
}

pub fn is_contract(m: &crate::migration::Migration) -> bool {
    m.up.all()
        .any(|s| s.directives.phase == crate::migration::Phase::Contract)
}

/// Keeps only `only` (all when empty); an unknown id is a usage error.
pub fn only_these(all: &[Tenant], only: &[String], config: &Config) -> Result<Vec<Tenant>, Error> {
    prepare_filter(all.to_vec(), only, config)
}

/// Loads the set, discovers the fleet and keeps only `only` (all when empty).
/// Nothing is written anywhere before this succeeds.
pub async fn prepare(
    config: &Config,
    only: &[String],
) -> Result<(Arc<MigrationSet>, Vec<Tenant>), Error> {
    let set = load(&config.migrations)?;
    let tenants = discover(&config.fleet, &config.discover).await?;
    Ok((Arc::new(set), prepare_filter(tenants, only, config)?))
}

fn prepare_filter(
    mut tenants: Vec<Tenant>,
    only: &[String],
    config: &Config,
) -> Result<Vec<Tenant>, Error> {
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
    Ok(tenants)
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
    /// Apply `phase=contract` migrations (once every tenant has the expand steps).
    pub allow_contract: bool,
    /// Run even when `fleetmig lint` has findings.
    pub allow_lint_findings: bool,
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
    let (set, all) = prepare(config, &[]).await?;
    let tenants = only_these(&all, only, config)?;
    if !req.allow_lint_findings {
        let dialects: Vec<Dialect> = all
            .iter()
            .map(|t| t.locator.dialect())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let findings: Vec<_> = crate::lint::lint_for(&set, &dialects)
            .into_iter()
            .filter(|f| f.is_error())
            .collect();
        if !findings.is_empty() {
            return Err(Error::Lint(format!(
                "the migration set has {} lint finding(s); fix them, add a `-- fleetmig-lint: ignore FMxxx` comment with the reason, or pass --allow-lint-findings:\n{}",
                findings.len(),
                crate::lint::render_text(&findings)
            )));
        }
    }
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
    let (hold, held) = contract_hold(config, &set, &all, target, req.allow_contract).await?;
    if req.revert_on_halt {
        check_reversible(config, &set, &tenants, target).await?;
    }
    let mut settings = driver::freeze(
        config,
        &req.gates,
        gate_sql,
        req.bake,
        req.pause_after.clone(),
        req.revert_on_halt,
    );
    settings.held = held;
    settings.hold_versions = hold;
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

/// `fleetmig baseline`: records the migrations up to `version` that `tenant`
/// lacks as applied, without running them. Returns how many were recorded.
pub async fn baseline(
    connector: &Connector,
    set: &MigrationSet,
    tenant: &Tenant,
    version: i64,
) -> Result<usize, crate::error::TenantError> {
    let mut s = connector
        .open(tenant, crate::dialect::Access::Write)
        .await?;
    let r = async {
        s.lock().await?;
        let history = s.history().await?;
        let plan = crate::migration::plan_tenant(&history, set, s.dialect(), Some(version))?;
        for v in &plan.pending {
            let m = set.get(*v).expect("planned versions exist");
            let script = m.up.get(s.dialect()).expect("plan checked the variant");
            s.skip(m, script).await?;
        }
        Ok(plan.pending.len())
    }
    .await;
    s.close().await;
    r
}

#[cfg(test)]
mod tests {
    use super::cut_at_held;

    #[test]
    fn a_held_contract_stops_only_the_tenants_that_need_it() {
        let mut needs = vec![7, 8, 9, 10];
        cut_at_held(&mut needs, &[9]);
        assert_eq!(needs, vec![7, 8], "nothing at or after the contract step");
        let mut past_it = vec![10, 11];
        cut_at_held(&mut past_it, &[9]);
        assert_eq!(past_it, vec![10, 11], "a tenant that has 9 goes on");
    }
}
