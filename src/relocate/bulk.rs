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

use crate::error::FailureKind;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use super::{MoveOptions, MoveReport, MoveStatus, Mover};
use crate::error::{Error, TenantError};
use crate::event::{Event, TenantOutcome, TenantStatus};
use crate::fanout::Fanout;
use crate::options::MoveSpec;
use crate::rollout::{Ctx, MoveStep, Within};
use crate::state::RolloutRecord;
use crate::tenant::{FleetSpec, Tenant, locator_from, redact_url};

/// The move step.
pub struct Bulk;

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
        let one = One {
            ctx,
            r,
            spec,
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
    within: &'b Within<'b>,
    targets: &'b Fanout,
}

impl One<'_, '_> {
    /// Moves `tenant`; whether it was interrupted.
    async fn run(&self, tenant: Tenant) -> bool {
        let bus = self.within.bus;
        if self.within.cancel.is_cancelled() {
            self.finish(&tenant, TenantStatus::Interrupted, None, None, None);
            return true;
        }
        let (url, schema) = self.spec.place(tenant.id.as_str());
        let to = match locator_from(&url, schema.clone(), Path::new("/")) {
            Ok(l) => l,
            Err(m) => {
                let e = TenantError::permanent(
                    FailureKind::MoveRefused,
                    format!("--to {}: {m}", redact_url(&url)),
                );
                self.finish(&tenant, TenantStatus::Failed, None, None, Some(e));
                return false;
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
            // moved before this run was stopped: the registry names its
            // target; what the move had left to do after the switch is done
            let (status, e) = match mover.settle(&tenant).await {
                Ok(_) => (TenantStatus::UpToDate, None),
                Err(e) => (
                    TenantStatus::Failed,
                    Some(TenantError::permanent(
                        FailureKind::MoveFailed,
                        e.to_string(),
                    )),
                ),
            };
            self.finish(&tenant, status, Some(started), None, e);
            return false;
        }
        let _target = self
            .targets
            .slot(&Tenant {
                id: tenant.id.clone(),
                locator: to.clone(),
                tags: Default::default(),
            })
            .await;
        match mover.run(&tenant, to).await {
            Ok(mut report) => self.reported(&tenant, started, &mut report),
            Err(e) => {
                let kind = match e {
                    Error::Busy(_) => FailureKind::MoveBusy,
                    _ => FailureKind::MoveRefused,
                };
                let e = TenantError::permanent(kind, e.to_string());
                self.finish(&tenant, TenantStatus::Failed, Some(started), None, Some(e));
                false
            }
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
    /// told; whether it was interrupted.
    fn reported(
        &self,
        tenant: &Tenant,
        started: (chrono::DateTime<Utc>, Instant),
        report: &mut MoveReport,
    ) -> bool {
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
            return false;
        }
        if report.status != MoveStatus::Done && self.within.cancel.is_cancelled() {
            // cut by a stop: its marked target is continued by the next run
            self.finish(tenant, TenantStatus::Interrupted, Some(started), None, None);
            return true;
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
        false
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

/// The move step, for the commands that run rollouts.
pub fn step() -> Arc<dyn MoveStep> {
    Arc::new(Bulk)
}
