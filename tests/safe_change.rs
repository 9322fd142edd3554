//! The safe-change toolkit: lint (as a command and as a rollout's gate),
//! expand/contract holds, and baseline.

mod common;

use common::*;
use sqlx::Executor;

#[test]
fn lint_reports_rule_file_and_line_in_text_and_json() {
    let m = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE t (id int, a int);\n"),
        (
            "0002_b.sql",
            "-- expand\nALTER TABLE t ADD COLUMN b int NOT NULL;\n",
        ),
        ("0003_c.sql", "UPDATE t SET a = 1;\n"),
    ]);
    let out = fleetmig()
        .args(["lint", "--migrations"])
        .arg(m.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("0002_b.sql:2: FM003 not-null-without-default"),
        "{text}"
    );
    assert!(text.contains("0003_c.sql:1: FM007 unbounded-dml"), "{text}");
    assert!(text.contains("2 finding(s)"), "{text}");
    let out = fleetmig()
        .args(["lint", "--format", "json", "--migrations"])
        .arg(m.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"].as_array().unwrap().len(), 2);
    assert_eq!(v["findings"][0]["rule"], "FM003");
    assert_eq!(v["findings"][0]["line"], 2);
    // the demo set is clean
    let out = fleetmig()
        .args(["lint", "--migrations"])
        .arg(demo_migrations())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_refuses_a_set_with_findings_unless_told_otherwise() {
    let dir = sqlite_fleet(2);
    let m = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE t (a int);\n"),
        ("0002_b.sql", "DELETE FROM t;\n"),
    ]);
    let out = sync(dir.path(), m.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("0002_b.sql:1: FM007"),
        "{}",
        stderr(&out)
    );
    assert!(
        sqlite_history(&tenant_path(dir.path(), "t0000"))
            .await
            .is_empty(),
        "nothing touched"
    );
    let out = sync(dir.path(), m.path(), &["--allow-lint-findings"]);
    expect_exit(&out, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn contract_migrations_wait_for_the_whole_fleet_and_the_operator() {
    let dir = sqlite_fleet(4);
    let m = migration_dir(&[
        (
            "0001_a.sql",
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\nINSERT INTO users (name) VALUES ('x');\n",
        ),
        (
            "0002_expand.sql",
            "ALTER TABLE users ADD COLUMN full_name TEXT;\n",
        ),
        (
            "0003_backfill.sql",
            "UPDATE users SET full_name = name WHERE full_name IS NULL;\n",
        ),
        (
            "0004_contract.sql",
            "-- fleetmig: phase=contract\nALTER TABLE users DROP COLUMN name;\n",
        ),
    ]);
    // one tenant is only partly there and will not take the expand step yet
    let out = sync(dir.path(), m.path(), &["--to", "1", "--tenant", "t0003"]);
    expect_exit(&out, 0);
    let mut c = sqlite(&tenant_path(dir.path(), "t0003")).await;
    c.execute("CREATE TABLE blocker (x INTEGER); CREATE TRIGGER no_expand BEFORE UPDATE ON users BEGIN SELECT RAISE(ABORT, 'not yet'); END;")
        .await
        .unwrap();
    sqlx::Connection::close(c).await.unwrap();

    // without --allow-contract: held, the rest goes up to 3
    let out = sync(dir.path(), m.path(), &[]);
    assert!(
        stderr(&out).contains("0004 (contract)")
            || stderr(&out).contains("4 (contract) is phase=contract and is held"),
        "{}",
        stderr(&out)
    );
    let plan = fleetmig()
        .current_dir(dir.path())
        .args(["plan", "--fleet", "sqlite-dir:tenants", "--migrations"])
        .arg(m.path())
        .output()
        .unwrap();
    assert!(
        stdout(&plan).contains("held: migration 4 (contract) is phase=contract"),
        "{}",
        stdout(&plan)
    );
    for id in ["t0000", "t0001", "t0002"] {
        assert_eq!(
            sqlite_history(&tenant_path(dir.path(), id)).await.len(),
            3,
            "{id}"
        );
    }
    // t0003 failed the backfill (trigger): the fleet lacks the expand step
    // there, so even --allow-contract holds the contract migration for all
    let out = sync(dir.path(), m.path(), &["--allow-contract"]);
    assert!(
        stderr(&out).contains("still lack earlier migrations (e.g. t0003)"),
        "{}",
        stderr(&out)
    );
    for id in ["t0000", "t0001", "t0002"] {
        assert_eq!(
            sqlite_history(&tenant_path(dir.path(), id)).await.len(),
            3,
            "{id} must not contract early"
        );
    }
    // fix t0003; it catches up; now the operator may contract everywhere
    let mut c = sqlite(&tenant_path(dir.path(), "t0003")).await;
    c.execute("DROP TRIGGER no_expand").await.unwrap();
    sqlx::Connection::close(c).await.unwrap();
    let out = sync(dir.path(), m.path(), &[]);
    expect_exit(&out, 0);
    let out = sync(dir.path(), m.path(), &["--allow-contract"]);
    expect_exit(&out, 0);
    for id in ["t0000", "t0001", "t0002", "t0003"] {
        assert_eq!(
            sqlite_history(&tenant_path(dir.path(), id)).await.len(),
            4,
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn baseline_records_without_running() {
    let dir = sqlite_fleet(2);
    // t0000 was restored from a dump that already has the first two steps
    let mut c = sqlite(&tenant_path(dir.path(), "t0000")).await;
    c.execute("CREATE TABLE accounts (id BIGINT PRIMARY KEY, name VARCHAR(200) NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP); CREATE TABLE invoices (id BIGINT PRIMARY KEY, account_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL, issued_on DATE NOT NULL);")
        .await
        .unwrap();
    sqlx::Connection::close(c).await.unwrap();
    let out = fleetmig()
        .current_dir(dir.path())
        .args([
            "baseline",
            "--version",
            "2",
            "--tenant",
            "t0000",
            "--fleet",
            "sqlite-dir:tenants",
            "--migrations",
        ])
        .arg(demo_migrations())
        .output()
        .unwrap();
    expect_exit(&out, 0);
    assert!(stdout(&out).contains("t0000: 2 migration(s) recorded"));
    assert_eq!(
        sqlite_history(&tenant_path(dir.path(), "t0000")).await,
        vec![(1, true), (2, true)]
    );
    let out = sync(dir.path(), &demo_migrations(), &[]);
    expect_exit(&out, 0);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    assert_eq!(rows["t0000"]["applied_versions"], demo_applied(2));
    assert_eq!(rows["t0001"]["applied_versions"], demo_applied(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_verification_rolls_the_migration_back_with_the_rows_that_broke_it() {
    let dir = sqlite_fleet(3);
    for (id, v) in [("t0000", 5), ("t0001", 0), ("t0002", 7)] {
        let mut c = sqlite(&tenant_path(dir.path(), id)).await;
        c.execute(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE seed (v INTEGER); INSERT INTO seed VALUES ({v});"
        )))
        .await
        .unwrap();
        sqlx::Connection::close(c).await.unwrap();
    }
    let m = migration_dir(&[
        (
            "0001_t.sql",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, w INTEGER);\nINSERT INTO t (id, v) SELECT 1, v FROM seed;\n",
        ),
        (
            "0002_ratio.sql",
            "UPDATE t SET w = 100 / v WHERE w IS NULL;\n",
        ),
        (
            "0002_ratio.verify.sql",
            "SELECT id, v FROM t WHERE w IS NULL",
        ),
    ]);
    let out = sync(dir.path(), m.path(), &[]);
    expect_exit(&out, 1);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    assert_eq!(rows["t0000"]["status"], "succeeded");
    let r = &rows["t0001"];
    assert_eq!(
        (
            r["status"].as_str(),
            r["error_kind"].as_str(),
            r["error_version"].as_str()
        ),
        ("failed", "verify_query_failed", "2")
    );
    assert!(
        r["error_message"].contains("0002_ratio.verify.sql")
            && r["error_message"].contains("1 row(s): (1, 0)"),
        "{}",
        r["error_message"]
    );
    assert_eq!(
        sqlite_history(&tenant_path(dir.path(), "t0001")).await,
        vec![(1, true)],
        "rolled back"
    );
    let mut c = sqlite(&tenant_path(dir.path(), "t0001")).await;
    let w: Option<i64> = sqlx::query_scalar("SELECT w FROM t")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(w, None);
    sqlx::Connection::close(c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_verification_runs_in_the_tenant_schema_inside_the_transaction() {
    let db = pg_database("verify").await;
    db.exec(
        "CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b; CREATE TABLE tenant_b.seed_zero (x int);",
    )
    .await;
    let m = migration_dir(&[
        (
            "0001_t.sql",
            "CREATE TABLE t (id int PRIMARY KEY, v int);\nINSERT INTO t VALUES (1, 1), (2, 2);\n",
        ),
        (
            "0002_v.sql",
            "-- fleetmig: verify=checks/no_zero.sql\nUPDATE t SET v = 0 WHERE id = 2 AND EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'seed_zero');\n",
        ),
    ]);
    std::fs::create_dir_all(m.path().join("checks")).unwrap();
    std::fs::write(
        m.path().join("checks/no_zero.sql"),
        "SELECT count(*) = 0 FROM t WHERE v = 0",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = sync_fleet(
        dir.path(),
        &format!("postgres-schemas:{}", db.url),
        m.path(),
        &["--tx-mode", "tenant"],
    );
    expect_exit(&out, 1);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    assert_eq!(rows["tenant_a"]["status"], "succeeded");
    assert_eq!(rows["tenant_b"]["error_kind"], "verify_query_failed");
    assert!(
        rows["tenant_b"]["error_message"].contains("(false)"),
        "{}",
        rows["tenant_b"]["error_message"]
    );
    let mut c = db.conn().await;
    assert!(
        pg_history(&mut c, "tenant_b").await.is_empty(),
        "tenant mode: the whole group rolled back"
    );
    assert_eq!(pg_history(&mut c, "tenant_a").await.len(), 2);
    sqlx::Connection::close(c).await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_spells_out_the_hand_fixed_tenant_and_the_edited_migration() {
    let dir = sqlite_fleet(5);
    let out = sync(dir.path(), &demo_migrations(), &[]);
    expect_exit(&out, 0);
    let verify = |dir: &std::path::Path, m: &std::path::Path| {
        fleetmig()
            .current_dir(dir)
            .args(["verify", "--fleet", "sqlite-dir:tenants", "--migrations"])
            .arg(m)
            .output()
            .unwrap()
    };
    let out = verify(dir.path(), &demo_migrations());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("verify: 5 tenants: 5 ok"));
    // someone hand-fixed t0003 at 3 a.m.
    let mut c = sqlite(&tenant_path(dir.path(), "t0003")).await;
    c.execute("CREATE INDEX hotfix_accounts_name ON accounts (name)")
        .await
        .unwrap();
    sqlx::Connection::close(c).await.unwrap();
    let out = verify(dir.path(), &demo_migrations());
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("t0003: drifted at version 8"), "{text}");
    assert!(text.contains("+ extra:   index hotfix_accounts_name: CREATE INDEX hotfix_accounts_name ON accounts (name)"), "{text}");
    assert!(text.contains("compared with the 4 tenant(s)"), "{text}");
    // an applied migration edited afterwards
    let m = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(demo_migrations()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), m.path().join(e.file_name())).unwrap();
    }
    std::fs::write(
        m.path().join("0003_add_accounts_plan.sql"),
        "ALTER TABLE accounts ADD COLUMN plan VARCHAR(64);\n",
    )
    .unwrap();
    let out = verify(dir.path(), m.path());
    assert!(
        stdout(&out).contains(
            "t0000: edited at version 8: migration 3 was applied with a different checksum"
        ),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_a_drifted_postgres_schema() {
    let db = pg_database("drift").await;
    db.exec("CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b; CREATE SCHEMA tenant_c;")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let out = sync_fleet(dir.path(), &fleet, &demo_migrations(), &[]);
    expect_exit(&out, 0);
    db.exec("ALTER TABLE tenant_b.accounts ADD COLUMN note text; ALTER TABLE tenant_b.invoices ALTER COLUMN amount_cents DROP NOT NULL;").await;
    let out = fleetmig()
        .current_dir(dir.path())
        .args(["verify", "--json", "--fleet", &fleet, "--migrations"])
        .arg(demo_migrations())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "ok");
    assert_eq!(v[1]["state"], "drifted");
    assert_eq!(
        v[1]["extra"],
        serde_json::json!([
            "column accounts.note text",
            "column invoices.amount_cents bigint"
        ])
    );
    assert_eq!(
        v[1]["missing"],
        serde_json::json!(["column invoices.amount_cents bigint not null"])
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(TEST_PASSWORD));
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn analyze_refreshes_statistics_of_the_changed_tables() {
    let dir = sqlite_fleet(1);
    let out = sync(dir.path(), &demo_migrations(), &["--analyze"]);
    expect_exit(&out, 0);
    let mut c = sqlite(&tenant_path(dir.path(), "t0000")).await;
    let stats: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT tbl FROM sqlite_stat1 ORDER BY tbl")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(stats, vec!["accounts", "invoices"]);
    sqlx::Connection::close(c).await.unwrap();

    let db = pg_database("analyze").await;
    db.exec("CREATE SCHEMA tenant_a;").await;
    let out = sync_fleet(
        dir.path(),
        &format!("postgres-schemas:{}", db.url),
        &demo_migrations(),
        &["--analyze"],
    );
    expect_exit(&out, 0);
    let mut c = db.conn().await;
    let analyzed: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_stat_user_tables WHERE schemaname = 'tenant_a' AND last_analyze IS NOT NULL ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(analyzed, vec!["accounts", "invoices"]);
    sqlx::Connection::close(c).await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_defers_a_tenant_whose_table_an_old_transaction_holds() {
    let db = pg_database("preflight").await;
    db.exec("CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b;")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let m = demo_migrations();
    assert_eq!(
        sync_fleet(dir.path(), &fleet, &m, &["--to", "2"])
            .status
            .code(),
        Some(0)
    );
    // a long-running reader of tenant_b.accounts (migration 3 alters it)
    let mut reader = db.conn().await;
    reader
        .execute("BEGIN; SELECT count(*) FROM tenant_b.accounts")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let args = [
        "--preflight",
        "--preflight-max-xact-age",
        "1s",
        "--max-attempts",
        "1",
    ];
    let out = sync_fleet(dir.path(), &fleet, &m, &args);
    expect_exit(&out, 1);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let b = &rows["tenant_b"];
    assert_eq!(
        (b["error_class"].as_str(), b["error_kind"].as_str()),
        ("transient", "preflight_deferred")
    );
    assert!(
        b["error_message"].contains("table accounts is held (AccessShareLock)"),
        "{}",
        b["error_message"]
    );
    let a = &rows["tenant_a"];
    assert_eq!(a["status"], "succeeded");
    assert!(
        a["preflight"].starts_with("size ") && a["preflight"].contains("largest: "),
        "{}",
        a["preflight"]
    );
    let mut c = db.conn().await;
    assert_eq!(
        pg_history(&mut c, "tenant_b").await.len(),
        2,
        "deferred: nothing touched"
    );
    // the reader finishes; the deferred tenant goes through
    reader.execute("COMMIT").await.unwrap();
    let out = sync_fleet(dir.path(), &fleet, &m, &args);
    expect_exit(&out, 0);
    assert_eq!(
        pg_history(&mut c, "tenant_b").await.len(),
        DEMO_REACHED as usize
    );
    sqlx::Connection::close(c).await.unwrap();
    db.drop_now().await;
}
