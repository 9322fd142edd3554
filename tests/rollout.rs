//! Waved rollouts end to end on SQLite fleets: canary halts, gate SQL, pause
//! and resume, retry, revert on halt, one rollout at a time, reports.

mod common;

use common::*;
use sqlx::{Connection, Executor};

fn rollout_args<'a>(m: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "rollout",
        "--fleet",
        "registry:fleet.csv",
        "--progress-every",
        "0",
        "--migrations",
        m,
    ];
    v.extend_from_slice(extra);
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_canary_halts_the_rollout_and_later_waves_are_untouched() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 20, 2);
    let mut c = sqlite(&registry_tenant(dir.path(), "t0001")).await;
    c.execute("CREATE TABLE invoices (legacy TEXT)")
        .await
        .unwrap();
    c.close().await.unwrap();
    let m = demo_migrations();
    let out = run_in(
        dir.path(),
        &rollout_args(
            m.to_str().unwrap(),
            &[
                "--waves",
                "canary=tag:canary,50%,100%",
                "--gate-max-failures",
                "0",
            ],
        ),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report = report_dir(dir.path(), &out);
    let s = summary(&report);
    assert_eq!(s["status"], "halted");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("wave canary gate failed: max_failures"),
        "{s}"
    );
    let rows = csv_rows(&report);
    assert_eq!(rows["t0000"]["status"], "succeeded");
    assert_eq!(rows["t0001"]["status"], "failed");
    assert_eq!(rows["t0001"]["error_kind"], "duplicate_object");
    for i in 2..20 {
        let id = format!("t{i:04}");
        assert_eq!(rows[&id]["status"], "pending", "{id}");
        assert!(
            sqlite_history(&registry_tenant(dir.path(), &id))
                .await
                .is_empty(),
            "{id} was touched"
        );
    }
    let waves = std::fs::read_to_string(report.join("waves.csv")).unwrap();
    assert!(
        waves
            .lines()
            .nth(1)
            .unwrap()
            .contains("canary,tag:canary,failed,2,1,1"),
        "{waves}"
    );
    let md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(md.contains("halted") && md.contains("max_failures"), "{md}");
    // status --rollout shows the same from the state store
    let id = s["rollout_id"].as_str().unwrap().to_string();
    let st = run_in(
        dir.path(),
        &["status", "--rollout", &id, "--fleet", "registry:fleet.csv"],
    );
    assert_eq!(st.status.code(), Some(1));
    assert!(stdout(&st).contains("halted"), "{}", stdout(&st));
    // a new rollout is not blocked by a halted one, but resume without a fix halts again
    let again = run_in(
        dir.path(),
        &[
            "resume",
            &id,
            "--progress-every",
            "0",
            "--fleet",
            "registry:fleet.csv",
            "--migrations",
            m.to_str().unwrap(),
        ],
    );
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(summary(&report_dir(dir.path(), &again))["status"], "halted");
    // --override-gate passes the failed gate on purpose; the rest of the fleet runs
    let forced = run_in(
        dir.path(),
        &[
            "resume",
            &id,
            "--override-gate",
            "--progress-every",
            "0",
            "--fleet",
            "registry:fleet.csv",
            "--migrations",
            m.to_str().unwrap(),
        ],
    );
    let s = summary(&report_dir(dir.path(), &forced));
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["totals"]["succeeded"], 19);
    assert!(s["waves"][0]["status"] == "overridden");
}

#[tokio::test(flavor = "multi_thread")]
async fn gate_sql_catches_a_tenant_whose_data_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 6, 0);
    for i in 0..6 {
        let mut c = sqlite(&registry_tenant(dir.path(), &format!("t{i:04}"))).await;
        let v = if i == 3 { -5 } else { i + 1 };
        c.execute(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE seed (v INTEGER); INSERT INTO seed VALUES ({v});"
        )))
        .await
        .unwrap();
        c.close().await.unwrap();
    }
    let m = migration_dir(&[(
        "0001_copy.sql",
        "CREATE TABLE t AS SELECT v AS x FROM seed;",
    )]);
    std::fs::write(dir.path().join("gate.sql"), "SELECT x FROM t WHERE x < 0").unwrap();
    let out = run_in(
        dir.path(),
        &rollout_args(
            m.path().to_str().unwrap(),
            &[
                "--waves",
                "first=ids:t0001+t0002,rest",
                "--gate-sql",
                "gate.sql",
            ],
        ),
    );
    // t0003 is in the second wave: the first passes, the second halts
    assert_eq!(
        out.status.code(),
        Some(1),
        "a halted rollout is not a success: {}",
        stderr(&out)
    );
    let report = report_dir(dir.path(), &out);
    let s = summary(&report);
    assert_eq!(s["status"], "halted", "{s}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("gate_sql failed on 1 tenant(s): t0003"),
        "{s}"
    );
    let rows = csv_rows(&report);
    assert!(
        rows["t0003"]["gate_error"].contains("(-5)"),
        "{:?}",
        rows["t0003"]
    );
    assert!(rows["t0004"]["gate_error"].is_empty());
    assert_eq!(s["failures"][0]["kind"], "gate_sql");
    assert_eq!(s["waves"][0]["status"], "passed");
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_after_a_wave_then_resume_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 10, 0);
    let m = demo_migrations();
    let out = run_in(
        dir.path(),
        &rollout_args(
            m.to_str().unwrap(),
            &[
                "--waves",
                "first=3,rest",
                "--pause-after",
                "first",
                "--bake",
                "200ms",
            ],
        ),
    );
    let report = report_dir(dir.path(), &out);
    let s = summary(&report);
    assert_eq!(s["status"], "paused", "{s}");
    assert_eq!(s["totals"]["succeeded"], 3);
    assert_eq!(s["totals"]["pending"], 7);
    assert_eq!(out.status.code(), Some(1));
    let id = s["rollout_id"].as_str().unwrap().to_string();
    // resume without an id picks the newest unfinished rollout of the fleet
    let out = run_in(
        dir.path(),
        &[
            "resume",
            "--progress-every",
            "0",
            "--fleet",
            "registry:fleet.csv",
            "--migrations",
            m.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report = report_dir(dir.path(), &out);
    assert!(report.ends_with(&id), "same rollout, same report folder");
    let s = summary(&report);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["totals"]["succeeded"], 10);
    for i in 0..10 {
        assert_eq!(
            sqlite_history(&registry_tenant(dir.path(), &format!("t{i:04}")))
                .await
                .len(),
            DEMO_REACHED as usize
        );
    }
    let h = run_in(
        dir.path(),
        &["history", "--fleet", "registry:fleet.csv", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(v[0]["rollout"]["id"], id.as_str());
    assert_eq!(v[0]["rollout"]["status"], "completed");
    assert_eq!(v[0]["succeeded"], 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_one_tenant_after_its_cause_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 5, 0);
    let bad = registry_tenant(dir.path(), "t0002");
    let mut c = sqlite(&bad).await;
    c.execute("CREATE TABLE accounts (legacy TEXT)")
        .await
        .unwrap();
    c.close().await.unwrap();
    let m = demo_migrations();
    let metrics = dir.path().join("fleetmig.prom");
    let out = run_in(
        dir.path(),
        &[
            "sync",
            "--fleet",
            "registry:fleet.csv",
            "--progress-every",
            "0",
            "--migrations",
            m.to_str().unwrap(),
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("fleetmig_tenants{status=\"failed\"} 1"),
        "{prom}"
    );
    assert!(
        prom.contains("fleetmig_failures{class=\"permanent\",kind=\"duplicate_object\"} 1"),
        "{prom}"
    );
    assert!(prom.contains("fleetmig_last_run_success 0"));
    let report = report_dir(dir.path(), &out);
    let id = summary(&report)["rollout_id"].as_str().unwrap().to_string();

    // the next morning: fix the tenant, retry it alone
    let mut c = sqlite(&bad).await;
    c.execute("DROP TABLE accounts").await.unwrap();
    c.close().await.unwrap();
    let out = run_in(
        dir.path(),
        &[
            "retry",
            "--tenant",
            "t0002",
            "--fleet",
            "registry:fleet.csv",
            "--progress-every",
            "0",
            "--migrations",
            m.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report2 = report_dir(dir.path(), &out);
    assert_eq!(report, report2, "recorded in the same rollout");
    let rows = csv_rows(&report2);
    assert_eq!(rows["t0002"]["status"], "succeeded");
    assert_eq!(
        rows["t0002"]["attempts"], "2",
        "a further attempt of the same rollout"
    );
    assert_eq!(rows["t0002"]["applied_versions"], demo_applied(0));
    assert_eq!(sqlite_history(&bad).await.len(), DEMO_REACHED as usize);
    assert_eq!(summary(&report2)["rollout_id"], id.as_str());
    // retry --failed finds nothing left
    let out = run_in(
        dir.path(),
        &[
            "retry",
            "--failed",
            "--rollout",
            &id,
            "--fleet",
            "registry:fleet.csv",
            "--migrations",
            m.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("no failed tenant"));
}

#[tokio::test(flavor = "multi_thread")]
async fn revert_on_halt_takes_the_halted_wave_back_down() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 8, 3);
    let m = migration_dir(&[
        ("0001_a.up.sql", "CREATE TABLE a (x INTEGER);"),
        ("0001_a.down.sql", "DROP TABLE a;"),
        ("0002_b.up.sql", "CREATE TABLE b (x INTEGER);"),
        ("0002_b.down.sql", "DROP TABLE b;"),
    ]);
    let mut c = sqlite(&registry_tenant(dir.path(), "t0002")).await;
    c.execute("CREATE TABLE b (conflict INTEGER)")
        .await
        .unwrap();
    c.close().await.unwrap();
    let out = run_in(
        dir.path(),
        &rollout_args(
            m.path().to_str().unwrap(),
            &[
                "--waves",
                "canary=tag:canary,rest",
                "--gate-max-failures",
                "0",
                "--revert-on-halt",
            ],
        ),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let rows = csv_rows(&report_dir(dir.path(), &out));
    for id in ["t0000", "t0001"] {
        assert_eq!(rows[id]["status"], "reverted", "{id}");
        assert!(
            sqlite_history(&registry_tenant(dir.path(), id))
                .await
                .is_empty(),
            "{id}"
        );
        let tables = sqlite_tables(&registry_tenant(dir.path(), id)).await;
        assert!(
            !tables.contains(&"a".to_string()) && !tables.contains(&"b".to_string()),
            "{tables:?}"
        );
    }
    assert_eq!(rows["t0002"]["status"], "failed");
    assert!(
        sqlite_history(&registry_tenant(dir.path(), "t0005"))
            .await
            .is_empty()
    );

    // refused up front when a pending migration has no down
    std::fs::write(m.path().join("0003_c.sql"), "CREATE TABLE c (x INTEGER);").unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    registry_fleet(dir2.path(), 2, 1);
    let out = run_in(
        dir2.path(),
        &rollout_args(
            m.path().to_str().unwrap(),
            &["--waves", "tag:canary,rest", "--revert-on-halt"],
        ),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no .down.sql: 3 (c)"),
        "{}",
        stderr(&out)
    );
    assert!(
        sqlite_history(&registry_tenant(dir2.path(), "t0000"))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_rollout_on_the_same_fleet_is_refused_while_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 4, 0);
    let m = migration_dir(&[(
        "0001_slow.sql",
        "CREATE TABLE n (x INTEGER);\n\
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) INSERT INTO n SELECT x FROM c;",
    )]);
    let first = fleetmig_process(dir.path())
        .args(rollout_args(
            m.path().to_str().unwrap(),
            &["--concurrency", "1"],
        ))
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let second = run_in(dir.path(), &rollout_args(m.path().to_str().unwrap(), &[]));
    assert_eq!(
        second.status.code(),
        Some(4),
        "{}{}",
        stdout(&second),
        stderr(&second)
    );
    let err = stderr(&second);
    assert!(
        err.contains("is running on this fleet") && err.contains("operator"),
        "{err}"
    );
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    // after it finished, a new rollout may start
    let third = run_in(dir.path(), &rollout_args(m.path().to_str().unwrap(), &[]));
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_are_rewritten_from_the_state_store() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 3, 1);
    let m = demo_migrations();
    let out = run_in(
        dir.path(),
        &rollout_args(m.to_str().unwrap(), &["--waves", "tag:canary,rest"]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = report_dir(dir.path(), &out);
    let id = report.file_name().unwrap().to_str().unwrap().to_string();
    let before = std::fs::read_to_string(report.join("tenants.csv")).unwrap();
    std::fs::remove_dir_all(&report).unwrap();
    let out = run_in(
        dir.path(),
        &["report", &id, "--fleet", "registry:fleet.csv"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(report.join("tenants.csv")).unwrap(),
        before
    );
    for f in ["waves.csv", "summary.json", "summary.md", "report.html"] {
        assert!(report.join(f).exists(), "{f}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_skips_what_is_left_and_plan_shows_the_waves() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 10, 2);
    let m = demo_migrations();
    let plan = run_in(
        dir.path(),
        &[
            "plan",
            "--fleet",
            "registry:fleet.csv",
            "--migrations",
            m.to_str().unwrap(),
            "--waves",
            "canary=tag:canary,50%,rest",
            "--json",
        ],
    );
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(
        v["waves"][0]["tenants"],
        serde_json::json!(["t0000", "t0001"])
    );
    assert_eq!(v["waves"][1]["tenants"].as_array().unwrap().len(), 4);
    assert_eq!(v["waves"][2]["tenants"].as_array().unwrap().len(), 4);
    assert!(
        !dir.path().join(".fleetmig").exists(),
        "plan touches no state store"
    );

    let out = run_in(
        dir.path(),
        &rollout_args(
            m.to_str().unwrap(),
            &[
                "--waves",
                "canary=tag:canary,rest",
                "--pause-after",
                "canary",
            ],
        ),
    );
    let s = summary(&report_dir(dir.path(), &out));
    assert_eq!(s["status"], "paused");
    let out = run_in(dir.path(), &["abort", "--fleet", "registry:fleet.csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = report_dir(dir.path(), &out);
    let s = summary(&report);
    assert_eq!(s["status"], "aborted");
    assert_eq!(s["totals"]["skipped"], 8);
    assert_eq!(s["totals"]["succeeded"], 2);
    let rows = csv_rows(&report);
    assert_eq!(rows["t0005"]["status"], "skipped");
    assert!(
        sqlite_history(&registry_tenant(dir.path(), "t0005"))
            .await
            .is_empty()
    );
    // an aborted rollout cannot be resumed, and no longer blocks a new one
    let out = run_in(
        dir.path(),
        &[
            "resume",
            s["rollout_id"].as_str().unwrap(),
            "--fleet",
            "registry:fleet.csv",
            "--migrations",
            m.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = run_in(dir.path(), &rollout_args(m.to_str().unwrap(), &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// A rollout whose frozen settings (or status) were damaged in the store is
/// refused with a state-store error naming it (exit 3), not resumed with
/// defaults; nothing more runs on any tenant.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_rollout_row_is_a_clear_error_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 6, 0);
    let m = demo_migrations();
    let out = run_in(
        dir.path(),
        &rollout_args(
            m.to_str().unwrap(),
            &["--waves", "first=2,rest", "--pause-after", "first"],
        ),
    );
    let s = summary(&report_dir(dir.path(), &out));
    assert_eq!(s["status"], "paused", "{s}");
    let id = s["rollout_id"].as_str().unwrap().to_string();
    let untouched: Vec<String> = (0..6)
        .map(|i| format!("t{i:04}"))
        .filter(|t| csv_rows(&report_dir(dir.path(), &out))[t.as_str()]["status"] == "pending")
        .collect();
    assert_eq!(untouched.len(), 4);
    let state = dir.path().join(".fleetmig/state.db");
    let mut c = sqlite(&state).await;
    let settings: String =
        sqlx::query_scalar("SELECT settings FROM fleetmig_rollouts WHERE id = ?")
            .bind(&id)
            .fetch_one(&mut c)
            .await
            .unwrap();
    sqlx::query(
        "UPDATE fleetmig_rollouts SET settings = '{\"concurrency\": \"eight\"}' WHERE id = ?",
    )
    .bind(&id)
    .execute(&mut c)
    .await
    .unwrap();
    let resume = [
        "resume",
        id.as_str(),
        "--progress-every",
        "0",
        "--fleet",
        "registry:fleet.csv",
        "--migrations",
        m.to_str().unwrap(),
    ];
    let out = run_in(dir.path(), &resume);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{}{err}", stdout(&out));
    assert!(
        err.contains(&format!("rollout {id} has a damaged settings row")),
        "{err}"
    );
    for t in &untouched {
        assert!(
            sqlite_history(&registry_tenant(dir.path(), t))
                .await
                .is_empty(),
            "{t} was migrated"
        );
    }
    // a status word that is not one fleetmig writes is refused the same way
    sqlx::query("UPDATE fleetmig_rollouts SET settings = ?, status = 'runing' WHERE id = ?")
        .bind(&settings)
        .bind(&id)
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let out = run_in(
        dir.path(),
        &[
            "status",
            "--rollout",
            id.as_str(),
            "--fleet",
            "registry:fleet.csv",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{}{err}", stdout(&out));
    assert!(
        err.contains(&format!("rollout {id} has a damaged")),
        "{err}"
    );
    assert!(err.contains("runing"), "{err}");
}
