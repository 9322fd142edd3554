//! Many tenants moved as one rollout (`fleetmig move --select`): the
//! per-tenant step the engine runs for a move rollout. Each tenant is moved
//! by the same `Mover` as a single move (its lock, the proofs that the
//! target is its own, the copy, the verification, the registry switch),
//! within the rollout's limits on the source's server and on the target's;
//! its start and end are events the recorder writes like a migration's, and
//! its move report goes under the rollout's report folder
//! (`moves/<move id>/`). A tenant whose registry row already names its
//! target (moved before a kill) succeeds without being touched; one whose
//! move was cut is continued into its marked target.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::Utc;

use super::{MoveOptions, MoveReport, MoveStatus, Mover};
use crate::error::{Error, FailureKind, TenantError};
use crate::event::{Event, TenantOutcome, TenantStatus};
use crate::fanout::Fanout;
use crate::options::MoveSpec;
use crate::rollout::{Ctx, MoveStep, Within};
use crate::state::RolloutRecord;
use crate::tenant::{FleetSpec, Tenant, locator_from, redact_url};

/// The move step: `to`, the target template with its password when the
/// rollout's kept one lost it.
pub struct Bulk {
    to: Option<String>,
}

#[async_trait::async_trait]
impl MoveStep for Bulk {
    async fn move_tenants(
        &self,
        ctx: &Ctx<'_>,
        r: &RolloutRecord,
        spec: &MoveSpec,
        tenants: Vec<Tenant>,
        within: Within<'_>,
    ) -> bool {
        // the limits again, keyed by the target's server
        let targets = within.fanout.same_limits();
        if self.to.is_none() && spec.needs_password() {
            tracing::error!(
                "rollout {} moves tenants to {}, whose password fleetmig does not keep: pass --to",
                r.id,
                spec.to
            );
            return true;
        }
        let one = One {
            ctx,
            r,
            spec,
            to: self.to.as_deref().unwrap_or(&spec.to),
            within: &within,
            targets: &targets,
        };
        within
            .fanout
            .run(tenants, |t| t, |t| one.run(t))
            .await
            .into_iter()
            .any(|interrupted| interrupted)
    }
}

/// What one tenant's move works with.
struct One<'b, 'a> {
    ctx: &'b Ctx<'a>,
    r: &'b RolloutRecord,
    spec: &'b MoveSpec,
    /// The target template (`spec.to` with its password).
    to: &'b str,
    within: &'b Within<'b>,
    targets: &'b Fanout,
}

impl One<'_, '_> {
    /// Moves `tenant`; whether it was interrupted.
    async fn run(&self, tenant: Tenant) -> bool {
        if self.within.cancel.is_cancelled() {
            self.finish(&tenant, TenantStatus::Interrupted, None, None, None);
            return true;
        }
        let budget = self.r.settings.exec.max_failures;
        let failures = &self.within.failures;
        if budget.is_some_and(|m| failures.load(Ordering::SeqCst) >= m) {
            let e = TenantError::permanent(
                FailureKind::NotStarted,
                "--max-failures was reached before this tenant started",
            );
            self.finish(&tenant, TenantStatus::NotStarted, None, None, Some(e));
            return false;
        }
        let failed = self.move_one(tenant).await;
        if failed == Some(true) {
            failures.fetch_add(1, Ordering::SeqCst);
        }
        failed.is_none()
    }

    /// Moves `tenant`: `Some(failed)` when it ended, `None` when it was
    /// interrupted.
    async fn move_one(&self, tenant: Tenant) -> Option<bool> {
        let bus = self.within.bus;
        // where the registry says it is now: a worker that joined before
        // another switched it must not copy it from its old place again
        let tenant = match self.current(tenant) {
            Ok(t) => t,
            Err(b) => {
                let (t, e) = *b;
                let e = TenantError::permanent(FailureKind::MoveRefused, e.to_string());
                self.finish(&t, TenantStatus::Failed, None, None, Some(e));
                return Some(true);
            }
        };
        let spec = MoveSpec {
            to: self.to.to_string(),
            ..self.spec.clone()
        };
        let (url, schema) = spec.place(tenant.id.as_str());
        let to = match locator_from(&url, schema.clone(), Path::new("/")) {
            Ok(l) => l,
            Err(m) => {
                let e = TenantError::permanent(
                    FailureKind::MoveRefused,
                    format!("--to {}: {m}", redact_url(&url)),
                );
                self.finish(&tenant, TenantStatus::Failed, None, None, Some(e));
                return Some(true);
            }
        };
        bus.emit(Event::TenantStarted {
            tenant: tenant.id.clone(),
            attempt: 1,
        });
        let started = (Utc::now(), Instant::now());
        let opts = self.options(url, schema);
        // the target's own migration is the move's inner work: its events
        // are not the rollout's tenant rows
        let inner = crate::event::Bus::new(Vec::new());
        let mover = Mover {
            connector: &self.ctx.connector,
            set: &self.ctx.set,
            store: self.ctx.store,
            bus: &inner,
            fleet: &self.ctx.tenants,
            opts: &opts,
            cancel: self.within.cancel,
        };
        if tenant.locator == to {
            return Some(self.settled(&mover, &tenant, started).await);
        }
        let _target = self
            .targets
            .slot(&Tenant {
                id: tenant.id.clone(),
                locator: to.clone(),
                tags: Default::default(),
            })
            .await;
        let url_target = to.redacted();
        match self.attempts(&mover, &tenant, &to).await {
            Ok(mut report) => self.reported(&tenant, started, &mut report),
            Err(e) => {
                self.refused(&tenant, started, &url_target, e);
                Some(true)
            }
        }
    }

    /// The move of `tenant` to `to`, tried again (with the rollout's retry
    /// policy: attempts and backoff) while another process holds the
    /// tenant or its target (`Busy`: a stalled or dying worker's lock),
    /// so that a stall slows the rollout rather than failing the tenant.
    async fn attempts(
        &self,
        mover: &Mover<'_>,
        tenant: &Tenant,
        to: &crate::tenant::Locator,
    ) -> Result<MoveReport, Error> {
        let policy = self.r.settings.exec.retry;
        let mut attempt = 1;
        loop {
            match mover.run(tenant, to.clone()).await {
                Err(Error::Busy(holder))
                    if attempt < policy.max_attempts && !self.within.cancel.is_cancelled() =>
                {
                    tracing::info!(tenant = %tenant.id, attempt, "move busy ({holder}): trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(policy.delay(attempt)) => {}
                        _ = self.within.cancel.cancelled() => return Err(Error::Busy(holder)),
                    }
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// A tenant moved before this run was stopped (the registry names its
    /// target): what the move had left to do after the switch is done.
    /// Whether it failed.
    async fn settled(
        &self,
        mover: &Mover<'_>,
        tenant: &Tenant,
        started: (chrono::DateTime<Utc>, Instant),
    ) -> bool {
        let (status, e) = match mover.settle(tenant).await {
            // killed between the switch and the drop: the source is
            // still there, and where it was is not known here
            Ok(Some(id)) if self.spec.drop_source => (
                TenantStatus::Failed,
                Some(TenantError::permanent(
                    FailureKind::MoveFailed,
                    format!(
                        "move {id} copied, verified and switched the tenant, but was stopped \
                         before it dropped the source (--drop-source): drop it by hand \
                         (fleetmig history shows where it was)"
                    ),
                )),
            ),
            Ok(_) => (TenantStatus::UpToDate, None),
            Err(e) => (
                TenantStatus::Failed,
                Some(TenantError::permanent(
                    FailureKind::MoveFailed,
                    e.to_string(),
                )),
            ),
        };
        let failed = e.is_some();
        self.finish(tenant, status, Some(started), None, e);
        failed
    }

    /// A move that refused (or found its target busy): said in the
    /// rollout's moves/ too, since an earlier attempt's report (verified,
    /// then killed) is not the tenant's last.
    fn refused(
        &self,
        tenant: &Tenant,
        started: (chrono::DateTime<Utc>, Instant),
        url_target: &str,
        e: Error,
    ) {
        let kind = match e {
            Error::Busy(_) => FailureKind::MoveBusy,
            _ => FailureKind::MoveRefused,
        };
        let id = crate::report::new_run_id();
        let mut refused = MoveReport::refused(id, tenant, url_target, &e.to_string());
        let folder = self.ctx.opts.reports.join(&self.r.id).join("moves");
        if let Err(w) = crate::report::moves::write_move(&folder, &mut refused) {
            tracing::warn!("the move report of {} was not written: {w}", tenant.id);
        }
        // still busy after the retries: another process holds it, which
        // a later retry may find gone
        let e = match kind {
            FailureKind::MoveBusy => TenantError::transient(kind, e.to_string()),
            _ => TenantError::permanent(kind, e.to_string()),
        };
        self.finish(tenant, TenantStatus::Failed, Some(started), None, Some(e));
    }

    /// `tenant` as the registry says it is now (it is read again: a worker
    /// that joined before another switched the row must not copy the
    /// tenant from its old place).
    fn current(&self, tenant: Tenant) -> Result<Tenant, Box<(Tenant, Error)>> {
        let FleetSpec::Registry(path) = &self.ctx.fleet else {
            return Ok(tenant);
        };
        match crate::tenant::read_registry(path) {
            Ok(all) => Ok(all
                .into_iter()
                .find(|t| t.id == tenant.id)
                .unwrap_or(tenant)),
            Err(e) => Err(Box::new((tenant, e))),
        }
    }

    /// The options of one tenant's move to `url` (and `schema`).
    fn options(&self, url: String, schema: Option<String>) -> MoveOptions {
        let spec = self.spec;
        MoveOptions {
            batch_rows: spec.batch_rows,
            pause: spec.pause,
            drop_source: spec.drop_source,
            registry: match &self.ctx.fleet {
                FleetSpec::Registry(p) => Some(p.clone()),
                _ => None,
            },
            to_text: url,
            to_schema: schema,
            rules: crate::dialect::copy::Rules {
                zero_dates_null: spec.zero_dates_null,
            },
            freeze_source: spec.freeze_source,
            jobs: spec.jobs,
            report_dir: Some(self.ctx.opts.reports.join(&self.r.id).join("moves")),
        }
    }

    /// A move that ran: its report written under the rollout's, its end
    /// told; whether it failed (`None`: interrupted).
    fn reported(
        &self,
        tenant: &Tenant,
        started: (chrono::DateTime<Utc>, Instant),
        report: &mut MoveReport,
    ) -> Option<bool> {
        let ctx = self.ctx;
        let folder = ctx.opts.reports.join(&self.r.id).join("moves");
        if let Err(e) = crate::report::moves::write_move(&folder, report) {
            tracing::warn!("the move report of {} was not written: {e}", tenant.id);
        }
        let whole =
            report.status == MoveStatus::Done && (report.source_dropped || !self.spec.drop_source);
        if whole {
            let version = Some(report.version);
            self.finish(
                tenant,
                TenantStatus::Succeeded,
                Some(started),
                version,
                None,
            );
            return Some(false);
        }
        if report.status != MoveStatus::Done && self.within.cancel.is_cancelled() {
            // cut by a stop: its marked target is continued by the next run
            self.finish(tenant, TenantStatus::Interrupted, Some(started), None, None);
            return None;
        }
        let e = TenantError::permanent(
            FailureKind::MoveFailed,
            format!(
                "move {}: {}",
                report.id,
                report.error.as_deref().unwrap_or("failed")
            ),
        );
        self.finish(tenant, TenantStatus::Failed, Some(started), None, Some(e));
        Some(true)
    }

    /// Tells the bus how `tenant`'s move ended.
    fn finish(
        &self,
        tenant: &Tenant,
        status: TenantStatus,
        started: Option<(chrono::DateTime<Utc>, Instant)>,
        version: Option<i64>,
        error: Option<TenantError>,
    ) {
        self.within
            .bus
            .emit(Event::TenantFinished(Box::new(TenantOutcome {
                tenant: tenant.id.clone(),
                status,
                attempts: u32::from(started.is_some()),
                from_version: version,
                to_version: version,
                applied: Vec::new(),
                duration: started.map(|s| s.1.elapsed()).unwrap_or_default(),
                started_at: started.map(|s| s.0),
                finished_at: started.map(|_| Utc::now()),
                error,
            })));
    }
}

/// The move step, for the commands that run rollouts (`to`: see `Bulk`).
pub fn step(to: Option<String>) -> Arc<dyn MoveStep> {
    Arc::new(Bulk { to })
}
