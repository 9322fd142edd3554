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
//! The second table is that speedup: tenants whose work waits on their
//! server (PostgreSQL schemas, one new migration each, `SELECT
//! pg_sleep(0.020)`: 20 ms a tenant spent on the server, as a remote
//! server's latency and work would be) synced through the PostgreSQL store
//! by 1 and by 4 workers of the same concurrency, interleaved; each run
//! applies one more migration to every schema, so every run has the same
//! work. The ratio is 4 workers' throughput over 1 worker's, per round.
//!
//! cargo bench --bench control_plane -- [--tenants 20000] [--workers 1,2,4] [--rounds 3]
//!     [--delay-ms 20] [--delay-tenants 2000] [--delay-concurrency 2]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sqlx::Connection;

/// One `sync` of the fleet in `root/t` with the state at `state`, joined by
/// `workers - 1` worker processes: its wall time.
fn shared_sync(root: &Path, state: &str, workers: usize, n: usize) -> Duration {
    let fleet = ["--fleet".into(), "sqlite-dir:t".into()];
    let rest = ["--migrations".into(), migrations().display().to_string()];
    shared(
        root,
        state,
        workers,
        &fleet,
        &rest,
        &format!("({n} up to date)"),
    )
}

/// `fleetmig sync FLEET REST --state STATE` joined by `workers - 1`
/// `worker --once FLEET` processes (started first, waiting for the
/// rollout), timed from the sync's start until every process has exited;
/// the sync's output must hold `expect`. Workers take the rollout's
/// settings from the store.
fn shared(
    root: &Path,
    state: &str,
    workers: usize,
    fleet: &[String],
    rest: &[String],
    expect: &str,
) -> Duration {
    let bin = common::fleetmig_bin();
    let helpers: Vec<_> = (1..workers)
        .map(|_| {
            Command::new(&bin)
                .current_dir(root)
                .args(["worker", "--once", "--state", state])
                .args(fleet)
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
        .args(["sync", "--state", state, "--progress-every", "0"])
        .args(fleet)
        .args(rest)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && text.contains(expect),
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

/// The speedup of workers whose tenants wait on their server: `n` schemas,
/// each run one more `pg_sleep(delay)` migration for every schema, synced
/// by 1 and by 4 workers (interleaved, `rounds` each); prints the table.
async fn delayed(root: &Path, n: usize, delay_ms: u64, c: usize, rounds: usize) {
    let (db, url) = pg_create("fm_delay").await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let schemas: String = (0..n)
        .map(|i| format!("CREATE SCHEMA dly{i:05};"))
        .collect();
    sqlx::raw_sql(sqlx::AssertSqlSafe(schemas))
        .execute(&mut conn)
        .await
        .unwrap();
    let dir = root.join("delay-migrations");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("0001_base.sql"), "CREATE TABLE t (id INT);\n").unwrap();
    let fleet: Vec<String> = ["--fleet", &format!("postgres-schemas:{url}")]
        .into_iter()
        .chain(["--tenant-pattern", "dly%"])
        .map(String::from)
        .collect();
    let rest: Vec<String> = ["--migrations", &dir.display().to_string()]
        .into_iter()
        .chain(["--concurrency", &c.to_string()])
        .map(String::from)
        .collect();
    let expect = format!("{n} tenants: {n} succeeded (0 up to date)");
    shared(root, "delay-base.db", 1, &fleet, &rest, &expect);
    let mut version = 1;
    let mut runs = [vec![], vec![]];
    for r in 0..rounds {
        for k in [r % 2, (r + 1) % 2] {
            version += 1;
            let sql = format!("SELECT pg_sleep({});\n", delay_ms as f64 / 1000.0);
            std::fs::write(dir.join(format!("{version:04}_delay.sql")), sql).unwrap();
            let (store, store_url) = pg_create("fm_delay_store").await;
            init_store(root, &store_url);
            let workers = [1, 4][k];
            let wall = shared(root, &store_url, workers, &fleet, &rest, &expect);
            runs[k].push(n as f64 / wall.as_secs_f64());
            pg_drop(&store).await;
        }
    }
    conn.close().await.unwrap();
    pg_drop(&db).await;
    let speedup: Vec<f64> = runs[0].iter().zip(&runs[1]).map(|(a, b)| b / a).collect();
    println!();
    println!(
        "Workers on a waiting fleet: {n} PostgreSQL schemas, {delay_ms} ms of server time a tenant, \
         --concurrency {c} each, {rounds} rounds"
    );
    println!("| workers | tenants/s | × 1 worker (median of rounds) | range |");
    println!("|---:|---:|---:|---:|");
    println!("| 1 | {:.0} | 1.00 | |", median(runs[0].clone()));
    println!(
        "| 4 | {:.0} | {:.2} | {} |",
        median(runs[1].clone()),
        median(speedup.clone()),
        range(&speedup)
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
    let delay_ms: u64 = arg("--delay-ms", "20").parse().unwrap();
    let delay_n: usize = arg("--delay-tenants", "2000").parse().unwrap();
    let delay_c: usize = arg("--delay-concurrency", "2").parse().unwrap();
    let root = tempfile::tempdir().unwrap();
    sqlite_fleet(root.path(), n);
    if delay_n > 0 {
        delayed(root.path(), delay_n, delay_ms, delay_c, rounds).await;
    }
    if n == 0 {
        return;
    }
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
