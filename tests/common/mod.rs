//! Helpers shared by the integration tests: temporary SQLite fleets, running
//! the real binary, reading the report it wrote.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use sqlx::{ConnectOptions, Connection};

pub fn demo_migrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// A temp dir with `tenants/` holding `n` empty SQLite files t0000.db...
pub fn sqlite_fleet(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("tenants");
    std::fs::create_dir_all(&tenants).unwrap();
    for i in 0..n {
        std::fs::write(tenants.join(format!("t{i:04}.db")), b"").unwrap();
    }
    dir
}

pub fn tenant_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("tenants").join(format!("{id}.db"))
}

/// A migration folder from (file name, text) pairs.
pub fn migration_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (n, t) in files {
        std::fs::write(dir.path().join(n), t).unwrap();
    }
    dir
}

pub fn fleetmig() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("fleetmig").unwrap();
    // Never pick up a developer's environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("FLEETMIG_") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs `fleetmig sync` on the sqlite-dir fleet in `dir` with `extra` args.
pub fn sync(dir: &Path, migrations: &Path, extra: &[&str]) -> Output {
    fleetmig()
        .current_dir(dir)
        .args([
            "sync",
            "--fleet",
            "sqlite-dir:tenants",
            "--progress-every",
            "0",
        ])
        .arg("--migrations")
        .arg(migrations)
        .args(extra)
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The report folder: the last line printed.
pub fn report_dir(dir: &Path, o: &Output) -> PathBuf {
    let out = stdout(o);
    let last = out
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output; stderr: {}", stderr(o)));
    let p = PathBuf::from(last.trim());
    if p.is_absolute() { p } else { dir.join(p) }
}

/// `tenants.csv` as one map per row, keyed by tenant id.
pub fn csv_rows(report: &Path) -> HashMap<String, HashMap<String, String>> {
    let mut r = csv::Reader::from_path(report.join("tenants.csv")).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let row: HashMap<String, String> = headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect();
            (row["tenant"].clone(), row)
        })
        .collect()
}

pub fn summary(report: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap()).unwrap()
}

pub async fn sqlite(path: &Path) -> sqlx::SqliteConnection {
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

/// (version, success) rows of a SQLite tenant's history.
pub async fn sqlite_history(path: &Path) -> Vec<(i64, bool)> {
    let mut c = sqlite(path).await;
    let rows = sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut c)
        .await
        .unwrap_or_default();
    c.close().await.unwrap();
    rows
}

pub async fn sqlite_tables(path: &Path) -> Vec<String> {
    let mut c = sqlite(path).await;
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut c)
            .await
            .unwrap();
    c.close().await.unwrap();
    rows
}
