//! Work at once: two processes on one fleet never apply a migration twice,
//! and the per-server limit holds across shards.

use sqlx::Connection;

use crate::common::*;
use crate::shared::*;

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_at_once_never_apply_a_migration_twice() {
    let db = pg_database("twoproc").await;
    schemas(&db, 40).await;
    // A migration that is not idempotent: applying it twice would fail.
    let m = migration_dir(&[
        (
            "0001_a.sql",
            "CREATE TABLE a (x int); SELECT pg_sleep(0.02);",
        ),
        ("0002_b.sql", "INSERT INTO a VALUES (1);"),
        ("0003_c.sql", "CREATE TABLE c (x int);"),
    ]);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            fleetmig_process(d.path())
                .args([
                    "sync",
                    "--progress-every",
                    "0",
                    "--concurrency",
                    "4",
                    "--lock-timeout",
                    "30s",
                    "--fleet",
                ])
                .arg(format!("postgres-schemas:{}", db.url))
                .arg("--migrations")
                .arg(m.path())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied_total = 0;
    for (child, d) in children.into_iter().zip(&dirs) {
        let out = child.wait_with_output().unwrap();
        expect_exit(&out, 0);
        for r in csv_rows(&report_dir(d.path(), &out)).values() {
            applied_total += r["applied_versions"]
                .split(';')
                .filter(|s| !s.is_empty())
                .count();
        }
    }
    assert_eq!(
        applied_total,
        40 * 3,
        "each migration applied exactly once across both processes"
    );
    let mut c = db.conn().await;
    for i in 0..40 {
        let s = format!("tenant_{i:03}");
        assert_eq!(pg_history(&mut c, &s).await.len(), 3);
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{s}\".a"
        )))
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(n, 1, "{s}: the insert ran once");
    }
    c.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn per_server_limit_holds_across_shards() {
    // Two "servers" (127.0.0.1 and localhost are two server keys), 6 schemas
    // each; with --per-server 1 no two tenants of one server overlap in time.
    let db = pg_database("shards").await;
    schemas(&db, 12).await;
    let other = db.url.replace("127.0.0.1", "localhost");
    let mut csv = String::from("id,url,schema,tags\n");
    for i in 0..12 {
        let url = if i % 2 == 0 { &db.url } else { &other };
        csv.push_str(&format!("t{i:02},{url},tenant_{i:03},\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fleet.csv"), csv).unwrap();
    let m = migration_dir(&[(
        "0001_a.sql",
        "CREATE TABLE a (x int); SELECT pg_sleep(0.1);",
    )]);
    let out = sync_fleet(
        dir.path(),
        "registry:fleet.csv",
        m.path(),
        &["--concurrency", "8", "--per-server", "1"],
    );
    expect_exit(&out, 0);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let span = |id: &str| {
        let r = &rows[id];
        let p = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
        (p(&r["started_at"]), p(&r["finished_at"]))
    };
    let mut overlaps_across = 0;
    for a in 0..12 {
        for b in (a + 1)..12 {
            let (sa, ea) = span(&format!("t{a:02}"));
            let (sb, eb) = span(&format!("t{b:02}"));
            let overlap = sa < eb && sb < ea;
            if a % 2 == b % 2 {
                assert!(
                    !overlap,
                    "t{a:02} and t{b:02} share a server and overlapped"
                );
            } else if overlap {
                overlaps_across += 1;
            }
        }
    }
    assert!(
        overlaps_across > 0,
        "the two servers were worked on in parallel"
    );
    db.drop_now().await;
}
