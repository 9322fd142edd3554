//! `--revert-on-halt`: the succeeded tenants of a halted wave are taken back
//! down with their `.down.sql`, newest migration first, within the command's
//! fan-out limits; and the check, before a rollout starts, that every
//! migration a tenant would apply has a `.down.sql` for its dialect.

use crate::error::FailureKind;
use std::collections::BTreeSet;

use crate::dialect::{Access, Connector};
use crate::error::{Error, TenantError};
use crate::fanout::Fanout;
use crate::inspect::inspect;
use crate::migration::MigrationSet;
use crate::state::{Finish, RunStatus, TenantRun, TenantUpdate};
use crate::tenant::Tenant;

/// Reverts one tenant's `applied` versions, newest first.
async fn revert_one(
    connector: &Connector,
    set: &MigrationSet,
    tenant: &Tenant,
    applied: &[i64],
) -> Result<(), TenantError> {
    let mut s = connector.open(tenant, Access::Write).await?;
    let r = async {
        s.lock().await?;
        s.history().await?;
        let mut versions = applied.to_vec();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        for v in versions {
            let m = set.get(v).expect("applied versions are in the set");
            let down = m
                .down
                .as_ref()
                .and_then(|d| d.get(s.dialect()))
                .ok_or_else(|| {
                    TenantError::permanent(
                        FailureKind::NoDown,
                        format!("migration {v} has no .down.sql"),
                    )
                })?;
            s.revert(m, down).await?;
        }
        Ok(())
    }
    .await;
    s.close().await;
    r
}

/// Reverts the succeeded `runs` of a halted wave; the updates that record
/// each outcome (`reverted`, or `failed` with the revert's error).
pub async fn revert_wave(
    connector: &Connector,
    fanout: &Fanout,
    set: &MigrationSet,
    tenants: &[Tenant],
    runs: Vec<TenantRun>,
) -> Vec<TenantUpdate> {
    let work: Vec<(&Tenant, TenantRun)> = runs
        .into_iter()
        .filter(|r| r.status == RunStatus::Succeeded && !r.applied.is_empty())
        .filter_map(|r| Some((tenants.iter().find(|t| t.id.as_str() == r.tenant)?, r)))
        .collect();
    fanout
        .run(
            work,
            |(t, _)| t,
            |(t, run)| async move {
                let result = revert_one(connector, set, t, &run.applied).await;
                let mut f = Finish::new(&run.tenant, RunStatus::Reverted);
                f.finished_at = run.finished_at;
                match result {
                    Ok(()) => {
                        f.to_version = run.from_version;
                        f.error.message = Some(format!(
                            "reverted after wave gate failed (was at {})",
                            run.to_version.unwrap_or(0)
                        ));
                    }
                    Err(e) => {
                        f.status = RunStatus::Failed;
                        f.to_version = run.to_version;
                        f.error.class = Some(e.class);
                        f.error.kind = Some(crate::error::FailureKind::RevertFailed);
                        f.error.message =
                            Some(format!("revert failed ({}): {}", e.kind, e.message));
                    }
                }
                TenantUpdate::Finished(Box::new(f))
            },
        )
        .await
}

/// `--revert-on-halt` is refused up front when a migration that some tenant
/// would apply has no `.down.sql` for that tenant's dialect.
pub async fn check_reversible(
    connector: &Connector,
    fanout: &Fanout,
    set: &MigrationSet,
    tenants: &[Tenant],
    target: i64,
) -> Result<(), Error> {
    let rows = inspect(connector, fanout, set, tenants, Some(target)).await;
    let mut missing = BTreeSet::new();
    for r in &rows {
        for v in &r.pending {
            let m = set.get(*v).expect("pending versions are in the set");
            if m.down.as_ref().and_then(|d| d.get(r.dialect)).is_none() {
                missing.insert(format!("{} ({})", m.label(), r.dialect));
            }
        }
    }
    if !missing.is_empty() {
        let m = format!(
            "these pending migrations have no .down.sql: {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        );
        return Err(Error::flag("--revert-on-halt", m));
    }
    Ok(())
}
