//! Benchmark: `fleetmig move` of one SQLite tenant (examples/moving: N
//! customers with every carried type, 2N orders) to a PostgreSQL schema,
//! beside the raw floor in the same run: the same rows exported by
//! `sqlite3 -csv` and loaded by `psql \copy` into tables made by the same
//! migration, with no snapshot, no verification and no bookkeeping.
//! fleetmig reads the source twice more (to verify the target and to find
//! writes made during the copy) and the target once: the ratio says what
//! that safety costs. Rounds interleave; medians; peak RSS of fleetmig.
//!
//! cargo bench --bench moving -- [--customers 100000] [--rounds 3]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn set() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/moving/migrations")
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

/// The source tenant: the set applied by fleetmig, then `n` customers and
/// `2n` orders written by sqlite3 itself.
fn source(root: &Path, n: usize) {
    std::fs::write(
        root.join("fleet.csv"),
        "id,url,schema,tags\nt1,sqlite:t1.db,,\n",
    )
    .unwrap();
    sh(Command::new(env!("CARGO_BIN_EXE_fleetmig"))
        .current_dir(root)
        .args(["sync", "--fleet", "registry:fleet.csv", "--create-missing"])
        .args([
            "--progress-every",
            "0",
            "--state",
            "seed.db",
            "--migrations",
        ])
        .arg(set()));
    let fill = format!(
        "WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
         INSERT INTO customers SELECT i, 'customer ' || i, (i * 7 - 500) + (i % 100) / 100.0, i / 3.0, i % 2, \
         date('1990-01-01', '+' || (i % 9000) || ' days'), datetime('2026-01-01', '+' || i || ' seconds'), \
         strftime('%Y-%m-%d %H:%M:%f+00:00', '2026-01-01', '+' || i || ' minutes'), \
         json_object('i', i, 'tags', json_array('a', 'b')), randomblob(16), \
         lower(hex(randomblob(4))) || '-0000-4000-8000-' || lower(hex(randomblob(6))) FROM n; \
         WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
         INSERT INTO orders SELECT i * 2, i, (i % 50) + 0.99 FROM n; \
         WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
         INSERT INTO orders SELECT i * 2 + 1, i, (i % 50) + 0.99 FROM n;"
    );
    sh(Command::new("sqlite3").arg(root.join("t1.db")).arg(fill));
}

const CUSTOMERS_CSV: &str = "SELECT id, name, balance, ratio, active, born, seen_at, paid_at, profile, \
     CASE WHEN avatar IS NULL THEN NULL ELSE '\\x' || hex(avatar) END, external_id FROM customers";

/// The floor: sqlite3 → CSV → psql `\copy`, table by table, into `schema`.
fn floor(root: &Path, url: &str, schema: &str) -> Duration {
    let ddl = std::fs::read_to_string(set().join("0001_create_customers.postgres.sql")).unwrap();
    sh(Command::new("psql").args([
        url,
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        &format!("CREATE SCHEMA {schema}; SET search_path = {schema}; {ddl}"),
    ]));
    let start = Instant::now();
    for (table, select) in [
        ("customers", CUSTOMERS_CSV.to_string()),
        (
            "orders",
            "SELECT id, customer_id, total FROM orders".to_string(),
        ),
    ] {
        let csv = root.join(format!("{table}.csv"));
        let out = Command::new("sqlite3")
            .args(["-csv"])
            .arg(root.join("t1.db"))
            .arg(&select)
            .output()
            .unwrap();
        std::fs::write(&csv, &out.stdout).unwrap();
        sh(Command::new("psql").args([
            url,
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("\\copy {schema}.{table} FROM '{}' CSV", csv.display()),
        ]));
    }
    start.elapsed()
}

/// fleetmig: the move into `schema` (wall time, peak RSS).
fn fleetmig_move(root: &Path, url: &str, schema: &str) -> (Duration, f64) {
    let mut c = Command::new("/usr/bin/time");
    c.current_dir(root)
        .args(["-f", "peak-rss-kb %M", env!("CARGO_BIN_EXE_fleetmig")])
        .args(["move", "--fleet", "registry:fleet.csv", "--tenant", "t1"])
        .args(["--to", url, "--schema", schema, "--state", "state.db"])
        .arg("--migrations")
        .arg(set());
    let (wall, rss, out) = timed(c);
    assert!(out.contains(": done,"), "{out}");
    // the registry now points at the copy: point it back for the next round
    std::fs::write(
        root.join("fleet.csv"),
        "id,url,schema,tags\nt1,sqlite:t1.db,,\n",
    )
    .unwrap();
    (wall, rss)
}

#[tokio::main]
async fn main() {
    let n: usize = arg("--customers", "100000").parse().unwrap();
    let rounds: usize = arg("--rounds", "3").parse().unwrap();
    let root = tempfile::tempdir().unwrap();
    source(root.path(), n);
    let rows = n + 2 * (n - 1);
    let (db, url) = pg_create("fm_bench_move").await;
    let (mut floors, mut ours, mut ratios, mut rss) = (vec![], vec![], vec![], vec![]);
    for r in 0..rounds {
        let f = floor(root.path(), &url, &format!("floor_{r}"));
        let (m, mb) = fleetmig_move(root.path(), &url, &format!("moved_{r}"));
        eprintln!(
            "round {r}: floor {:.2} s, fleetmig {:.2} s, {mb:.1} MB",
            f.as_secs_f64(),
            m.as_secs_f64()
        );
        floors.push(rows as f64 / f.as_secs_f64());
        ours.push(rows as f64 / m.as_secs_f64());
        ratios.push(f.as_secs_f64() / m.as_secs_f64());
        rss.push(mb);
    }
    println!(
        "move of {rows} rows (SQLite → PostgreSQL schema), {rounds} rounds: floor {:.0} rows/s, \
         fleetmig {:.0} rows/s, ratio {:.2} ({}), peak RSS {:.1} MB",
        median(floors),
        median(ours),
        median(ratios.clone()),
        range(&ratios),
        median(rss)
    );
    pg_drop(&db).await;
}
