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
use crate::migration::{MigrationSet, load};
use crate::state::{RolloutRecord, StateStore};
use crate::tenant::{DiscoverOptions, FleetSpec, Tenant, TenantId};

/// A handle to stop a run gracefully.
#[derive(Clone)]
pub struct Cancel {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Cancel {
            tx: Arc::new(watch::channel(false).0),
        }
    }
}

impl Cancel {
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }

    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// Options of one invocation (not frozen with the rollout).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// A claim without a heartbeat for this long is dead.
    pub lease: Duration,
    pub reports: PathBuf,
    pub metrics_file: Option<PathBuf>,
    /// Pass the failed gate of the wave the rollout halted on.
    pub override_gate: bool,
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
}

impl Ctx<'_> {
    /// The tenants of the fleet named by `ids` (all when empty); an unknown
    /// id is a usage error naming the flag.
    pub fn only(&self, ids: &[String]) -> Result<Vec<Tenant>, Error> {
        only_these(&self.tenants, ids, &self.fleet)
    }

    /// A rollout recorded with another migration set is refused: resuming
    /// it with different files would apply what was never planned.
    pub fn check_same_set(&self, r: &RolloutRecord) -> Result<(), Error> {
        if r.set_checksum != self.set.checksum {
            return Err(Error::Usage(format!(
                "rollout {} was planned with migration set {} but {} now has {}: the migrations changed \
                 since it started. Restore them, or abort it and start a new rollout",
                r.id,
                r.set_checksum,
                self.set.dir.display(),
                self.set.checksum
            )));
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
        let id = TenantId::new(id).map_err(|m| Error::Usage(format!("--tenant: {m}")))?;
        if !tenants.iter().any(|t| t.id == id) {
            return Err(Error::Usage(format!(
                "--tenant {id}: no such tenant in fleet {fleet}"
            )));
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
