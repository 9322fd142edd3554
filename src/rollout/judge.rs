//! Judges a wave whose tenants have all run: its gate decided (count gates,
//! the gate query, `--override-gate`), and on a halt the revert of the
//! wave's succeeded tenants when the rollout asks for it.

use std::collections::BTreeMap;

use super::context::Ctx;
use super::gate::{self, Verdict};
use super::revert::revert_wave;
use crate::error::Error;
use crate::event::Bus;
use crate::fanout::Fanout;
use crate::state::{RolloutRecord, RunStatus, TenantUpdate, WaveRecord, WaveStatus};
use crate::tenant::Tenant;

/// A wave's gate, decided: the wave's new status and what it says, and the
/// rollout's halt reason when it halts.
pub(super) struct Decision {
    pub status: WaveStatus,
    pub text: String,
    pub halt: Option<String>,
}

impl Decision {
    /// Tells the bus the gate of `wave` of rollout `id` was evaluated.
    pub fn emit(&self, bus: &Bus, id: &str, wave: &WaveRecord) {
        bus.emit(crate::event::Event::GateEvaluated {
            rollout: id.to_string(),
            wave: wave.wave,
            name: wave.name.clone(),
            status: self.status,
            text: self.text.clone(),
        });
    }
}

/// Decides the gate of `wave` (every tenant of it has run): the count gates
/// and the gate query over its succeeded tenants (their failures recorded),
/// `override_gate` passing a failed gate on purpose, and on a halt the
/// revert of the wave's succeeded tenants when the rollout asks for it.
pub(super) async fn decide(
    ctx: &Ctx<'_>,
    r: &RolloutRecord,
    wave: &WaveRecord,
    fanout: &Fanout,
    override_gate: bool,
) -> Result<Decision, Error> {
    let (id, exec, policy) = (&r.id, &r.settings.exec, &r.settings.policy);
    let tally = ctx.store.wave_tally(id, wave.wave).await?;
    let mut sql_errors = BTreeMap::new();
    if let Some(sql) = &policy.gate_sql
        && tally.not_started == 0
    {
        // a set, not a search of the store's order: PostgreSQL sorts by
        // its collation, which need not be the byte order of the ids
        let ok: std::collections::HashSet<String> = ctx
            .store
            .wave_tenants(id, wave.wave, &[RunStatus::Succeeded])
            .await?
            .into_iter()
            .collect();
        let tenants: Vec<&Tenant> = ctx
            .tenants
            .iter()
            .filter(|t| ok.contains(t.id.as_str()))
            .collect();
        sql_errors = gate::check_sql(&ctx.connector, fanout, sql, tenants).await;
        ctx.store.set_gate_errors(id, &sql_errors).await?;
    }
    let (status, text, halt) =
        match gate::evaluate(&tally, &policy.gates, exec.max_failures, &sql_errors) {
            Verdict::Passed => (WaveStatus::Passed, "passed".to_string(), None),
            Verdict::Failed(why) if override_gate => (
                WaveStatus::Overridden,
                format!("overridden by --override-gate: {why}"),
                None,
            ),
            Verdict::Failed(why) => (
                WaveStatus::Failed,
                why.clone(),
                Some(format!("wave {} gate failed: {why}", wave.name)),
            ),
            Verdict::NotStarted(text) => (
                WaveStatus::Failed,
                text.clone(),
                Some(format!("wave {}: {text}", wave.name)),
            ),
        };
    if halt.is_some() && policy.revert_on_halt && tally.not_started == 0 {
        let runs = ctx
            .store
            .wave_runs(id, wave.wave, RunStatus::Succeeded)
            .await?;
        let updates = revert_wave(&ctx.connector, fanout, &ctx.set, &ctx.tenants, runs).await;
        let reverted = updates
            .iter()
            .filter(|u| matches!(u, TenantUpdate::Finished(f) if f.status == RunStatus::Reverted))
            .count();
        ctx.store.record(id, &updates, None).await?;
        tracing::info!("reverted {reverted} tenant(s) of rollout {id}");
    }
    Ok(Decision { status, text, halt })
}
