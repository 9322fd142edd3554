//! Benchmark: `fleetmig move` of one generated tenant (benches/moving_set: a
//! shop of customers, products, orders and order items, 1.54 million rows
//! at the default scale; order_items has a composite primary key) from
//! MariaDB and from SQLite into a new PostgreSQL database, beside, in the
//! same run and interleaved:
//! - pgloader (Debian's package, installed here with apt-get where
//!   missing; its defaults: 4 COPY threads, indexes built after, no
//!   verification), into a new database;
//! - the raw pipe: per table, `mariadb -B -N` or `sqlite3 -csv` into
//!   `psql \copy`, into tables the same migration made, no snapshot, no
//!   verification, no bookkeeping.
//!
//! fleetmig's copy (its `move: copied` log line: snapshot read, conversion,
//! checksums, COPY, indexes built again, foreign keys checked) and its
//! verification (the target read back, the source's digest taken again)
//! are shown apart, so that what verification costs is plain. Medians of
//! `--rounds` (3), their range, peak RSS of fleetmig and pgloader.
//!
//! cargo bench --bench moving -- [--scale 1.0] [--rounds 3]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn set() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/moving_set")
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The MariaDB server of the tests.
fn my_base() -> String {
    std::env::var("FLEETMIG_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://fleetmig:fleetmig-test-secret@127.0.0.1:3306/mysql".into())
}

fn with_db(base: &str, db: &str) -> String {
    let mut u = url::Url::parse(base).unwrap();
    u.set_path(&format!("/{db}"));
    u.to_string()
}

fn mariadb(db: &str) -> Command {
    let u = url::Url::parse(&my_base()).unwrap();
    let mut c = Command::new("mariadb");
    c.args([
        "-h",
        u.host_str().unwrap(),
        "-P",
        &u.port().unwrap_or(3306).to_string(),
        "-u",
        u.username(),
        &format!("-p{}", u.password().unwrap_or("")),
        db,
    ]);
    c
}

/// Rows of each table at `scale`: customers, products, orders, and the
/// orders up to which an order has three items (one after).
fn sizes(scale: f64) -> (u64, u64, u64, u64) {
    let n = |x: f64| (x * scale).round() as u64;
    (n(100_000.0), n(40_000.0), n(400_000.0), n(300_000.0))
}

fn total(scale: f64) -> u64 {
    let (c, p, o, three) = sizes(scale);
    c + p + o + o + 2 * three
}

/// The MariaDB source: database `db`, migrated by fleetmig (a registry
/// fleet in `root`), filled by MariaDB itself.
fn mariadb_source(root: &Path, db: &str, scale: f64) {
    sh(mariadb("mysql").args([
        "-e",
        &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"),
    ]));
    std::fs::write(
        root.join("fleet_my.csv"),
        format!("id,url,schema,tags\nt1,{},,\n", with_db(&my_base(), db)),
    )
    .unwrap();
    sh(Command::new(common::fleetmig_bin())
        .current_dir(root)
        .args([
            "sync",
            "--fleet",
            "registry:fleet_my.csv",
            "--progress-every",
            "0",
        ])
        .args(["--state", "seed.db", "--migrations"])
        .arg(set()));
    let (c, p, o, three) = sizes(scale);
    sh(mariadb(db).args(["-e", &format!(
        "SET foreign_key_checks = 0;
         INSERT INTO customers SELECT seq, CONCAT('customer ', seq), CONCAT('c', seq, '@example.com'), TIMESTAMP('2020-01-01') + INTERVAL seq SECOND + INTERVAL (seq % 1000) MICROSECOND, (seq * 7 % 100000) / 100 FROM seq_1_to_{c};
         INSERT INTO products SELECT seq, CONCAT('SKU-', seq), CONCAT('Product ', seq, ' with a longer title'), (seq % 5000) / 100 + 1 FROM seq_1_to_{p};
         INSERT INTO orders SELECT seq, 1 + seq % {c}, TIMESTAMP('2021-01-01') + INTERVAL seq SECOND, ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'done'), (seq % 90000) / 100 FROM seq_1_to_{o};
         INSERT INTO order_items SELECT o.seq, l.seq, 1 + (o.seq * l.seq) % {p}, 1 + l.seq % 3, ((o.seq + l.seq) % 5000) / 100 FROM seq_1_to_{o} o JOIN seq_1_to_3 l WHERE o.seq <= {three} OR l.seq = 1;"
    )]));
}

/// The SQLite source: `lite.db` in `root`, the same rows.
fn sqlite_source(root: &Path, scale: f64) {
    let _ = std::fs::remove_file(root.join("lite.db"));
    std::fs::write(
        root.join("fleet_lite.csv"),
        "id,url,schema,tags\nt1,sqlite:lite.db,,\n",
    )
    .unwrap();
    sh(Command::new(common::fleetmig_bin())
        .current_dir(root)
        .args([
            "sync",
            "--fleet",
            "registry:fleet_lite.csv",
            "--create-missing",
        ])
        .args([
            "--progress-every",
            "0",
            "--state",
            "seed.db",
            "--migrations",
        ])
        .arg(set()));
    let (c, p, o, three) = sizes(scale);
    sh(Command::new("sqlite3").arg(root.join("lite.db")).arg(format!(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {c}) INSERT INTO customers SELECT i, 'customer ' || i, 'c' || i || '@example.com', strftime('%Y-%m-%d %H:%M:%f', '2020-01-01', '+' || i || ' seconds'), (i * 7 % 100000) / 100.0 FROM s;
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {p}) INSERT INTO products SELECT i, 'SKU-' || i, 'Product ' || i || ' with a longer title', (i % 5000) / 100.0 + 1 FROM s;
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {o}) INSERT INTO orders SELECT i, 1 + i % {c}, strftime('%Y-%m-%d %H:%M:%S', '2021-01-01', '+' || i || ' seconds'), CASE i % 4 WHEN 0 THEN 'new' WHEN 1 THEN 'paid' WHEN 2 THEN 'shipped' ELSE 'done' END, (i % 90000) / 100.0 FROM s;
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {o}), l(j) AS (VALUES (1), (2), (3)) INSERT INTO order_items SELECT i, j, 1 + (i * j) % {p}, 1 + j % 3, ((i + j) % 5000) / 100.0 FROM s, l WHERE i <= {three} OR j = 1;"
    )));
}

const TABLES: [&str; 4] = ["customers", "products", "orders", "order_items"];

/// The raw pipe: per table, the source's own client into `psql \copy`,
/// into tables made by the same migration (indexes and all). Wall time.
fn pipe(root: &Path, source: &str, my_db: &str, url: &str) -> Duration {
    let ddl = std::fs::read_to_string(set().join("0001_shop.postgres.sql")).unwrap();
    sh(Command::new("psql").args([url, "-q", "-v", "ON_ERROR_STOP=1", "-c", &ddl]));
    let start = Instant::now();
    for table in TABLES {
        let (read, format) = if source == "mariadb" {
            let mut c = mariadb(my_db);
            c.args(["-B", "-N", "-e", &format!("SELECT * FROM {table}")]);
            (c, "")
        } else {
            let mut c = Command::new("sqlite3");
            c.args(["-csv"])
                .arg(root.join("lite.db"))
                .arg(format!("SELECT * FROM {table}"));
            (c, " CSV")
        };
        let mut read = read;
        let mut producer = read.stdout(std::process::Stdio::piped()).spawn().unwrap();
        let out = Command::new("psql")
            .args([
                url,
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &format!("\\copy {table} FROM STDIN{format}"),
            ])
            .stdin(producer.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(producer.wait().unwrap().success());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    start.elapsed()
}

/// pgloader with its defaults into `url`: (wall time, peak RSS in MB).
fn pgloader(root: &Path, source: &str, my_db: &str, url: &str) -> (Duration, f64) {
    let from = if source == "mariadb" {
        with_db(&my_base(), my_db)
    } else {
        format!("sqlite://{}", root.join("lite.db").display())
    };
    let mut c = Command::new("/usr/bin/time");
    c.args(["-f", "peak-rss-kb %M", "pgloader"])
        .arg(&from)
        .arg(url.replace("postgres://", "postgresql://"));
    let (wall, rss, out) = timed(c);
    assert!(out.contains("Total import time"), "pgloader: {out}");
    (wall, rss)
}

/// fleetmig's move into `url`: (wall, copy, verification, peak RSS in MB).
fn fleetmig_move(root: &Path, source: &str, url: &str) -> (Duration, Duration, Duration, f64) {
    let fleet = if source == "mariadb" {
        "fleet_my.csv"
    } else {
        "fleet_lite.csv"
    };
    let registry = std::fs::read(root.join(fleet)).unwrap();
    let mut c = Command::new("/usr/bin/time");
    c.current_dir(root)
        .args(["-f", "peak-rss-kb %M", &common::fleetmig_bin()])
        .args([
            "move",
            "--fleet",
            &format!("registry:{fleet}"),
            "--tenant",
            "t1",
        ])
        .args(["--to", url, "--state", "state.db", "--log-level", "info"])
        .arg("--migrations")
        .arg(set())
        .env("NO_COLOR", "1");
    let start = Instant::now();
    let out = c.output().unwrap();
    let wall = start.elapsed();
    let (said, log) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(said.contains(": done,"), "{said}{log}");
    let ms = |what: &str| {
        log.lines()
            .find(|l| l.contains(what))
            .and_then(|l| l.split("ms=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or_else(|| panic!("no {what} in the log: {log}"))
    };
    let rss: f64 = log
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("peak-rss-kb "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    // the registry now points at the copy: point it back for the next round
    std::fs::write(root.join(fleet), registry).unwrap();
    (wall, ms("move: copied"), ms("move: verified"), rss / 1024.0)
}

fn ensure_pgloader() {
    if Command::new("pgloader").arg("--version").output().is_ok() {
        return;
    }
    eprintln!("installing pgloader (Debian's package)");
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "pgloader"])
        .env("DEBIAN_FRONTEND", "noninteractive"));
}

#[derive(Default)]
struct Runs {
    pipe: Vec<f64>,
    pgloader: Vec<f64>,
    pgloader_rss: Vec<f64>,
    wall: Vec<f64>,
    copy: Vec<f64>,
    verify: Vec<f64>,
    rss: Vec<f64>,
}

#[tokio::main]
async fn main() {
    let scale: f64 = arg("--scale", "1.0").parse().unwrap();
    let rounds: usize = arg("--rounds", "3").parse().unwrap();
    ensure_pgloader();
    let root = tempfile::tempdir().unwrap();
    let my_db = format!("fm_bench_move_{:06x}", rand::random::<u32>() & 0xffffff);
    mariadb_source(root.path(), &my_db, scale);
    sqlite_source(root.path(), scale);
    let rows = total(scale) as f64;
    for source in ["mariadb", "sqlite"] {
        let mut r = Runs::default();
        for round in 0..rounds {
            let (a, url_a) = pg_create("fm_bench_pipe").await;
            let p = pipe(root.path(), source, &my_db, &url_a);
            pg_drop(&a).await;
            let (b, url_b) = pg_create("fm_bench_pgl").await;
            let (l, lrss) = pgloader(root.path(), source, &my_db, &url_b);
            pg_drop(&b).await;
            let name = format!("fm_bench_fm_{:08x}", rand::random::<u32>());
            let url = {
                let mut u = url::Url::parse(&pg_base()).unwrap();
                u.set_path(&format!("/{name}"));
                u.to_string()
            };
            let (w, c, v, rss) = fleetmig_move(root.path(), source, &url);
            pg_drop(&name).await;
            eprintln!(
                "{source} round {round}: pipe {:.2} s, pgloader {:.2} s ({lrss:.0} MB), fleetmig {:.2} s \
                 (copy {:.2} s, verification {:.2} s, {rss:.0} MB)",
                p.as_secs_f64(),
                l.as_secs_f64(),
                w.as_secs_f64(),
                c.as_secs_f64(),
                v.as_secs_f64()
            );
            r.pipe.push(p.as_secs_f64());
            r.pgloader.push(l.as_secs_f64());
            r.pgloader_rss.push(lrss);
            r.wall.push(w.as_secs_f64());
            r.copy.push(c.as_secs_f64());
            r.verify.push(v.as_secs_f64());
            r.rss.push(rss);
        }
        let ratio =
            |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y).collect() };
        let whole_vs_pgl = ratio(&r.pgloader, &r.wall);
        let whole_vs_pipe = ratio(&r.pipe, &r.wall);
        let copy_vs_pgl = ratio(&r.pgloader, &r.copy);
        println!(
            "move of {rows} rows, {source} -> PostgreSQL, {rounds} rounds (medians): pipe {:.2} s, \
             pgloader {:.2} s ({:.0} rows/s, {:.0} MB), fleetmig {:.2} s (copy {:.2} s = {:.0} rows/s, \
             verification {:.2} s = {:.0}% of the move, {:.0} MB); copy vs pgloader {:.2}x ({}), \
             move vs pgloader {:.2}x ({}), move vs pipe {:.2}x ({})",
            median(r.pipe.clone()),
            median(r.pgloader.clone()),
            rows / median(r.pgloader.clone()),
            median(r.pgloader_rss.clone()),
            median(r.wall.clone()),
            median(r.copy.clone()),
            rows / median(r.copy.clone()),
            median(r.verify.clone()),
            100.0 * median(r.verify.clone()) / median(r.wall.clone()),
            median(r.rss.clone()),
            median(copy_vs_pgl.clone()),
            range(&copy_vs_pgl),
            median(whole_vs_pgl.clone()),
            range(&whole_vs_pgl),
            median(whole_vs_pipe.clone()),
            range(&whole_vs_pipe),
        );
    }
    let _ = mariadb("mysql")
        .args(["-e", &format!("DROP DATABASE IF EXISTS {my_db}")])
        .output();
}
