//! Steps 4 and 5 of a move: the source's tables paired with the target's
//! (parents first), the rows copied from one snapshot with every value
//! coerced to the kind of the column it lands in, then the target and the
//! source checked against the snapshot's checksums.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{MoveOptions, MoveReport, TableMoved};
use crate::dialect::copy::{Checksum, CopyEnd, Table, Value};
use crate::error::TenantError;
use crate::event::{Bus, Event};
use crate::rollout::context::Cancel;

/// A source table and the target table it fills: the target's columns in
/// the source's order (the target's kinds and types), its key.
pub(super) struct Pair {
    source: Table,
    target: Table,
}

/// Pairs every source table with the target's; a table or a column the
/// target lacks is an error (the set's variants disagree). Parents first.
pub(super) fn pair(sources: &[Table], targets: &[Table]) -> Result<Vec<Pair>, TenantError> {
    let mut pairs = Vec::new();
    for s in sources {
        let Some(t) = targets.iter().find(|t| t.name == s.name) else {
            return Err(TenantError::permanent(
                "schema_mismatch",
                format!("the target has no table {} after its migrations", s.name),
            ));
        };
        let mut columns = Vec::new();
        for c in &s.columns {
            let Some(tc) = t.column(&c.name) else {
                return Err(TenantError::permanent(
                    "schema_mismatch",
                    format!("the target's table {} has no column {}", s.name, c.name),
                ));
            };
            if tc.kind.is_none() {
                return Err(TenantError::permanent(
                    "unsupported_type",
                    format!(
                        "the target's column {}.{} has type {}, which fleetmig cannot fill",
                        s.name, c.name, tc.type_name
                    ),
                ));
            }
            columns.push(tc.clone());
        }
        // the target's key, as indexes among the source's columns
        let key: Vec<usize> = s.key.clone();
        pairs.push(Pair {
            source: s.clone(),
            target: Table {
                name: t.name.clone(),
                columns,
                key,
                refs: t.refs.clone(),
            },
        });
    }
    Ok(order(pairs))
}

/// Parents before the tables that reference them (a cycle keeps its order).
fn order(mut pairs: Vec<Pair>) -> Vec<Pair> {
    let mut out: Vec<Pair> = Vec::new();
    while !pairs.is_empty() {
        let ready = pairs.iter().position(|p| {
            p.target.refs.iter().all(|r| {
                r == &p.target.name
                    || out.iter().any(|o| &o.target.name == r)
                    || !pairs.iter().any(|q| &q.target.name == r)
            })
        });
        out.push(pairs.remove(ready.unwrap_or(0)));
    }
    out
}

/// The key of `row` in `t`, to page after it; a NULL in a key (SQLite
/// allows one outside INTEGER PRIMARY KEY) cannot be paged past.
fn key_of(row: &[Value], t: &Table) -> Result<Vec<Value>, TenantError> {
    t.key
        .iter()
        .map(|&i| match &row[i] {
            Value::Null => Err(TenantError::permanent(
                "null_key",
                format!(
                    "table {} has a NULL in its primary key column {}: fleetmig copies by key",
                    t.name, t.columns[i].name
                ),
            )),
            v => Ok(v.clone()),
        })
        .collect()
}

/// Coerces a source row into the target's kinds.
fn coerce(row: Vec<Value>, p: &Pair) -> Result<Vec<Value>, TenantError> {
    row.into_iter()
        .zip(&p.target.columns)
        .map(|(v, c)| {
            v.coerce(c.kind.expect("paired")).map_err(|m| {
                TenantError::permanent(
                    "unsupported_value",
                    format!("{}.{}: {m}", p.source.name, c.name),
                )
            })
        })
        .collect()
}

/// Step 4: empty the target's tables (children first), copy every table
/// from one snapshot, set the sequences.
#[allow(clippy::too_many_arguments)]
pub(super) async fn copy_all(
    source: &mut dyn CopyEnd,
    target: &mut dyn CopyEnd,
    plan: &[Pair],
    bus: &Bus,
    opts: &MoveOptions,
    cancel: &Cancel,
    report: &mut MoveReport,
) -> Result<(), TenantError> {
    let children_first: Vec<&Table> = plan.iter().rev().map(|p| &p.target).collect();
    target.clear(&children_first).await?;
    source.snapshot().await?;
    let total = plan.len();
    for (n, p) in plan.iter().enumerate() {
        let t0 = Instant::now();
        let mut sum = Checksum::default();
        let mut after: Option<Vec<Value>> = None;
        // the next page is read while the last one is written
        let mut written: Option<Vec<Vec<Value>>> = None;
        loop {
            let write = async {
                match written.take() {
                    Some(b) => target.insert(&p.target, &b).await.map(|_| b.len()),
                    None => Ok(0),
                }
            };
            let read = source.page(&p.source, after.as_deref(), opts.batch_rows);
            let (rows, wrote) = tokio::join!(read, write);
            report.rows += wrote? as u64;
            let rows = rows?;
            let Some(last) = rows.last() else { break };
            after = Some(key_of(last, &p.source)?);
            let full = rows.len() == opts.batch_rows;
            let mut batch = Vec::with_capacity(rows.len());
            for row in rows {
                let row = coerce(row, p)?;
                sum.add(&row);
                batch.push(row);
            }
            bus.emit(Event::MoveProgress {
                table: p.source.name.clone(),
                tables_done: n,
                tables: total,
                rows: sum.rows,
            });
            if !full {
                target.insert(&p.target, &batch).await?;
                report.rows += batch.len() as u64;
                break;
            }
            written = Some(batch);
            if cancel.is_cancelled() {
                return Err(TenantError::permanent(
                    "interrupted",
                    "interrupted during the copy (run the move again: it starts over)",
                ));
            }
            if !opts.pause.is_zero() {
                tokio::time::sleep(opts.pause).await;
            }
        }
        // paging by key read every row the snapshot holds
        let held = source.count(&p.source).await?;
        if held != sum.rows {
            return Err(TenantError::permanent(
                "copy_incomplete",
                format!(
                    "table {}: paging by its key read {} of its {held} rows; nothing was switched",
                    p.source.name, sum.rows
                ),
            ));
        }
        let next = source.next_id(&p.source).await?;
        target.finish_table(&p.target, next).await?;
        report.tables.push(TableMoved {
            table: p.source.name.clone(),
            rows: sum.rows,
            checksum: sum.text(),
            ms: t0.elapsed().as_millis() as u64,
        });
    }
    source.release().await?;
    bus.emit(Event::MoveProgress {
        table: String::new(),
        tables_done: total,
        tables: total,
        rows: report.rows,
    });
    Ok(())
}

/// Reads every row of `t` from `end` (in its own key order) and sums it in
/// the target's kinds.
async fn checksum(
    end: &mut dyn CopyEnd,
    read: &Table,
    p: &Pair,
    batch: usize,
) -> Result<Checksum, TenantError> {
    let mut sum = Checksum::default();
    let mut after: Option<Vec<Value>> = None;
    loop {
        let rows = end.page(read, after.as_deref(), batch).await?;
        let Some(last) = rows.last() else { break };
        after = Some(key_of(last, read)?);
        let full = rows.len() == batch;
        for row in rows {
            sum.add(&coerce(row, p)?);
        }
        if !full {
            break;
        }
    }
    Ok(sum)
}

/// Step 5: the target against the snapshot, then the source now against
/// the snapshot.
pub(super) async fn verify(
    source: &mut dyn CopyEnd,
    target: &mut dyn CopyEnd,
    plan: &[Pair],
    report: &MoveReport,
) -> Result<(), TenantError> {
    let copied: BTreeMap<&str, &TableMoved> = report
        .tables
        .iter()
        .map(|t| (t.table.as_str(), t))
        .collect();
    let batch = 5000;
    let mut changed = Vec::new();
    for p in plan {
        // the target and the source as it is now, read side by side
        let (got, now) = tokio::join!(
            checksum(&mut *target, &p.target, p, batch),
            checksum(&mut *source, &p.source, p, batch)
        );
        let (got, now) = (got?, now?);
        let want = copied[p.source.name.as_str()];
        let rows = target.count(&p.target).await?;
        if rows != want.rows {
            return Err(TenantError::permanent(
                "verification_failed",
                format!(
                    "table {}: the target has {rows} rows, the source's snapshot {}",
                    p.source.name, want.rows
                ),
            ));
        }
        if got.text() != want.checksum {
            return Err(TenantError::permanent(
                "verification_failed",
                format!(
                    "table {}: the target holds {} (rows:checksum), the source's snapshot {}",
                    p.source.name,
                    got.text(),
                    want.checksum
                ),
            ));
        }
        if now.text() != want.checksum {
            changed.push(format!(
                "{} ({} rows when copied, {} now{})",
                p.source.name,
                want.rows,
                now.rows,
                if now.rows == want.rows {
                    ", rows changed"
                } else {
                    ""
                }
            ));
        }
    }
    if !changed.is_empty() {
        return Err(TenantError::permanent(
            "source_changed",
            format!(
                "the source was written to during the copy: {}; the registry was not switched, \
                 run the move again when writes to the tenant are stopped",
                changed.join(", ")
            ),
        ));
    }
    Ok(())
}
