//! Moves that do not finish as asked: one killed mid-copy starts over
//! cleanly when run again, a type that cannot be carried is refused before
//! anything moves, a source written to during the copy fails the move.

use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::common::*;
use crate::shared::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_move_killed_mid_copy_starts_over_cleanly_when_run_again() {
    let dir = tempfile::tempdir().unwrap();
    sqlite_source(dir.path(), 4000).await;
    let before = std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap();

    let db = pg_database("mvk").await;
    let set = set();
    let mut a = args(&[
        "--to",
        &db.url,
        "--schema",
        "moved",
        "--batch-rows",
        "50",
        "--pause",
        "30ms",
    ]);
    a.extend(["--migrations", set.to_str().unwrap()]);
    let mut child = fleetmig_process(dir.path()).args(&a).spawn().unwrap();
    let t0 = Instant::now();
    // customers are written (PostgreSQL targets are filled a table at a
    // time), the orders are being read
    loop {
        let n = pg_count(&db.url, "SELECT count(*) FROM moved.customers").await;
        if n == 4000 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the copy never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    let _ = child.wait();
    // mid-copy: every customer written, no order yet (a PostgreSQL target
    // takes a table's rows at the table's end)
    assert_eq!(
        pg_count(&db.url, "SELECT count(*) FROM moved.customers").await,
        4000
    );
    assert_eq!(
        pg_count(&db.url, "SELECT count(*) FROM moved.orders").await,
        0
    );
    // the target is the killed move's: another tenant's move into it waits
    let out = run_in(
        dir.path(),
        &[
            "move",
            "--fleet",
            "registry:fleet.csv",
            "--tenant",
            "t2",
            "--to",
            &db.url,
            "--schema",
            "moved",
            "--migrations",
            set.to_str().unwrap(),
            "--state",
            "state.db",
        ],
    );
    expect_exit(&out, 4);
    assert!(
        stderr(&out).contains("a move of tenant t1 into"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap(),
        before,
        "the registry is not switched by a move that did not finish"
    );

    let out = mv(dir.path(), &["--to", &db.url, "--schema", "moved"]);
    expect_exit(&out, 0);
    let r = report(dir.path(), &out);
    assert!(r["restarted_from"].is_string(), "{r}");
    assert_eq!(pg_customers(&db.url, "moved").await, expected(4000));
    assert_eq!(
        pg_count(&db.url, "SELECT count(*) FROM moved.orders").await,
        7998
    );
    let m = moves(dir.path()).await;
    assert_eq!(m.len(), 2);
    assert_eq!(
        m[0].0, "failed",
        "the killed move is recorded as interrupted"
    );
    assert_eq!(m[1], ("done".to_string(), 4000 + 7998));
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_type_that_cannot_be_carried_is_refused_before_anything_moves() {
    let dir = tempfile::tempdir().unwrap();
    let db = pg_database("mvt").await;
    db.exec("CREATE SCHEMA tenant_t1").await;
    std::fs::write(
        dir.path().join("fleet.csv"),
        format!("id,url,schema,tags\nt1,{},tenant_t1,\n", db.url),
    )
    .unwrap();
    let out = sync_fleet(
        dir.path(),
        "registry:fleet.csv",
        &set(),
        &["--state", "state.db"],
    );
    expect_exit(&out, 0);
    db.exec("ALTER TABLE tenant_t1.customers ADD COLUMN stay int4range")
        .await;
    let before = std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap();
    let out = mv(dir.path(), &["--to", "sqlite:moved/t1.db"]);
    expect_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("customers.stay")
            && err.contains("int4range")
            && err.contains("nothing was moved"),
        "{err}"
    );
    assert!(!err.contains(TEST_PASSWORD));
    assert!(
        !dir.path().join("moved/t1.db").exists(),
        "no target was created"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap(),
        before
    );
    assert!(moves(dir.path()).await.is_empty());
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_written_to_during_the_copy_fails_the_move() {
    let dir = tempfile::tempdir().unwrap();
    let (src, src_url) = mysql_database("w").await;
    synced(dir.path(), &src_url);
    let mut m = mysql_connect(&src_url).await;
    fill!(m, 1500);
    let before = std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap();

    let (dst, dst_url) = new_pg_name("w");
    let set = set();
    let mut a = args(&["--to", &dst_url, "--batch-rows", "50", "--pause", "40ms"]);
    a.extend(["--migrations", set.to_str().unwrap()]);
    let child = fleetmig_process(dir.path()).args(&a).spawn().unwrap();
    let t0 = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if pg_count(&dst_url, "SELECT count(*) FROM customers").await > 100 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the copy never started"
        );
    }
    // the application writes while the copy runs
    sqlx::query("UPDATE customers SET name = 'renamed during the move' WHERE id = 1400")
        .execute(&mut m)
        .await
        .unwrap();
    m.close().await.unwrap();
    let out = child.wait_with_output().unwrap();
    expect_exit(&out, 1);
    let said = stdout(&out);
    assert!(
        said.contains("written to during the copy")
            && said.contains("customers (1500 rows when copied, 1500 now, rows changed)"),
        "{said}"
    );
    assert_eq!(report(dir.path(), &out)["status"], "failed");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap(),
        before
    );
    assert_eq!(moves(dir.path()).await[0].0, "failed");
    mysql_drop(&src).await;
    pg_drop_database(&dst).await;
}
