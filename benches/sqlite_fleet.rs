//! Benchmark: N SQLite tenants × the demo migration set, fleetmig against the
//! raw floor, in the same run.
//!
//! The floor executes the same SQL per tenant with the same driver (sqlx), the
//! same connection options and the same concurrency, one transaction per
//! migration, with no history, no locks, no events and no report. fleetmig is
//! the real release binary (`fleetmig sync`), timed from process start to
//! exit, so discovery, planning and writing the report are all counted.
//!
//! cargo bench --bench sqlite_fleet -- [--tenants 2000,20000] [--concurrency 8] [--rounds 2]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn make_fleet(root: &Path, n: usize) -> PathBuf {
    let dir = root.join(format!("fleet-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("t{i:05}.db")), b"").unwrap();
    }
    dir
}

async fn floor(
    dir: &Path,
    scripts: &[(String, Option<(u64, Duration)>)],
    concurrency: usize,
) -> Duration {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let start = Instant::now();
    futures_util::stream::iter(files)
        .map(|path| async move {
            let mut c = SqliteConnectOptions::new()
                .filename(&path)
                .busy_timeout(Duration::from_secs(5))
                .disable_statement_logging()
                .connect()
                .await
                .unwrap();
            for (sql, batch) in scripts {
                match batch {
                    // a batched backfill as fleetmig runs it: the statement
                    // in short transactions with the same pause between full
                    // batches; a batch smaller than the size is followed at
                    // once, in its transaction, by the run that confirms
                    // nothing is left
                    Some((size, pause)) => loop {
                        let sql = sql.replace(":batch_size", &size.to_string());
                        let mut tx = c.begin().await.unwrap();
                        let run = async |tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>| {
                            tx.execute(sqlx::AssertSqlSafe(sql.clone()))
                                .await
                                .unwrap()
                                .rows_affected()
                        };
                        let n = run(&mut tx).await;
                        let done = n == 0 || (n < *size && run(&mut tx).await == 0);
                        tx.commit().await.unwrap();
                        if done {
                            break;
                        }
                        tokio::time::sleep(*pause).await;
                    },
                    None => {
                        let mut tx = c.begin().await.unwrap();
                        tx.execute(sqlx::AssertSqlSafe(sql.clone())).await.unwrap();
                        tx.commit().await.unwrap();
                    }
                }
            }
            c.close().await.unwrap();
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    start.elapsed()
}

fn fleetmig(dir: &Path, reports: &Path, migrations: &Path, concurrency: usize) -> (Duration, u64) {
    let start = Instant::now();
    let out = std::process::Command::new(fleetmig_bin())
        .args(["sync", "--progress-every", "0", "--fleet"])
        .arg(format!("sqlite-dir:{}", dir.display()))
        .arg("--migrations")
        .arg(migrations)
        .arg("--reports")
        .arg(reports)
        .args(["--concurrency", &concurrency.to_string()])
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = PathBuf::from(stdout.lines().last().unwrap().trim());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["totals"]["failed"], 0);
    (elapsed, summary["peak_rss_kb"].as_u64().unwrap_or(0))
}

fn main() {
    let tenants: Vec<usize> = arg("--tenants", "2000")
        .split(',')
        .map(|s| s.trim().parse().expect("--tenants N[,N...]"))
        .collect();
    let concurrency: usize = arg("--concurrency", "8").parse().unwrap();
    let rounds: usize = arg("--rounds", "2").parse().unwrap();
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let set = fleetmig::migration::load(&migrations).unwrap();
    // what `sync` applies: every migration but the held contract step
    let scripts: Vec<(String, Option<(u64, Duration)>)> = set
        .migrations
        .iter()
        .filter(|m| !fleetmig::rollout::is_contract(m))
        .map(|m| {
            let s = m.up.get(fleetmig::tenant::Dialect::Sqlite).unwrap();
            (s.sql.clone(), s.directives.batch.map(|b| (b.size, b.pause)))
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    println!(
        "SQLite fleet × demo set ({} migrations), concurrency {concurrency}, best of {rounds} rounds, {} cores",
        scripts.len(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("| tenants | floor tenants/s | fleetmig tenants/s | ratio | fleetmig peak RSS |");
    println!("|---:|---:|---:|---:|---:|");
    for n in tenants {
        let mut best_floor = Duration::MAX;
        let mut best_fm = Duration::MAX;
        let mut rss = 0;
        for _ in 0..rounds {
            let d = make_fleet(root.path(), n);
            best_floor = best_floor.min(rt.block_on(floor(&d, &scripts, concurrency)));
            std::fs::remove_dir_all(&d).unwrap();
            let d = make_fleet(root.path(), n);
            let (t, r) = fleetmig(&d, &root.path().join("reports"), &migrations, concurrency);
            best_fm = best_fm.min(t);
            rss = rss.max(r);
            std::fs::remove_dir_all(&d).unwrap();
        }
        let f = n as f64 / best_floor.as_secs_f64();
        let m = n as f64 / best_fm.as_secs_f64();
        println!(
            "| {n} | {f:.0} | {m:.0} | {:.2} | {:.1} MB |",
            m / f,
            rss as f64 / 1024.0
        );
    }
}

/// The fleetmig binary measured: this build's, or `FLEETMIG_BIN` (an A/B
/// run of two builds, e.g. one of an older commit, interleaved).
fn fleetmig_bin() -> String {
    std::env::var("FLEETMIG_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fleetmig").to_string())
}
