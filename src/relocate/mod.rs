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
//! Steps 4 and 5 are `transfer`'s; the registry switch is `registry`'s.
//! The source tenant's own lock is held throughout, so no migration and no
//! second move of it runs meanwhile.

pub mod registry;
mod transfer;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::dialect::copy::{self, CopyEnd, Table};
use crate::dialect::{Access, Connector};
use crate::error::{Error, TenantError};
use crate::event::{Bus, Event, Subscriber, TenantStatus};
use crate::migration::MigrationSet;
use crate::rollout::context::Cancel;
use crate::state::StateStore;
use crate::tenant::{Locator, Tenant};
use transfer::{copy_all, pair, verify};

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
    let r = prepare(connector, set, tenant, &to).await;
    let (mut source, mut target, tables, version) = match r {
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
        restarted: false,
        registry_backup: None,
        source_dropped: false,
    };
    // the claim on the target (one copying move per target), then, under
    // it, whether the target is empty or this tenant's to refill
    let claimed = async {
        store
            .move_started(&id, &report.tenant, &report.source, &report.target, version)
            .await?;
        match target_is_ours(connector, &mut *target, store, tenant, &to).await {
            Ok(restarted) => Ok(restarted),
            Err(e) => {
                store.move_refused(&id).await?;
                Err(e)
            }
        }
    }
    .await;
    match claimed {
        Ok(restarted) => report.restarted = restarted,
        Err(e) => {
            source.close().await;
            target.close().await;
            lock.close().await;
            return Err(e);
        }
    }
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
    // verified: switch the registry row, record the move, then drop the
    // source if asked, still under its lock
    if let Some(path) = &opts.registry {
        match registry::relocate(
            path,
            &tenant.id,
            &opts.to_text,
            opts.to_schema.as_deref(),
            &id,
        ) {
            Ok(backup) => report.registry_backup = Some(backup.display().to_string()),
            Err(e) => {
                lock.close().await;
                let why = format!("the copy is verified, but the registry was not switched: {e}");
                report.status = "failed".into();
                report.error = Some(why.clone());
                report.duration_ms = started.elapsed().as_millis() as u64;
                let tables = serde_json::to_string(&report.tables).unwrap_or_default();
                store
                    .move_finished(&id, "failed", report.rows, &tables, Some(&why))
                    .await?;
                return Ok(report);
            }
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    let tables = serde_json::to_string(&report.tables).unwrap_or_default();
    store
        .move_finished(&id, "done", report.rows, &tables, None)
        .await?;
    if opts.drop_source {
        match copy::drop_tenant(&connector.settings, &tenant.locator).await {
            Ok(()) => report.source_dropped = true,
            Err(e) => {
                report.error = Some(format!(
                    "the move is done, but the source was not dropped: {}",
                    e.message
                ))
            }
        }
    }
    lock.close().await;
    Ok(report)
}

type Prepared = (Box<dyn CopyEnd>, Box<dyn CopyEnd>, Vec<Table>, i64);

/// Step 1 and the start of 2: the source's version and tables (refused when
/// they cannot be carried), and the target, created where missing.
async fn prepare(
    connector: &Connector,
    set: &MigrationSet,
    tenant: &Tenant,
    to: &Locator,
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
    // the target gets every migration up to `version`: so must the source have
    if let Some(m) = set
        .migrations
        .iter()
        .filter(|m| m.version < version)
        .find(|m| !history.iter().any(|h| h.version == m.version))
    {
        return Err(usage(format!(
            "it skipped version {} below its version {version}: the target would not be the same",
            m.version
        )));
    }
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
    let target = match copy::open(&connector.settings, to, true).await {
        Ok(t) => t,
        Err(e) => {
            source.close().await;
            return Err(te(e));
        }
    };
    Ok((source, target, tables, version))
}

/// Step 2, under the claim: the target holds nothing, or what an
/// unfinished move of this tenant left there (true: it is refilled).
async fn target_is_ours(
    connector: &Connector,
    target: &mut dyn CopyEnd,
    store: &StateStore,
    tenant: &Tenant,
    to: &Locator,
) -> Result<bool, Error> {
    let usage = |m: String| Error::Usage(format!("move {}: {m}", tenant.id));
    let held = target.tables().await.map_err(|e| usage(e.message))?;
    // its history, read as any tenant's is
    let there = Tenant {
        id: tenant.id.clone(),
        locator: to.clone(),
        tags: Default::default(),
    };
    let mut session = connector
        .open(&there, Access::Read)
        .await
        .map_err(|e| usage(e.message))?;
    let history = session.history().await.map(|h| h.len());
    session.close().await;
    let history = history.map_err(|e| usage(e.message))?;
    if held.is_empty() && history == 0 {
        return Ok(false);
    }
    if store
        .unfinished_moves(tenant.id.as_str(), &to.redacted())
        .await?
        > 0
    {
        return Ok(true);
    }
    let names: Vec<&str> = held.iter().map(|t| t.name.as_str()).take(5).collect();
    Err(usage(format!(
        "the target {} is not empty ({} tables: {}; {history} history rows); \
         fleetmig moves into a new or empty place only",
        to.redacted(),
        held.len(),
        names.join(", ")
    )))
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
