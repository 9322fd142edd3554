//! Gates that halt a rollout: a failing canary (later waves untouched,
//! resumed with --override-gate), gate SQL over the tenants' data, and
//! --revert-on-halt taking the halted wave back down.

use sqlx::{Connection, Executor};

use crate::common::*;
use crate::on_both_stores;
use crate::shared::*;

on_both_stores!(async fn a_failing_canary_halts_the_rollout_and_later_waves_are_untouched(dir, store) {
    registry_fleet(dir, 20, 2);
    let mut c = sqlite(&registry_tenant(dir, "t0001")).await;
    c.execute("CREATE TABLE invoices (legacy TEXT)")
        .await
        .unwrap();
    c.close().await.unwrap();
    let m = demo_migrations();
    let out = run_in(
        dir,
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
    expect_exit(&out, 1);
    let report = report_dir(dir, &out);
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
            sqlite_history(&registry_tenant(dir, &id))
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
        dir,
        &["status", "--rollout", &id, "--fleet", "registry:fleet.csv"],
    );
    assert_eq!(st.status.code(), Some(1));
    assert!(stdout(&st).contains("halted"), "{}", stdout(&st));
    // a new rollout is not blocked by a halted one, but resume without a fix halts again
    let again = run_in(
        dir,
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
    assert_eq!(summary(&report_dir(dir, &again))["status"], "halted");
    // --override-gate passes the failed gate on purpose; the rest of the fleet runs
    let forced = run_in(
        dir,
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
    let s = summary(&report_dir(dir, &forced));
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["totals"]["succeeded"], 19);
    assert!(s["waves"][0]["status"] == "overridden");
});

on_both_stores!(async fn gate_sql_catches_a_tenant_whose_data_is_wrong(dir, store) {
    registry_fleet(dir, 6, 0);
    for i in 0..6 {
        let mut c = sqlite(&registry_tenant(dir, &format!("t{i:04}"))).await;
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
    std::fs::write(dir.join("gate.sql"), "SELECT x FROM t WHERE x < 0").unwrap();
    let out = run_in(
        dir,
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
    let report = report_dir(dir, &out);
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
});

on_both_stores!(async fn revert_on_halt_takes_the_halted_wave_back_down(dir, store) {
    registry_fleet(dir, 8, 3);
    let m = migration_dir(&[
        ("0001_a.up.sql", "CREATE TABLE a (x INTEGER);"),
        ("0001_a.down.sql", "DROP TABLE a;"),
        ("0002_b.up.sql", "CREATE TABLE b (x INTEGER);"),
        ("0002_b.down.sql", "DROP TABLE b;"),
    ]);
    let mut c = sqlite(&registry_tenant(dir, "t0002")).await;
    c.execute("CREATE TABLE b (conflict INTEGER)")
        .await
        .unwrap();
    c.close().await.unwrap();
    let out = run_in(
        dir,
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
    expect_exit(&out, 1);
    let rows = csv_rows(&report_dir(dir, &out));
    for id in ["t0000", "t0001"] {
        assert_eq!(rows[id]["status"], "reverted", "{id}");
        assert!(
            sqlite_history(&registry_tenant(dir, id))
                .await
                .is_empty(),
            "{id}"
        );
        let tables = sqlite_tables(&registry_tenant(dir, id)).await;
        assert!(
            !tables.contains(&"a".to_string()) && !tables.contains(&"b".to_string()),
            "{tables:?}"
        );
    }
    assert_eq!(rows["t0002"]["status"], "failed");
    assert!(
        sqlite_history(&registry_tenant(dir, "t0005"))
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
});

on_both_stores!(
/// `--max-failures` stops starting tenants: the rest are `not_started`, the
/// rollout halts (no process waits for them), and a resume after the fix
/// runs them.
async fn max_failures_halts_and_a_resume_runs_the_rest(dir, store) {
    registry_fleet(dir, 10, 0);
    for id in ["t0000", "t0001", "t0002"] {
        let mut c = sqlite(&registry_tenant(dir, id)).await;
        c.execute("CREATE TABLE accounts (x INTEGER)").await.unwrap();
        c.close().await.unwrap();
    }
    let m = demo_migrations();
    let m = m.to_str().unwrap();
    let args = rollout_args(m, &["--concurrency", "1", "--max-failures", "2"]);
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::task::spawn_blocking({
            let dir = dir.to_path_buf();
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            move || run_in(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>())
        }),
    )
    .await
    .expect("the rollout ended")
    .unwrap();
    expect_exit(&out, 1);
    let report = report_dir(dir, &out);
    let s = summary(&report);
    assert_eq!(s["status"], "halted", "{s}");
    assert!(s["reason"].as_str().unwrap().contains("max-failures"), "{s}");
    assert_eq!(s["totals"]["failed"], 2, "{s}");
    assert_eq!(s["totals"]["not_started"], 8, "{s}");
    let rows = csv_rows(&report);
    for i in 2..10 {
        let id = format!("t{i:04}");
        assert_eq!(rows[&id]["status"], "not_started", "{id}");
        assert!(sqlite_history(&registry_tenant(dir, &id)).await.is_empty(), "{id}");
    }
    // the cause fixed where it was not yet met, a resume runs what did not start
    let mut c = sqlite(&registry_tenant(dir, "t0002")).await;
    c.execute("DROP TABLE accounts").await.unwrap();
    c.close().await.unwrap();
    let id = s["rollout_id"].as_str().unwrap().to_string();
    let out = run_in(
        dir,
        &["resume", &id, "--progress-every", "0", "--fleet", "registry:fleet.csv", "--migrations", m],
    );
    let s = summary(&report_dir(dir, &out));
    assert_eq!(s["totals"]["not_started"], 0, "{s}");
    assert_eq!(s["totals"]["succeeded"], 8, "{s}");
    assert_eq!(s["totals"]["failed"], 2, "{s}");
    for i in 2..10 {
        let id = format!("t{i:04}");
        assert_eq!(
            sqlite_history(&registry_tenant(dir, &id)).await.len(),
            DEMO_REACHED as usize,
            "{id}"
        );
    }
});

on_both_stores!(
/// `--max-failures` counts the failures of one wave: a canary wave whose
/// failures its gate allows does not keep the next wave from starting.
async fn max_failures_counts_one_wave_at_a_time(dir, store) {
    registry_fleet(dir, 10, 0);
    for id in ["t0000", "t0001"] {
        let mut c = sqlite(&registry_tenant(dir, id)).await;
        c.execute("CREATE TABLE accounts (x INTEGER)").await.unwrap();
        c.close().await.unwrap();
    }
    let m = demo_migrations();
    let m = m.to_str().unwrap();
    let out = run_in(
        dir,
        &rollout_args(
            m,
            &[
                "--waves",
                "first=ids:t0000+t0001,rest",
                "--max-failures",
                "2",
                "--gate-max-failures",
                "2",
                "--concurrency",
                "1",
            ],
        ),
    );
    let s = summary(&report_dir(dir, &out));
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["totals"]["failed"], 2, "{s}");
    assert_eq!(s["totals"]["succeeded"], 8, "{s}");
    assert_eq!(s["totals"]["not_started"], 0, "{s}");
});
