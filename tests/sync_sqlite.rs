//! `fleetmig sync` end to end on real SQLite fleets, through the real binary.

mod common;

use common::*;
use sqlx::{Connection, Executor};

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_tenants_reach_head_and_a_second_run_applies_nothing() {
    let dir = sqlite_fleet(200);
    let out = sync(dir.path(), &demo_migrations(), &["--concurrency", "16"]);
    expect_exit(&out, 0);
    let report = report_dir(dir.path(), &out);
    let rows = csv_rows(&report);
    assert_eq!(rows.len(), 200);
    for i in 0..200 {
        let id = format!("t{i:04}");
        let path = tenant_path(dir.path(), &id);
        assert_eq!(sqlite_history(&path).await, demo_history(), "{id}");
        let tables = sqlite_tables(&path).await;
        assert!(
            tables.contains(&"accounts".to_string()) && tables.contains(&"invoices".to_string())
        );
        let r = &rows[&id];
        assert_eq!(
            (
                r["status"].as_str(),
                r["from_version"].as_str(),
                r["to_version"].as_str()
            ),
            ("succeeded", "0", "8")
        );
        assert_eq!(r["applied_versions"], demo_applied(0));
    }
    // the backfill ran: every account has a plan
    let mut c = sqlite(&tenant_path(dir.path(), "t0007")).await;
    let nulls: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE plan IS NULL")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(nulls, 0);
    c.close().await.unwrap();
    let s = summary(&report);
    assert_eq!(s["format_version"], 2);
    assert_eq!(s["totals"]["succeeded"], 200);
    assert_eq!(s["totals"]["migrations_applied"], 200 * DEMO_REACHED);

    let installed_before: Vec<(i64, String)> = {
        let mut c = sqlite(&tenant_path(dir.path(), "t0100")).await;
        sqlx::query_as("SELECT version, installed_on FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut c)
            .await
            .unwrap()
    };
    let again = sync(dir.path(), &demo_migrations(), &[]);
    expect_exit(&again, 0);
    let report2 = report_dir(dir.path(), &again);
    assert_ne!(report, report2, "each run has its own report folder");
    let rows = csv_rows(&report2);
    assert!(
        rows.values()
            .all(|r| r["status"] == "succeeded" && r["applied_versions"].is_empty())
    );
    assert_eq!(summary(&report2)["totals"]["up_to_date"], 200);
    assert_eq!(summary(&report2)["totals"]["migrations_applied"], 0);
    let mut c = sqlite(&tenant_path(dir.path(), "t0100")).await;
    let installed_after: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, installed_on FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(installed_before, installed_after);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflicting_tenant_fails_permanently_and_the_rest_succeed() {
    let dir = sqlite_fleet(20);
    let bad = tenant_path(dir.path(), "t0005");
    let mut c = sqlite(&bad).await;
    c.execute("CREATE TABLE invoices (legacy TEXT)")
        .await
        .unwrap();
    c.close().await.unwrap();

    let out = sync(dir.path(), &demo_migrations(), &["--max-attempts", "3"]);
    expect_exit(&out, 1);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let r = &rows["t0005"];
    assert_eq!(r["status"], "failed");
    assert_eq!(r["attempts"], "1", "a permanent error is never retried");
    assert_eq!(r["error_class"], "permanent");
    assert_eq!(r["error_kind"], "duplicate_object");
    assert_eq!(r["error_version"], "2");
    assert!(
        r["error_message"].contains("invoices"),
        "{}",
        r["error_message"]
    );
    assert_eq!(
        r["to_version"], "1",
        "migration 1 was applied before 2 failed"
    );
    // migration 2 rolled back: the tenant is exactly at 1, the legacy table intact
    assert_eq!(sqlite_history(&bad).await, vec![(1, true)]);
    for (id, r) in &rows {
        if id != "t0005" {
            assert_eq!(r["status"], "succeeded", "{id}");
            assert_eq!(
                sqlite_history(&tenant_path(dir.path(), id)).await.len(),
                DEMO_REACHED as usize
            );
        }
    }
    assert!(stdout(&out).contains("duplicate_object on 1 tenant"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_locked_by_another_connection_is_retried_and_succeeds() {
    let dir = sqlite_fleet(3);
    let locked = tenant_path(dir.path(), "t0001");
    let mut holder = sqlite(&locked).await;
    holder.execute("BEGIN EXCLUSIVE").await.unwrap();
    holder
        .execute("CREATE TABLE held (x INTEGER)")
        .await
        .unwrap();
    let migrations = demo_migrations();
    let d = dir.path().to_path_buf();
    let child = tokio::task::spawn_blocking(move || {
        sync(
            &d,
            &migrations,
            &[
                "--lock-timeout",
                "100ms",
                "--retry-backoff",
                "400ms",
                "--max-attempts",
                "8",
            ],
        )
    });
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    holder.execute("COMMIT").await.unwrap();
    holder.close().await.unwrap();
    let out = child.await.unwrap();
    expect_exit(&out, 0);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let r = &rows["t0001"];
    assert_eq!(r["status"], "succeeded");
    let attempts: u32 = r["attempts"].parse().unwrap();
    assert!(
        attempts >= 2,
        "the locked tenant was retried (attempts {attempts})"
    );
    assert_eq!(rows["t0000"]["attempts"], "1");
    assert_eq!(sqlite_history(&locked).await.len(), DEMO_REACHED as usize);
    assert!(sqlite_tables(&locked).await.contains(&"held".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_applied_migration_is_detected() {
    let dir = sqlite_fleet(3);
    let m = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x INTEGER);"),
        ("0002_b.sql", "CREATE TABLE b (x INTEGER);"),
    ]);
    assert_eq!(sync(dir.path(), m.path(), &[]).status.code(), Some(0));
    std::fs::write(
        m.path().join("0002_b.sql"),
        "CREATE TABLE b (x INTEGER, y TEXT);",
    )
    .unwrap();
    std::fs::write(m.path().join("0003_c.sql"), "CREATE TABLE c (x INTEGER);").unwrap();
    let out = sync(dir.path(), m.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    for r in rows.values() {
        assert_eq!(r["status"], "failed");
        assert_eq!(r["error_kind"], "checksum_mismatch");
        assert_eq!(r["error_version"], "2");
        assert!(
            r["error_message"].contains("0002_b.sql"),
            "{}",
            r["error_message"]
        );
    }
    // nothing new was applied on top of the drifted history
    assert_eq!(
        sqlite_history(&tenant_path(dir.path(), "t0000"))
            .await
            .len(),
        2
    );
    let status = fleetmig()
        .current_dir(dir.path())
        .args(["status", "--fleet", "sqlite-dir:tenants", "--migrations"])
        .arg(m.path())
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(1));
    assert!(stdout(&status).contains("drifted"), "{}", stdout(&status));
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlx_migrator_agrees_with_fleetmig() {
    let dir = sqlite_fleet(1);
    let m = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x INTEGER);"),
        (
            "0002_b.sql",
            "-- fleetmig: phase=expand\nALTER TABLE a ADD COLUMN y TEXT;",
        ),
        ("0003_c.up.sql", "CREATE INDEX a_x ON a (x);"),
        ("0003_c.down.sql", "DROP INDEX a_x;"),
    ]);
    let out = sync(dir.path(), m.path(), &[]);
    expect_exit(&out, 0);
    let path = tenant_path(dir.path(), "t0000");
    let mut c = sqlite(&path).await;
    let before: Vec<(i64, String, Vec<u8>, i64)> =
        sqlx::query_as("SELECT version, description, checksum, execution_time FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(before.len(), 3);
    assert_eq!(before[2].1, "c");
    // sqlx's own migrator validates every applied checksum and applies what is
    // missing: it must find nothing to do.
    let migrator = sqlx::migrate::Migrator::new(m.path()).await.unwrap();
    migrator.run(&mut c).await.unwrap();
    let after: Vec<(i64, String, Vec<u8>, i64)> =
        sqlx::query_as("SELECT version, description, checksum, execution_time FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(before, after);
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn max_failures_stops_starting_new_tenants() {
    let dir = sqlite_fleet(10);
    for id in ["t0000", "t0001", "t0002"] {
        let mut c = sqlite(&tenant_path(dir.path(), id)).await;
        c.execute("CREATE TABLE accounts (x INTEGER)")
            .await
            .unwrap();
        c.close().await.unwrap();
    }
    let out = sync(
        dir.path(),
        &demo_migrations(),
        &["--concurrency", "1", "--max-failures", "2"],
    );
    assert_eq!(out.status.code(), Some(1));
    let report = report_dir(dir.path(), &out);
    let rows = csv_rows(&report);
    assert_eq!(rows["t0000"]["status"], "failed");
    assert_eq!(rows["t0001"]["status"], "failed");
    for i in 2..10 {
        let id = format!("t{i:04}");
        assert_eq!(rows[&id]["status"], "not_started", "{id}");
        assert!(
            sqlite_history(&tenant_path(dir.path(), &id))
                .await
                .is_empty()
        );
    }
    let s = summary(&report);
    assert_eq!(s["totals"]["not_started"], 8);
    assert_eq!(
        s["status"], "halted",
        "the budget halts the run so that `resume` can finish it"
    );
    assert!(
        s["reason"].as_str().unwrap().contains("max-failures"),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_lets_in_flight_tenants_finish_their_migration_and_writes_the_report() {
    let dir = sqlite_fleet(6);
    // Each tenant's first migration takes a noticeable time.
    let m = migration_dir(&[
        (
            "0001_slow.sql",
            "CREATE TABLE n (x INTEGER);\n\
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500000) INSERT INTO n SELECT x FROM c;",
        ),
        ("0002_b.sql", "CREATE TABLE b (x INTEGER);"),
    ]);
    let child = fleetmig_process(dir.path())
        .args([
            "sync",
            "--fleet",
            "sqlite-dir:tenants",
            "--concurrency",
            "2",
            "--progress-every",
            "0",
            "--migrations",
        ])
        .arg(m.path())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    expect_exit(&out, 1);
    let report = report_dir(dir.path(), &out);
    let rows = csv_rows(&report);
    assert_eq!(rows.len(), 6);
    assert_eq!(
        summary(&report)["status"],
        "paused",
        "a signal leaves the rollout paused"
    );
    let mut not_started = 0;
    for (id, r) in &rows {
        let history = sqlite_history(&tenant_path(dir.path(), id)).await;
        // never dirty, never half-applied: history matches what the report says
        assert!(history.iter().all(|(_, ok)| *ok), "{id}");
        match r["status"].as_str() {
            "not_started" => {
                not_started += 1;
                assert!(history.is_empty(), "{id}");
            }
            // stopped between migrations: pending, to be resumed
            "pending" => {
                assert_eq!(r["error_kind"], "interrupted", "{id}");
                assert_eq!(history.len().to_string(), r["to_version"], "{id}");
            }
            "succeeded" => assert_eq!(history.len(), 2),
            other => panic!("{id}: unexpected status {other}"),
        }
    }
    assert!(
        not_started >= 2,
        "tenants beyond the first wave never started: {rows:?}"
    );
    assert!(stderr(&out).contains("stopping"));
}

/// `status` prints what needs a person: every tenant in a state to look at,
/// the first pending ones (and how many more), the version histogram and
/// the count by state; `--all` every tenant; `--json` every tenant too.
#[tokio::test(flavor = "multi_thread")]
async fn status_prints_the_tenants_not_at_head_and_all_of_them_when_asked() {
    let dir = sqlite_fleet(30);
    let mut args = vec![];
    for t in ["t0000", "t0001", "t0002"] {
        args.extend(["--tenant", t]);
    }
    expect_exit(&sync(dir.path(), &demo_migrations(), &args), 0);
    let mut c = sqlite(&tenant_path(dir.path(), "t0002")).await;
    c.execute("UPDATE _sqlx_migrations SET success = 0 WHERE version = 8")
        .await
        .unwrap();
    c.close().await.unwrap();
    let status = |extra: &[&str]| {
        fleetmig()
            .current_dir(dir.path())
            .args(["status", "--fleet", "sqlite-dir:tenants", "--migrations"])
            .arg(demo_migrations())
            .args(extra)
            .output()
            .unwrap()
    };
    let listed = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with('t') && l.as_bytes().get(1).is_some_and(u8::is_ascii_digit))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    };

    let out = status(&[]);
    expect_exit(&out, 1); // t0002 is dirty
    let text = stdout(&out);
    let shown = listed(&text);
    assert!(shown.contains(&"t0002".to_string()), "{text}");
    assert!(!shown.contains(&"t0000".to_string()), "{text}");
    assert_eq!(shown.len(), 1 + 20, "{text}");
    assert!(
        text.contains("... and 7 more pending (--all lists every tenant)"),
        "{text}"
    );
    assert!(
        text.contains("versions across the fleet (head 9)"),
        "{text}"
    );
    assert!(
        text.contains("30 tenants: 2 up_to_date, 27 pending, 1 dirty"),
        "{text}"
    );

    let out = status(&["--all"]);
    expect_exit(&out, 1);
    let shown = listed(&stdout(&out));
    assert_eq!(shown.len(), 30, "{}", stdout(&out));
    assert_eq!(shown[0], "t0000");

    let out = status(&["--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let tenants = v["tenants"].as_array().expect("tenants");
    assert_eq!(tenants.len(), 30);
    let dirty: Vec<_> = tenants.iter().filter(|t| t["state"] == "dirty").collect();
    assert_eq!(dirty.len(), 1);
    assert_eq!(dirty[0]["tenant"], "t0002");
    assert_eq!(dirty[0]["version"], 7);
}
