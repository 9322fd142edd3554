//! Real faults mid-run, retried: a concurrent index build killed (the
//! invalid index dropped and rebuilt), and the server restarted (runs
//! alone: see .config/nextest.toml).

use std::time::Duration;

use sqlx::Connection;

use crate::common::*;
use crate::shared::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_index_left_by_an_interrupted_concurrent_build_is_dropped_and_rebuilt() {
    let db = pg_database("cic").await;
    schemas(&db, 1).await;
    let base = migration_dir(&[(
        "0001_big.sql",
        "CREATE TABLE big (id int, x int); INSERT INTO big SELECT g, g % 1000003 FROM generate_series(1, 1500000) g;",
    )]);
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    assert_eq!(
        sync_fleet(dir.path(), &fleet, base.path(), &[])
            .status
            .code(),
        Some(0)
    );
    std::fs::write(
        base.path().join("0002_idx.sql"),
        // unquoted mixed case: the server folds it to big_x_idx
        "-- no-transaction\nCREATE INDEX CONCURRENTLY Big_X_Idx ON big (x, id);\n",
    )
    .unwrap();
    // Kill the backend building the index, mid-build: a real fault.
    let url = db.url.clone();
    let killer = tokio::spawn(async move {
        let mut c = pg_connect(&url).await;
        for _ in 0..400 {
            let pid: Option<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE '%CREATE INDEX CONCURRENTLY Big_X_Idx%' AND query NOT LIKE '%pg_stat_activity%' AND state = 'active' AND pid <> pg_backend_pid()",
            )
            .fetch_optional(&mut c)
            .await
            .unwrap();
            if let Some(pid) = pid {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                    .bind(pid)
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    });
    let out = sync_fleet(
        dir.path(),
        &fleet,
        base.path(),
        &["--max-attempts", "4", "--retry-backoff", "200ms"],
    );
    assert!(killer.await.unwrap(), "the index build was seen and killed");
    expect_exit(&out, 0);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let attempts: u32 = rows["tenant_000"]["attempts"].parse().unwrap();
    assert!(attempts >= 2, "the killed build was retried");
    let mut c = db.conn().await;
    assert_eq!(
        pg_history(&mut c, "tenant_000").await,
        vec![(1, true), (2, true)],
        "history not left dirty"
    );
    let valid: Vec<bool> = sqlx::query_scalar(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'big_x_idx'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(
        valid,
        vec![true],
        "one valid index, the invalid leftover is gone"
    );
    c.close().await.unwrap();
    db.drop_now().await;
}

/// Restarts the PostgreSQL cluster in the middle of a run (runs alone: see
/// .config/nextest.toml).
#[tokio::test(flavor = "multi_thread")]
async fn server_restart_mid_run_is_retried_and_every_tenant_succeeds() {
    let db = pg_database("restart").await;
    schemas(&db, 40).await;
    let m = migration_dir(&[
        (
            "0001_a.sql",
            "CREATE TABLE a (x int); SELECT pg_sleep(0.05);",
        ),
        (
            "0002_b.sql",
            "CREATE TABLE b (x int); SELECT pg_sleep(0.05);",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let child = fleetmig_process(dir.path())
        .args([
            "sync",
            "--progress-every",
            "0",
            "--concurrency",
            "4",
            "--max-attempts",
            "20",
            "--retry-backoff",
            "300ms",
            "--fleet",
        ])
        .arg(format!("postgres-schemas:{}", db.url))
        .arg("--migrations")
        .arg(m.path())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let clusters = std::process::Command::new("pg_lsclusters")
        .arg("-h")
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&clusters.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let mut cols = line.split_whitespace();
    let (version, cluster) = (
        cols.next().unwrap().to_string(),
        cols.next().unwrap().to_string(),
    );
    let restarted = std::process::Command::new("pg_ctlcluster")
        .args([&version, &cluster, "restart", "-m", "fast"])
        .status()
        .unwrap();
    assert!(restarted.success(), "pg_ctlcluster restart failed");
    let out = child.wait_with_output().unwrap();
    expect_exit(&out, 0);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let retried = rows.values().filter(|r| r["attempts"] != "1").count();
    assert!(retried > 0, "some tenant met the restart and was retried");
    let mut c = db.conn().await;
    for i in 0..40 {
        assert_eq!(
            pg_history(&mut c, &format!("tenant_{i:03}")).await,
            vec![(1, true), (2, true)]
        );
    }
    c.close().await.unwrap();
    db.drop_now().await;
}
