//! Benchmark: the control plane of a shared rollout. An up-to-date fleet
//! of N SQLite tenants (nothing to apply: what is left is the bookkeeping
//! of claims, heartbeats and records) synced through the PostgreSQL state
//! store by 1, 2 and 4 workers, beside the same fleet with the SQLite state
//! store and the floor (each history read by 2 Python processes). Workers
//! beyond the first are `fleetmig worker --once` processes started before
//! the `sync` and joining it; a configuration is timed from the `sync`'s
//! start until every process has exited. Each PostgreSQL run gets a fresh
//! state database. Rounds interleave; medians.
//!
//! All processes share this machine's 2 cores with the state store's
//! server: more workers here show the control plane's cost and its
//! contention, not the speedup of workers on their own machines.
//!
//! cargo bench --bench control_plane -- [--tenants 20000] [--workers 1,2,4] [--rounds 3]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// One `sync` of the fleet in `root/t` with the state at `state`, joined by
/// `workers - 1` worker processes: its wall time, and the tenants each
/// process recorded.
fn shared_sync(root: &Path, state: &str, workers: usize, n: usize) -> Duration {
    let bin = common::fleetmig_bin();
    let helpers: Vec<_> = (1..workers)
        .map(|_| {
            Command::new(&bin)
                .current_dir(root)
                .args([
                    "worker",
                    "--once",
                    "--fleet",
                    "sqlite-dir:t",
                    "--state",
                    state,
                ])
                .args(["--progress-every", "0"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // the helpers are waiting for a rollout before the clock starts
    std::thread::sleep(Duration::from_millis(700));
    let start = Instant::now();
    let out = Command::new(&bin)
        .current_dir(root)
        .args(["sync", "--fleet", "sqlite-dir:t", "--state", state])
        .args(["--progress-every", "0", "--migrations"])
        .arg(migrations())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(&format!("({n} up to date)")),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for h in helpers {
        let o = h.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "worker: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    start.elapsed()
}

/// Creates the state store's tables in the database at `url` (a sync of a
/// one-tenant fleet), so that workers can wait on it.
fn init_store(root: &Path, url: &str) {
    let seed = root.join("seed");
    let out = Command::new(common::fleetmig_bin())
        .current_dir(&seed)
        .args(["sync", "--fleet", "sqlite-dir:t", "--state", url])
        .args(["--progress-every", "0", "--migrations"])
        .arg(migrations())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::main]
async fn main() {
    let n: usize = arg("--tenants", "20000").parse().unwrap();
    let rounds: usize = arg("--rounds", "3").parse().unwrap();
    let workers: Vec<usize> = arg("--workers", "1,2,4")
        .split(',')
        .map(|w| w.parse().unwrap())
        .collect();
    let root = tempfile::tempdir().unwrap();
    sqlite_fleet(root.path(), n);
    let mut floor = vec![];
    let mut sqlite_store = vec![];
    let mut pg: Vec<Vec<f64>> = vec![vec![]; workers.len()];
    for _ in 0..rounds {
        floor.push(n as f64 / sqlite_floor(root.path(), &root.path().join("t")).as_secs_f64());
        let state = root.path().join("state.db");
        let _ = std::fs::remove_file(&state);
        let (wall, _, out) = timed(fleetmig(
            root.path(),
            &["sync", "--fleet", "sqlite-dir:t", "--state", "state.db"],
        ));
        assert!(out.contains(&format!("({n} up to date)")), "{out}");
        sqlite_store.push(n as f64 / wall.as_secs_f64());
        for (i, w) in workers.iter().enumerate() {
            let (name, url) = pg_create("fm_control").await;
            init_store(root.path(), &url);
            let wall = shared_sync(root.path(), &url, *w, n);
            pg[i].push(n as f64 / wall.as_secs_f64());
            pg_drop(&name).await;
        }
    }
    let f = median(floor);
    println!("Control plane: {n} SQLite tenants at head, {rounds} rounds, 2 cores");
    println!("| state store | workers | tenants/s | × floor | control plane per tenant |");
    println!("|---|---:|---:|---:|---:|");
    println!("| none (floor: read each history) | | {f:.0} | 1.00 | |");
    let line = |what: &str, w: &str, t: f64| {
        println!(
            "| {what} | {w} | {t:.0} | {:.2} | {:.0} µs |",
            t / f,
            (1.0 / t - 1.0 / f) * 1e6
        )
    };
    line("SQLite file", "1", median(sqlite_store));
    for (i, w) in workers.iter().enumerate() {
        line("PostgreSQL", &w.to_string(), median(pg[i].clone()));
    }
}
