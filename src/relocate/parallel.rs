//! Step 4 with `--jobs N`: tables copied side by side, each job with a
//! session on the source and one on the target. All the source sessions
//! see one instant: their snapshots are opened while a further session
//! holds the tenant's writes (`CopyEnd::freeze`: PostgreSQL `LOCK … IN
//! EXCLUSIVE MODE`, MySQL `LOCK TABLES … READ`, SQLite `BEGIN IMMEDIATE`),
//! for as long as that takes. The largest tables go first (counted in the
//! snapshot); a job takes the next table when it is free. A job that fails
//! stops the others at their next table.

use crate::error::FailureKind;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::transfer::{Copier, Pair, verify_table};
use super::{MoveReport, TableMoved};
use crate::dialect::copy::{CopyEnd, Rules, Table};
use crate::error::TenantError;

/// The sessions of the jobs beyond the first: (source, target) each.
pub(super) type Sessions = Vec<(Box<dyn CopyEnd>, Box<dyn CopyEnd>)>;

/// Copies every table of `plan` with the first job on `source`/`target`
/// and one more per pair of `extra`, whose snapshots `sync` lines up with
/// the first's. The extra sessions are closed at the end.
pub(super) async fn copy_all(
    copier: &Copier,
    source: &mut dyn CopyEnd,
    target: &mut dyn CopyEnd,
    sync: Box<dyn CopyEnd>,
    mut extra: Sessions,
    plan: &[Pair],
    report: &mut MoveReport,
) -> Result<(), TenantError> {
    let children_first: Vec<&Table> = plan.iter().rev().map(|p| &p.target).collect();
    target.clear(&children_first).await?;
    line_up(source, sync, &mut extra, plan).await?;
    let queue = Arc::new(Mutex::new(largest_first(source, plan).await?));
    let plan_shared: Arc<Vec<Pair>> = Arc::new(plan.to_vec());
    let failed = Arc::new(AtomicBool::new(false));
    // each job's first table, in job order (the largest to the first job):
    // which job copies what does not hang on which task starts first
    let pop = || queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
    let mine_first = pop();
    let mut handles = Vec::new();
    for (mut s, mut t) in extra.drain(..) {
        let first = pop();
        let (copier, queue, plan, failed) = (
            copier.clone(),
            queue.clone(),
            plan_shared.clone(),
            failed.clone(),
        );
        handles.push(tokio::spawn(async move {
            let r = job(&copier, &mut *s, &mut *t, first, &queue, &plan, &failed).await;
            let _ = s.release().await;
            s.close().await;
            t.close().await;
            r
        }));
    }
    let mine = job(
        copier,
        source,
        target,
        mine_first,
        &queue,
        &plan_shared,
        &failed,
    )
    .await;
    let released = source.release().await;
    let mut moved: Vec<(usize, TableMoved)> = Vec::new();
    let mut first_error = mine.as_ref().err().cloned();
    moved.extend(mine.unwrap_or_default());
    for h in handles {
        match h.await {
            Ok(Ok(done)) => moved.extend(done),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(TenantError::permanent(
                    FailureKind::Interrupted,
                    format!("a copy job stopped: {e}"),
                ));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    released?;
    moved.sort_by_key(|(i, _)| *i);
    for (_, m) in moved {
        report.rows += m.rows;
        report.tables.push(m);
    }
    Ok(())
}

/// One instant for every job: the snapshots of `source` and of each extra
/// job's source session are opened while `sync` holds the tenant's writes
/// (closed after).
async fn line_up(
    source: &mut dyn CopyEnd,
    mut sync: Box<dyn CopyEnd>,
    extra: &mut Sessions,
    plan: &[Pair],
) -> Result<(), TenantError> {
    let tables: Vec<&Table> = plan.iter().map(|p| &p.source).collect();
    let lined_up = async {
        sync.freeze(&tables).await?;
        source.snapshot().await?;
        for (s, t) in extra.iter_mut() {
            s.snapshot().await?;
            t.quiet_session().await?;
        }
        sync.unfreeze().await
    }
    .await;
    sync.close().await;
    lined_up
}

/// The tables of `plan` by their rows in the snapshot, the largest first.
async fn largest_first(
    source: &mut dyn CopyEnd,
    plan: &[Pair],
) -> Result<VecDeque<usize>, TenantError> {
    let mut sizes = Vec::new();
    for (i, p) in plan.iter().enumerate() {
        sizes.push((source.count(&p.source).await?, i));
    }
    sizes.sort_by(|a, b| b.cmp(a));
    Ok(sizes.into_iter().map(|(_, i)| i).collect())
}

/// One job: its `first` table, then tables from the queue until it is
/// empty or a job failed.
async fn job(
    copier: &Copier,
    source: &mut dyn CopyEnd,
    target: &mut dyn CopyEnd,
    first: Option<usize>,
    queue: &Mutex<VecDeque<usize>>,
    plan: &[Pair],
    failed: &AtomicBool,
) -> Result<Vec<(usize, TableMoved)>, TenantError> {
    let mut done = Vec::new();
    let mut first = first;
    loop {
        if failed.load(Ordering::Relaxed) {
            return Ok(done);
        }
        let next = first
            .take()
            .or_else(|| queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front());
        let Some(i) = next else { return Ok(done) };
        match copier
            .copy_table(source, target, &plan[i], plan.len())
            .await
        {
            Ok(m) => done.push((i, m)),
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
}

/// Step 5 with `--jobs N`: tables verified side by side, the first job on
/// `source`/`target`, one more per pair of `extra` (closed at the end), the
/// largest tables first; the tables whose source changed, in plan order.
/// A difference in one table fails the move; the other jobs stop at their
/// next table.
pub(super) async fn verify_all(
    source: &mut dyn CopyEnd,
    target: &mut dyn CopyEnd,
    mut extra: Sessions,
    plan: &[Pair],
    rules: &Rules,
    report: &MoveReport,
) -> Result<Vec<(usize, String)>, TenantError> {
    let mut order: Vec<(u64, usize)> = plan
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let rows = report
                .tables
                .iter()
                .find(|t| t.table == p.source.label())
                .map_or(0, |t| t.rows);
            (rows, i)
        })
        .collect();
    order.sort_by(|a, b| b.cmp(a));
    let queue: Arc<Mutex<VecDeque<usize>>> =
        Arc::new(Mutex::new(order.into_iter().map(|(_, i)| i).collect()));
    let shared = Arc::new((plan.to_vec(), *rules, report.clone()));
    let failed = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (mut s, mut t) in extra.drain(..) {
        let (queue, shared, failed) = (queue.clone(), shared.clone(), failed.clone());
        handles.push(tokio::spawn(async move {
            let (plan, rules, report) = &*shared;
            let r = verify_job(&mut *s, &mut *t, &queue, plan, rules, report, &failed).await;
            s.close().await;
            t.close().await;
            r
        }));
    }
    let (plan, rules, report) = &*shared;
    let mine = verify_job(source, target, &queue, plan, rules, report, &failed).await;
    let mut first_error = mine.as_ref().err().cloned();
    let mut changed = mine.unwrap_or_default();
    for h in handles {
        match h.await {
            Ok(Ok(c)) => changed.extend(c),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(TenantError::permanent(
                    FailureKind::Interrupted,
                    format!("a verification job stopped: {e}"),
                ));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    changed.sort_by_key(|(i, _)| *i);
    Ok(changed)
}

/// One verification job: tables from the queue until it is empty or a job
/// failed.
async fn verify_job(
    source: &mut dyn CopyEnd,
    target: &mut dyn CopyEnd,
    queue: &Mutex<VecDeque<usize>>,
    plan: &[Pair],
    rules: &Rules,
    report: &MoveReport,
    failed: &AtomicBool,
) -> Result<Vec<(usize, String)>, TenantError> {
    let mut changed = Vec::new();
    loop {
        if failed.load(Ordering::Relaxed) {
            return Ok(changed);
        }
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        let Some(i) = next else { return Ok(changed) };
        match verify_table(source, target, plan, i, rules, report).await {
            Ok(Some(c)) => changed.push(c),
            Ok(None) => {}
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
}
