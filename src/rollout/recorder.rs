//! The state recorder: the one writer of a running rollout's outcomes, waves
//! and gates. It subscribes to the event stream and turns tenant events into
//! state-store rows (a tenant started, its backfill progressed, it
//! finished): queued, and written in order by a writer task, a batch per
//! transaction. The wave loop's steps (a wave opened, a gate recorded, the
//! rollout advanced or ended) are written by its methods, each after a
//! flush, so the store never shows a wave's gate before its tenants' rows.
//! The loop `flush`es before it reads the store to decide anything, so every
//! decision sees every event before it; the one read it does not wait for
//! is a worker's next claim after a batch whose every tenant has its
//! outcome queued (the claim cannot take those tenants: the worker holds
//! them), so the tenants run on while their rows are written. Counts are added in SQL (attempts, applied
//! versions, durations, backfill batches), so nothing per tenant is kept in
//! memory across a wave.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::event::{Event, Subscriber, TenantStatus};
use crate::state::{
    Finish, RolloutStatus, RunError, RunStatus, StateStore, TenantUpdate, WaveStatus, now_ms,
};

/// Messages that may wait for the writer before an emitting task waits:
/// a few batches (the writer takes up to 2,048 at a time).
const QUEUE: usize = 8192;

enum Msg {
    Tenant(TenantUpdate),
    Flush(oneshot::Sender<()>),
}

/// Records one rollout's events in the state store.
pub struct Recorder {
    rollout: String,
    /// Several workers on the rollout: this process's id (the rows record
    /// it, and finishes count only under its claim).
    worker: Option<String>,
    store: StateStore,
    /// A worker's lease: a shared slot of a worker not heard from within it
    /// is anyone's.
    lease_ms: i64,
    tx: mpsc::Sender<Msg>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    failure: Arc<Mutex<Option<Error>>>,
    /// Outcomes queued so far that leave a tenant done (not still to run).
    finished: AtomicUsize,
}

impl Recorder {
    /// Starts the writer task of rollout `rollout` (`worker`: see the field).
    pub fn start(
        store: StateStore,
        rollout: &str,
        worker: Option<String>,
        lease: std::time::Duration,
    ) -> Arc<Recorder> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let failure: Arc<Mutex<Option<Error>>> = Arc::default();
        let writer = tokio::spawn(write(
            store.clone(),
            rollout.to_string(),
            worker.clone(),
            rx,
            failure.clone(),
        ));
        Arc::new(Recorder {
            rollout: rollout.to_string(),
            worker,
            store,
            lease_ms: lease.as_millis() as i64,
            tx,
            writer: Mutex::new(Some(writer)),
            failure,
            finished: AtomicUsize::new(0),
        })
    }

    /// How many outcomes that leave a tenant done were queued so far: a
    /// batch that added as many as it had tenants left none to give back.
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }

    /// Whether it records one worker of a shared rollout.
    pub fn is_worker(&self) -> bool {
        self.worker.is_some()
    }

    /// Queues an update that no event carries (a tenant gone from the fleet).
    pub fn update(&self, u: TenantUpdate) {
        self.queue(Msg::Tenant(u));
    }

    /// Queues `msg`; when `QUEUE` messages wait already, the emitting task
    /// waits for the writer (it hands its worker thread over meanwhile:
    /// `block_in_place`), so a store slower than the tenants holds the
    /// tenants back instead of filling memory. Subscribers are synchronous,
    /// hence the hand-over. On a single-threaded runtime (fleetmig's
    /// commands run a multi-threaded one) a task sends it instead.
    fn queue(&self, msg: Msg) {
        use tokio::runtime::{Handle, RuntimeFlavor};
        if let Msg::Tenant(TenantUpdate::Finished(f)) = &msg
            && !RunStatus::TODO.contains(&f.status)
        {
            self.finished.fetch_add(1, Ordering::SeqCst);
        }
        let msg = match self.tx.try_send(msg) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Closed(_)) => return,
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                let _ = tokio::task::block_in_place(|| h.block_on(self.tx.send(msg)));
            }
            Ok(_) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(msg).await;
                });
            }
            Err(_) => {
                let _ = self.tx.blocking_send(msg);
            }
        }
    }

    /// Waits until everything queued so far is written; the first write
    /// error, if any.
    pub async fn flush(&self) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
        self.failed()
    }

    /// The first write error so far, if any, without waiting for what is
    /// queued.
    pub fn failed(&self) -> Result<(), Error> {
        match self.failure.lock().expect("failure lock").take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Opens wave `wave` (pending, its bake over): true for the one process
    /// that opened it.
    pub async fn open_wave(&self, wave: i64) -> Result<bool, Error> {
        self.flush().await?;
        self.store.open_wave(&self.rollout, wave).await
    }

    /// Records the one evaluation of wave `wave`'s gate, by `by`.
    pub async fn gate(
        &self,
        wave: i64,
        by: &str,
        status: WaveStatus,
        text: &str,
    ) -> Result<(), Error> {
        self.flush().await?;
        self.store
            .gate_evaluated(&self.rollout, wave, by, status, text)
            .await
    }

    /// Moves the rollout past wave `wave`, unless it already moved.
    pub async fn advance(&self, wave: i64) -> Result<(), Error> {
        self.flush().await?;
        self.store.advance(&self.rollout, wave).await
    }

    /// Wave `wave` opens no earlier than `at` (the bake of the one before).
    pub async fn open_at(&self, wave: i64, at: i64) -> Result<(), Error> {
        self.store.open_at(&self.rollout, wave, at).await
    }

    /// Ends the rollout with `status` unless it already ended: true for the
    /// one process that ended it.
    pub async fn end(&self, status: RolloutStatus, reason: Option<&str>) -> Result<bool, Error> {
        self.flush().await?;
        self.store.end(&self.rollout, status, reason).await
    }

    /// Flushes and stops the writer.
    pub async fn finish(&self) -> Result<(), Error> {
        let r = self.flush().await;
        let writer = self.writer.lock().expect("writer lock").take();
        if let Some(w) = writer {
            w.abort();
            let _ = w.await;
        }
        r
    }
}

/// A worker's recorder writes a tenant's start at once, before its first
/// migration (a worker killed after applying leaves the one that takes the
/// tenant over what to credit); a single process's goes with the batch.
#[async_trait::async_trait]
impl super::executor::Journal for Recorder {
    async fn planned(&self, tenant: &str, from: i64) -> Result<bool, Error> {
        self.store
            .journal(&self.rollout, tenant, from, self.worker.as_deref())
            .await
    }

    async fn try_slot(
        &self,
        server: &str,
        tenant: &str,
        limit: usize,
    ) -> Result<super::executor::Slot, Error> {
        use super::executor::Slot;
        let Some(me) = &self.worker else {
            return Ok(Slot::Unshared);
        };
        Ok(
            match self
                .store
                .take_slot(&self.rollout, server, me, tenant, limit, self.lease_ms)
                .await?
            {
                Some(s) => Slot::Taken(s),
                None => Slot::Busy,
            },
        )
    }

    async fn give_slot(&self, server: &str, slot: i64) {
        if let Some(me) = &self.worker {
            let _ = self.store.give_slot(&self.rollout, server, slot, me).await;
        }
    }
}

impl Subscriber for Recorder {
    fn on_event(&self, event: &Event) {
        let msg = match event {
            Event::TenantStarted { tenant, .. } => Msg::Tenant(TenantUpdate::Started {
                tenant: tenant.to_string(),
                at: now_ms(),
            }),
            Event::TenantPlanned {
                tenant,
                from_version,
                pending,
            } if !pending.is_empty() && self.worker.is_none() => {
                Msg::Tenant(TenantUpdate::Planned {
                    tenant: tenant.to_string(),
                    from: *from_version,
                })
            }
            Event::Preflight { tenant, summary } => Msg::Tenant(TenantUpdate::Preflight {
                tenant: tenant.to_string(),
                summary: summary.clone(),
            }),
            Event::BackupTaken { tenant, path } => Msg::Tenant(TenantUpdate::Backup {
                tenant: tenant.to_string(),
                path: path.display().to_string(),
            }),
            Event::BackfillBatch {
                tenant,
                version,
                batch_statements,
                batch_rows,
                batch_duration,
                done,
                ..
            } => Msg::Tenant(TenantUpdate::Backfill {
                tenant: tenant.to_string(),
                version: *version,
                batches: *batch_statements as i64,
                rows: *batch_rows as i64,
                batch_ms: batch_duration.as_millis() as i64,
                done: *done,
            }),
            Event::TenantFinished(o) => {
                Msg::Tenant(TenantUpdate::Finished(Box::new(Finish {
                    tenant: o.tenant.to_string(),
                    status: match o.status {
                        TenantStatus::Succeeded | TenantStatus::UpToDate => RunStatus::Succeeded,
                        TenantStatus::Failed => RunStatus::Failed,
                        TenantStatus::NotStarted => RunStatus::NotStarted,
                        TenantStatus::Interrupted => RunStatus::Pending,
                    },
                    // every attempt was counted by its `Started`
                    attempts: 0,
                    from_version: o.from_version,
                    to_version: o.to_version,
                    applied: o.applied.clone(),
                    started_at: o.started_at.map(|t| t.timestamp_millis()),
                    finished_at: o.finished_at.map(|t| t.timestamp_millis()),
                    duration_ms: o.duration.as_millis() as i64,
                    error: o.error.as_ref().map(RunError::from).unwrap_or_default(),
                })))
            }
            _ => return,
        };
        self.queue(msg);
    }
}

/// Writes one batch, again while the store fails for a reason that passes
/// (a lost connection, a restarting server): a batch is one transaction,
/// committed whole or not at all. One whose commit was lost in flight and
/// is written again counts its attempts twice; its outcome is the same.
async fn record(
    store: &StateStore,
    rollout: &str,
    rows: &[TenantUpdate],
    worker: Option<&str>,
) -> Result<(), Error> {
    crate::state::patiently("recording tenants", || store.record(rollout, rows, worker)).await
}

/// The writer task: gathers what arrives within a moment into one
/// transaction. An attempt's `Started` row that is already `Finished` in
/// the same batch is not written on its own: the finish adds the attempt.
async fn write(
    store: StateStore,
    rollout: String,
    worker: Option<String>,
    mut rx: mpsc::Receiver<Msg>,
    failure: Arc<Mutex<Option<Error>>>,
) {
    let fail = |e: Error| {
        tracing::error!("cannot record the state of rollout {rollout}: {e}");
        failure.lock().expect("failure lock").get_or_insert(e);
    };
    while let Some(first) = rx.recv().await {
        if matches!(first, Msg::Tenant(_)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut queue = vec![first];
        while queue.len() < 2048
            && let Ok(more) = rx.try_recv()
        {
            queue.push(more);
        }
        let mut tenants: Vec<TenantUpdate> = Vec::new();
        for msg in queue {
            match msg {
                Msg::Tenant(u) => tenants.push(u),
                // the tenant rows before it first, in order
                Msg::Flush(done) => {
                    let rows = fold(std::mem::take(&mut tenants));
                    if let Err(e) = record(&store, &rollout, &rows, worker.as_deref()).await {
                        fail(e);
                    }
                    let _ = done.send(());
                }
            }
        }
        if let Err(e) = record(&store, &rollout, &fold(tenants), worker.as_deref()).await {
            fail(e);
        }
    }
}

/// Folds each tenant's `Started` updates into its `Finished` one in the same
/// batch (one write per tenant instead of two); its `Planned` ones go (the
/// finish records where it started).
fn fold(batch: Vec<TenantUpdate>) -> Vec<TenantUpdate> {
    let finished: HashMap<String, usize> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, u)| match u {
            TenantUpdate::Finished(f) => Some((f.tenant.clone(), i)),
            _ => None,
        })
        .collect();
    let mut folded: HashMap<usize, i64> = HashMap::new();
    let mut out: Vec<Option<TenantUpdate>> = Vec::with_capacity(batch.len());
    for (i, u) in batch.into_iter().enumerate() {
        if let TenantUpdate::Started { tenant, .. } = &u
            && let Some(&at) = finished.get(tenant)
            && at > i
        {
            *folded.entry(at).or_default() += 1;
            out.push(None);
            continue;
        }
        if let TenantUpdate::Planned { tenant, .. } = &u
            && finished.get(tenant).is_some_and(|&at| at > i)
        {
            out.push(None);
            continue;
        }
        out.push(Some(u));
    }
    for (at, n) in folded {
        if let Some(TenantUpdate::Finished(f)) = out[at].as_mut() {
            f.attempts += n;
        }
    }
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_row_folds_into_its_finish() {
        let started = |t: &str| TenantUpdate::Started {
            tenant: t.into(),
            at: 1,
        };
        let finished =
            |t: &str| TenantUpdate::Finished(Box::new(Finish::new(t, RunStatus::Succeeded)));
        let out = fold(vec![
            started("a"),
            started("b"),
            started("a"),
            finished("a"),
            started("c"),
        ]);
        assert_eq!(out.len(), 3, "{out:?}");
        match &out[1] {
            TenantUpdate::Finished(f) => assert_eq!((f.tenant.as_str(), f.attempts), ("a", 2)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&out[0], TenantUpdate::Started { tenant, .. } if tenant == "b"));
        assert!(matches!(&out[2], TenantUpdate::Started { tenant, .. } if tenant == "c"));
    }
}
