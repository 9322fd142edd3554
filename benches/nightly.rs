//! Benchmark: the nightly check — every tenant already at head — against the
//! floor of reading each tenant's history and nothing else, in the same run;
//! and the memory of `sync`, `resume` and `report` on big fleets.
//!
//! SQLite: N tenant files at head (one migrated file copied N times). The
//! floor is a plain loop in 2 processes (Python's sqlite3) that opens each
//! file and reads its `_sqlx_migrations` rows. fleetmig is the release
//! binary's `sync`, timed from start to exit (discovery, state store,
//! recording every tenant, reports included), with its peak RSS from
//! `/usr/bin/time -f %M`. Then, on the same fleet: a rollout paused after a
//! first wave of one tenant and its `resume` (the rest), and `report ID`,
//! each with its time and peak RSS.
//!
//! PostgreSQL: M tenant schemas at head; the floor is `psql` in 8 sessions
//! reading each schema's history (one SELECT per schema); fleetmig is `sync`
//! with `--concurrency 8`. URLs use sslmode=disable.
//!
//! Rounds interleave floor and fleetmig; ratios are the median of per-round
//! ratios, with their range.
//!
//! The state store over many nights (`--nights N`, with `--retain K`): a
//! fleet of `--store-tenants` SQLite tenants at head synced N times with
//! `--retain K` (by default `30d`: nothing of these N nights is pruned, so
//! what stays is what the nightly itself costs: each night's up-to-date
//! tenants folded into a count and a shared list); the store file's size
//! after the first night and after the last, and the growth a night.
//!
//! cargo bench --bench nightly -- [--sqlite 30000,100000] [--pg 1000] [--rounds 3]
//!   [--nights 30 --retain 30d --store-tenants 100000]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use common::*;
use sqlx::Connection;

fn sqlite(n: usize, rounds: usize) {
    let root = tempfile::tempdir().unwrap();
    sqlite_fleet(root.path(), n);
    let (mut ratios, mut floor_t, mut sync_t, mut rss) = (vec![], vec![], vec![], 0.0f64);
    // the same sync at --concurrency 2 (the floor's two processes), in the
    // same rounds
    let (mut ratios2, mut sync2_t) = (vec![], vec![]);
    for _ in 0..rounds {
        let floor = sqlite_floor(root.path(), &root.path().join("t"));
        let (wall, mb, out) = timed(fleetmig(root.path(), &["sync", "--fleet", "sqlite-dir:t"]));
        assert!(out.contains(&format!("({n} up to date)")), "{out}");
        ratios.push(floor.as_secs_f64() / wall.as_secs_f64());
        floor_t.push(n as f64 / floor.as_secs_f64());
        sync_t.push(n as f64 / wall.as_secs_f64());
        rss = rss.max(mb);
        let sync2 = ["sync", "--fleet", "sqlite-dir:t", "--concurrency", "2"];
        let (wall, mb, out) = timed(fleetmig(root.path(), &sync2));
        assert!(out.contains(&format!("({n} up to date)")), "{out}");
        ratios2.push(floor.as_secs_f64() / wall.as_secs_f64());
        sync2_t.push(n as f64 / wall.as_secs_f64());
        rss = rss.max(mb);
    }
    println!(
        "| SQLite, `--concurrency 2` | {n} | {:.0} | {:.0} | {:.2} | {} | | | |",
        median(floor_t.clone()),
        median(sync2_t),
        median(ratios2.clone()),
        range(&ratios2)
    );
    // resume: a rollout paused after one tenant, then the rest
    let (_, _, out) = timed(fleetmig(
        root.path(),
        &[
            "rollout",
            "--fleet",
            "sqlite-dir:t",
            "--waves",
            "first=1,rest",
            "--pause-after",
            "first",
        ],
    ));
    let id = out
        .lines()
        .last()
        .and_then(|l| l.rsplit('/').next())
        .unwrap()
        .to_string();
    let (resume_wall, resume_mb, out) = timed(fleetmig(root.path(), &["resume", &id]));
    assert!(out.contains("completed"), "{out}");
    let (report_wall, report_mb, _) = timed(fleetmig(root.path(), &["report", &id]));
    println!(
        "| SQLite | {n} | {:.0} | {:.0} | {:.2} | {} | {rss:.1} MB | {resume_mb:.1} MB ({:.1} s) | {report_mb:.1} MB ({:.2} s) |",
        median(floor_t),
        median(sync_t),
        median(ratios.clone()),
        range(&ratios),
        resume_wall.as_secs_f64(),
        report_wall.as_secs_f64()
    );
}

async fn postgres(m: usize, rounds: usize) {
    let (name, url) = pg_create("fm_nightly").await;
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let ddl: String = (0..m)
        .map(|i| format!("CREATE SCHEMA tenant_{i:05};"))
        .collect();
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{url}");
    let (_, _, out) = timed(fleetmig(
        root.path(),
        &["sync", "--fleet", &fleet, "--concurrency", "8"],
    ));
    assert!(out.contains("completed"), "{out}");
    // the floor: 8 psql sessions, each reading its share of the histories
    let sessions: Vec<PathBuf> = (0..8)
        .map(|s| {
            let sql: String = (s..m)
                .step_by(8)
                .map(|i| {
                    format!(
                        "SELECT version, success, checksum FROM tenant_{i:05}._sqlx_migrations ORDER BY version;\n"
                    )
                })
                .collect();
            let p = root.path().join(format!("s{s}.sql"));
            std::fs::write(&p, sql).unwrap();
            p
        })
        .collect();
    let (mut ratios, mut floor_t, mut sync_t, mut rss) = (vec![], vec![], vec![], 0.0f64);
    for _ in 0..rounds {
        let start = Instant::now();
        let children: Vec<_> = sessions
            .iter()
            .map(|f| {
                Command::new("psql")
                    .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", "-f"])
                    .arg(f)
                    .arg(&url)
                    .spawn()
                    .unwrap()
            })
            .collect();
        for ch in children {
            assert!(ch.wait_with_output().unwrap().status.success());
        }
        let floor = start.elapsed();
        let (wall, mb, out) = timed(fleetmig(
            root.path(),
            &["sync", "--fleet", &fleet, "--concurrency", "8"],
        ));
        assert!(out.contains(&format!("({m} up to date)")), "{out}");
        ratios.push(floor.as_secs_f64() / wall.as_secs_f64());
        floor_t.push(m as f64 / floor.as_secs_f64());
        sync_t.push(m as f64 / wall.as_secs_f64());
        rss = rss.max(mb);
    }
    println!(
        "| PostgreSQL schemas | {m} | {:.0} | {:.0} | {:.2} | {} | {rss:.1} MB | | |",
        median(floor_t),
        median(sync_t),
        median(ratios.clone()),
        range(&ratios)
    );
    pg_drop(&name).await;
}

/// The state store's size over `nights` nightly syncs of `n` tenants at
/// head, each told to `--retain` what `retain` says (an age or a count).
fn store_over_nights(n: usize, nights: usize, retain: &str) {
    let root = tempfile::tempdir().unwrap();
    sqlite_fleet(root.path(), n);
    let store = root.path().join(".fleetmig/state.db");
    let size = || std::fs::metadata(&store).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let (mut first, mut walls) = (0.0, vec![]);
    for night in 0..nights {
        let (wall, _, out) = timed(fleetmig(
            root.path(),
            // nights seconds apart here, not a day: a rollout is prunable
            // once it was still for a lease (1 s here, 30 s by default)
            &[
                "sync",
                "--fleet",
                "sqlite-dir:t",
                "--retain",
                retain,
                "--lease",
                "1s",
            ],
        ));
        assert!(out.contains(&format!("({n} up to date)")), "{out}");
        walls.push(wall.as_secs_f64());
        if night == 0 {
            first = size();
        }
    }
    let last = size();
    println!(
        "\nState store over {nights} nightly syncs of {n} SQLite tenants at head, `--retain {retain}`: \
         {first:.1} MB after the first night, {last:.1} MB after the last ({:.2} MB a night); \
         a sync took {:.2} s (median, fold and prune included)",
        (last - first) / (nights.max(2) - 1) as f64,
        median(walls)
    );
}

#[tokio::main]
async fn main() {
    let rounds: usize = arg("--rounds", "3").parse().unwrap();
    println!(
        "Nightly check (every tenant at head), {rounds} rounds interleaved with the floor, 2 cores"
    );
    println!(
        "| fleet | tenants | floor tenants/s | fleetmig tenants/s | ratio (median) | range | sync peak RSS | resume peak RSS | report peak RSS |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in arg("--sqlite", "30000,100000")
        .split(',')
        .filter(|s| !s.is_empty() && *s != "0")
    {
        sqlite(n.parse().unwrap(), rounds);
    }
    for m in arg("--pg", "1000")
        .split(',')
        .filter(|s| !s.is_empty() && *s != "0")
    {
        postgres(m.parse().unwrap(), rounds).await;
    }
    let nights: usize = arg("--nights", "0").parse().unwrap();
    if nights > 0 {
        store_over_nights(
            arg("--store-tenants", "100000").parse().unwrap(),
            nights,
            &arg("--retain", "30d"),
        );
    }
}
