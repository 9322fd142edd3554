//! Moving a tenant to another server or database system (`fleetmig move`).
//!
//! 1. The source's history says its version; every column of every table
//!    must be of a type fleetmig can carry, and every table must have a
//!    primary key (the copy pages by key): otherwise nothing is touched.
//! 2. The target is created where missing (SQLite file, schema, database) and
//!    must hold nothing, unless it is the half-filled target of an earlier
//!    move of this tenant that did not finish (the state store says so).
//! 3. The target is brought to the source's version with the same migration
//!    set (its dialect variants: that is what makes MySQL → PostgreSQL
//!    possible), by the same executor as any rollout; then its tables are
//!    emptied (rows a migration seeded are the source's to give).
//! 4. Rows are copied table by table (parents before children), a keyset
//!    page at a time, from one consistent snapshot of the source, each value
//!    coerced to the kind of the column it lands in.
//! 5. Verified: per table, row count and an order-independent checksum of
//!    the target's rows against the snapshot's; then the source is read again
//!    outside the snapshot, and a table that changed during the copy fails
//!    the move with what changed.
//! 6. Recorded in the state store; a registry fleet's row is rewritten to the
//!    new location (`registry::relocate`), the old file kept; the source is
//!    dropped only with `--drop-source`.
//!
//! The source tenant's own lock is held throughout, so no migration and no
//! second move of it runs meanwhile.

pub mod registry;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::dialect::copy::{self, Checksum, CopyEnd, Table, Value};
use crate::dialect::{Access, Connector};
use crate::error::{Error, TenantError};
use crate::event::{Bus, Event, Subscriber, TenantStatus};
use crate::migration::MigrationSet;
use crate::rollout::context::Cancel;
use crate::state::StateStore;
use crate::tenant::{Locator, Tenant};

/// How a move runs.
#[derive(Debug, Clone)]
pub struct MoveOptions {
    /// Rows per page read and per batch written.
    pub batch_rows: usize,
    /// A pause after each batch (to spare a busy source).
    pub pause: Duration,
    /// Drop the source after a verified copy.
    pub drop_source: bool,
    /// The registry file to rewrite, when the fleet is a registry.
    pub registry: Option<std::path::PathBuf>,
    /// The new location as the registry row should say it (`--to`).
    pub to_text: String,
    pub to_schema: Option<String>,
}

/// One table moved.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableMoved {
    pub table: String,
    pub rows: u64,
    pub checksum: String,
    pub ms: u64,
}

/// What a move did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MoveReport {
    pub format_version: u32,
    pub id: String,
    pub tenant: String,
    pub source: String,
    pub target: String,
    pub version: i64,
    /// `done` or `failed`.
    pub status: String,
    pub error: Option<String>,
    pub tables: Vec<TableMoved>,
    pub rows: u64,
    pub duration_ms: u64,
    /// The target was emptied and filled again after an interrupted move.
    pub restarted: bool,
    pub registry_backup: Option<String>,
    pub source_dropped: bool,
}

/// Moves `tenant` to `to`. Refusals before anything is touched are
/// `Error::Usage`; a move that fails after it started is reported (status
/// `failed`) and recorded, and the source stays as it was.
#[allow(clippy::too_many_arguments)]
pub async fn relocate(
    connector: &Connector,
    set: &Arc<MigrationSet>,
    store: &StateStore,
    bus: &Bus,
    tenant: &Tenant,
    to: Locator,
    opts: &MoveOptions,
    cancel: &Cancel,
) -> Result<MoveReport, Error> {
    let started = Instant::now();
    let usage = |m: String| Error::Usage(format!("move {}: {m}", tenant.id));
    let te = |e: TenantError| usage(e.message);
    if to.redacted() == tenant.locator.redacted() {
        return Err(usage(format!("{} is where it already is", to.redacted())));
    }
    // the source's lock, for the whole move
    let mut lock = connector.open(tenant, Access::Write).await.map_err(te)?;
    lock.lock().await.map_err(te)?;
    let r = prepare(connector, set, store, tenant, &to, opts).await;
    let (mut source, mut target, tables, version, restarted) = match r {
        Ok(p) => p,
        Err(e) => {
            lock.close().await;
            return Err(e);
        }
    };
    let id = crate::report::new_run_id();
    let mut report = MoveReport {
        format_version: 1,
        id: id.clone(),
        tenant: tenant.id.to_string(),
        source: tenant.locator.redacted(),
        target: to.redacted(),
        version,
        status: "done".into(),
        error: None,
        tables: Vec::new(),
        rows: 0,
        duration_ms: 0,
        restarted,
        registry_backup: None,
        source_dropped: false,
    };
    store
        .move_started(&id, &report.tenant, &report.source, &report.target, version)
        .await?;
    let copied = async {
        let t0 = Instant::now();
        migrate_target(connector, set, bus, tenant, &to, version).await?;
        tracing::info!(
            ms = t0.elapsed().as_millis() as u64,
            "move: target migrated"
        );
        // the target's tables as its migrations made them
        let mut target_tables = target.tables().await?;
        let plan = pair(&tables, &mut target_tables)?;
        let t0 = Instant::now();
        copy_all(
            &mut *source,
            &mut *target,
            &plan,
            bus,
            opts,
            cancel,
            &mut report,
        )
        .await?;
        tracing::info!(
            rows = report.rows,
            ms = t0.elapsed().as_millis() as u64,
            "move: copied"
        );
        let t0 = Instant::now();
        let verified = verify(&mut *source, &mut *target, &plan, &report).await;
        tracing::info!(ms = t0.elapsed().as_millis() as u64, "move: verified");
        verified
    }
    .await;
    source.close().await;
    target.close().await;
    if let Err(e) = copied {
        lock.close().await;
        report.status = "failed".into();
        report.error = Some(e.message.clone());
        report.duration_ms = started.elapsed().as_millis() as u64;
        let tables = serde_json::to_string(&report.tables).unwrap_or_default();
        store
            .move_finished(&id, "failed", report.rows, &tables, Some(&e.message))
            .await?;
        return Ok(report);
    }
    if let Some(path) = &opts.registry {
        let backup = registry::relocate(
            path,
            &tenant.id,
            &opts.to_text,
            opts.to_schema.as_deref(),
            &id,
        )?;
        report.registry_backup = Some(backup.display().to_string());
    }
    lock.close().await;
    if opts.drop_source {
        copy::drop_tenant(&connector.settings, &tenant.locator)
            .await
            .map_err(|e| {
                usage(format!(
                    "the copy is verified, but the source was not dropped: {}",
                    e.message
                ))
            })?;
        report.source_dropped = true;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    let tables = serde_json::to_string(&report.tables).unwrap_or_default();
    store
        .move_finished(&id, "done", report.rows, &tables, None)
        .await?;
    Ok(report)
}

type Prepared = (Box<dyn CopyEnd>, Box<dyn CopyEnd>, Vec<Table>, i64, bool);

/// Steps 1 and 2: the source's version and tables (refused when they
/// cannot be carried), and the target, created, empty or ours to refill.
async fn prepare(
    connector: &Connector,
    set: &MigrationSet,
    store: &StateStore,
    tenant: &Tenant,
    to: &Locator,
    _opts: &MoveOptions,
) -> Result<Prepared, Error> {
    let usage = |m: String| Error::Usage(format!("move {}: {m}", tenant.id));
    let te = |e: TenantError| usage(e.message);
    let mut s = connector.open(tenant, Access::Read).await.map_err(te)?;
    let history = s.history().await.map_err(te);
    s.close().await;
    let history = history?;
    if let Some(h) = history.iter().find(|h| !h.success) {
        return Err(usage(format!(
            "its history has version {} not applied cleanly (dirty): fix the source first",
            h.version
        )));
    }
    let version = history.iter().map(|h| h.version).max().unwrap_or(0);
    if let Some(h) = history.iter().find(|h| set.get(h.version).is_none()) {
        return Err(usage(format!(
            "it applied version {} that the migration set does not have",
            h.version
        )));
    }
    let mut source = copy::open(&connector.settings, &tenant.locator, false)
        .await
        .map_err(te)?;
    let tables = match source.tables().await {
        Ok(t) => t,
        Err(e) => {
            source.close().await;
            return Err(te(e));
        }
    };
    let mut problems = Vec::new();
    for t in &tables {
        for c in t.columns.iter().filter(|c| c.kind.is_none()) {
            problems.push(format!(
                "column {}.{} has type {}, which fleetmig cannot carry",
                t.name, c.name, c.type_name
            ));
        }
        if t.key.is_empty() {
            problems.push(format!(
                "table {} has no primary key (the copy pages by key)",
                t.name
            ));
        }
    }
    if !problems.is_empty() {
        source.close().await;
        return Err(usage(format!("nothing was moved: {}", problems.join("; "))));
    }
    let mut target = match copy::open(&connector.settings, to, true).await {
        Ok(t) => t,
        Err(e) => {
            source.close().await;
            return Err(te(e));
        }
    };
    let checked = async {
        let held = target.tables().await?;
        let history = target.history_rows().await?;
        Ok::<_, TenantError>((held, history))
    }
    .await;
    let (held, history) = match checked {
        Ok(x) => x,
        Err(e) => {
            source.close().await;
            target.close().await;
            return Err(te(e));
        }
    };
    let mut restarted = false;
    if !held.is_empty() || history > 0 {
        let ours = store
            .unfinished_moves(tenant.id.as_str(), &to.redacted())
            .await?;
        if ours == 0 {
            source.close().await;
            target.close().await;
            let names: Vec<&str> = held.iter().map(|t| t.name.as_str()).take(5).collect();
            return Err(usage(format!(
                "the target {} is not empty ({} tables: {}; {history} history rows); \
                 fleetmig moves into a new or empty place only",
                to.redacted(),
                held.len(),
                names.join(", ")
            )));
        }
        restarted = true;
    }
    Ok((source, target, tables, version, restarted))
}

/// Step 3: the target brought to `version` by the executor, with the same
/// set; the outcome comes back as the tenant's finish event.
async fn migrate_target(
    connector: &Connector,
    set: &Arc<MigrationSet>,
    bus: &Bus,
    tenant: &Tenant,
    to: &Locator,
    version: i64,
) -> Result<(), TenantError> {
    #[derive(Default)]
    struct Outcome(Mutex<Option<(TenantStatus, Option<TenantError>)>>);
    impl Subscriber for Outcome {
        fn on_event(&self, e: &Event) {
            if let Event::TenantFinished(o) = e {
                *self.0.lock().expect("outcome") = Some((o.status, o.error.clone()));
            }
        }
    }
    if version == 0 {
        return Ok(());
    }
    let outcome = Arc::new(Outcome::default());
    let target = Tenant {
        id: tenant.id.clone(),
        locator: to.clone(),
        tags: tenant.tags.clone(),
    };
    let mut settings = connector.settings.clone();
    settings.create_missing = true;
    let opts = crate::options::ExecOptions {
        concurrency: 1,
        per_server: 1,
        target: Some(version),
        ..Default::default()
    };
    let executor = crate::rollout::executor::Executor {
        connector: Arc::new(Connector::new(settings)),
        fanout: Arc::new(crate::fanout::Fanout::new(1, 1)),
        set: set.clone(),
        opts,
        bus: bus.with(outcome.clone()),
        cancel: Default::default(),
        failures: Default::default(),
        earlier: Default::default(),
        journal: None,
    };
    executor.run("move", vec![target]).await;
    let got = outcome.0.lock().expect("outcome").take();
    match got {
        Some((TenantStatus::Succeeded | TenantStatus::UpToDate, _)) => Ok(()),
        Some((_, Some(e))) => Err(TenantError {
            message: format!("bringing the target to version {version}: {}", e.message),
            ..e
        }),
        other => Err(TenantError::permanent(
            "interrupted",
            format!(
                "bringing the target to version {version} did not finish ({:?})",
                other.map(|o| o.0)
            ),
        )),
    }
}

/// A source table and the target table it fills: the target's columns in
/// the source's order (the target's kinds and types), its key.
struct Pair {
    source: Table,
    target: Table,
}

/// Pairs every source table with the target's; a table or a column the
/// target lacks is an error (the set's variants disagree). Parents first.
fn pair(sources: &[Table], targets: &mut [Table]) -> Result<Vec<Pair>, TenantError> {
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
async fn copy_all(
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
            after = Some(p.source.key.iter().map(|&i| last[i].clone()).collect());
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
        target.finish_table(&p.target).await?;
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
        after = Some(read.key.iter().map(|&i| last[i].clone()).collect());
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
async fn verify(
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
