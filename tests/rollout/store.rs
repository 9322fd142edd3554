//! Rollouts read back from the state store: reports rewritten from it, and
//! a damaged rollout row refused by name with nothing run.

use crate::common::*;
use crate::on_both_stores;
use crate::shared::*;

/// `resume` refused as a state-store error (exit 3) saying `why`, and no
/// tenant of `untouched` migrated.
async fn resume_refused(dir: &std::path::Path, resume: &[&str], why: &str, untouched: &[String]) {
    let out = run_in(dir, resume);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{}{err}", stdout(&out));
    assert!(err.contains(why), "{err}");
    for t in untouched {
        assert!(
            sqlite_history(&registry_tenant(dir, t)).await.is_empty(),
            "{t} was migrated"
        );
    }
}

on_both_stores!(async fn reports_are_rewritten_from_the_state_store(dir, store) {
    registry_fleet(dir, 3, 1);
    let m = demo_migrations();
    let out = run_in(
        dir,
        &rollout_args(m.to_str().unwrap(), &["--waves", "tag:canary,rest"]),
    );
    expect_exit(&out, 0);
    let report = report_dir(dir, &out);
    let id = report.file_name().unwrap().to_str().unwrap().to_string();
    let before = std::fs::read_to_string(report.join("tenants.csv")).unwrap();
    std::fs::remove_dir_all(&report).unwrap();
    let out = run_in(
        dir,
        &["report", &id, "--fleet", "registry:fleet.csv"],
    );
    expect_exit(&out, 0);
    assert_eq!(
        std::fs::read_to_string(report.join("tenants.csv")).unwrap(),
        before
    );
    for f in ["waves.csv", "summary.json", "summary.md", "report.html"] {
        assert!(report.join(f).exists(), "{f}");
    }
});

on_both_stores!(
/// A rollout whose frozen settings (or status) were damaged in the store is
/// refused with a state-store error naming it (exit 3), not resumed with
/// defaults; nothing more runs on any tenant.
async fn a_damaged_rollout_row_is_a_clear_error_and_nothing_runs(dir, store) {
    registry_fleet(dir, 6, 0);
    let m = demo_migrations();
    let out = run_in(
        dir,
        &rollout_args(
            m.to_str().unwrap(),
            &["--waves", "first=2,rest", "--pause-after", "first"],
        ),
    );
    let s = summary(&report_dir(dir, &out));
    assert_eq!(s["status"], "paused", "{s}");
    let id = s["rollout_id"].as_str().unwrap().to_string();
    let untouched: Vec<String> = (0..6)
        .map(|i| format!("t{i:04}"))
        .filter(|t| csv_rows(&report_dir(dir, &out))[t.as_str()]["status"] == "pending")
        .collect();
    assert_eq!(untouched.len(), 4);
    let settings = store
        .text("SELECT settings FROM fleetmig_rollouts WHERE id = $1", &[&id])
        .await;
    store
        .exec(
            "UPDATE fleetmig_rollouts SET settings = '{\"concurrency\": \"eight\"}' WHERE id = $1",
            &[&id],
        )
        .await;
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
    resume_refused(dir, &resume, &format!("rollout {id} has a damaged settings row"), &untouched)
        .await;
    // a status word that is not one fleetmig writes is refused the same way
    store
        .exec(
            "UPDATE fleetmig_rollouts SET settings = $1, status = 'runing' WHERE id = $2",
            &[&settings, &id],
        )
        .await;
    let out = run_in(
        dir,
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
    // settings of a newer shape than this fleetmig knows are refused, not
    // read with what it does not know left out
    let newer = settings.replacen('{', "{\"format\":99,", 1);
    assert!(settings.contains("\"format\":3"), "{settings}");
    store
        .exec(
            "UPDATE fleetmig_rollouts SET settings = $1, status = 'paused' WHERE id = $2",
            &[&newer.replacen("\"format\":3,", "", 1), &id],
        )
        .await;
    resume_refused(dir, &resume, &format!("rollout {id} was planned by a newer fleetmig"), &untouched)
        .await;
});
