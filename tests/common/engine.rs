//! The engine driven as a library: a fleet, a state store and a migration
//! set in a temp dir, a rollout started or resumed through `fleetmig::rollout`
//! with the settings a test gives, the events it emitted kept in order. For
//! scenarios about the engine itself (waves, gates, pause, resume, typed
//! refusals) that need no process of their own.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetmig::Error;
use fleetmig::dialect::Connector;
use fleetmig::event::{Bus, Event, Subscriber};
use fleetmig::options::{ExecOptions, RolloutRequest, Settings};
use fleetmig::rollout::{Cancel, Ctx, Finished, RunOptions};
use fleetmig::state::{Open, StateStore};
use fleetmig::tenant::{DiscoverOptions, FleetSpec};

/// Every event of a run, in the order they were emitted.
#[derive(Default)]
pub struct Recorded(Mutex<Vec<Event>>);

impl Subscriber for Recorded {
    fn on_event(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorded {
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A fleet, its state store and its migrations, in `dir`.
pub struct Engine {
    pub dir: tempfile::TempDir,
    pub fleet: FleetSpec,
    pub migrations: PathBuf,
    pub store: StateStore,
    pub events: Arc<Recorded>,
}

impl Engine {
    /// A registry fleet of `n` empty SQLite tenants (the first `canaries`
    /// tagged `canary`), the demo migrations, a SQLite state store.
    pub async fn registry(n: usize, canaries: usize) -> Engine {
        let dir = tempfile::tempdir().unwrap();
        super::registry_fleet(dir.path(), n, canaries);
        let fleet: FleetSpec = format!("registry:{}", dir.path().join("fleet.csv").display())
            .parse()
            .unwrap();
        let state = dir.path().join("state.db");
        let store = StateStore::open(
            state.to_str().unwrap(),
            Open::Create,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        Engine {
            dir,
            fleet,
            migrations: super::demo_migrations(),
            store,
            events: Arc::default(),
        }
    }

    pub fn tenant(&self, id: &str) -> PathBuf {
        super::registry_tenant(self.dir.path(), id)
    }

    pub fn reports(&self) -> PathBuf {
        self.dir.path().join("reports")
    }

    /// Runs `work` in a context over this fleet, as a command does: the
    /// fleet discovered and the set loaded anew, one connector, the events
    /// recorded; the connector closed after.
    pub async fn with<T>(
        &self,
        work: impl AsyncFnOnce(&Ctx<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let (set, found) =
            fleetmig::rollout::prepare(&self.migrations, &self.fleet, &DiscoverOptions::default())
                .await?;
        let ctx = Ctx {
            store: &self.store,
            set,
            tenants: found.tenants,
            refused: found.refused,
            fleet: self.fleet.clone(),
            connector: Arc::new(Connector::new(Settings::default())),
            bus: Bus::new(vec![self.events.clone()]),
            cancel: Cancel::default(),
            opts: RunOptions {
                concurrency: None,
                per_server: None,
                lease: Duration::from_secs(30),
                reports: self.reports(),
                metrics_file: None,
                override_gate: false,
            },
            owner: fleetmig::state::owner_id(),
            mover: None,
            fanout: Default::default(),
        };
        let r = work(&ctx).await;
        ctx.connector.close().await;
        r
    }

    /// A new rollout as `req` asks, at the default execution settings.
    pub async fn rollout(&self, req: &RolloutRequest) -> Result<Finished, Error> {
        let exec = ExecOptions {
            concurrency: 4,
            ..ExecOptions::default()
        };
        self.with(async |ctx| fleetmig::rollout::start(ctx, req, &exec, "rollout", &[]).await)
            .await
    }

    /// Resumes rollout `id`.
    pub async fn resume(&self, id: &str) -> Result<Finished, Error> {
        self.with(async |ctx| fleetmig::rollout::resume(ctx, id).await)
            .await
    }
}

/// The versions in a SQLite tenant's history, successful or not.
pub async fn history(path: &Path) -> Vec<(i64, bool)> {
    super::sqlite_history(path).await
}
