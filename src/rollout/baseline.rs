//! `fleetmig baseline`: records the migrations up to a version that a tenant
//! lacks as applied, without running them (tenants created from a dump that
//! already has the schema), within the command's fan-out limits.

use crate::dialect::{Access, Connector, Step};
use crate::error::{FailureKind, TenantError};
use crate::fanout::Fanout;
use crate::migration::{MigrationSet, plan_tenant};
use crate::tenant::{Tenant, TenantId};

/// Baselines one tenant: how many migrations were recorded.
async fn baseline_one(
    connector: &Connector,
    set: &MigrationSet,
    tenant: &Tenant,
    version: i64,
) -> Result<usize, TenantError> {
    let mut s = connector.open(tenant, Access::Write).await?;
    let r = async {
        s.lock().await?;
        let history = s.history().await?;
        let plan = plan_tenant(&history, set, s.dialect(), Some(version))?;
        let steps = Step::planned(set, &plan.pending, s.dialect());
        if let Some(v) = s.interrupted(&steps).await?
            && plan.pending.contains(&v)
        {
            // half of it ran: recorded as applied it would be a lie
            return Err(TenantError::permanent(
                FailureKind::Dirty,
                format!(
                    "migration {v} was interrupted part-way on this tenant: finish it with \
                     `fleetmig sync` (or by hand, then delete what fleetmig recorded of it) \
                     before recording it as applied; nothing was recorded"
                ),
            )
            .at_version(v));
        }
        for step in steps {
            s.skip(step).await?;
        }
        Ok(plan.pending.len())
    }
    .await;
    s.close().await;
    r
}

/// Baselines every tenant to `version`; results in tenant order.
pub async fn baseline(
    connector: &Connector,
    fanout: &Fanout,
    set: &MigrationSet,
    tenants: &[Tenant],
    version: i64,
) -> Vec<(TenantId, Result<usize, TenantError>)> {
    let mut out = fanout
        .run(
            tenants.iter().collect(),
            |t| t,
            |t| async move { (t.id.clone(), baseline_one(connector, set, t, version).await) },
        )
        .await;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
