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
/// with it.
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
    at_head(ctx, fanout, first, target, held).await
}

/// Takes out of `first` (the rollout's first wave, index 0) the tenants
/// whose history shows nothing to apply up to `target` with `held` held,
/// and returns them as folds, one per version they stand at. A signal
/// during the read stops the command with nothing recorded.
async fn at_head(
    ctx: &Ctx<'_>,
    fanout: &Fanout,
    first: &mut PlannedWave,
    target: i64,
    held: &[i64],
) -> Result<Vec<Folded>, Error> {
    let mut folds: BTreeMap<i64, Folded> = BTreeMap::new();
    let mut keep: Vec<String> = Vec::with_capacity(first.tenants.len());
    let ids = std::mem::take(&mut first.tenants);
    ctx.bus.emit(Event::ReadingAhead { tenants: ids.len() });
    for round in ids.chunks(ROUND) {
        if ctx.cancel.is_cancelled() {
            return Err(Error::Stopped(
                "stopped by a signal while reading the tenants' histories, before the \
                 rollout was recorded: nothing was written"
                    .into(),
            ));
        }
        let mut tenants: Vec<Tenant> = Vec::with_capacity(round.len());
        for id in round {
            match ctx.tenant(id) {
                Some(t) => tenants.push(t.clone()),
                None => keep.push(id.clone()),
            }
        }
        let started = now_ms();
        let peeked = ctx.connector.peek(fanout, &tenants).await;
        let finished = now_ms();
        let mut found = 0;
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
            found += 1;
        }
        ctx.bus.emit(Event::FoundAtHead { tenants: found });
    }
    first.tenants = keep;
    Ok(folds.into_values().collect())
}
