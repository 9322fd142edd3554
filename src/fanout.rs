//! The one bounded fan-out. Every command that touches many tenants
//! (migrating, inspecting, checking drift, running gate queries, reverting,
//! baselining) goes through a `Fanout`: at most `concurrency` tenants at once
//! in all, at most `per_server` of them on one database server, with tenants
//! interleaved across servers so that a fleet spread over shards loads each
//! one evenly. A slot is held for as long as the tenant's work runs, so the
//! connections open never exceed the slots.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::tenant::Tenant;

/// The global and per-server limits of one command.
pub struct Fanout {
    global: Arc<Semaphore>,
    concurrency: usize,
    per_server: usize,
    servers: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// The right to work on one tenant: a per-server and a global permit.
pub struct Slot {
    _server: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl Fanout {
    pub fn new(concurrency: usize, per_server: usize) -> Fanout {
        Fanout {
            global: Arc::new(Semaphore::new(concurrency.clamp(1, Semaphore::MAX_PERMITS))),
            concurrency,
            per_server: per_server.clamp(1, Semaphore::MAX_PERMITS),
            servers: Mutex::default(),
        }
    }

    /// A fan-out of its own with the same limits (a second resource held
    /// beside this one's: a move's target server).
    pub fn same_limits(&self) -> Fanout {
        Fanout::new(self.concurrency, self.per_server)
    }

    /// Waits for a slot on `tenant`'s server: the server's permit first, so
    /// that a tenant waiting for a busy server holds no global permit.
    pub async fn slot(&self, tenant: &Tenant) -> Slot {
        let server = {
            let mut servers = self.servers.lock().expect("servers lock");
            servers
                .entry(tenant.locator.server_key())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_server)))
                .clone()
        };
        let s = server.acquire_owned().await.expect("semaphore open");
        let g = self
            .global
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        Slot {
            _server: s,
            _global: g,
        }
    }

    /// Runs `work` on every item (each with a tenant), within the limits;
    /// the results in the order they finish.
    pub async fn run<T, R, Fut>(
        &self,
        items: Vec<T>,
        tenant: impl Fn(&T) -> &Tenant,
        work: impl Fn(T) -> Fut,
    ) -> Vec<R>
    where
        Fut: Future<Output = R>,
    {
        let mut out = Vec::with_capacity(items.len());
        let mut running = FuturesUnordered::new();
        for item in interleave(items, &tenant) {
            // Wait for a slot while the work already started makes progress.
            let slot = loop {
                tokio::select! {
                    s = self.slot(tenant(&item)) => break s,
                    Some(r) = running.next(), if !running.is_empty() => out.push(r),
                }
            };
            let fut = work(item);
            running.push(async move {
                let _slot = slot;
                fut.await
            });
        }
        while let Some(r) = running.next().await {
            out.push(r);
        }
        out
    }
}

/// Orders items round-robin across servers, keeping each server's own order.
pub fn interleave<T>(items: Vec<T>, tenant: impl Fn(&T) -> &Tenant) -> VecDeque<T> {
    let n = items.len();
    let mut by: BTreeMap<String, VecDeque<T>> = BTreeMap::new();
    for t in items {
        by.entry(tenant(&t).locator.server_key())
            .or_default()
            .push_back(t);
    }
    if by.len() <= 1 {
        return by.into_values().next().unwrap_or_default();
    }
    let mut out = VecDeque::with_capacity(n);
    while out.len() < n {
        for q in by.values_mut() {
            if let Some(t) = q.pop_front() {
                out.push_back(t);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::{Locator, TenantId};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn tenant(i: usize, server: &str) -> Tenant {
        Tenant {
            id: TenantId::new(&format!("t{i}")).unwrap(),
            locator: Locator::Mysql {
                url: format!("mysql://{server}:3306/t{i}"),
            },
            tags: Default::default(),
        }
    }

    #[tokio::test]
    async fn never_more_than_the_limits_at_once() {
        let tenants: Vec<Tenant> = (0..40)
            .map(|i| tenant(i, if i % 4 == 0 { "a" } else { "b" }))
            .collect();
        let fan = Fanout::new(5, 3);
        let now = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let peak_all = Arc::new(AtomicUsize::new(0));
        let peak_server = Arc::new(AtomicUsize::new(0));
        let done = fan
            .run(
                tenants,
                |t| t,
                |t| {
                    let (now, peak_all, peak_server) =
                        (now.clone(), peak_all.clone(), peak_server.clone());
                    async move {
                        let key = t.locator.server_key();
                        {
                            let mut m = now.lock().unwrap();
                            *m.entry(key.clone()).or_default() += 1;
                            peak_all.fetch_max(m.values().sum(), Ordering::SeqCst);
                            peak_server.fetch_max(m[&key], Ordering::SeqCst);
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        *now.lock().unwrap().get_mut(&key).unwrap() -= 1;
                        t.id
                    }
                },
            )
            .await;
        assert_eq!(done.len(), 40);
        assert!(peak_all.load(Ordering::SeqCst) <= 5);
        assert_eq!(peak_server.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn interleaves_servers_round_robin() {
        let tenants = vec![tenant(0, "a"), tenant(1, "a"), tenant(2, "b")];
        let order: Vec<String> = interleave(tenants, |t| t)
            .into_iter()
            .map(|t| t.id.to_string())
            .collect();
        assert_eq!(order, ["t0", "t2", "t1"]);
    }
}
