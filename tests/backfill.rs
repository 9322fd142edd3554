//! Batched backfills: one statement run again and again in short
//! transactions until it changes no rows, with a checkpoint in the state
//! store. On PostgreSQL: a million rows, the lock time of every batch measured
//! against a concurrent writer, and a SIGKILL in the middle that resumes.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use sqlx::{Connection, Executor};

/// A SQLite table of 2,500 rows whose column `w` is to be backfilled.
const T_2500: (&str, &str) = (
    "0001_t.sql",
    "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, w INTEGER);\n\
     WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2500) INSERT INTO t (id, v) SELECT x, x FROM c;",
);

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_backfill_runs_in_batches_and_checkpoints() {
    let dir = sqlite_fleet(2);
    let m = migration_dir(&[
        T_2500,
        (
            "0002_fill.sql",
            "-- fleetmig: batch size=1000 pause=1ms\nUPDATE t SET w = v * 2 WHERE id IN (SELECT id FROM t WHERE w IS NULL LIMIT :batch_size);\n",
        ),
    ]);
    let out = sync(dir.path(), m.path(), &[]);
    expect_exit(&out, 0);
    let mut c = sqlite(&tenant_path(dir.path(), "t0000")).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM t WHERE w IS NULL OR w <> v * 2")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(left, 0);
    c.close().await.unwrap();
    assert_eq!(
        sqlite_history(&tenant_path(dir.path(), "t0000")).await,
        vec![(1, true), (2, true)]
    );
    let mut st = sqlite(&dir.path().join(".fleetmig/state.db")).await;
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT tenant, batches, rows_changed, done FROM fleetmig_backfills ORDER BY tenant",
    )
    .fetch_all(&mut st)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![("t0000".into(), 4, 2500, 1), ("t0001".into(), 4, 2500, 1)],
        "3 batches of rows and the empty one"
    );
    // a batch migration without :batch_size is refused, naming the file
    std::fs::write(
        m.path().join("0003_bad.sql"),
        "-- fleetmig: batch size=10\nUPDATE t SET w = 0 WHERE w IS NULL;\n",
    )
    .unwrap();
    let out = sync(dir.path(), m.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("0003_bad.sql") && stderr(&out).contains(":batch_size"));
    // and one data-changing statement: DDL would commit on its own on MySQL
    std::fs::write(
        m.path().join("0003_bad.sql"),
        "-- fleetmig: batch size=10\nALTER TABLE t ADD COLUMN x INTEGER;\nUPDATE t SET w = 0 WHERE id IN (SELECT id FROM t LIMIT :batch_size);\n",
    )
    .unwrap();
    let out = sync(dir.path(), m.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("0003_bad.sql")
            && stderr(&out).contains("one statement; this one has 2"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        m.path().join("0003_bad.sql"),
        "-- fleetmig: batch size=10\nCREATE TABLE x AS SELECT * FROM t LIMIT :batch_size;\n",
    )
    .unwrap();
    let out = sync(dir.path(), m.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("0003_bad.sql")
            && stderr(&out).contains("line 2")
            && stderr(&out).contains("not CREATE"),
        "{}",
        stderr(&out)
    );
    let history: Vec<(i64, bool)> = sqlite_history(&tenant_path(dir.path(), "t0000")).await;
    assert_eq!(
        history,
        vec![(1, true), (2, true)],
        "bad input touches nothing"
    );
}

/// A batch that changes fewer rows than the size is confirmed at once, in the
/// same transaction, by the statement again under a savepoint. When that
/// confirming run still changes rows (here each batch takes half the size),
/// it is rolled back: no transaction changes more than the size, no row is
/// counted twice, and the loop goes on until a confirming run finds nothing.
#[tokio::test(flavor = "multi_thread")]
async fn sqlite_short_batch_confirmation_never_exceeds_the_batch_size() {
    let dir = sqlite_fleet(1);
    let m = migration_dir(&[
        T_2500,
        (
            "0002_fill.sql",
            "-- fleetmig: batch size=1000 pause=1ms\n\
             UPDATE t SET w = v * 2 WHERE id IN (SELECT id FROM t WHERE w IS NULL ORDER BY id LIMIT :batch_size / 2);\n",
        ),
    ]);
    let out = sync(dir.path(), m.path(), &[]);
    expect_exit(&out, 0);
    let path = tenant_path(dir.path(), "t0000");
    let mut c = sqlite(&path).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM t WHERE w IS NULL OR w <> v * 2")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(left, 0);
    c.close().await.unwrap();
    assert_eq!(sqlite_history(&path).await, vec![(1, true), (2, true)]);
    let mut st = sqlite(&dir.path().join(".fleetmig/state.db")).await;
    let row: (i64, i64, i64) =
        sqlx::query_as("SELECT batches, rows_changed, done FROM fleetmig_backfills")
            .fetch_one(&mut st)
            .await
            .unwrap();
    // five transactions of 500 rows, each confirmed by a second run: four
    // confirmations rolled back (they found rows), the last one found none
    assert_eq!(row, (10, 2500, 1));
}

/// A batched backfill with a verification query that is wrong on purpose
/// (the backfill writes v * 2).
fn verified_backfill() -> tempfile::TempDir {
    migration_dir(&[
        (
            "0001_t.sql",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, w INTEGER);\n\
             INSERT INTO t (id, v) VALUES (1, 1), (2, 2), (3, 3), (4, 4), (5, 5);",
        ),
        (
            "0002_fill.sql",
            "-- fleetmig: batch size=2 pause=1ms\n\
             UPDATE t SET w = v * 2 WHERE id IN (SELECT id FROM (SELECT id FROM t WHERE w IS NULL ORDER BY id LIMIT :batch_size) AS todo);\n",
        ),
        (
            "0002_fill.verify.sql",
            "SELECT id, w FROM t WHERE w <> v * 3 ORDER BY id LIMIT 2",
        ),
    ])
}

/// The first run: the full batches commit, the verification fails in the
/// last batch's transaction, which rolls back, and the migration is not
/// recorded.
fn assert_unrecorded(dir: &std::path::Path, out: &std::process::Output) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    let rows = csv_rows(&report_dir(dir, out));
    let r = rows.values().next().unwrap();
    assert_eq!(
        (
            r["status"].as_str(),
            r["error_kind"].as_str(),
            r["error_version"].as_str()
        ),
        ("failed", "verify_query_failed", "2")
    );
    assert!(
        r["error_message"].contains("0002_fill.verify.sql")
            && r["error_message"].contains("2 row(s): (1, 2), (2, 4)")
            && r["error_message"].contains("not recorded"),
        "{}",
        r["error_message"]
    );
}

const FIXED_VERIFY: &str = "SELECT count(*) = 0 FROM t WHERE w IS NULL OR w <> v * 2";

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_verified_backfill_is_recorded_only_once_its_verification_passes() {
    let dir = sqlite_fleet(1);
    let path = tenant_path(dir.path(), "t0000");
    let m = verified_backfill();
    assert_unrecorded(dir.path(), &sync(dir.path(), m.path(), &[]));
    assert_eq!(sqlite_history(&path).await, vec![(1, true)]);
    let mut c = sqlite(&path).await;
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM t WHERE w = v * 2")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(
        done, 4,
        "the full batches are committed; the last one rolled back with its verification"
    );
    c.close().await.unwrap();
    std::fs::write(m.path().join("0002_fill.verify.sql"), FIXED_VERIFY).unwrap();
    let out = sync(dir.path(), m.path(), &[]);
    expect_exit(&out, 0);
    assert_eq!(sqlite_history(&path).await, vec![(1, true), (2, true)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_verified_backfill_is_recorded_only_once_its_verification_passes() {
    let db = pg_database("verifiedfill").await;
    db.exec("CREATE SCHEMA tenant_000;").await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let m = verified_backfill();
    assert_unrecorded(dir.path(), &sync_fleet(dir.path(), &fleet, m.path(), &[]));
    let mut c = db.conn().await;
    assert_eq!(pg_history(&mut c, "tenant_000").await, vec![(1, true)]);
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_000.t WHERE w = v * 2")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(
        done, 4,
        "the full batches are committed; the last one rolled back with its verification"
    );
    std::fs::write(m.path().join("0002_fill.verify.sql"), FIXED_VERIFY).unwrap();
    let out = sync_fleet(dir.path(), &fleet, m.path(), &[]);
    expect_exit(&out, 0);
    assert_eq!(
        pg_history(&mut c, "tenant_000").await,
        vec![(1, true), (2, true)]
    );
    c.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_million_row_backfill_holds_locks_one_batch_at_a_time_and_resumes_after_a_kill() {
    let db = pg_database("backfill").await;
    db.exec("CREATE SCHEMA tenant_000;").await;
    let dir = tempfile::tempdir().unwrap();
    let m = migration_dir(&[
        (
            "0001_big.sql",
            "CREATE TABLE big (id bigint PRIMARY KEY, v int NOT NULL, w int);\n\
             INSERT INTO big (id, v) SELECT g, g % 1000 FROM generate_series(1, 1000000) g;\n\
             -- fleetmig-lint: ignore FM001 (the table is new)\n\
             CREATE INDEX big_w_todo ON big (id) WHERE w IS NULL;\n",
        ),
        (
            "0002_fill.sql",
            "-- fleetmig: batch size=10000 pause=20ms\n\
             UPDATE big SET w = v * 2 WHERE id IN (SELECT id FROM big WHERE w IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    let fleet = format!("postgres-schemas:{}", db.url);
    let mpath = m.path().to_str().unwrap().to_string();
    let out = sync_fleet(dir.path(), &fleet, m.path(), &["--to", "1"]);
    expect_exit(&out, 0);

    // A writer that keeps touching rows spread over the table, timing each
    // update: it can only ever wait for one batch's transaction.
    let url = db.url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = tokio::spawn(async move {
        let mut c = pg_connect(&url).await;
        c.execute("SET search_path TO tenant_000").await.unwrap();
        let mut worst = Duration::ZERO;
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let id = 1 + (n * 7919) % 1_000_000;
            let t0 = Instant::now();
            sqlx::query("UPDATE big SET v = v WHERE id = $1")
                .bind(id as i64)
                .execute(&mut c)
                .await
                .unwrap();
            worst = worst.max(t0.elapsed());
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (worst, n)
    });
    let mut child = fleetmig_process(dir.path())
        .args([
            "sync",
            "--progress-every",
            "0",
            "--fleet",
            &fleet,
            "--migrations",
            &mpath,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // kill it in the middle of the backfill
    let state = dir.path().join(".fleetmig/state.db");
    let mut mid = (0i64, 0i64);
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if state.exists() {
            let mut st = sqlite(&state).await;
            let r: Option<(i64, i64)> =
                sqlx::query_as("SELECT batches, rows_changed FROM fleetmig_backfills")
                    .fetch_optional(&mut st)
                    .await
                    .unwrap_or(None);
            st.close().await.unwrap();
            if let Some(r) = r
                && r.0 >= 20
            {
                mid = r;
                break;
            }
        }
    }
    assert!(mid.0 >= 20, "the backfill never got going");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut c = db.conn().await;
    let done_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_000.big WHERE w IS NOT NULL")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert!(
        done_before >= mid.1 && done_before < 1_000_000,
        "stopped part-way: {done_before}"
    );
    assert_eq!(
        pg_history(&mut c, "tenant_000").await,
        vec![(1, true)],
        "not recorded until complete"
    );

    let out = fleetmig_process(dir.path())
        .args([
            "resume",
            "--progress-every",
            "0",
            "--fleet",
            &fleet,
            "--migrations",
            &mpath,
        ])
        .output()
        .unwrap();
    expect_exit(&out, 0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst_wait, writes) = writer.await.unwrap();

    let wrong: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_000.big WHERE w IS DISTINCT FROM v * 2")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(wrong, 0);
    assert_eq!(
        pg_history(&mut c, "tenant_000").await,
        vec![(1, true), (2, true)]
    );
    c.close().await.unwrap();
    let mut st = sqlite(&state).await;
    let (batches, rows, max_ms, done): (i64, i64, i64, i64) =
        sqlx::query_as("SELECT batches, rows_changed, max_batch_ms, done FROM fleetmig_backfills")
            .fetch_one(&mut st)
            .await
            .unwrap();
    st.close().await.unwrap();
    // resumed, not restarted: the checkpoint carried on from the kill
    assert_eq!(rows, 1_000_000, "every row counted once across both runs");
    assert!(batches >= 101, "{batches} batches");
    assert_eq!(done, 1);
    // measured: every transaction held its locks for one batch only
    let total_ms = batches * max_ms.max(1);
    eprintln!(
        "batches {batches}, longest batch {max_ms} ms, writer: {writes} updates, worst wait {worst_wait:?}"
    );
    assert!(max_ms < 2000, "a batch held its locks for {max_ms} ms");
    assert!(
        worst_wait.as_millis() as i64 <= max_ms + 250,
        "the concurrent writer waited {worst_wait:?}, longer than one batch ({max_ms} ms)"
    );
    assert!(
        total_ms > 10 * max_ms,
        "the backfill was many short transactions"
    );
    db.drop_now().await;
}
