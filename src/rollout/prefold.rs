//! Reading ahead before a rollout is recorded. The first wave of a new
//! rollout starts the moment it is recorded, and the executor's first act
//! on each tenant is to read its history without a session (`peek`) and
//! finish the tenant there when nothing is pending. Doing that read just
//! before the rollout is recorded instead decides the same thing from the
//! same history, and a tenant found with nothing to do is recorded as
//! folded from the start (`state/fold.rs`: one list per version, shared
//! night after night) instead of as a row that is written pending, updated
//! succeeded and folded away at the end. A nightly check of 100,000
//! tenants at head writes no tenant row at all.
//!
//! Only the first wave: a later wave may run hours after planning, and a
//! tenant's state then is what counts; its tenants keep their rows and are
//! read when their wave runs. A tenant read ahead with anything to do, or
//! whose history could not be read without a session, keeps its row and
//! goes through the executor as before (which reads it again under the
//! tenant's lock). Nothing is written to a tenant here.

use std::collections::BTreeMap;

use super::context::Ctx;
use super::executor::at_rest;
use super::waves::PlannedWave;
use crate::error::Error;
use crate::event::Event;
use crate::fanout::Fanout;
use crate::state::{Folded, now_ms};
use crate::tenant::Tenant;

/// Tenants read per round: each round's histories are dropped before the
/// next is read (flat memory at 100,000 tenants), only the ids kept.
const ROUND: usize = 4096;

/// The first wave of `plan` read ahead (`at_head`), once no other
/// rollout runs on the fleet (refused before its tenants are read; the
/// transaction that records the rollout asks again): the folds to record
/// with it. A signal during the read stops the command with nothing
/// recorded.
pub(super) async fn first_wave(
    ctx: &Ctx<'_>,
    fanout: &Fanout,
    plan: &mut [PlannedWave],
    target: i64,
    held: &[i64],
) -> Result<Vec<Folded>, Error> {
    let Some(first) = plan.first_mut() else {
        return Ok(Vec::new());
    };
    ctx.store
        .refuse_running_on(&ctx.fleet.recorded(), ctx.opts.lease)
        .await?;
    let folded = at_head(ctx, fanout, first, target, held).await;
    if ctx.cancel.is_cancelled() {
        return Err(Error::Stopped(
            "stopped by a signal while reading the tenants' histories, before the rollout \
             was recorded: nothing was written"
                .into(),
        ));
    }
    Ok(folded)
}

/// Takes out of `first` (the rollout's first wave, index 0) the tenants
/// whose history shows nothing to apply up to `target` with `held` held,
/// and returns them as folds, one per version they stand at. Stops reading
/// (the rest keep their rows) when the command is cancelled.
async fn at_head(
    ctx: &Ctx<'_>,
    fanout: &Fanout,
    first: &mut PlannedWave,
    target: i64,
    held: &[i64],
) -> Vec<Folded> {
    let mut folds: BTreeMap<i64, Folded> = BTreeMap::new();
    let mut keep: Vec<String> = Vec::with_capacity(first.tenants.len());
    let mut ids = std::mem::take(&mut first.tenants).into_iter();
    let total = ids.len();
    ctx.bus.emit(Event::ReadingAhead { tenants: total });
    loop {
        let round: Vec<String> = ids.by_ref().take(ROUND).collect();
        if round.is_empty() {
            break;
        }
        if ctx.cancel.is_cancelled() {
            keep.extend(round);
            continue;
        }
        let mut tenants: Vec<Tenant> = Vec::with_capacity(round.len());
        for id in round {
            match tenant(ctx, &id) {
                Some(t) => tenants.push(t),
                None => keep.push(id),
            }
        }
        let kept = keep.len();
        let started = now_ms();
        let peeked = ctx.connector.peek(fanout, &tenants).await;
        let finished = now_ms();
        for (t, history) in tenants.iter().zip(peeked) {
            let dialect = t.locator.dialect();
            let version = history.and_then(|h| at_rest(&h, &ctx.set, dialect, Some(target), held));
            let Some(version) = version else {
                keep.push(t.id.to_string());
                continue;
            };
            let f = folds.entry(version).or_insert_with(|| Folded {
                version,
                started: Some(started),
                ..Folded::default()
            });
            f.ids.push(t.id.to_string());
            f.finished = Some(finished);
        }
        let at_head = tenants.len() - (keep.len() - kept);
        ctx.bus.emit(Event::FoundAtHead { tenants: at_head });
    }
    first.tenants = keep;
    folds.into_values().collect()
}

/// The fleet's tenant `id` (the fleet's list is sorted by id).
fn tenant(ctx: &Ctx<'_>, id: &str) -> Option<Tenant> {
    ctx.tenants
        .binary_search_by(|t| t.id.as_str().cmp(id))
        .ok()
        .map(|i| ctx.tenants[i].clone())
}
