//! Rollouts read back from the state store: reports rewritten from it, and
//! a damaged rollout row refused by name with nothing run.

use sqlx::Connection;

use crate::common::*;
use crate::shared::*;

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
