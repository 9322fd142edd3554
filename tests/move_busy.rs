//! `fleetmig move` of a tenant that is written to all along:
//! `--freeze-source` holds its writes from the final verification to the
//! switch, and `--jobs` reads one instant of it in every job.

mod common;

use common::moves::*;
use common::*;
use sqlx::{Connection, Executor};

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_tenant_moves_with_its_writes_held_from_the_final_verification_on() {
    let set = migration_dir(&[
        (
            "0001_t.sql",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
        ),
        (
            "0001_t.postgres.sql",
            "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL);",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    fleet(dir.path(), "sqlite:t1.db", set.path());
    let path = dir.path().join("t1.db");
    let mut c = sqlite(&path).await;
    c.execute("PRAGMA journal_mode = WAL; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) INSERT INTO t SELECT i, 'row ' || i FROM n")
        .await
        .unwrap();
    c.close().await.unwrap();
    // the application writes all along: a row every few milliseconds
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), path.clone());
        tokio::spawn(async move {
            use sqlx::ConnectOptions;
            let mut c = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .busy_timeout(std::time::Duration::from_secs(60))
                .connect()
                .await
                .unwrap();
            let mut i = 3001i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sqlx::query("INSERT INTO t VALUES (?, ?)")
                    .bind(i)
                    .bind(format!("written during the move {i}"))
                    .execute(&mut c)
                    .await
                    .unwrap();
                i += 1;
                tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            }
            c.close().await.unwrap();
            i - 1
        })
    };
    let db = pg_database("mvfreeze").await;
    let set_path = set.path().to_path_buf();
    let dir_path = dir.path().to_path_buf();
    let url = db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        mv(
            &dir_path,
            &set_path,
            &[
                "--to",
                &url,
                "--schema",
                "moved",
                "--batch-rows",
                "100",
                "--pause",
                "20ms",
                "--freeze-source",
            ],
        )
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last = writer.await.unwrap();
    expect_exit(&out, 0);
    let folder = stdout(&out).lines().last().unwrap().to_string();
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(folder).join("move.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        report["recopied"],
        serde_json::json!(["t"]),
        "written to during the copy: {report}"
    );
    // the target holds the source as it was when its writes were held: the
    // same rows up to the last it has, the rest written after the switch
    let mut pg = pg_connect(&db.url).await;
    let moved: Vec<(i64, String)> = sqlx::query_as("SELECT id, v FROM moved.t ORDER BY id")
        .fetch_all(&mut pg)
        .await
        .unwrap();
    pg.close().await.unwrap();
    let mut c = sqlite(&path).await;
    let source: Vec<(i64, String)> = sqlx::query_as("SELECT id, v FROM t ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let held = moved.len();
    assert!(
        held > 3000,
        "rows written during the copy were carried ({held})"
    );
    assert_eq!(moved[..], source[..held]);
    assert_eq!(source.last().unwrap().0, last);
    db.drop_now().await;
}

/// `--jobs 2` on a MariaDB tenant written to all along (a parent and its
/// child in one transaction, a few hundred times a second): the two jobs'
/// snapshots are one instant, so the target never holds a child without
/// its parent (the foreign-key check after the copy would name it); the
/// writes are found and fail the move, naming both tables.
#[tokio::test(flavor = "multi_thread")]
async fn parallel_jobs_read_one_instant_of_a_busy_mariadb_tenant() {
    let set = migration_dir(&[
        (
            "0001_pc.mysql.sql",
            "CREATE TABLE parent (id int PRIMARY KEY, v varchar(40) NOT NULL);
             CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL, FOREIGN KEY (parent_id) REFERENCES parent (id));",
        ),
        (
            "0001_pc.postgres.sql",
            "CREATE TABLE parent (id int PRIMARY KEY, v text NOT NULL);
             CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent (id));",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let name = format!("fmmvjobs{:06x}", rand::random::<u32>() & 0xffffff);
    let url = with_db(&mysql_base_url(), &name);
    mysql_exec(&mysql_base_url(), &format!("CREATE DATABASE `{name}`")).await;
    fleet(dir.path(), &url, set.path());
    mysql_exec(
        &url,
        // more parents than children: the parents are the first job's
        // table (the largest goes to the first job), the children the second's
        "INSERT INTO parent SELECT seq, CONCAT('p', seq) FROM seq_1_to_20000; \
         INSERT INTO parent SELECT seq, 'childless' FROM seq_1000001_to_1030000; \
         INSERT INTO child SELECT seq, seq FROM seq_1_to_20000",
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), url.clone());
        tokio::spawn(async move {
            let mut c = mysql_connect(&url).await;
            let mut i = 20_001i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut tx = c.begin().await.unwrap();
                sqlx::query("INSERT INTO parent VALUES (?, 'late')")
                    .bind(i)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query("INSERT INTO child VALUES (?, ?)")
                    .bind(i)
                    .bind(i)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                i += 1;
            }
            c.close().await.unwrap();
        })
    };
    for round in 0..3 {
        let db = pg_database("mvjobs").await;
        let (d, s, u) = (
            dir.path().to_path_buf(),
            set.path().to_path_buf(),
            db.url.clone(),
        );
        let out = tokio::task::spawn_blocking(move || {
            mv(&d, &s, &["--to", &u, "--jobs", "2", "--batch-rows", "500"])
        })
        .await
        .unwrap();
        let said = stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "round {round}: {said}{}",
            stderr(&out)
        );
        assert!(
            !said.contains("foreign key"),
            "round {round}: the jobs saw two instants: {said}"
        );
        assert!(
            said.contains("written to during the copy"),
            "round {round}: {said}"
        );
        db.drop_now().await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    mysql_exec(&mysql_base_url(), &format!("DROP DATABASE `{name}`")).await;
}
