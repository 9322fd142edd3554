//! The edges an operator hits (issue 10): nothing touched outside the fleet,
//! one bad tenant is one failed tenant, an empty fleet is an error, bad
//! settings and near-miss directives are refused before any work.

mod common;

use common::*;

/// The default pattern is `tenant\_%`: `_` is literal, so `tenants` and
/// `tenantx_control` are not tenants. A tenant query runs read-only, and a
/// name it returns twice is an error naming it.
#[tokio::test(flavor = "multi_thread")]
async fn only_tenant_schemas_are_found_and_the_tenant_query_cannot_write() {
    let db = pg_database("pattern").await;
    db.exec("CREATE SCHEMA tenant_1; CREATE SCHEMA tenants; CREATE SCHEMA tenantx_control;")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let plan = |extra: &[&str]| {
        fleetmig()
            .current_dir(dir.path())
            .args(["plan", "--json", "--fleet", &fleet, "--migrations"])
            .arg(demo_migrations())
            .args(extra)
            .output()
            .unwrap()
    };
    let out = plan(&[]);
    expect_exit(&out, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<&str> = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tenant_1"]);

    let out = plan(&["--tenant-query", "CREATE TABLE public.oops (x int)"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("--tenant-query failed"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
    let mut c = db.conn().await;
    assert!(
        pg_tables(&mut c, "public").await.is_empty(),
        "the query wrote"
    );

    let out = plan(&[
        "--tenant-query",
        "SELECT 'tenant_1' UNION ALL SELECT 'tenant_1'",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("tenant tenant_1 is listed twice"),
        "{}",
        stderr(&out)
    );
    sqlx::Connection::close(c).await.unwrap();
    db.drop_now().await;
}

/// A stray file in a sqlite-dir (hidden, a space, an over-long name) is one
/// failed tenant (`invalid_tenant`, never opened); the rest is migrated.
#[tokio::test(flavor = "multi_thread")]
async fn a_stray_file_is_one_failed_tenant_and_the_rest_is_migrated() {
    let dir = sqlite_fleet(3);
    let tenants = dir.path().join("tenants");
    let long = format!("{}.db", "x".repeat(200));
    for stray in [".hidden.db", "my tenant.db", long.as_str()] {
        std::fs::write(tenants.join(stray), b"not a database").unwrap();
    }
    let out = sync(dir.path(), &demo_migrations(), &[]);
    expect_exit(&out, 1);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    for i in 0..3 {
        let id = format!("t{i:04}");
        assert_eq!(rows[&id]["status"], "succeeded");
        assert_eq!(
            sqlite_history(&tenant_path(dir.path(), &id)).await.len(),
            DEMO_REACHED as usize
        );
    }
    let refused: Vec<_> = rows
        .values()
        .filter(|r| r["error_kind"] == "invalid_tenant")
        .collect();
    assert_eq!(refused.len(), 3, "{rows:?}");
    for r in &refused {
        assert_eq!(r["status"], "failed");
        assert_eq!(r["attempts"], "0");
        assert_eq!(r["wave"], "discovery");
        assert!(
            r["tenant"].len() < 160,
            "a long name is cut: {}",
            r["tenant"]
        );
    }
    for stray in [".hidden.db", "my tenant.db", long.as_str()] {
        assert_eq!(
            std::fs::read(tenants.join(stray)).unwrap(),
            b"not a database",
            "{stray} was touched"
        );
    }
    let out = fleetmig()
        .current_dir(dir.path())
        .args(["status", "--fleet", "sqlite-dir:tenants", "--migrations"])
        .arg(demo_migrations())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out).matches("refused: ").count(),
        3,
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("\"my tenant\""), "{}", stdout(&out));
}

/// An empty fleet is an error (exit 3) unless `--allow-empty`; a registry
/// row whose file does not exist is `missing`, not `pending`.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_fleet_is_an_error_unless_allowed_and_a_missing_file_says_so() {
    let dir = sqlite_fleet(0);
    let out = sync(dir.path(), &demo_migrations(), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(stderr(&out).contains("--allow-empty"), "{}", stderr(&out));
    assert!(
        !dir.path().join("reports").exists(),
        "no report for nothing"
    );
    let out = sync(dir.path(), &demo_migrations(), &["--allow-empty"]);
    expect_exit(&out, 0);
    assert!(stdout(&out).contains("0 tenants"), "{}", stdout(&out));

    std::fs::write(
        dir.path().join("fleet.csv"),
        "id,url,schema,tags\ngone,sqlite://db/gone.db,,\n",
    )
    .unwrap();
    let out = fleetmig()
        .current_dir(dir.path())
        .args(["status", "--fleet", "registry:fleet.csv", "--migrations"])
        .arg(demo_migrations())
        .output()
        .unwrap();
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("gone "))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("missing"), "{}", stdout(&out));
    assert!(!dir.path().join("db").exists(), "status created the tenant");
}

/// Durations too long for the databases, a `--to` that names no migration,
/// and a near-miss directive are refused with exit 2 before any tenant is
/// touched.
#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_and_near_miss_directives_are_refused_before_any_work() {
    let dir = sqlite_fleet(2);
    let m = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);"),
        ("0002_b.sql", "CREATE TABLE b (x int);"),
        ("0005_c.sql", "CREATE TABLE c (x int);"),
    ]);
    let refused = |extra: &[&str], needle: &str| {
        let out = sync(dir.path(), m.path(), extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{extra:?}: {}", stderr(&out));
    };
    refused(
        &["--lock-timeout", "30d"],
        "--lock-timeout \"30d\": at most",
    );
    refused(&["--statement-timeout", "400days"], "--statement-timeout");
    refused(&["--to", "42"], "--to 42");
    refused(&["--to", "3"], "nearest below is 2");
    for i in 0..2 {
        assert!(
            sqlite_history(&tenant_path(dir.path(), &format!("t{i:04}")))
                .await
                .is_empty()
        );
    }
    let contract = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);"),
        (
            "0002_drop.sql",
            "-- FLEETMIG: phase=contract\nDROP TABLE a;\n",
        ),
    ]);
    let out = sync(dir.path(), contract.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("0002_drop.sql:1: ")
            && stderr(&out).contains("looks like a fleetmig directive"),
        "{}",
        stderr(&out)
    );
    assert!(
        sqlite_history(&tenant_path(dir.path(), "t0000"))
            .await
            .is_empty()
    );
}

/// A `-- no-transaction` PostgreSQL file of several statements runs them one
/// by one (two `CREATE INDEX CONCURRENTLY` succeed); when its first statement
/// fails nothing was applied and the tenant stays clean; when a later one
/// fails, it is dirty. A failing script is named by file and line.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_no_transaction_files_run_statement_by_statement_and_errors_name_the_line() {
    let db = pg_database("notx").await;
    db.exec("CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b; CREATE SCHEMA tenant_c;")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let m = migration_dir(&[
        ("0001_t.sql", "CREATE TABLE t (x int, y int);\n"),
        (
            "0002_idx.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY t_x ON t (x);\nCREATE INDEX CONCURRENTLY t_y ON t (y);\n",
        ),
    ]);
    let out = sync_fleet(dir.path(), &fleet, m.path(), &[]);
    expect_exit(&out, 0);
    let mut c = db.conn().await;
    let indexes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'tenant_a' AND indexname IN ('t_x', 't_y')",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(indexes, 2);

    // first statement fails on tenant_b (no such column there), the second
    // on tenant_c (after the first was built)
    db.exec("ALTER TABLE tenant_b.t DROP COLUMN x; ALTER TABLE tenant_c.t DROP COLUMN y;")
        .await;
    let m2 = migration_dir(&[
        ("0001_t.sql", "CREATE TABLE t (x int, y int);\n"),
        (
            "0002_idx.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY t_x ON t (x);\nCREATE INDEX CONCURRENTLY t_y ON t (y);\n",
        ),
        (
            "0003_more.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY t_x2 ON t (x);\n\nCREATE INDEX CONCURRENTLY t_y2 ON t (y);\n",
        ),
    ]);
    let out = sync_fleet(dir.path(), &fleet, m2.path(), &["--max-attempts", "1"]);
    expect_exit(&out, 1);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    // tenant_a and tenant_b were at 2 and 1... tenant_b failed 0002 at once
    assert_eq!(rows["tenant_a"]["status"], "succeeded");
    assert_eq!(rows["tenant_b"]["status"], "failed");
    assert_eq!(rows["tenant_c"]["status"], "failed");
    let hist = |schema: &'static str| {
        let url = db.url.clone();
        async move {
            let mut c = pg_connect(&url).await;
            pg_history(&mut c, schema).await
        }
    };
    assert_eq!(
        hist("tenant_b").await,
        vec![(1, true), (2, true)],
        "b kept its state"
    );
    let b_err = &rows["tenant_b"]["error_message"];
    assert!(b_err.contains("0003_more.sql:2"), "{b_err}");
    assert_eq!(rows["tenant_b"]["error_version"], "3");
    assert!(!b_err.contains("dirty"), "{b_err}");
    assert_eq!(
        hist("tenant_c").await,
        vec![(1, true), (2, true), (3, false)],
        "c ran a statement of 0003: dirty"
    );
    let c_err = &rows["tenant_c"]["error_message"];
    assert!(c_err.contains("0003_more.sql:4"), "{c_err}");
    assert!(c_err.contains("dirty"), "{c_err}");
    sqlx::Connection::close(c).await.unwrap();
    db.drop_now().await;
}

/// An error inside a group of migrations sent as one batch names the
/// migration's file and line (not a line of PostgreSQL's own source) and
/// its version.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_errors_in_a_group_name_the_file_and_line() {
    let db = pg_database("errline").await;
    db.exec("CREATE SCHEMA tenant_a;").await;
    let dir = tempfile::tempdir().unwrap();
    let m = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);\n"),
        (
            "0002_b.sql",
            "-- a comment\nCREATE TABLE b (x int);\nINSERT INTO b VALUES (1);\nSELECT nope FROM b;\n",
        ),
    ]);
    let out = sync_fleet(
        dir.path(),
        &format!("postgres-schemas:{}", db.url),
        m.path(),
        &["--tx-mode", "tenant"],
    );
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let row = &rows["tenant_a"];
    assert_eq!(row["error_version"], "2");
    assert!(row["error_message"].contains("0002_b.sql:4"), "{row:?}");
    assert!(!row["error_message"].contains(" at line "), "{row:?}");
    db.drop_now().await;
}

/// A large SQLite migration (about 16 MB, 200,000 statements, with a trigger
/// whose body holds semicolons) runs in linear time, every row once (sent
/// whole, it took 53 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_large_sqlite_migration_runs_whole_and_fast() {
    let dir = sqlite_fleet(1);
    let mut big = String::from(
        "CREATE TABLE log (n INTEGER);\nCREATE TABLE t (id INTEGER, v TEXT);\n\
         CREATE TRIGGER t_log AFTER INSERT ON t BEGIN\n  INSERT INTO log VALUES (1);\n  INSERT INTO log SELECT 2 WHERE 0;\nEND;\n",
    );
    for i in 0..200_000 {
        big.push_str(&format!(
            "INSERT INTO t VALUES ({i}, 'row {i}; padded {}');\n",
            "x".repeat(50)
        ));
    }
    assert!(big.len() > 16_000_000, "{}", big.len());
    let m = migration_dir(&[("0001_big.sql", &big)]);
    let t0 = std::time::Instant::now();
    let out = sync(dir.path(), m.path(), &[]);
    expect_exit(&out, 0);
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(25),
        "{:?}",
        t0.elapsed()
    );
    let mut c = sqlite(&tenant_path(dir.path(), "t0000")).await;
    let (rows, logged): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM log)")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!((rows, logged), (200_000, 200_000));
    sqlx::Connection::close(c).await.unwrap();
}

/// A set already in production keeps its old lint findings without blocking
/// `sync`: the gate judges only what some tenant still has to apply.
/// `fleetmig lint` judges everything, or from `--since VERSION` on.
#[tokio::test(flavor = "multi_thread")]
async fn lint_blocks_only_what_is_still_to_apply() {
    let dir = sqlite_fleet(2);
    let first = migration_dir(&[(
        "0001_t.sql",
        "CREATE TABLE t (a int);\nUPDATE t SET a = 1;\n",
    )]);
    let out = sync(dir.path(), first.path(), &["--allow-lint-findings"]);
    expect_exit(&out, 0);
    let both = migration_dir(&[
        (
            "0001_t.sql",
            "CREATE TABLE t (a int);\nUPDATE t SET a = 1;\n",
        ),
        ("0002_u.sql", "CREATE TABLE u (b int);\n"),
    ]);
    let out = sync(dir.path(), both.path(), &[]);
    expect_exit(&out, 0);
    assert_eq!(
        sqlite_history(&tenant_path(dir.path(), "t0000")).await,
        vec![(1, true), (2, true)]
    );
    let lint = |extra: &[&str]| {
        fleetmig()
            .args(["lint", "--migrations"])
            .arg(both.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let out = lint(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("FM007"), "{}", stdout(&out));
    let out = lint(&["--since", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // a new tenant still needs 0001: the gate refuses again
    std::fs::write(dir.path().join("tenants/t9999.db"), b"").unwrap();
    let out = sync(dir.path(), both.path(), &[]);
    expect_exit(&out, 2);
    assert!(stderr(&out).contains("FM007"), "{}", stderr(&out));
}

/// `-- fleetmig: lock_timeout=...` gives one migration its own lock timeout:
/// with the command's at 30 s, the migration that says 300ms gives up on a
/// locked table at once (transient `lock_timeout`), in a group and alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_migration_s_own_lock_timeout_wins_over_the_command_s() {
    let db = pg_database("ownlock").await;
    db.exec("CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.t (x int);")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let m = migration_dir(&[(
        "0001_alter.sql",
        "-- fleetmig: lock_timeout=300ms\nALTER TABLE t ADD COLUMN y int;\n",
    )]);
    let mut holder = db.conn().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE tenant_a.t IN ACCESS SHARE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    for mode in ["migration", "tenant"] {
        let t0 = std::time::Instant::now();
        let out = sync_fleet(
            dir.path(),
            &fleet,
            m.path(),
            &[
                "--lock-timeout",
                "30s",
                "--max-attempts",
                "1",
                "--tx-mode",
                mode,
            ],
        );
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "{mode}: {:?}",
            t0.elapsed()
        );
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", stderr(&out));
        let rows = csv_rows(&report_dir(dir.path(), &out));
        assert_eq!(rows["tenant_a"]["error_kind"], "lock_timeout", "{mode}");
    }
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    sqlx::Connection::close(holder).await.unwrap();
    db.drop_now().await;
}
