//! What a rollout command works with: the state store, the migration set, the
//! fleet's tenants, the command's one connector (one set of pools), the event
//! bus the CLI subscribed to, the cancel handle, and the options of this
//! invocation. Built by `prepare`, which loads the set and discovers the
//! fleet before anything is written anywhere.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::dialect::Connector;
use crate::discover::{Fleet, Refused, discover};
use crate::error::Error;
use crate::event::Bus;
use crate::fanout::Fanout;
use crate::migration::{MigrationSet, load};
use crate::state::{RolloutRecord, StateStore};
use crate::tenant::{DiscoverOptions, FleetSpec, Tenant, TenantId};

/// A handle to stop a run gracefully.
#[derive(Clone)]
pub struct Cancel {
    tx: Arc<watch::Sender<bool>>,
    /// A worker's claims are only good while its heartbeat keeps their
    /// lease: past it, the run counts as stopped (see `Lease`), for good
    /// (the lease's epoch when this handle was made).
    lease: Option<(Arc<Lease>, u64)>,
}

impl Default for Cancel {
    fn default() -> Self {
        Cancel {
            tx: Arc::new(watch::channel(false).0),
            lease: None,
        }
    }
}

/// When a worker last renewed its claims, and how long they last: a worker
/// stopped (SIGSTOP, a stalled machine) past its lease has lost them, and
/// must start nothing more the moment it runs again, before its next
/// heartbeat could say so. A renewal after a lapse starts a new epoch: the
/// batches claimed before it stay cancelled (others may have taken their
/// tenants meanwhile), the worker claims afresh.
pub struct Lease {
    renewed_ms: std::sync::atomic::AtomicI64,
    epoch: std::sync::atomic::AtomicU64,
    lease_ms: i64,
}

impl Lease {
    pub fn new(lease: Duration) -> Arc<Lease> {
        Arc::new(Lease {
            renewed_ms: std::sync::atomic::AtomicI64::new(crate::state::now_ms()),
            epoch: Default::default(),
            lease_ms: lease.as_millis() as i64,
        })
    }

    /// The claims were renewed at `at` (ms, taken before the renewal was sent).
    pub fn renewed(&self, at: i64) {
        if !self.holds() {
            self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.renewed_ms
            .fetch_max(at, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the claims still hold (with a margin of a tenth of the lease).
    pub fn holds(&self) -> bool {
        let age =
            crate::state::now_ms() - self.renewed_ms.load(std::sync::atomic::Ordering::SeqCst);
        age < self.lease_ms - self.lease_ms / 10
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Cancel {
    /// A handle cancelled with this one, or by itself, or when `lease`
    /// lapses.
    pub fn child(&self, lease: Option<Arc<Lease>>) -> Cancel {
        let child = Cancel {
            tx: Arc::new(watch::channel(false).0),
            lease: lease.map(|l| {
                let epoch = l.epoch();
                (l, epoch)
            }),
        };
        let (parent, c) = (self.clone(), child.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = parent.cancelled() => c.cancel(),
                _ = c.cancelled() => {}
            }
        });
        child
    }

    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
            || self
                .lease
                .as_ref()
                .is_some_and(|(l, epoch)| !l.holds() || l.epoch() != *epoch)
    }

    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// Options of one invocation (not frozen with the rollout).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// This process's limits when its command line (or environment, or
    /// file) gave them: they override the rollout's frozen ones for this
    /// process, in both modes; absent, the frozen ones hold.
    pub concurrency: Option<usize>,
    pub per_server: Option<usize>,
    /// A claim without a heartbeat for this long is dead.
    pub lease: Duration,
    pub reports: PathBuf,
    pub metrics_file: Option<PathBuf>,
    /// Pass the failed gate of the wave the rollout halted on.
    pub override_gate: bool,
}

impl RunOptions {
    /// This process's `(concurrency, per_server)` on a rollout frozen with
    /// `frozen`: what this invocation gave, else the frozen ones. A rollout
    /// frozen with no `--per-server` has none (`ExecOptions::UNBOUNDED`);
    /// one frozen before that default, with the concurrency as its
    /// `--per-server`, follows a new `--concurrency`.
    pub fn limits(&self, frozen: &crate::options::ExecOptions) -> (usize, usize) {
        let concurrency = self.concurrency.unwrap_or(frozen.concurrency);
        let per_server = match self.per_server {
            Some(p) => p,
            None if frozen.per_server == frozen.concurrency => concurrency,
            None => frozen.per_server,
        };
        (concurrency, per_server)
    }
}

/// The per-tenant step of a move rollout (`fleetmig move --select`):
/// implemented by `relocate` (which sits beside the engine and uses it),
/// handed to the engine by the command.
#[async_trait::async_trait]
pub trait MoveStep: Send + Sync {
    /// Moves `tenants` of rollout `r` as `spec` says, `within` the batch's
    /// limits (on the source's server and on the target's), each tenant's
    /// start and end an event on its bus; whether the batch was interrupted.
    async fn move_tenants(
        &self,
        ctx: &Ctx<'_>,
        r: &RolloutRecord,
        spec: &crate::options::MoveSpec,
        tenants: Vec<Tenant>,
        within: Within<'_>,
    ) -> bool;
}

/// What a batch of a rollout's tenants runs within: the fan-out's limits,
/// the bus its events go to, the handle that stops it.
pub struct Within<'b> {
    pub fanout: &'b Arc<crate::fanout::Fanout>,
    pub bus: &'b Bus,
    pub cancel: &'b Cancel,
    /// Failures toward `--max-failures` in this wave, across batches.
    pub failures: Arc<std::sync::atomic::AtomicUsize>,
}

/// Everything a rollout command needs while it runs.
pub struct Ctx<'a> {
    pub store: &'a StateStore,
    pub set: Arc<MigrationSet>,
    /// The whole fleet, sorted by id.
    pub tenants: Vec<Tenant>,
    /// The names discovery refused (reported failed, never touched).
    pub refused: Vec<Refused>,
    /// The fleet spec, for the record and messages (printed redacted).
    pub fleet: FleetSpec,
    pub connector: Arc<Connector>,
    pub bus: Bus,
    pub cancel: Cancel,
    pub opts: RunOptions,
    /// This process: `pid@host:nonce`.
    pub owner: String,
    /// How a tenant of a move rollout is moved.
    pub mover: Option<Arc<dyn MoveStep>>,
    /// The command's one `Fanout` (see `fanout`).
    pub fanout: std::sync::OnceLock<Arc<Fanout>>,
}

impl Ctx<'_> {
    /// The command's one `Fanout`: made at its first use, with this
    /// process's limits on a rollout frozen with `exec` (`RunOptions::limits`);
    /// the checks before a rollout starts and the rollout's tenants share
    /// it, so no server ever sees more than `--per-server` of this process.
    pub fn fanout(&self, exec: &crate::options::ExecOptions) -> Arc<Fanout> {
        self.fanout
            .get_or_init(|| {
                let (concurrency, per_server) = self.opts.limits(exec);
                Arc::new(Fanout::new(concurrency, per_server))
            })
            .clone()
    }

    /// The fleet's tenant `id`, if it is one (the list is sorted by id).
    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants
            .binary_search_by(|t| t.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.tenants[i])
    }

    /// The tenants of the fleet named by `ids` (all when empty); an unknown
    /// id is a usage error naming the flag.
    pub fn only(&self, ids: &[String]) -> Result<Vec<Tenant>, Error> {
        only_these(&self.tenants, ids, &self.fleet)
    }

    /// A rollout recorded with another migration set is refused: resuming
    /// it with different files would apply what was never planned.
    pub fn check_same_set(&self, r: &RolloutRecord) -> Result<(), Error> {
        if r.set_checksum != self.set.checksum {
            let m = format!(
                "planned with migration set {} but {} now has {}: the migrations changed since it \
                 started. Restore them, or abort it and start a new rollout",
                r.set_checksum,
                self.set.dir.display(),
                self.set.checksum
            );
            return Err(Error::usage(crate::error::About::Rollout(r.id.clone()), m));
        }
        Ok(())
    }
}

/// Keeps only `only` of `tenants` (all when empty); an unknown id is a usage
/// error.
pub fn only_these(
    tenants: &[Tenant],
    only: &[String],
    fleet: &FleetSpec,
) -> Result<Vec<Tenant>, Error> {
    if only.is_empty() {
        return Ok(tenants.to_vec());
    }
    let mut wanted = Vec::new();
    for id in only {
        let id = TenantId::new(id).map_err(|m| Error::flag("--tenant", m))?;
        if !tenants.iter().any(|t| t.id == id) {
            let m = format!("no such tenant in fleet {fleet}");
            return Err(Error::flag_value("--tenant", id, m));
        }
        wanted.push(id);
    }
    Ok(tenants
        .iter()
        .filter(|t| wanted.contains(&t.id))
        .cloned()
        .collect())
}

/// Loads the set and discovers the fleet. Nothing is written anywhere
/// before this succeeds.
pub async fn prepare(
    migrations: &Path,
    fleet: &FleetSpec,
    discover_opts: &DiscoverOptions,
) -> Result<(Arc<MigrationSet>, Fleet), Error> {
    let set = load(migrations)?;
    let found = discover(fleet, discover_opts).await?;
    Ok((Arc::new(set), found))
}
