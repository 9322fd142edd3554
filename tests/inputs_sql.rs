//! SQL as each system reads it (issue 18): gates and verification queries
//! run where they cannot write, a NUL byte is refused when the set loads,
//! MySQL trigger bodies, conditional comments and DELIMITER lines run as
//! the server would.

mod common;

use common::*;

/// A gate that writes fails (it runs read-only) and its write is not
/// there after: SQLite (`query_only`) and PostgreSQL schemas (`BEGIN READ
/// ONLY`).
#[tokio::test(flavor = "multi_thread")]
async fn a_gate_that_writes_fails_and_writes_nothing() {
    let m = migration_dir(&[(
        "0001_t.sql",
        "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);",
    )]);
    // SQLite
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 2, 0);
    std::fs::write(
        dir.path().join("gate.sql"),
        "UPDATE t SET x = 99 RETURNING x",
    )
    .unwrap();
    let out = run_in(
        dir.path(),
        &[
            "rollout",
            "--fleet",
            "registry:fleet.csv",
            "--progress-every",
            "0",
            "--migrations",
            m.path().to_str().unwrap(),
            "--gate-sql",
            "gate.sql",
        ],
    );
    expect_exit(&out, 1);
    let s = summary(&report_dir(dir.path(), &out));
    assert_eq!(s["status"], "halted", "{s}");
    assert!(
        s["reason"].as_str().unwrap().contains("gate_sql failed"),
        "{s}"
    );
    for t in ["t0000", "t0001"] {
        let mut c = sqlite(&registry_tenant(dir.path(), t)).await;
        let x: i64 = sqlx::query_scalar("SELECT x FROM t")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(x, 1, "the gate's write is not there");
    }
    // PostgreSQL schemas
    let db = pg_database("gatero").await;
    db.exec("CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b")
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gate.sql"),
        "UPDATE t SET x = 99 RETURNING x",
    )
    .unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let out = run_in(
        dir.path(),
        &[
            "rollout",
            "--fleet",
            &fleet,
            "--progress-every",
            "0",
            "--migrations",
            m.path().to_str().unwrap(),
            "--gate-sql",
            "gate.sql",
        ],
    );
    expect_exit(&out, 1);
    let mut c = db.conn().await;
    let n: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM tenant_a.t WHERE x = 99) + (SELECT count(*) FROM tenant_b.t WHERE x = 99)")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 0, "the gate's write is not there");
    drop(c);
    db.drop_now().await;
}

/// A NUL byte in a migration is refused when the set loads (exit 2, file
/// and line), before any tenant is touched.
#[test]
fn a_nul_byte_in_a_migration_is_refused_when_the_set_loads() {
    let dir = sqlite_fleet(1);
    let m = migration_dir(&[(
        "0001_t.sql",
        "CREATE TABLE t (x int);\nINSERT INTO t VALUES (1);\n-- \0 here\n",
    )]);
    let out = sync(dir.path(), m.path(), &[]);
    expect_exit(&out, 2);
    assert!(stderr(&out).contains("0001_t.sql:3"), "{}", stderr(&out));
    assert!(stderr(&out).contains("NUL"), "{}", stderr(&out));
    assert_eq!(
        std::fs::metadata(tenant_path(dir.path(), "t0000"))
            .unwrap()
            .len(),
        0
    );
}

/// MySQL migrations as dumps write them: a trigger with a `BEGIN … END`
/// body (it was split at its inner semicolons: error 1064), a conditional
/// comment the server runs (it was taken for a comment and never ran), and
/// `DELIMITER` lines.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_trigger_bodies_conditional_comments_and_delimiters_run_as_the_server_would() {
    let name = format!("fmsplit{:06x}", rand::random::<u32>() & 0xffffff);
    let url = with_db(&mysql_base_url(), &name);
    mysql_exec(&mysql_base_url(), &format!("CREATE DATABASE `{name}`")).await;
    let m = migration_dir(&[
        (
            "0001_t.sql",
            "CREATE TABLE t (a int) ENGINE=MyISAM;\n\
             CREATE TRIGGER t_bi BEFORE INSERT ON t FOR EACH ROW BEGIN\n\
               IF NEW.a < 0 THEN SET NEW.a = 0; END IF;\n\
               SET NEW.a = CASE WHEN NEW.a > 9 THEN 9 ELSE NEW.a END;\n\
             END;\n\
             /*!50610 ALTER TABLE t ENGINE=InnoDB */;\n",
        ),
        (
            "0002_p.sql",
            "DELIMITER ;;\nCREATE PROCEDURE put(x int) BEGIN INSERT INTO t VALUES (x); INSERT INTO t VALUES (x + 1); END ;;\nDELIMITER ;\nCALL put(-5);\n",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let out = sync_fleet(
        dir.path(),
        &format!("mysql-databases:{url}"),
        m.path(),
        &["--tenant-pattern", &name],
    );
    expect_exit(&out, 0);
    let mut c = mysql_connect(&url).await;
    let engine: String = sqlx::query_scalar(
        "SELECT CAST(ENGINE AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 't'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(engine, "InnoDB", "the conditional comment ran");
    let rows: Vec<i32> = sqlx::query_scalar("SELECT a FROM t ORDER BY a")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(rows, vec![0, 0], "the trigger and the procedure ran whole");
    drop(c);
    mysql_exec(&mysql_base_url(), &format!("DROP DATABASE `{name}`")).await;
}

/// A verification query that writes fails its migration (it runs as a
/// subquery, where nothing can write) and its write is not committed with
/// the migration; a verification file of two statements is refused when
/// the set loads.
#[tokio::test(flavor = "multi_thread")]
async fn a_verification_that_writes_fails_its_migration_and_writes_nothing() {
    let m = migration_dir(&[
        (
            "0001_t.sql",
            "CREATE TABLE t (x int); INSERT INTO t VALUES (1);",
        ),
        ("0001_t.verify.sql", "UPDATE t SET x = 99 RETURNING x"),
    ]);
    let dir = sqlite_fleet(1);
    let out = sync(dir.path(), m.path(), &[]);
    expect_exit(&out, 1);
    assert_eq!(
        sqlite_history(&tenant_path(dir.path(), "t0000")).await,
        vec![]
    );
    assert!(
        sqlite_tables(&tenant_path(dir.path(), "t0000"))
            .await
            .iter()
            .all(|t| t != "t")
    );

    let db = pg_database("verifyro").await;
    db.exec("CREATE SCHEMA tenant_a").await;
    let dir = tempfile::tempdir().unwrap();
    let m = migration_dir(&[
        (
            "0001_t.sql",
            "CREATE TABLE t (x int); INSERT INTO t VALUES (1);",
        ),
        (
            "0001_t.verify.sql",
            "WITH u AS (UPDATE t SET x = 99 RETURNING x) SELECT x FROM u WHERE x < 0",
        ),
    ]);
    let out = sync_fleet(
        dir.path(),
        &format!("postgres-schemas:{}", db.url),
        m.path(),
        &[],
    );
    expect_exit(&out, 1);
    let mut c = db.conn().await;
    assert_eq!(pg_history(&mut c, "tenant_a").await, vec![]);
    let t: Option<String> = sqlx::query_scalar("SELECT to_regclass('tenant_a.t')::text")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(
        t, None,
        "the migration and the verification's write were rolled back"
    );
    drop(c);
    db.drop_now().await;

    let m = migration_dir(&[
        ("0001_t.sql", "CREATE TABLE t (x int);"),
        ("0001_t.verify.sql", "SELECT 1 WHERE false; DELETE FROM t;"),
    ]);
    let dir = sqlite_fleet(1);
    let out = sync(dir.path(), m.path(), &[]);
    expect_exit(&out, 2);
    assert!(
        stderr(&out).contains("0001_t.verify.sql") && stderr(&out).contains("one SELECT"),
        "{}",
        stderr(&out)
    );
}
