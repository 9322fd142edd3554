//! What the benchmarks share: flags, the release binary under
//! `/usr/bin/time`, medians, a fleet of SQLite tenants at head, the Python
//! floor that reads each history, PostgreSQL databases made and dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::Connection;

pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

pub fn migrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

pub const FLOOR_PY: &str = r#"
import sqlite3, sys, os
from multiprocessing import Pool
def read(paths):
    n = 0
    for p in paths:
        c = sqlite3.connect(p)
        n += len(c.execute("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version").fetchall())
        c.close()
    return n
if __name__ == "__main__":
    d = sys.argv[1]
    files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".db"))
    with Pool(2) as p:
        print(sum(p.map(read, [files[0::2], files[1::2]])))
"#;

/// Runs `cmd` under `/usr/bin/time`: (wall time, peak RSS in MB, stdout).
pub fn timed(mut cmd: Command) -> (Duration, f64, String) {
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let wall = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success() || out.status.code() == Some(1),
        "{}{err}",
        String::from_utf8_lossy(&out.stdout)
    );
    let rss_kb: f64 = err
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("peak-rss-kb "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    (
        wall,
        rss_kb / 1024.0,
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

pub fn fleetmig(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("/usr/bin/time");
    c.current_dir(dir)
        .args(["-f", "peak-rss-kb %M", &fleetmig_bin()])
        .args(args)
        .arg("--migrations")
        .arg(migrations());
    if args[0] != "report" {
        c.args(["--progress-every", "0"]);
    }
    c
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn range(v: &[f64]) -> String {
    let lo = v.iter().cloned().fold(f64::MAX, f64::min);
    let hi = v.iter().cloned().fold(f64::MIN, f64::max);
    format!("{lo:.2}–{hi:.2}")
}

/// A fleet of `n` SQLite tenants at head, in `root/t`.
pub fn sqlite_fleet(root: &Path, n: usize) {
    let seed = root.join("seed");
    std::fs::create_dir_all(seed.join("t")).unwrap();
    std::fs::write(seed.join("t/t0.db"), b"").unwrap();
    let (_, _, out) = timed(fleetmig(&seed, &["sync", "--fleet", "sqlite-dir:t"]));
    assert!(out.contains("completed"), "{out}");
    let fleet = root.join("t");
    std::fs::create_dir_all(&fleet).unwrap();
    for i in 0..n {
        std::fs::copy(seed.join("t/t0.db"), fleet.join(format!("t{i:06}.db"))).unwrap();
    }
}

/// The PostgreSQL server of the tests and benchmarks.
pub fn pg_base() -> String {
    std::env::var("FLEETMIG_TEST_PG_URL").unwrap_or_else(|_| {
        "postgres://fleetmig:fleetmig-test-secret@127.0.0.1:5432/fleetmig_test?sslmode=disable"
            .into()
    })
}

/// A fresh database `prefix_<random>`: (its name, its URL).
pub async fn pg_create(prefix: &str) -> (String, String) {
    let base = pg_base();
    let name = format!("{prefix}_{:08x}", rand::random::<u32>());
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let mut u = url::Url::parse(&base).unwrap();
    u.set_path(&format!("/{name}"));
    (name, u.to_string())
}

pub async fn pg_drop(name: &str) {
    let mut admin = sqlx::PgConnection::connect(&pg_base()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
}

/// The floor of the nightly check on the SQLite fleet in `dir`: each file
/// opened and its history read, in 2 processes. Its wall time.
pub fn sqlite_floor(root: &Path, dir: &Path) -> Duration {
    let py = root.join("floor.py");
    std::fs::write(&py, FLOOR_PY).unwrap();
    let start = Instant::now();
    let out = Command::new("python3").arg(&py).arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed()
}

/// The fleetmig binary measured: this build's, or `FLEETMIG_BIN` (an A/B
/// run of two builds, e.g. one of an older commit, interleaved).
pub fn fleetmig_bin() -> String {
    std::env::var("FLEETMIG_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fleetmig").to_string())
}
