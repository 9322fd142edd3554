//! Helpers shared by the integration tests: temporary SQLite fleets, running
//! the real binary, reading the report it wrote.
#![allow(dead_code)]

pub mod browser;
pub mod engine;
pub mod moves;
pub mod stores;
pub mod web;
pub mod workers;

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
    // A run that hangs is killed and fails its test with what it printed,
    // rather than holding the suite until the harness gives up on it.
    c.timeout(std::time::Duration::from_secs(RUN_LIMIT_SECS));
    c
}

/// The longest any one fleetmig command of the tests may take.
pub const RUN_LIMIT_SECS: u64 = 240;

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

/// Asserts that `o` exited with `code`, showing everything it printed
/// when it did not.
#[track_caller]
pub fn expect_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit code\n--- stdout\n{}\n--- stderr\n{}",
        stdout(o),
        stderr(o)
    );
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

/// The PostgreSQL server the tests use (started by scripts/test-services.sh).
/// A test that needs it fails when it is not there; it never skips.
pub fn pg_base_url() -> String {
    std::env::var("FLEETMIG_TEST_PG_URL").unwrap_or_else(|_| {
        "postgres://fleetmig:fleetmig-test-secret@127.0.0.1:5432/fleetmig_test?sslmode=disable"
            .to_string()
    })
}

pub const TEST_PASSWORD: &str = "fleetmig-test-secret";

/// `base` with its database replaced.
pub fn with_db(base: &str, db: &str) -> String {
    let mut u = url::Url::parse(base).unwrap();
    u.set_path(&format!("/{db}"));
    u.to_string()
}

pub async fn pg_connect(url: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable ({e}); start it with scripts/test-services.sh")
    })
}

/// A fresh database for one test; dropped by `PgDb::drop_now`.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

pub async fn pg_database(prefix: &str) -> PgDb {
    let base = pg_base_url();
    let name = format!("fm_{prefix}_{:08x}", rand::random::<u32>());
    let mut admin = pg_connect(&base).await;
    sqlx::Executor::execute(
        &mut admin,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")),
    )
    .await
    .unwrap();
    admin.close().await.unwrap();
    PgDb {
        url: with_db(&base, &name),
        name,
    }
}

impl PgDb {
    pub async fn conn(&self) -> sqlx::PgConnection {
        pg_connect(&self.url).await
    }

    pub async fn exec(&self, sql: &str) {
        let mut c = self.conn().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        c.close().await.unwrap();
    }

    pub async fn drop_now(self) {
        let mut admin = pg_connect(&pg_base_url()).await;
        let _ = sqlx::Executor::execute(
            &mut admin,
            sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            )),
        )
        .await;
        let _ = admin.close().await;
    }
}

/// (version, success) rows of the history in `schema`.
pub async fn pg_history(c: &mut sqlx::PgConnection, schema: &str) -> Vec<(i64, bool)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT version, success FROM \"{schema}\"._sqlx_migrations ORDER BY version"
    )))
    .fetch_all(c)
    .await
    .unwrap_or_default()
}

pub async fn pg_tables(c: &mut sqlx::PgConnection, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(c)
    .await
    .unwrap()
}

/// Runs `fleetmig sync` on `fleet` in a temp dir with `extra` args.
pub fn sync_fleet(dir: &Path, fleet: &str, migrations: &Path, extra: &[&str]) -> Output {
    fleetmig()
        .current_dir(dir)
        .args(["sync", "--progress-every", "0", "--fleet", fleet])
        .arg("--migrations")
        .arg(migrations)
        .args(extra)
        .output()
        .unwrap()
}

/// The MariaDB server the tests use.
pub fn mysql_base_url() -> String {
    std::env::var("FLEETMIG_TEST_MYSQL_URL").unwrap_or_else(|_| {
        "mysql://fleetmig:fleetmig-test-secret@127.0.0.1:3306/mysql".to_string()
    })
}

pub async fn mysql_connect(url: &str) -> sqlx::MySqlConnection {
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        sqlx::MySqlConnection::connect(url),
    )
    .await
    .unwrap_or_else(|_| panic!("MariaDB did not answer within 60 s"))
    .unwrap_or_else(|e| {
        panic!("MariaDB is not reachable ({e}); start it with scripts/test-services.sh")
    })
}

pub async fn mysql_exec(url: &str, sql: &str) {
    let mut c = mysql_connect(url).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.close().await.unwrap();
}

/// Everything a run left behind (stdout, stderr, every report file), for
/// checking that no secret leaked.
pub fn everything_printed(dir: &Path, o: &Output) -> String {
    let mut all = stdout(o) + &stderr(o);
    for entry in walk(dir) {
        if let Ok(t) = std::fs::read_to_string(&entry) {
            all.push_str(&t);
        }
    }
    all
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A registry fleet of `n` SQLite tenants `t0000...` in `dir/db/`, the first
/// `canaries` tagged `canary`. Files are created empty.
pub fn registry_fleet(dir: &Path, n: usize, canaries: usize) {
    std::fs::create_dir_all(dir.join("db")).unwrap();
    let mut csv = String::from("id,url,schema,tags\n");
    for i in 0..n {
        std::fs::write(dir.join(format!("db/t{i:04}.db")), b"").unwrap();
        let tags = if i < canaries {
            "canary;tier=pro"
        } else {
            "tier=free"
        };
        csv.push_str(&format!("t{i:04},sqlite://db/t{i:04}.db,,{tags}\n"));
    }
    std::fs::write(dir.join("fleet.csv"), csv).unwrap();
}

pub fn registry_tenant(dir: &Path, id: &str) -> PathBuf {
    dir.join("db").join(format!("{id}.db"))
}

/// Runs fleetmig with `args` in `dir` (progress off for run commands).
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    fleetmig().current_dir(dir).args(args).output().unwrap()
}

/// The real binary as a process to start in `dir` (for signals, kills and
/// concurrent runs), with FLEETMIG_* cleared and its output piped.
pub fn fleetmig_process(dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("fleetmig"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FLEETMIG_") {
            c.env_remove(k);
        }
    }
    c.current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

/// Where `sync` takes a tenant with the demo set: every migration but the
/// contract one (0009), which waits for --allow-contract.
pub const DEMO_REACHED: i64 = 8;

/// The demo versions `sync` applies to a fresh tenant, as in tenants.csv.
pub fn demo_applied(from: i64) -> String {
    ((from + 1)..=DEMO_REACHED)
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(";")
}

/// A fresh tenant's history after `sync` with the demo set.
pub fn demo_history() -> Vec<(i64, bool)> {
    (1..=DEMO_REACHED).map(|v| (v, true)).collect()
}
