//! Steps 2 and 3 of a move: proving the target is the move's own before a
//! byte of it changes.
//!
//! - The target's place (`copy::place`) may overlap neither the source nor
//!   any tenant of the fleet: one place spelled two ways is one place.
//! - A scratch target (a temporary file, a `_fleetmig_scratch_…` schema or
//!   database that fleetmig creates and drops) is brought to the source's
//!   version with the migration set: the target's tables and column types
//!   are known, and refused where they cannot be filled, before the real
//!   target exists.
//! - The target is then created (never `IF NOT EXISTS`: what fleetmig
//!   creates did not exist) and marked with the move's id before anything
//!   else; or, when it exists, it is filled only if it is empty (no table
//!   holds a row, no object beyond what the set creates, a history the
//!   source's begins with) or marked by an unfinished move of this tenant
//!   from this source. Anything else is refused, naming the table, the
//!   object or the mark.

use crate::error::FailureKind;
use std::sync::{Arc, Mutex};

use super::refused;
use crate::dialect::copy::{self, Contents, Created, Mark, Place, Table};
use crate::dialect::{Access, Connector};
use crate::error::{Error, TenantError};
use crate::event::{Bus, Event, Subscriber, TenantStatus};
use crate::migration::{Applied, MigrationSet};
use crate::state::StateStore;
use crate::tenant::{Locator, Tenant};

/// The places of the source and the target; refused when the target is the
/// source, or inside it, or any other tenant's location in the fleet.
pub(super) async fn places(
    connector: &Connector,
    fleet: &[Tenant],
    tenant: &Tenant,
    to: &Locator,
) -> Result<(Place, Place), Error> {
    let settings = &connector.settings;
    let te = |e: TenantError| refused(tenant, e.message);
    let source = copy::place(settings, &tenant.locator).await.map_err(te)?;
    let target = copy::place(settings, to).await.map_err(te)?;
    if source.overlaps(&target) {
        return Err(refused(
            tenant,
            format!(
                "{} is where the tenant already is ({}): nothing was touched",
                to.redacted(),
                tenant.locator.redacted()
            ),
        ));
    }
    for other in fleet.iter().filter(|t| t.id != tenant.id) {
        if !copy::place::may_be(&other.locator, &target) {
            continue;
        }
        match copy::place(settings, &other.locator).await {
            Ok(p) if p.overlaps(&target) => {
                return Err(refused(
                    tenant,
                    format!(
                        "{} is tenant {}'s location ({}): fleetmig moves into a new or empty \
                         place only; nothing was touched",
                        to.redacted(),
                        other.id,
                        other.locator.redacted()
                    ),
                ));
            }
            Ok(_) => {}
            Err(e) => {
                return Err(refused(
                    tenant,
                    format!(
                        "cannot tell whether {} is tenant {}'s location ({}): {}; nothing was touched",
                        to.redacted(),
                        other.id,
                        other.locator.redacted(),
                        e.message
                    ),
                ));
            }
        }
    }
    Ok((source, target))
}

/// What the migration set makes of a new target at `version`: its tables
/// and everything it holds, read from a scratch target that is removed
/// again.
pub(super) struct Scratch {
    pub tables: Vec<Table>,
    pub contents: Contents,
}

/// Where the scratch target of a move into `to` goes: beside the target
/// (a schema in its database, a database on its server, a temporary file).
fn scratch_locator(to: &Locator, target: &Place, id: &str) -> Locator {
    let name = format!(
        "_fleetmig_scratch_{}",
        id.replace(['-', '.', ':'], "_").to_lowercase()
    );
    match to {
        Locator::Sqlite { .. } => Locator::Sqlite {
            path: std::env::temp_dir().join(format!("{name}.db")),
        },
        Locator::Postgres {
            url,
            schema: Some(_),
        } if target.database_exists => Locator::Postgres {
            url: url.clone(),
            schema: Some(name),
        },
        Locator::Postgres { url, schema } => Locator::Postgres {
            url: crate::dialect::with_database(url, &name),
            schema: schema.clone(),
        },
        Locator::Mysql { url } => Locator::Mysql {
            url: crate::dialect::with_database(url, &name),
        },
        Locator::Row { .. } => to.clone(),
    }
}

/// Migrates a scratch target to `version`, reads it, removes it.
pub(super) async fn scratch(
    connector: &Connector,
    set: &Arc<MigrationSet>,
    tenant: &Tenant,
    to: &Locator,
    target: &Place,
    version: i64,
    id: &str,
) -> Result<Scratch, Error> {
    let settings = &connector.settings;
    let at = scratch_locator(to, target, id);
    let te = |e: TenantError| refused(tenant, format!("preparing a scratch target: {}", e.message));
    let created = copy::create(settings, &at).await.map_err(te)?;
    if created == Created::Nothing {
        return Err(refused(
            tenant,
            format!("the scratch target {} exists already", at.redacted()),
        ));
    }
    let read = async {
        migrate(connector, set, tenant, &at, version, &Bus::new(Vec::new()))
            .await
            .map_err(|e| {
                refused(
                    tenant,
                    format!(
                        "the migration set does not run on the target's system: {}",
                        e.message
                    ),
                )
            })?;
        let mut end = copy::open(settings, &at).await.map_err(te)?;
        let r = async {
            let tables = end.tables().await?;
            let contents = end.contents().await?;
            Ok::<_, TenantError>((tables, contents))
        }
        .await;
        end.close().await;
        let (tables, contents) = r.map_err(te)?;
        Ok(Scratch { tables, contents })
    }
    .await;
    if let Err(e) = copy::remove(settings, &at, created).await {
        tracing::warn!(
            "the scratch target {} was not removed: {}",
            at.redacted(),
            e.message
        );
    }
    read
}

/// The history of the tenant's copy at `at`, read as any tenant's is.
pub(super) async fn history(
    connector: &Connector,
    tenant: &Tenant,
    at: &Locator,
) -> Result<Vec<Applied>, TenantError> {
    let there = Tenant {
        id: tenant.id.clone(),
        locator: at.clone(),
        tags: Default::default(),
    };
    let mut session = connector.open(&there, Access::Read).await?;
    let h = session.history().await;
    session.close().await;
    h
}

/// How the target came to be the move's.
pub(super) enum Claimed {
    /// Created by this move.
    Created(Created),
    /// It existed, empty.
    Empty,
    /// An earlier, unfinished move of this tenant from this source filled
    /// part of it.
    Restarted(String),
}

/// Step 2 under the state store's claim: creates the target, or proves it
/// empty or this tenant's unfinished move's; then marks it as move `mark`'s.
pub(super) async fn claim(
    connector: &Connector,
    store: &StateStore,
    (tenant, to): (&Tenant, &Locator),
    scratch: &Scratch,
    source_history: &[Applied],
    mark: &Mark,
) -> Result<Claimed, Error> {
    let settings = &connector.settings;
    let te = |e: TenantError| refused(tenant, e.message);
    let created = copy::create(settings, to).await.map_err(te)?;
    let mut end = copy::open(settings, to).await.map_err(te)?;
    let judged = async {
        if created != Created::Nothing {
            return Ok(Claimed::Created(created));
        }
        if let Some(old) = end.mark().await.map_err(te)? {
            return restartable(store, tenant, to, &old, mark).await;
        }
        let contents = end.contents().await.map_err(te)?;
        let history = history(connector, tenant, to).await.map_err(te)?;
        empty(tenant, to, &contents, &history, scratch, source_history)?;
        Ok(Claimed::Empty)
    }
    .await;
    let marked = match judged {
        Ok(c) => end.set_mark(mark).await.map(|_| c).map_err(te),
        Err(e) => Err(e),
    };
    end.close().await;
    marked
}

/// A target marked by `old`: this tenant's, from this source, by a move
/// the store knows did not finish.
async fn restartable(
    store: &StateStore,
    tenant: &Tenant,
    to: &Locator,
    old: &Mark,
    mark: &Mark,
) -> Result<Claimed, Error> {
    let whose = format!(
        "{} is marked by move {} of tenant {}",
        to.redacted(),
        old.move_id,
        old.tenant
    );
    if old.tenant != mark.tenant || old.source != mark.source {
        return Err(Error::Busy(format!(
            "move {}: {whose} from another place ({}); nothing was touched",
            tenant.id, old.source
        )));
    }
    match store.move_status(&old.move_id).await? {
        Some(status) if status != crate::state::moves::MoveStatus::Done => {
            Ok(Claimed::Restarted(old.move_id.clone()))
        }
        Some(_) => Err(Error::Busy(format!(
            "move {}: {whose}, which the state store records as done; nothing was touched",
            tenant.id
        ))),
        None => Err(Error::Busy(format!(
            "move {}: {whose}, which this state store does not know (another --state?); \
             nothing was touched",
            tenant.id
        ))),
    }
}

/// An existing, unmarked target: no table holds a row, nothing is there
/// that the migration set does not create, and its history is the start of
/// the source's.
fn empty(
    tenant: &Tenant,
    to: &Locator,
    contents: &Contents,
    history: &[Applied],
    scratch: &Scratch,
    source_history: &[Applied],
) -> Result<(), Error> {
    let at = to.redacted();
    if !contents.filled.is_empty() {
        return Err(refused(
            tenant,
            format!(
                "the target {at} is not empty: table {} holds rows{}; fleetmig moves into a new \
                 or empty place only, nothing was touched",
                contents.filled[0],
                match contents.filled.len() {
                    1 => String::new(),
                    n => format!(" (and {} more tables)", n - 1),
                }
            ),
        ));
    }
    if let Some(o) = contents
        .objects
        .iter()
        .find(|o| !scratch.contents.objects.contains(o))
    {
        return Err(refused(
            tenant,
            format!(
                "the target {at} holds {o}, which the migration set does not create; fleetmig \
                 moves into a new or empty place only, nothing was touched"
            ),
        ));
    }
    if let Some(h) = history.iter().find(|h| {
        !source_history
            .iter()
            .any(|s| s.version == h.version && s.checksum == h.checksum && h.success)
    }) {
        return Err(refused(
            tenant,
            format!(
                "the target {at} has version {} in its history, which the source has not \
                 (or not the same); nothing was touched",
                h.version
            ),
        ));
    }
    Ok(())
}

/// Brings the tenant's copy at `at` to `version` with the executor, as any
/// rollout would; the outcome comes back as the tenant's finish event.
pub(super) async fn migrate(
    connector: &Connector,
    set: &Arc<MigrationSet>,
    tenant: &Tenant,
    at: &Locator,
    version: i64,
    bus: &Bus,
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
        locator: at.clone(),
        tags: tenant.tags.clone(),
    };
    let opts = crate::options::ExecOptions {
        concurrency: 1,
        per_server: 1,
        ..Default::default()
    };
    let executor = crate::rollout::executor::Executor {
        connector: Arc::new(Connector::new(connector.settings.clone())),
        fanout: Arc::new(crate::fanout::Fanout::new(1, 1)),
        set: set.clone(),
        opts,
        target: Some(version),
        bus: bus.with(outcome.clone()),
        cancel: Default::default(),
        failures: Default::default(),
        earlier: Default::default(),
        journal: None,
    };
    executor.run("move", vec![target]).await;
    executor.connector.close().await;
    let got = outcome.0.lock().expect("outcome").take();
    match got {
        Some((TenantStatus::Succeeded | TenantStatus::UpToDate, _)) => Ok(()),
        Some((_, Some(e))) => Err(TenantError {
            message: format!("bringing the target to version {version}: {}", e.message),
            ..e
        }),
        other => Err(TenantError::permanent(
            FailureKind::Interrupted,
            format!(
                "bringing the target to version {version} did not finish ({:?})",
                other.map(|o| o.0)
            ),
        )),
    }
}
