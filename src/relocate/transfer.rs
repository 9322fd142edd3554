//! Steps 4 and 5 of a move: the source's tables paired with the target's
//! (parents first), the rows copied from one snapshot, every value
//! converted to what the column it lands in holds (`copy::convert`), then
//! the target and the source checked against the snapshot: the target's
//! rows as the target holds them, read back, against the source's rows as
//! converted, each side in its own reading. A mismatch is looked for row
//! by row, and named by table, key and column.

use crate::error::FailureKind;
use std::collections::HashMap;
use std::time::Instant;

use super::{MoveOptions, MoveReport, TableMoved};
use crate::dialect::copy::{Checksum, CopyEnd, Rules, Table, Value, convert};
use crate::error::TenantError;
use crate::event::{Bus, Event};
use crate::rollout::context::Cancel;

/// A source table and the target table it fills: the target's columns in
/// the source's order (the target's kinds and specs), its key.
#[derive(Clone)]
pub(super) struct Pair {
    pub(super) source: Table,
    pub(super) target: Table,
}

/// Pairs every source table with the target's; a table or a column the
/// target lacks, or a column it cannot fill, is an error (the set's
/// variants disagree). Parents first.
pub(super) fn pair(sources: &[Table], targets: &[Table]) -> Result<Vec<Pair>, TenantError> {
    let mut pairs = Vec::new();
    let mismatch = |m: String| TenantError::permanent(FailureKind::SchemaMismatch, m);
    for s in sources {
        let Some(t) = targets.iter().find(|t| t.is(&s.schema, &s.name)) else {
            return Err(mismatch(match &s.schema {
                Some(schema) if !targets.iter().any(|t| t.schema.as_ref() == Some(schema)) => {
                    format!(
                        "the tenant's schema {schema} (table {}) has no place in the target: only a \
                     PostgreSQL database holds several schemas, and its migrations must create it",
                        s.label()
                    )
                }
                _ => format!("the target has no table {} after its migrations", s.label()),
            }));
        };
        let mut columns = Vec::new();
        for c in &s.columns {
            let Some(tc) = t.column(&c.name) else {
                return Err(mismatch(format!(
                    "the target's table {} has no column {}",
                    s.label(),
                    c.name
                )));
            };
            if tc.kind.is_none() {
                return Err(TenantError::permanent(
                    FailureKind::UnsupportedType,
                    format!(
                        "the target's column {}.{} has type {}, which fleetmig cannot fill",
                        s.label(),
                        c.name,
                        tc.type_name
                    ),
                ));
            }
            if tc.kind == Some(crate::dialect::copy::Kind::Json)
                && tc.spec.json == crate::dialect::copy::value::JsonStore::Lossy
            {
                return Err(TenantError::permanent(
                    FailureKind::UnsupportedType,
                    format!(
                        "the target's column {}.{} is MySQL JSON, which keeps numbers as doubles: \
                         fleetmig does not fill it (it carries values exactly)",
                        s.label(),
                        c.name
                    ),
                ));
            }
            columns.push(tc.clone());
        }
        pairs.push(Pair {
            source: s.clone(),
            target: Table {
                columns,
                // the source's key, as indexes among the source's columns
                key: s.key.clone(),
                ..t.clone()
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
            p.target.foreign_keys.iter().all(|fk| {
                let (rs, r) = &fk.parent;
                p.target.is(rs, r)
                    || out.iter().any(|o| o.target.is(rs, r))
                    || !pairs.iter().any(|q| q.target.is(rs, r))
            })
        });
        out.push(pairs.remove(ready.unwrap_or(0)));
    }
    out
}

/// The key as a person reads it: `id=42` or `a='x', b=3`.
fn key_text(row: &[Value], t: &Table) -> String {
    t.key
        .iter()
        .map(|&i| format!("{}={}", t.columns[i].name, row[i].shown()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A source row converted into what the target's columns hold.
fn converted(row: Vec<Value>, p: &Pair, rules: &Rules) -> Result<Vec<Value>, TenantError> {
    let key = key_text(&row, &p.source);
    row.into_iter()
        .zip(&p.target.columns)
        .map(|(v, c)| {
            convert(v, c, rules).map_err(|m| {
                TenantError::permanent(
                    FailureKind::UnsupportedValue,
                    format!("{}.{} at {key}: {m}", p.source.label(), c.name),
                )
            })
        })
        .collect()
}

/// What the copy of one table works with.
#[derive(Clone)]
pub(super) struct Copier {
    pub bus: Bus,
    pub opts: MoveOptions,
    pub cancel: Cancel,
    /// Tables done, for the progress display (several jobs count here).
    pub done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Copier {
    /// Step 4: empty the target's tables (children first), copy every
    /// table from one snapshot, set the sequences.
    pub(super) async fn copy_all(
        &self,
        source: &mut dyn CopyEnd,
        target: &mut dyn CopyEnd,
        plan: &[Pair],
        report: &mut MoveReport,
    ) -> Result<(), TenantError> {
        let children_first: Vec<&Table> = plan.iter().rev().map(|p| &p.target).collect();
        target.clear(&children_first).await?;
        source.snapshot().await?;
        for p in plan {
            let moved = self.copy_table(source, target, p, plan.len()).await?;
            report.rows += moved.rows;
            report.tables.push(moved);
        }
        source.release().await?;
        self.bus.emit(Event::MoveProgress {
            table: String::new(),
            tables_done: plan.len(),
            tables: plan.len(),
            rows: report.rows,
        });
        Ok(())
    }

    /// The tables of `changed` copied again from a source whose writes are
    /// held (`--freeze-source`): emptied, filled, their foreign keys checked.
    pub(super) async fn recopy(
        &self,
        source: &mut dyn CopyEnd,
        target: &mut dyn CopyEnd,
        plan: &[Pair],
        changed: &[usize],
        target_tables: &[Table],
        report: &mut MoveReport,
    ) -> Result<(), TenantError> {
        let all: Vec<&Table> = target_tables.iter().collect();
        target.quiet(&all).await?;
        let r = async {
            let emptied: Vec<&Table> = changed.iter().rev().map(|&i| &plan[i].target).collect();
            target.clear(&emptied).await?;
            for &i in changed {
                let label = plan[i].source.label();
                if let Some(t) = report.tables.iter().position(|t| t.table == label) {
                    let old = report.tables.remove(t);
                    report.rows -= old.rows;
                }
                let moved = self
                    .copy_table(source, target, &plan[i], plan.len())
                    .await?;
                report.rows += moved.rows;
                report.tables.push(moved);
                report.recopied.push(label);
            }
            foreign_keys(&mut *target, target_tables).await
        }
        .await;
        let restored = target.restore().await;
        r?;
        restored
    }

    /// One table, read as one stream from the snapshot, each row
    /// converted for the target and summed; batches written while the next
    /// are read. The server's digest of the table is taken first, in the
    /// same snapshot (`verify` compares it with the source's later one).
    pub(super) async fn copy_table(
        &self,
        source: &mut dyn CopyEnd,
        target: &mut dyn CopyEnd,
        p: &Pair,
        total: usize,
    ) -> Result<TableMoved, TenantError> {
        let opts = &self.opts;
        let n = self.done.load(std::sync::atomic::Ordering::Relaxed);
        let t0 = Instant::now();
        let digest = source.digest(&p.source).await?;
        let mut sum = Checksum::default();
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Vec<Value>>>(2);
        let read = async {
            let r = source.scan(&p.source, opts.batch_rows, &tx).await;
            drop(tx);
            r
        };
        let write = async {
            // owned here: a refusal drops it, and the read stops
            let mut rx = rx;
            let (mut written, mut bytes) = (0u64, 0u64);
            while let Some(rows) = rx.recv().await {
                let mut batch = Vec::with_capacity(rows.len());
                for row in rows {
                    let row = converted(row, p, &opts.rules)?;
                    sum.add(&row);
                    bytes += row.iter().map(Value::size).sum::<u64>();
                    batch.push(row);
                }
                target.insert(&p.target, &batch).await?;
                written += batch.len() as u64;
                self.bus.emit(Event::MoveProgress {
                    table: p.source.label(),
                    tables_done: n,
                    tables: total,
                    rows: sum.rows,
                });
                if self.cancel.is_cancelled() {
                    return Err(TenantError::permanent(
                        FailureKind::Interrupted,
                        "interrupted during the copy (run the move again: it continues into its marked target)",
                    ));
                }
                if !opts.pause.is_zero() {
                    tokio::time::sleep(opts.pause).await;
                }
            }
            Ok::<_, TenantError>((written, bytes))
        };
        let (read, written) = tokio::join!(read, write);
        // a refused value ends the write first, and with it the read
        let (written, bytes) = written?;
        read?;
        debug_assert_eq!(written, sum.rows);
        // the stream read every row the snapshot holds
        let held = source.count(&p.source).await?;
        if held != sum.rows {
            return Err(TenantError::permanent(
                FailureKind::CopyIncomplete,
                format!(
                    "table {}: the read gave {} of its {held} rows; nothing was switched",
                    p.source.label(),
                    sum.rows
                ),
            ));
        }
        let next = source.next_id(&p.source).await?;
        target.finish_table(&p.target, next).await?;
        self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(TableMoved {
            table: p.source.label(),
            rows: sum.rows,
            bytes,
            checksum: sum.text(),
            digest,
            ms: t0.elapsed().as_millis() as u64,
        })
    }
}

/// After the copy: every foreign key of the target's tables finds its
/// parent rows (one query per key), or the move fails naming the key and a
/// row.
pub(super) async fn foreign_keys(
    target: &mut dyn CopyEnd,
    tables: &[Table],
) -> Result<(), TenantError> {
    for t in tables {
        for fk in &t.foreign_keys {
            if let Some(row) = target.orphan(t, fk).await? {
                return Err(TenantError::permanent(
                    FailureKind::ForeignKeyViolation,
                    format!(
                        "foreign key {} of {}: the row {row} references {} ({}) where no row has those values",
                        fk.name,
                        t.label(),
                        match &fk.parent.0 {
                            Some(s) => format!("{s}.{}", fk.parent.1),
                            None => fk.parent.1.clone(),
                        },
                        fk.parent_columns.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Every row of `t` from `end`, each passed to `each` (converted for the
/// target when `p` is given).
async fn each_row(
    end: &mut dyn CopyEnd,
    t: &Table,
    p: Option<(&Pair, &Rules)>,
    mut each: impl FnMut(Vec<Value>),
) -> Result<(), TenantError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Vec<Value>>>(2);
    let read = async {
        let r = end.scan(t, 5000, &tx).await;
        drop(tx);
        r
    };
    let take = async {
        // owned here: a refusal drops it, and the read stops
        let mut rx = rx;
        while let Some(rows) = rx.recv().await {
            for row in rows {
                each(match p {
                    Some((p, rules)) => converted(row, p, rules)?,
                    None => row,
                });
            }
        }
        Ok::<_, TenantError>(())
    };
    let (read, took) = tokio::join!(read, take);
    took?;
    read.map(|_| ())
}

/// Step 5: the target as it holds the rows against the snapshot (a
/// difference fails the move, named), then the source now, converted,
/// against the snapshot: the tables written to since (their index in the
/// plan, and what changed).
pub(super) async fn verify(
    source: &mut dyn CopyEnd,
    target: &mut dyn CopyEnd,
    plan: &[Pair],
    rules: &Rules,
    report: &MoveReport,
) -> Result<Vec<(usize, String)>, TenantError> {
    let mut changed = Vec::new();
    for i in 0..plan.len() {
        if let Some(c) = verify_table(source, target, plan, i, rules, report).await? {
            changed.push(c);
        }
    }
    Ok(changed)
}

/// `verify` of table `i` of `plan`: `Some` when the source changed.
pub(super) async fn verify_table(
    source: &mut dyn CopyEnd,
    target: &mut dyn CopyEnd,
    plan: &[Pair],
    i: usize,
    rules: &Rules,
    report: &MoveReport,
) -> Result<Option<(usize, String)>, TenantError> {
    let p = &plan[i];
    let Some(want) = report.tables.iter().find(|t| t.table == p.source.label()) else {
        return Err(TenantError::permanent(
            FailureKind::CopyIncomplete,
            format!("table {} was not copied", p.source.label()),
        ));
    };
    let (mut got, mut now) = (Checksum::default(), Checksum::default());
    // the target read back, and the source as it is now (its server's
    // digest where it has one, else its rows converted), side by side
    let source_now = async {
        if let Some(then) = &want.digest {
            let same = source.digest(&p.source).await?.as_ref() == Some(then);
            // a digest of the whole file that changed says nothing of
            // this table: its rows tell
            if same || source.digest_is_per_table() {
                return Ok::<_, TenantError>(!same);
            }
        }
        each_row(&mut *source, &p.source, Some((p, rules)), |r| now.add(&r)).await?;
        Ok(now.text() != want.checksum)
    };
    let (a, moved) = tokio::join!(
        each_row(&mut *target, &p.target, None, |r| got.add(&r)),
        source_now
    );
    a?;
    let moved: bool = moved?;
    let rows = target.count(&p.target).await?;
    if rows != want.rows || got.text() != want.checksum {
        let at = if !moved {
            first_difference(source, target, p, rules).await?
        } else {
            "(the source changed too)".to_string()
        };
        return Err(TenantError::permanent(
            FailureKind::MoveVerificationFailed,
            format!(
                "table {}: the target holds {} rows (checksum {}), the source's snapshot {} ({}); {at}",
                p.source.label(),
                rows,
                got.text(),
                want.rows,
                want.checksum
            ),
        ));
    }
    if moved {
        let now_rows = source.count(&p.source).await?;
        return Ok(Some((
            i,
            format!(
                "{} ({} rows when copied, {now_rows} now{})",
                p.source.label(),
                want.rows,
                if now_rows == want.rows {
                    ", rows changed"
                } else {
                    ""
                }
            ),
        )));
    }
    Ok(None)
}

/// The failure of a move whose source was written to during the copy.
pub(super) fn source_changed(changed: &[(usize, String)]) -> TenantError {
    let names: Vec<&str> = changed.iter().map(|(_, d)| d.as_str()).collect();
    TenantError::permanent(
        FailureKind::SourceChanged,
        format!(
            "the source was written to during the copy: {}; the registry was not switched. Run the \
             move again when writes to the tenant are stopped, or with --freeze-source (writes wait \
             while the changed tables are copied again and the registry is switched)",
            names.join(", ")
        ),
    )
}

/// The first row (in the source's key order) where the target differs from
/// the source, as `at key id=42, column name: the target holds …`.
async fn first_difference(
    source: &mut dyn CopyEnd,
    target: &mut dyn CopyEnd,
    p: &Pair,
    rules: &Rules,
) -> Result<String, TenantError> {
    // the target's rows by key: each column's canonical text
    let mut held: HashMap<String, Vec<String>> = HashMap::new();
    each_row(&mut *target, &p.target, None, |r| {
        held.insert(
            key_text(&r, &p.target),
            r.iter().map(Value::canonical).collect(),
        );
    })
    .await?;
    let mut found: Option<String> = None;
    each_row(&mut *source, &p.source, Some((p, rules)), |r| {
        if found.is_some() {
            return;
        }
        let key = key_text(&r, &p.target);
        match held.remove(&key) {
            None => found = Some(format!("the target has no row at key {key}")),
            Some(cols) => {
                if let Some((i, v)) = r.iter().enumerate().find(|(i, v)| v.canonical() != cols[*i]) {
                    found = Some(format!(
                        "first difference at key {key}, column {}: the source gives {}, the target holds {}",
                        p.target.columns[i].name,
                        v.shown(),
                        cols[i].chars().skip(1).take(40).collect::<String>()
                    ));
                }
            }
        }
    })
    .await?;
    Ok(found.unwrap_or_else(|| match held.keys().next() {
        Some(k) => format!("the target has a row at key {k} that the source has not"),
        None => "no row differs now".to_string(),
    }))
}
