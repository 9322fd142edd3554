//! What differs between one process running a rollout and several workers
//! sharing it, and nothing else: how a process takes its place on the
//! rollout, says it is alive, claims tenants of a wave, takes a wave's gate
//! and leaves. One implementation per state store: `Solo` for a SQLite file
//! (one process holds the rollout's claim; it takes a whole wave at once),
//! `Shared` for PostgreSQL (workers register, claim adaptive batches with
//! `FOR UPDATE SKIP LOCKED` under a lease, and one of them takes each gate
//! with a conditional update). The wave loop (`engine`) runs over either.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::context::{Ctx, Lease};
use crate::error::Error;
use crate::state::{Earlier, RolloutRecord, RolloutStatus, RunStatus, Seen, StateStore};

/// Tenants claimed (sorted), and where interrupted attempts of theirs
/// started when the claim read that too (`None`: the engine asks).
pub(super) struct Claimed {
    pub tenants: Vec<String>,
    pub earlier: Option<HashMap<String, Earlier>>,
}

/// The seat of this process on one rollout.
#[async_trait::async_trait]
pub(super) trait Coordinator: Send + Sync {
    /// The name this process's rows are written under when several share
    /// the rollout (claims, the journal, `--per-server` slots).
    fn worker(&self) -> Option<&str>;

    /// Claims held only while heartbeats keep this lease (several workers).
    fn lease(&self) -> Option<Arc<Lease>>;

    /// Takes this process's place on the rollout, or refuses
    /// (`Error::Busy`: a live process holds it).
    async fn enter(&self) -> Result<(), Error>;

    /// This process is alive; how the rollout stands.
    async fn beat(&self) -> Result<Seen, Error>;

    /// Claims tenants of `wave` still to run, at most as many as this
    /// process should hold now (none: nothing is free).
    async fn claim(&self, wave: i64) -> Result<Claimed, Error>;

    /// The batch of `n` tenants claimed last ended after `took` (its rows
    /// recorded): claims on those still to do are given back (none are
    /// when `all_finished`: each of them has its outcome).
    async fn batch_done(
        &self,
        wave: i64,
        n: usize,
        took: Duration,
        all_finished: bool,
    ) -> Result<(), Error>;

    /// Tenants of `wave` someone still runs or may claim; none: its gate
    /// may be taken.
    async fn left(&self, wave: i64) -> Result<usize, Error>;

    /// Whether this process evaluates the gate of `wave` now.
    async fn take_gate(&self, wave: i64) -> Result<bool, Error>;

    /// Other live processes on the rollout (the last one out ends a rollout
    /// that was stopped).
    async fn others(&self) -> Result<usize, Error>;

    /// Leaves the rollout (its claims are anyone's at once).
    async fn leave(&self) -> Result<(), Error>;
}

/// The seat for the rollout `id` in `ctx`'s store.
pub(super) fn seat(ctx: &Ctx<'_>, r: &RolloutRecord, concurrency: usize) -> Arc<dyn Coordinator> {
    if ctx.store.is_shared() {
        let first = (concurrency * CLAIM_PER_SLOT).max(1);
        Arc::new(Shared {
            store: ctx.store.clone(),
            id: r.id.clone(),
            me: ctx.owner.clone(),
            lease: ctx.opts.lease,
            held: Lease::new(ctx.opts.lease),
            first,
            batch: AtomicUsize::new(first),
            last: Default::default(),
            batch_ids: Default::default(),
            unsaid: Mutex::new((0, Instant::now())),
            alive: Mutex::default(),
        })
    } else {
        Arc::new(Solo {
            store: ctx.store.clone(),
            id: r.id.clone(),
            me: ctx.owner.clone(),
            lease: ctx.opts.lease,
            handed: Mutex::default(),
        })
    }
}

const TODO: [RunStatus; 3] = RunStatus::TODO;

/// One process runs the rollout (a SQLite store): it holds the rollout's
/// claim, and takes each wave whole, once.
struct Solo {
    store: StateStore,
    id: String,
    me: String,
    lease: Duration,
    /// The waves whose tenants were handed out in this process.
    handed: Mutex<BTreeSet<i64>>,
}

#[async_trait::async_trait]
impl Coordinator for Solo {
    fn worker(&self) -> Option<&str> {
        None
    }

    fn lease(&self) -> Option<Arc<Lease>> {
        None
    }

    async fn enter(&self) -> Result<(), Error> {
        match self.store.claim(&self.id, &self.me, self.lease).await? {
            Ok(()) => Ok(()),
            Err(holder) => Err(Error::Busy(holder)),
        }
    }

    async fn beat(&self) -> Result<Seen, Error> {
        self.store.heartbeat(&self.id, &self.me).await
    }

    async fn claim(&self, wave: i64) -> Result<Claimed, Error> {
        let first = self.handed.lock().expect("handed lock").insert(wave);
        let tenants = match first {
            true => self.store.wave_tenants(&self.id, wave, &TODO).await?,
            false => Vec::new(),
        };
        Ok(Claimed {
            tenants,
            earlier: None,
        })
    }

    async fn batch_done(&self, _: i64, _: usize, _: Duration, _: bool) -> Result<(), Error> {
        Ok(())
    }

    async fn left(&self, _wave: i64) -> Result<usize, Error> {
        // the whole wave ran in this process, to an end or a stop (a stop
        // ends the loop before it asks)
        Ok(0)
    }

    async fn take_gate(&self, wave: i64) -> Result<bool, Error> {
        // nobody else evaluates it: a gate left `gating` by a crash is ours
        self.store.take_gate(&self.id, wave, &self.me, 0).await?;
        Ok(true)
    }

    async fn others(&self) -> Result<usize, Error> {
        Ok(0)
    }

    async fn leave(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// Tenants claimed in a first batch, per unit of the worker's concurrency.
const CLAIM_PER_SLOT: usize = 2;

/// The most tenants one batch claims. A batch that took under an eighth of
/// the lease doubles the next (an up-to-date fleet goes a thousand tenants
/// per claim, not eight), one that took over half of it halves the next (a
/// worker that dies holds few slow tenants).
const CLAIM_MAX: usize = 1024;

/// A worker of a rollout several processes share (a PostgreSQL store).
/// It registers itself, heartbeats (extending its claims and the gate it
/// evaluates), claims small batches; one that stops (SIGKILL) or stalls
/// (SIGSTOP) past its lease loses its claims to the others, and one that
/// wakes after that starts nothing more on them (`Lease`); the tenant's own
/// lock keeps a migration from running twice even then.
struct Shared {
    store: StateStore,
    id: String,
    me: String,
    lease: Duration,
    held: Arc<Lease>,
    first: usize,
    batch: AtomicUsize,
    /// The wave of this worker's last claim and the greatest tenant it
    /// took: the next claim looks past it first (see `claim`).
    last: std::sync::Mutex<Option<(i64, String)>>,
    /// The tenants of the batch in hand (its claims given back by
    /// `batch_done`, not those of another batch).
    batch_ids: std::sync::Mutex<Vec<String>>,
    /// Tenants run and not yet added to this worker's count in the store,
    /// and when it was last written (once a second, and when it leaves or
    /// a wave runs out: a batch of tenants that all finished writes
    /// nothing of its own).
    unsaid: Mutex<(usize, Instant)>,
    /// The live workers as last counted, and when (asked after a batch to
    /// size the next: counted again after a second).
    alive: Mutex<Option<(Instant, usize)>>,
}

/// How often a busy worker writes its count of tenants run, and counts the
/// live workers.
const EVERY: Duration = Duration::from_secs(1);

impl Shared {
    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// Adds the tenants run since the last time to this worker's count in
    /// the store, giving back the claims on `release` still to run.
    async fn say(&self, release: &[String]) -> Result<(), Error> {
        let n = {
            let mut unsaid = self.unsaid.lock().expect("unsaid lock");
            std::mem::replace(&mut *unsaid, (0, Instant::now())).0
        };
        let said = self.store.batch_done(&self.id, &self.me, n, release).await;
        if said.is_err() {
            // counted the next time instead
            self.unsaid.lock().expect("unsaid lock").0 += n;
        }
        said
    }

    /// The live workers on the rollout (counted at most once a second).
    async fn alive(&self) -> Result<usize, Error> {
        if let Some((at, n)) = *self.alive.lock().expect("alive lock")
            && at.elapsed() < EVERY
        {
            return Ok(n);
        }
        let n = self.store.alive(&self.id, None, self.lease).await?;
        *self.alive.lock().expect("alive lock") = Some((Instant::now(), n));
        Ok(n)
    }
}

/// This machine's name (the workers table; a move rollout's registry).
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// A worker joins only a rollout planned by its own fleetmig version (the
/// claims, the journal and the plan are read as this version writes them).
pub fn same_version(r: &RolloutRecord) -> Result<(), Error> {
    match &r.settings.fleetmig_version {
        Some(v) if v != env!("CARGO_PKG_VERSION") => Err(Error::usage(
            crate::error::About::Rollout(r.id.clone()),
            format!(
                "planned by fleetmig {v}; this is fleetmig {}: its workers must all be the one \
                 version (run fleetmig {v} here, or finish the rollout first)",
                env!("CARGO_PKG_VERSION")
            ),
        )),
        _ => Ok(()),
    }
}

#[async_trait::async_trait]
impl Coordinator for Shared {
    fn worker(&self) -> Option<&str> {
        Some(&self.me)
    }

    fn lease(&self) -> Option<Arc<Lease>> {
        Some(self.held.clone())
    }

    async fn enter(&self) -> Result<(), Error> {
        same_version(&self.store.get_rollout(&self.id).await?)?;
        self.store.reap(&self.id, self.lease).await?;
        self.store.join(&self.id, &self.me, &host()).await
    }

    async fn beat(&self) -> Result<Seen, Error> {
        self.store.beat(&self.id, &self.me).await
    }

    /// Claims in tenant order, looking first past the greatest tenant this
    /// worker took in the wave (the tenants before it are done or held, and
    /// a claim that scanned them again each time made a big wave
    /// quadratic), then, when that finds fewer than the batch, from the
    /// start (what others gave back or left behind).
    async fn claim(&self, wave: i64) -> Result<Claimed, Error> {
        let n = self.batch.load(Ordering::SeqCst);
        let after = match &*self.last.lock().expect("last lock") {
            Some((w, t)) if *w == wave => Some(t.clone()),
            _ => None,
        };
        let (me, lease_ms) = (&self.me, self.lease_ms());
        let store = &self.store;
        let mut got = store
            .claim_tenants(&self.id, wave, me, lease_ms, n, after.as_deref())
            .await?;
        if got.len() < n && after.is_some() {
            let more = store
                .claim_tenants(&self.id, wave, me, lease_ms, n - got.len(), None)
                .await?;
            got.extend(more);
            got.sort_unstable();
            got.dedup_by(|a, b| a.0 == b.0);
        }
        if let Some((t, _)) = got.last() {
            let mut last = self.last.lock().expect("last lock");
            if !matches!(&*last, Some((w, l)) if *w == wave && l >= t) {
                *last = Some((wave, t.clone()));
            }
        }
        let earlier = got
            .iter()
            .filter_map(|(t, from)| from.map(|from| (t.clone(), Earlier { from })))
            .collect();
        let tenants: Vec<String> = got.into_iter().map(|(t, _)| t).collect();
        *self.batch_ids.lock().expect("batch lock") = tenants.clone();
        Ok(Claimed {
            tenants,
            earlier: Some(earlier),
        })
    }

    async fn batch_done(
        &self,
        wave: i64,
        n: usize,
        took: Duration,
        all_finished: bool,
    ) -> Result<(), Error> {
        let ids = std::mem::take(&mut *self.batch_ids.lock().expect("batch lock"));
        let due = {
            let mut unsaid = self.unsaid.lock().expect("unsaid lock");
            unsaid.0 += n;
            !all_finished || unsaid.1.elapsed() >= EVERY
        };
        if due {
            self.say(if all_finished { &[] } else { &ids }).await?;
        }
        let (took, lease_ms) = (took.as_millis() as i64, self.lease_ms());
        let batch = self.batch.load(Ordering::SeqCst);
        let next = if took < lease_ms / 8 {
            // never more than this worker's share of what is left: another
            // live worker always finds some (alone, a claim takes no more
            // than is left anyway, and counting the wave's rows after every
            // batch made a big wave quadratic)
            let grown = (batch * 2).min(CLAIM_MAX);
            match self.alive().await? {
                0 | 1 => grown,
                live => {
                    // past grown × live, the share is grown anyway
                    let cap = grown * live;
                    let left = self.store.wave_left_up_to(&self.id, wave, cap).await?;
                    grown.min((left / live).max(self.first))
                }
            }
        } else if took > lease_ms / 2 {
            (batch / 2).max(self.first)
        } else {
            batch
        };
        self.batch.store(next, Ordering::SeqCst);
        Ok(())
    }

    async fn left(&self, wave: i64) -> Result<usize, Error> {
        // free the claims of workers that are gone first: what they held
        // is claimable again (and counted as free); and this worker's own
        // leftovers (its claim found nothing, so it runs nothing now)
        self.say(&[]).await?;
        self.store.release_mine(&self.id, wave, &self.me).await?;
        self.store.reap(&self.id, self.lease).await?;
        self.store
            .wave_left(&self.id, wave, Some(self.lease_ms()))
            .await
    }

    async fn take_gate(&self, wave: i64) -> Result<bool, Error> {
        self.store
            .take_gate(&self.id, wave, &self.me, self.lease_ms())
            .await
    }

    async fn others(&self) -> Result<usize, Error> {
        self.store.alive(&self.id, Some(&self.me), self.lease).await
    }

    async fn leave(&self) -> Result<(), Error> {
        self.say(&[]).await?;
        self.store.leave(&self.id, &self.me).await
    }
}

/// Whether rollout `r` still runs as far as a heartbeat saw.
pub(super) fn runs(seen: &Seen) -> bool {
    seen.status == RolloutStatus::Running && seen.requested.is_none()
}
