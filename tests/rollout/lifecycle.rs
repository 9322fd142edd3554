//! A rollout's life: pause after a wave and resume, retry one tenant after
//! its cause is fixed, abort what is left, plan the waves, and one rollout
//! at a time on a fleet.

use sqlx::{Connection, Executor};

use crate::common::*;
use crate::on_both_stores;
use crate::shared::*;

on_both_stores!(async fn pause_after_a_wave_then_resume_to_the_end(dir, store) {
    registry_fleet(dir, 10, 0);
    let m = demo_migrations();
    let out = run_in(
        dir,
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
    let report = report_dir(dir, &out);
    let s = summary(&report);
    assert_eq!(s["status"], "paused", "{s}");
    assert_eq!(s["totals"]["succeeded"], 3);
    assert_eq!(s["totals"]["pending"], 7);
    assert_eq!(out.status.code(), Some(1));
    let id = s["rollout_id"].as_str().unwrap().to_string();
    // resume without an id picks the newest unfinished rollout of the fleet
    let out = run_in(
        dir,
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
    expect_exit(&out, 0);
    let report = report_dir(dir, &out);
    assert!(report.ends_with(&id), "same rollout, same report folder");
    let s = summary(&report);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["totals"]["succeeded"], 10);
    for i in 0..10 {
        assert_eq!(
            sqlite_history(&registry_tenant(dir, &format!("t{i:04}")))
                .await
                .len(),
            DEMO_REACHED as usize
        );
    }
    let h = run_in(
        dir,
        &["history", "--fleet", "registry:fleet.csv", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(v[0]["rollout"]["id"], id.as_str());
    assert_eq!(v[0]["rollout"]["status"], "completed");
    assert_eq!(v[0]["succeeded"], 10);
});

on_both_stores!(async fn retry_one_tenant_after_its_cause_is_fixed(dir, store) {
    registry_fleet(dir, 5, 0);
    let bad = registry_tenant(dir, "t0002");
    let mut c = sqlite(&bad).await;
    c.execute("CREATE TABLE accounts (legacy TEXT)")
        .await
        .unwrap();
    c.close().await.unwrap();
    let m = demo_migrations();
    let metrics = dir.join("fleetmig.prom");
    let out = run_in(
        dir,
        &sync_args(
            m.to_str().unwrap(),
            &["--metrics-file", metrics.to_str().unwrap()],
        ),
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
    let report = report_dir(dir, &out);
    let id = summary(&report)["rollout_id"].as_str().unwrap().to_string();

    // the next morning: fix the tenant, retry it alone
    let mut c = sqlite(&bad).await;
    c.execute("DROP TABLE accounts").await.unwrap();
    c.close().await.unwrap();
    let out = run_in(
        dir,
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
    expect_exit(&out, 0);
    let report2 = report_dir(dir, &out);
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
        dir,
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
});

on_both_stores!(async fn abort_skips_what_is_left_and_plan_shows_the_waves(dir, store) {
    registry_fleet(dir, 10, 2);
    let m = demo_migrations();
    let plan = run_in(
        dir,
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
    expect_exit(&plan, 0);
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(
        v["waves"][0]["tenants"],
        serde_json::json!(["t0000", "t0001"])
    );
    assert_eq!(v["waves"][1]["tenants"].as_array().unwrap().len(), 4);
    assert_eq!(v["waves"][2]["tenants"].as_array().unwrap().len(), 4);
    assert!(
        !dir.join(".fleetmig").exists(),
        "plan touches no state store"
    );

    let out = run_in(
        dir,
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
    let s = summary(&report_dir(dir, &out));
    assert_eq!(s["status"], "paused");
    let out = run_in(dir, &["abort", "--fleet", "registry:fleet.csv"]);
    expect_exit(&out, 0);
    let report = report_dir(dir, &out);
    let s = summary(&report);
    assert_eq!(s["status"], "aborted");
    assert_eq!(s["totals"]["skipped"], 8);
    assert_eq!(s["totals"]["succeeded"], 2);
    let rows = csv_rows(&report);
    assert_eq!(rows["t0005"]["status"], "skipped");
    assert!(
        sqlite_history(&registry_tenant(dir, "t0005"))
            .await
            .is_empty()
    );
    // an aborted rollout cannot be resumed, and no longer blocks a new one
    let out = run_in(
        dir,
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
    let out = run_in(dir, &rollout_args(m.to_str().unwrap(), &[]));
    expect_exit(&out, 0);
});

on_both_stores!(async fn a_second_rollout_on_the_same_fleet_is_refused_while_one_runs(dir, store) {
    registry_fleet(dir, 4, 0);
    let m = migration_dir(&[(
        "0001_slow.sql",
        "CREATE TABLE n (x INTEGER);\n\
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) INSERT INTO n SELECT x FROM c;",
    )]);
    let first = fleetmig_process(dir)
        .args(rollout_args(
            m.path().to_str().unwrap(),
            &["--concurrency", "1"],
        ))
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let second = run_in(dir, &rollout_args(m.path().to_str().unwrap(), &[]));
    expect_exit(&second, 4);
    let err = stderr(&second);
    assert!(
        err.contains("is running on this fleet") && err.contains("operator"),
        "{err}"
    );
    let first = first.wait_with_output().unwrap();
    expect_exit(&first, 0);
    // after it finished, a new rollout may start
    let third = run_in(dir, &rollout_args(m.path().to_str().unwrap(), &[]));
    expect_exit(&third, 0);
});
