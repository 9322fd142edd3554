//! Expand/contract: a `phase=contract` migration (the step that drops what the
//! old application still uses) is held until the operator says the old
//! application is gone (`--allow-contract`) and every tenant of the fleet has
//! the expand steps before it. Shared by `sync`/`rollout` (which hold it) and
//! `status`/`plan` (which show it held).

use crate::dialect::Connector;
use crate::fanout::Fanout;
use crate::inspect::{Inspection, TenantState, inspect};
use crate::migration::{Migration, MigrationSet, Phase};
use crate::tenant::Tenant;

/// Expand/contract: which `phase=contract` migrations (at or below
/// `target`) are held, and why. Held contract versions are never applied: a
/// tenant that still needs one stops just below it (tenants that already
/// have it go on). Without `--allow-contract` every contract migration is
/// held, and no tenant is read for that. With it, the fleet is read and a
/// contract migration is held while any tenant of the whole fleet still lacks
/// a migration before it, so a contract step never reaches some tenants while
/// others lack the expand step.
pub async fn contract_hold(
    connector: &Connector,
    fanout: &Fanout,
    set: &MigrationSet,
    all: &[Tenant],
    target: i64,
    allow: bool,
) -> (Vec<i64>, Option<String>) {
    let contracts: Vec<&Migration> = set
        .migrations
        .iter()
        .filter(|m| m.version <= target && is_contract(m))
        .collect();
    if contracts.is_empty() {
        return (Vec::new(), None);
    }
    if !allow {
        return hold_for(&contracts, &[], false);
    }
    let rows = inspect(connector, fanout, set, all, None).await;
    hold_for(&contracts, &rows, true)
}

/// The pure part of `contract_hold`: the held contract versions (ascending)
/// and a message for the first one.
pub fn hold_for(
    contracts: &[&Migration],
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

/// Whether `m` is a contract step.
pub fn is_contract(m: &Migration) -> bool {
    m.up.all().any(|s| s.directives.phase == Phase::Contract)
}

/// The contract holds of `rows` (as `status` and `plan` show them): pending
/// versions cut below a held contract, tenants left with nothing pending
/// shown up to date. Returns why the first contract is held.
pub fn apply_holds(set: &MigrationSet, rows: &mut [Inspection], allow: bool) -> Option<String> {
    let contracts: Vec<&Migration> = set.migrations.iter().filter(|m| is_contract(m)).collect();
    let (hold, held) = hold_for(&contracts, rows, allow);
    for r in rows.iter_mut() {
        cut_at_held(&mut r.pending, &hold);
        if r.state == TenantState::Pending && r.pending.is_empty() {
            r.state = TenantState::UpToDate;
        }
    }
    held
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
