//! Moving a tenant to another server or database system (`fleetmig move`).
//!
//! 1. The source's history says its version; every column of every table
//!    must be of a type fleetmig can carry, and every table must have a
//!    primary key (a difference is named by its key): otherwise nothing is
//!    touched.
//! 2. The target must be the move's own (`target`): not the source, not any
//!    tenant's location, its tables fillable (read from a scratch target
//!    migrated with the set before the real one exists); then, under the
//!    state store's claim (one copying move per target), it is created, or
//!    proven empty, or proven the half-filled target of this tenant's
//!    unfinished move, and marked with the move's id.
//! 3. The target is brought to the source's version with the same migration
//!    set (its dialect variants: that is what makes MySQL → PostgreSQL
//!    possible), by the same executor as any rollout; then its tables are
//!    emptied (rows a migration seeded are the source's to give).
//! 4. Rows are copied table by table (`--jobs` side by side), each table
//!    read as one stream from one consistent snapshot of the source, each value
//!    converted to what the column it lands in holds.
//! 5. Verified: per table, row count and an order-independent checksum of
//!    the target's rows against the snapshot's; then the source is read again
//!    outside the snapshot, and a table that changed during the copy fails
//!    the move with what changed.
//! 6. A registry fleet's row is rewritten to the new location
//!    (`registry::relocate`), the old file kept; the mark is removed and the
//!    move recorded done; the source is dropped only with `--drop-source`.
//!
//! A move that fails removes a target it created; a target it found is left
//!    marked, so that running the move again continues it. Steps 4 and 5 are
//! `transfer`'s; the registry switch is `registry`'s. The source tenant's own
//! lock is held throughout, so no migration and no second move of it runs
//! meanwhile.

pub mod bulk;
mod parallel;
pub mod registry;
mod source;
mod target;
mod transfer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dialect::copy::{self, CopyEnd, Created, Mark, Table};
use crate::dialect::{Access, Connector, Session};
use crate::error::{Error, TenantError};
use crate::event::Bus;
use crate::migration::{Applied, MigrationSet};
use crate::rollout::context::Cancel;
use crate::state::StateStore;
pub use crate::state::moves::{MoveReport, MoveStatus, TableMoved};
use crate::tenant::{Locator, Tenant};
use source::{carried, source_version};
use target::Claimed;
use transfer::{pair, verify};

/// A refusal of the move of `tenant`, before anything was touched.
fn refused(tenant: &Tenant, m: String) -> Error {
    Error::usage(crate::error::About::Move(tenant.id.to_string()), m)
}

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
    /// How values the target cannot hold are treated (`--zero-dates`).
    pub rules: copy::Rules,
    /// Hold writes to the source from the final verification to the
    /// registry switch (`--freeze-source`).
    pub freeze_source: bool,
    /// Tables copied side by side (`--jobs`); 1 into a SQLite file.
    pub jobs: usize,
    /// Where the move writes its report itself, verified, before the
    /// registry switch (a move rollout's `moves/`): a process killed right
    /// after the switch leaves it said.
    pub report_dir: Option<std::path::PathBuf>,
}

/// What a move knows of its two ends once the source is locked.
struct Known<'k> {
    tenant: &'k Tenant,
    to: &'k Locator,
    /// The source's `Place::key` (what the target's mark names).
    source_key: &'k str,
    target_place: &'k copy::Place,
    history: &'k [Applied],
    version: i64,
}

/// What a move works with.
pub struct Mover<'a> {
    pub connector: &'a Connector,
    pub set: &'a Arc<MigrationSet>,
    pub store: &'a StateStore,
    pub bus: &'a Bus,
    /// Every tenant of the fleet: none of their places is a target.
    pub fleet: &'a [Tenant],
    pub opts: &'a MoveOptions,
    pub cancel: &'a Cancel,
}

impl Mover<'_> {
    /// Moves `tenant` to `to`. Refusals before anything is touched are
    /// errors (`Usage`, exit 2; `Busy`, exit 4); a move that fails after it
    /// started is reported (status `failed`) and recorded, and the source
    /// stays as it was.
    pub async fn run(&self, tenant: &Tenant, to: Locator) -> Result<MoveReport, Error> {
        // a lock timeout or a lost connection is another process's (or the
        // network's) moment: Busy, tried again later; the rest is for a person
        let te = |e: TenantError| match e.is_transient() {
            true => Error::Busy(format!(
                "move {}: the tenant could not be locked or reached for now: {}",
                tenant.id, e.message
            )),
            false => refused(tenant, e.message),
        };
        // the source's lock, for the whole move
        let mut lock = self
            .connector
            .open(tenant, Access::Write)
            .await
            .map_err(te)?;
        if let Err(e) = lock.lock().await {
            lock.close().await;
            return Err(te(e));
        }
        let r = self.locked(tenant, to, &mut *lock).await;
        lock.close().await;
        let mut report = r?;
        if report.status == MoveStatus::Done && self.opts.drop_source {
            // a database is dropped from outside it: the lock's session is gone
            match copy::drop_tenant(&self.connector.settings, &tenant.locator).await {
                Ok(()) => report.source_dropped = true,
                Err(e) => {
                    report.error = Some(format!(
                        "the move is done, but the source was not dropped: {}",
                        e.message
                    ))
                }
            }
        }
        Ok(report)
    }

    async fn locked(
        &self,
        tenant: &Tenant,
        to: Locator,
        lock: &mut dyn Session,
    ) -> Result<MoveReport, Error> {
        let started = Instant::now();
        let (source_place, target_place) =
            target::places(self.connector, self.fleet, tenant, &to).await?;
        let (history, version) = source_version(self.set, tenant, lock).await?;
        let mut source = copy::open(&self.connector.settings, &tenant.locator)
            .await
            .map_err(|e| refused(tenant, e.message))?;
        let known = Known {
            tenant,
            to: &to,
            source_key: &source_place.key,
            target_place: &target_place,
            history: &history,
            version,
        };
        // the one session on the source, closed on every way out
        let r = self.opened(&known, &mut *source, started).await;
        source.close().await;
        r
    }

    /// Steps 1 to 6 with the source open.
    async fn opened(
        &self,
        k: &Known<'_>,
        source: &mut dyn CopyEnd,
        started: Instant,
    ) -> Result<MoveReport, Error> {
        let (tenant, to) = (k.tenant, k.to);
        let tables = carried(tenant, source).await?;
        let id = crate::report::new_run_id();
        let mut report = MoveReport::new(id.clone(), tenant, &to.redacted(), k.version);
        let scratch = target::scratch(
            self.connector,
            self.set,
            tenant,
            to,
            k.target_place,
            k.version,
            &id,
        )
        .await?;
        pair(&tables, &scratch.tables)
            .map_err(|e| refused(tenant, format!("nothing was touched: {}", e.message)))?;
        self.claim(k, &scratch, &mut report).await?;
        let filled = self
            .fill(tenant, to, k.version, &tables, source, &mut report)
            .await;
        report.duration_ms = started.elapsed().as_millis() as u64;
        match filled {
            Ok(frozen) => {
                let r = self.finish(tenant, to, &mut report).await;
                // the source's writes go on (to the old place: the
                // application follows the registry)
                if let Some(mut f) = frozen {
                    let _ = f.unfreeze().await;
                    f.close().await;
                }
                r?
            }
            Err(e) => self.failed(to, &mut report, e.message).await?,
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// The claim on the target (one copying move per target), then, under
    /// it, the target made or proven the move's own and marked.
    async fn claim(
        &self,
        k: &Known<'_>,
        scratch: &target::Scratch,
        report: &mut MoveReport,
    ) -> Result<(), Error> {
        let mark = Mark {
            move_id: report.id.clone(),
            tenant: k.tenant.id.to_string(),
            source: k.source_key.to_string(),
        };
        self.store
            .move_started(
                &report.id,
                &report.tenant,
                &report.source,
                &report.target,
                &k.target_place.key,
                k.version,
            )
            .await?;
        let c = target::claim(
            self.connector,
            self.store,
            (k.tenant, k.to),
            scratch,
            k.history,
            &mark,
        )
        .await;
        match c {
            Ok(Claimed::Created(c)) => report.created = c,
            Ok(Claimed::Empty) => {}
            Ok(Claimed::Restarted(from)) => report.restarted_from = Some(from),
            Err(e) => {
                self.store.move_refused(&report.id).await?;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Steps 3 to 5: the target migrated, filled and verified. With
    /// `--freeze-source`, the source's writes are held from the final
    /// verification on (the tables written to during the copy are copied
    /// again meanwhile): the end that holds them is returned, for `finish`
    /// to let go after the registry switch.
    async fn fill(
        &self,
        tenant: &Tenant,
        to: &Locator,
        version: i64,
        tables: &[Table],
        source: &mut dyn CopyEnd,
        report: &mut MoveReport,
    ) -> Result<Option<Box<dyn CopyEnd>>, TenantError> {
        let t0 = Instant::now();
        target::migrate(self.connector, self.set, tenant, to, version, self.bus).await?;
        tracing::info!(
            ms = t0.elapsed().as_millis() as u64,
            "move: target migrated"
        );
        let mut target = copy::open(&self.connector.settings, to).await?;
        let mut frozen = None;
        let r = self
            .fill_open(
                (tenant, to),
                tables,
                source,
                &mut *target,
                &mut frozen,
                report,
            )
            .await;
        target.close().await;
        match r {
            Ok(()) => Ok(frozen),
            Err(e) => {
                if let Some(f) = frozen {
                    f.close().await;
                }
                Err(e)
            }
        }
    }

    async fn fill_open(
        &self,
        (tenant, to): (&Tenant, &Locator),
        tables: &[Table],
        source: &mut dyn CopyEnd,
        target: &mut dyn CopyEnd,
        frozen: &mut Option<Box<dyn CopyEnd>>,
        report: &mut MoveReport,
    ) -> Result<(), TenantError> {
        // the target's tables as its migrations made them
        let target_tables = target.tables().await?;
        let plan = pair(tables, &target_tables)?;
        let all: Vec<&Table> = target_tables.iter().collect();
        let copier = transfer::Copier {
            bus: self.bus.clone(),
            opts: self.opts.clone(),
            cancel: self.cancel.clone(),
            done: Default::default(),
        };
        target.quiet(&all).await?;
        let t0 = Instant::now();
        let copied = match self
            .copy_all(&copier, (tenant, to), source, target, &plan, report)
            .await
        {
            Ok(()) => transfer::foreign_keys(target, &target_tables).await,
            Err(e) => Err(e),
        };
        // put back what was turned off, whatever happened (a target the
        // move found stays usable; a killed run's next run does it)
        let restored = target.restore().await;
        copied?;
        restored?;
        tracing::info!(
            rows = report.rows,
            ms = t0.elapsed().as_millis() as u64,
            "move: copied"
        );
        if self.opts.freeze_source {
            let mut end = copy::open(&self.connector.settings, &tenant.locator).await?;
            let held: Vec<&Table> = tables.iter().collect();
            let f = end.freeze(&held).await;
            *frozen = Some(end);
            f?;
        }
        let t0 = Instant::now();
        let changed = self
            .verify((tenant, to), source, target, &plan, report)
            .await?;
        tracing::info!(ms = t0.elapsed().as_millis() as u64, "move: verified");
        if changed.is_empty() {
            return Ok(());
        }
        if frozen.is_none() {
            return Err(transfer::source_changed(&changed));
        }
        let again: Vec<usize> = changed.iter().map(|(i, _)| *i).collect();
        copier
            .recopy(source, target, &plan, &again, &target_tables, report)
            .await?;
        let still = self
            .verify((tenant, to), source, target, &plan, report)
            .await?;
        if !still.is_empty() {
            return Err(transfer::source_changed(&still));
        }
        Ok(())
    }

    /// Step 4, by one job or several (`--jobs`: each with a session on the
    /// source and one on the target; not into a SQLite file, which takes
    /// one writer at a time).
    async fn copy_all(
        &self,
        copier: &transfer::Copier,
        (tenant, to): (&Tenant, &Locator),
        source: &mut dyn CopyEnd,
        target: &mut dyn CopyEnd,
        plan: &[transfer::Pair],
        report: &mut MoveReport,
    ) -> Result<(), TenantError> {
        let jobs = self.jobs(to, plan);
        if jobs == 1 {
            return copier.copy_all(source, target, plan, report).await;
        }
        let settings = &self.connector.settings;
        let sync = copy::open(settings, &tenant.locator).await?;
        let extra = match self.pairs((tenant, to), jobs - 1).await {
            Ok(extra) => extra,
            Err(e) => {
                sync.close().await;
                return Err(e);
            }
        };
        parallel::copy_all(copier, source, target, sync, extra, plan, report).await
    }

    /// `n` more pairs of sessions, on the source and on the target.
    async fn pairs(
        &self,
        (tenant, to): (&Tenant, &Locator),
        n: usize,
    ) -> Result<parallel::Sessions, TenantError> {
        let settings = &self.connector.settings;
        let mut extra: parallel::Sessions = Vec::new();
        for _ in 0..n {
            let opened = async {
                let s = copy::open(settings, &tenant.locator).await?;
                match copy::open(settings, to).await {
                    Ok(t) => Ok((s, t)),
                    Err(e) => {
                        s.close().await;
                        Err(e)
                    }
                }
            }
            .await;
            match opened {
                Ok(pair) => extra.push(pair),
                Err(e) => {
                    for (s, t) in extra {
                        s.close().await;
                        t.close().await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(extra)
    }

    /// Step 5 (`transfer::verify`), by as many jobs as the copy had.
    async fn verify(
        &self,
        ends: (&Tenant, &Locator),
        source: &mut dyn CopyEnd,
        target: &mut dyn CopyEnd,
        plan: &[transfer::Pair],
        report: &MoveReport,
    ) -> Result<Vec<(usize, String)>, TenantError> {
        let rules = &self.opts.rules;
        let jobs = self.jobs(ends.1, plan);
        if jobs == 1 {
            return verify(source, target, plan, rules, report).await;
        }
        let extra = self.pairs(ends, jobs - 1).await?;
        parallel::verify_all(source, target, extra, plan, rules, report).await
    }

    /// Jobs side by side: `--jobs`, at most one per table, one into SQLite.
    fn jobs(&self, to: &Locator, plan: &[transfer::Pair]) -> usize {
        match to {
            Locator::Sqlite { .. } => 1,
            _ => self.opts.jobs.clamp(1, plan.len().max(1)),
        }
    }

    /// Step 6: the registry switched, the mark removed, the move recorded.
    async fn finish(
        &self,
        tenant: &Tenant,
        to: &Locator,
        report: &mut MoveReport,
    ) -> Result<(), Error> {
        if let Some(dir) = &self.opts.report_dir {
            let mut verified = report.clone();
            crate::report::moves::write_move(dir, &mut verified)?;
        }
        if let Some(path) = &self.opts.registry {
            match registry::relocate(
                path,
                &tenant.id,
                &self.opts.to_text,
                self.opts.to_schema.as_deref(),
                &report.id,
            ) {
                Ok(backup) => report.registry_backup = Some(backup.display().to_string()),
                Err(e) => {
                    let why =
                        format!("the copy is verified, but the registry was not switched: {e}");
                    return self.failed(to, report, why).await;
                }
            }
        }
        let unmarked = async {
            let mut end = copy::open(&self.connector.settings, to).await?;
            let r = end.unmark().await;
            end.close().await;
            r
        }
        .await;
        if let Err(e) = unmarked {
            // the copy is done and switched: the mark left behind only
            // keeps a later move out of it
            report.error = Some(format!(
                "the move's mark was not removed from the target: {}",
                e.message
            ));
        }
        let tables = serde_json::to_string(&report.tables).unwrap_or_default();
        self.store
            .move_finished(
                &report.id,
                MoveStatus::Done,
                report.rows,
                &tables,
                report.error.as_deref(),
            )
            .await
    }

    /// `tenant` is already where its registry row says it moved to: a move
    /// killed between the registry switch and its last steps left its mark
    /// on it, which is removed here, and that move recorded done. The id of
    /// the move settled, if one was.
    pub async fn settle(&self, tenant: &Tenant) -> Result<Option<String>, Error> {
        let te = |e: TenantError| refused(tenant, e.message);
        let mut end = copy::open(&self.connector.settings, &tenant.locator)
            .await
            .map_err(te)?;
        let mark = match end.mark().await {
            Ok(Some(m)) if m.tenant == tenant.id.as_str() => m,
            Ok(_) => {
                end.close().await;
                return Ok(None);
            }
            Err(e) => {
                end.close().await;
                return Err(te(e));
            }
        };
        let r = end.unmark().await;
        end.close().await;
        r.map_err(te)?;
        self.store
            .move_finished(
                &mark.move_id,
                MoveStatus::Done,
                0,
                "[]",
                Some("settled by a later run: it was killed after the registry switch"),
            )
            .await?;
        Ok(Some(mark.move_id))
    }

    /// A move that failed after it started: a target it created is removed,
    /// one it found stays marked (running the move again continues it).
    async fn failed(
        &self,
        to: &Locator,
        report: &mut MoveReport,
        why: String,
    ) -> Result<(), Error> {
        report.status = MoveStatus::Failed;
        let mut why = why;
        if report.created != Created::Nothing {
            match copy::remove(&self.connector.settings, to, report.created).await {
                Ok(()) => report.target_removed = true,
                Err(e) => {
                    why = format!(
                        "{why}; the target it created was not removed: {}",
                        e.message
                    )
                }
            }
        }
        report.error = Some(why.clone());
        let tables = serde_json::to_string(&report.tables).unwrap_or_default();
        self.store
            .move_finished(
                &report.id,
                MoveStatus::Failed,
                report.rows,
                &tables,
                Some(&why),
            )
            .await
    }
}
