//! `prune` keeps the store small: the tenant rows of old finished rollouts
//! go, each rollout's row, waves and counts stay, and what needs the rows
//! (a report, a retry) is refused naming the prune; a rollout that may
//! still go on is never pruned. `--retain` does the same after a run.

use crate::common::*;
use crate::on_both_stores;
use crate::shared::{count, rollout_args, sync_args, synced};

on_both_stores!(
/// Three nightly syncs of 12 tenants, then `prune --keep 1`: the two older
/// rollouts lose their 24 tenant rows and keep their row and counts.
async fn prune_keeps_the_newest_rollouts_rows_and_every_rollouts_summary(dir, store) {
    registry_fleet(dir, 12, 2);
    let m = demo_migrations();
    let m = m.to_str().unwrap();
    let ids: Vec<String> = (0..3).map(|_| synced(dir, m, &[], 0)).collect();
    // a paused rollout may go on: never pruned, however old
    let out = run_in(
        dir,
        &rollout_args(m, &["--waves", "canary=tag:canary,rest", "--pause-after", "canary"]),
    );
    let paused = summary(&report_dir(dir, &out))["rollout_id"].as_str().unwrap().to_string();
    assert_eq!(count(store, "fleetmig_tenants", &[]).await, 48);

    // nothing that ended within a lease (30s by default) is pruned: the
    // process that ended it may still be writing its report
    let out = run_in(dir, &["prune", "--keep", "0"]);
    expect_exit(&out, 0);
    assert!(stdout(&out).starts_with("pruned 0 rollout(s)"), "{}", stdout(&out));
    assert_eq!(count(store, "fleetmig_tenants", &[]).await, 48);

    // a rollout is pruned once it and its tenants were still for a lease
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let out = run_in(dir, &["prune", "--keep", "30d", "--lease", "1s"]);
    expect_exit(&out, 0);
    assert!(stdout(&out).starts_with("pruned 0 rollout(s)"), "{}", stdout(&out));

    let out = run_in(dir, &["prune", "--keep", "1", "--lease", "1s"]);
    expect_exit(&out, 0);
    assert!(stdout(&out).starts_with("pruned 3 rollout(s): 36 tenant row(s)"), "{}", stdout(&out));
    assert_eq!(count(store, "fleetmig_tenants", &[]).await, 12);
    assert_eq!(count(store, "fleetmig_tenants WHERE rollout_id = $1", &[&paused]).await, 12);
    assert_eq!(count(store, "fleetmig_rollouts", &[]).await, 4);
    assert_eq!(count(store, "fleetmig_waves WHERE rollout_id = $1", &[&ids[0]]).await, 1);

    // history still counts them; a report or a retry of one is refused
    let out = run_in(dir, &["history", "--json"]);
    expect_exit(&out, 0);
    let h: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let first = h
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rollout"]["id"] == ids[0].as_str())
        .unwrap();
    assert_eq!(first["tenants"], 12, "{first}");
    assert_eq!(first["succeeded"], 12, "{first}");
    let out = run_in(dir, &["report", &ids[0], "--fleet", "registry:fleet.csv"]);
    expect_exit(&out, 2);
    assert!(stderr(&out).contains(&format!("rollout {}: its tenants' rows were pruned", ids[0])), "{}", stderr(&out));
    assert!(stderr(&out).contains("12 tenants, 12 succeeded, 0 failed"), "{}", stderr(&out));
    let out = run_in(dir, &["retry", "--rollout", &ids[0], "--failed", "--migrations", m]);
    expect_exit(&out, 2);

    // the paused rollout goes on, and its report has every tenant
    let out = run_in(dir, &["resume", &paused, "--migrations", m, "--progress-every", "0"]);
    expect_exit(&out, 0);
    assert_eq!(csv_rows(&report_dir(dir, &out)).len(), 12);

    // a sync told to retain one rollout prunes the rest after it
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let out = run_in(dir, &sync_args(m, &["--retain", "1", "--lease", "1s"]));
    expect_exit(&out, 0);
    assert!(stderr(&out).contains("--retain: pruned 1 rollout(s), 12 tenant row(s)"), "{}", stderr(&out));
    assert_eq!(count(store, "fleetmig_tenants", &[]).await, 12);
});

/// A bad `--keep` or `--retain` is refused naming it, and nothing is pruned.
#[test]
fn a_bad_keep_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 2, 0);
    let out = run_in(dir.path(), &["prune", "--keep", "soon"]);
    expect_exit(&out, 2);
    assert!(stderr(&out).contains("--keep soon:"), "{}", stderr(&out));
    let m = demo_migrations();
    let out = run_in(
        dir.path(),
        &[
            "sync",
            "--fleet",
            "registry:fleet.csv",
            "--migrations",
            m.to_str().unwrap(),
            "--retain=soon",
        ],
    );
    expect_exit(&out, 2);
    assert!(stderr(&out).contains("--retain"), "{}", stderr(&out));
    assert!(!dir.path().join(".fleetmig").exists(), "a store was made");
}
