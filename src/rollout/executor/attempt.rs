//! One attempt of one tenant: its session opened and locked, its history
//! read (the truth), its plan made, its pending migrations applied in the
//! groups the transaction mode makes, batched backfills batch by batch.

use std::time::Instant;

use super::{Progress, Shared};
use crate::dialect::{Access, Session, Step};
use crate::error::{FailureKind, TenantError};
use crate::event::Event;
use crate::migration::plan_tenant;
use crate::options::TxMode;
use crate::tenant::Tenant;

/// One attempt: connect, lock, read history (the truth), plan, apply.
pub(super) async fn attempt_once(
    shared: &Shared,
    tenant: &Tenant,
    progress: &mut Progress,
) -> Result<(), TenantError> {
    let mut session = shared.connector.open(tenant, Access::Write).await?;
    let r = apply_pending(shared, tenant, session.as_mut(), progress).await;
    session.close().await;
    r
}

async fn apply_pending(
    shared: &Shared,
    tenant: &Tenant,
    session: &mut dyn Session,
    progress: &mut Progress,
) -> Result<(), TenantError> {
    session.lock().await?;
    let history = session.history().await?;
    let dialect = session.dialect();
    let mut plan = plan_tenant(&history, &shared.set, dialect, shared.target)?;
    crate::rollout::hold::cut_at_held(&mut plan.pending, &shared.opts.hold_versions);
    credit_earlier(shared, tenant, &history, plan.current, progress);
    progress.from_version.get_or_insert(plan.current);
    progress.current = Some(plan.current);
    shared.emit(Event::TenantPlanned {
        tenant: tenant.id.clone(),
        from_version: plan.current,
        pending: plan.pending.clone(),
    });
    if !plan.pending.is_empty() && !prepare(shared, tenant, session, &plan, progress).await? {
        return Ok(());
    }
    let steps = Step::planned(&shared.set, &plan.pending, dialect);
    let tx_mode = match session.transactional_ddl() {
        true => shared.opts.tx_mode,
        false => TxMode::Migration,
    };
    for group in groups(&steps, tx_mode) {
        if !apply_group(shared, tenant, session, progress, group).await? {
            return Ok(());
        }
    }
    if shared.opts.analyze && !progress.applied.is_empty() {
        let tables = shared.tables(&progress.applied, dialect);
        session.analyze(&tables).await;
    }
    Ok(())
}

/// What an attempt of an earlier process of this rollout applied (it
/// started from `e.from` and never recorded its end) is this rollout's too.
fn credit_earlier(
    shared: &Shared,
    tenant: &Tenant,
    history: &[crate::migration::Applied],
    current: i64,
    progress: &mut Progress,
) {
    if progress.from_version.is_some() {
        return;
    }
    if let Some(e) = shared.earlier.get(tenant.id.as_str()) {
        progress.from_version = Some(e.from);
        progress.applied.extend(
            history
                .iter()
                .filter(|h| h.success && h.version > e.from && h.version <= current)
                .filter(|h| shared.set.get(h.version).is_some())
                .map(|h| h.version),
        );
    }
}

/// Before the first migration of a tenant with work to do: the journal (a
/// worker's; false: the tenant is no longer this process's), the
/// preflight, the backup.
async fn prepare(
    shared: &Shared,
    tenant: &Tenant,
    session: &mut dyn Session,
    plan: &crate::migration::TenantPlan,
    progress: &mut Progress,
) -> Result<bool, TenantError> {
    let dialect = session.dialect();
    if let Some(journal) = &shared.journal
        && !progress.journaled
    {
        let ours = journal
            .planned(tenant.id.as_str(), plan.current)
            .await
            .map_err(|e| TenantError::transient(FailureKind::StateStore, e.to_string()))?;
        if !ours {
            progress.interrupted = true;
            return Ok(false);
        }
        progress.journaled = true;
    }
    if let Some(limits) = shared.opts.preflight {
        let tables = shared.tables(&plan.pending, dialect);
        if let Some(summary) = session.preflight(&tables, limits).await? {
            shared.emit(Event::Preflight {
                tenant: tenant.id.clone(),
                summary,
            });
        }
    }
    if let Some(dir) = &shared.opts.backup_dir {
        let path = crate::dialect::backup::backup_path(dir, &shared.run_id, tenant);
        // a resumed rollout keeps the backup taken before anything ran
        if !path.exists() {
            session.backup(&path).await?;
        }
        shared.emit(Event::BackupTaken {
            tenant: tenant.id.clone(),
            path: path.clone(),
        });
    }
    Ok(true)
}

/// One group of migrations (a batched backfill on its own); false when the
/// attempt stops here (interrupted).
async fn apply_group(
    shared: &Shared,
    tenant: &Tenant,
    session: &mut dyn Session,
    progress: &mut Progress,
    group: &[Step<'_>],
) -> Result<bool, TenantError> {
    if shared.cancel.is_cancelled() {
        progress.interrupted = true;
        return Ok(false);
    }
    if let [step] = group
        && let Some(batch) = step.script.directives.batch
    {
        backfill(shared, tenant, session, progress, *step, batch).await?;
        if progress.interrupted {
            return Ok(false);
        }
        return Ok(true);
    }
    for s in group {
        shared.emit(Event::MigrationStarted {
            tenant: tenant.id.clone(),
            version: s.migration.version,
        });
    }
    let applied = session.apply(group).await?;
    for a in applied {
        if !a.already_applied {
            progress.applied.push(a.version);
            shared.emit(Event::MigrationApplied {
                tenant: tenant.id.clone(),
                version: a.version,
                duration: a.duration,
            });
        }
        progress.current = Some(progress.current.unwrap_or(0).max(a.version));
    }
    Ok(true)
}

/// A batched backfill: the statement again and again, each batch in its own
/// short transaction, until it changes no rows; then the history row (see
/// `Session::backfill_batch` for the short batch confirmed without a pause). Every
/// batch is reported (the state store keeps the checkpoint); a signal stops
/// it between batches, and the next run continues where it stopped, since
/// the statement only picks rows not yet done.
async fn backfill(
    shared: &Shared,
    tenant: &Tenant,
    session: &mut dyn Session,
    progress: &mut Progress,
    step: Step<'_>,
    batch: crate::migration::Batch,
) -> Result<(), TenantError> {
    let v = step.migration.version;
    shared.emit(Event::MigrationStarted {
        tenant: tenant.id.clone(),
        version: v,
    });
    let t0 = Instant::now();
    loop {
        if shared.cancel.is_cancelled() {
            progress.interrupted = true;
            return Ok(());
        }
        let b = session
            .backfill_batch(step, batch.size, t0)
            .await
            .map_err(|e| e.at_version(v))?;
        progress.backfill.0 += b.statements;
        progress.backfill.1 += b.changed;
        shared.emit(Event::BackfillBatch {
            tenant: tenant.id.clone(),
            version: v,
            batches: progress.backfill.0,
            rows: progress.backfill.1,
            batch_statements: b.statements,
            batch_rows: b.changed,
            batch_duration: b.held,
            done: b.done,
        });
        if b.done {
            break;
        }
        if !batch.pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(batch.pause) => {}
                _ = shared.cancel.cancelled() => {}
            }
        }
    }
    progress.applied.push(v);
    progress.current = Some(progress.current.unwrap_or(0).max(v));
    progress.backfill = (0, 0);
    shared.emit(Event::MigrationApplied {
        tenant: tenant.id.clone(),
        version: v,
        duration: t0.elapsed(),
    });
    Ok(())
}

/// Splits steps into transaction groups: one per migration, or (tenant mode,
/// on a tenant whose DDL is transactional) runs of transactional migrations,
/// each `-- no-transaction` or batched migration on its own.
fn groups<'a, 'b>(steps: &'a [Step<'b>], mode: TxMode) -> Vec<&'a [Step<'b>]> {
    if mode == TxMode::Migration {
        return steps.chunks(1).collect();
    }
    let mut out = Vec::new();
    let mut start = 0;
    for (i, s) in steps.iter().enumerate() {
        if s.script.no_tx || s.script.directives.batch.is_some() {
            if start < i {
                out.push(&steps[start..i]);
            }
            out.push(&steps[i..i + 1]);
            start = i + 1;
        }
    }
    if start < steps.len() {
        out.push(&steps[start..]);
    }
    out
}
