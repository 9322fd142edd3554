//! Crash safety: the real process is killed with SIGKILL at random moments of
//! a waved rollout over 100 tenants, again and again, each kill followed by
//! `resume`. Every tenant must end at the target with each migration recorded
//! (and run) exactly once, and the state store must agree.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rand::RngExt;

fn newest(dir: &std::path::Path) -> Option<serde_json::Value> {
    let h = run_in(dir, &["history", "--fleet", "registry:fleet.csv", "--json"]);
    expect_exit(&h, 0);
    let v: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    v.as_array().and_then(|a| a.first().cloned())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_then_resume_applies_everything_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 100, 3);
    let slow = |tag: &str| {
        format!(
            "CREATE TABLE work_{tag} (x INTEGER);\n\
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000) INSERT INTO work_{tag} SELECT x FROM c;\n\
             INSERT INTO log VALUES ('{tag}');\n"
        )
    };
    let m = migration_dir(&[
        (
            "0001_log.sql",
            "CREATE TABLE log (m TEXT NOT NULL);\nINSERT INTO log VALUES ('1');\n",
        ),
        ("0002_work.sql", &slow("2")),
        ("0003_work.sql", &slow("3")),
        ("0004_work.sql", &slow("4")),
    ]);
    let mpath = m.path().to_str().unwrap().to_string();
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut runs = 0;
    while kills < 22 {
        runs += 1;
        assert!(
            runs < 80,
            "the rollout never got far enough to be killed 22 times"
        );
        let args: Vec<String> = match newest(dir.path()) {
            None => vec![
                "rollout".into(),
                "--waves".into(),
                "canary=tag:canary,25%,rest".into(),
            ],
            Some(r) if r["rollout"]["status"] != "completed" => vec!["resume".into()],
            Some(_) => break,
        };
        let mut child = fleetmig_process(dir.path())
            .args(&args)
            .args([
                "--fleet",
                "registry:fleet.csv",
                "--progress-every",
                "0",
                "--concurrency",
                "4",
                "--migrations",
                &mpath,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(60..400)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let out = child.wait_with_output().unwrap();
        // a run that finished before the kill must have succeeded
        if out.status.code().is_some() {
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(kills >= 20, "only {kills} kills");
    // finish
    let last = run_in(
        dir.path(),
        &[
            "resume",
            "--fleet",
            "registry:fleet.csv",
            "--progress-every",
            "0",
            "--migrations",
            &mpath,
        ],
    );
    let done = newest(dir.path()).unwrap();
    if done["rollout"]["status"] != "completed" {
        panic!("did not complete: {}{}", stdout(&last), stderr(&last));
    }
    let id = done["rollout"]["id"].as_str().unwrap().to_string();
    for i in 0..100 {
        let id = format!("t{i:04}");
        let p = registry_tenant(dir.path(), &id);
        assert_eq!(
            sqlite_history(&p).await,
            vec![(1, true), (2, true), (3, true), (4, true)],
            "{id}"
        );
        let mut c = sqlite(&p).await;
        let log: Vec<String> = sqlx::query_scalar("SELECT m FROM log ORDER BY m")
            .fetch_all(&mut c)
            .await
            .unwrap();
        assert_eq!(
            log,
            vec!["1", "2", "3", "4"],
            "{id}: every migration ran exactly once"
        );
        for t in ["2", "3", "4"] {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM work_{t}"
            )))
            .fetch_one(&mut c)
            .await
            .unwrap();
            assert_eq!(n, 400000, "{id}: work_{t}");
        }
        sqlx::Connection::close(c).await.unwrap();
    }
    // the state store agrees
    let st = run_in(
        dir.path(),
        &[
            "status",
            "--rollout",
            &id,
            "--json",
            "--fleet",
            "registry:fleet.csv",
        ],
    );
    assert_eq!(st.status.code(), Some(0), "{}", stdout(&st));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let tenants = v["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 100);
    for t in tenants {
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(t["to_version"], 4, "{t}");
    }
    assert_eq!(v["summary"]["status"], "completed");
    eprintln!("{kills} kills over {runs} runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_pauses_the_rollout_and_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 12, 0);
    let m = migration_dir(&[(
        "0001_slow.sql",
        "CREATE TABLE n (x INTEGER);\n\
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 800000) INSERT INTO n SELECT x FROM c;",
    )]);
    let mpath = m.path().to_str().unwrap().to_string();
    let child = fleetmig_process(dir.path())
        .args([
            "rollout",
            "--fleet",
            "registry:fleet.csv",
            "--progress-every",
            "0",
            "--concurrency",
            "2",
            "--migrations",
            &mpath,
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    expect_exit(&out, 1);
    let report = report_dir(dir.path(), &out);
    let s = summary(&report);
    assert_eq!(s["status"], "paused");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("interrupted by a signal"),
        "{s}"
    );
    assert!(
        s["totals"]["pending"].as_u64().unwrap() + s["totals"]["not_started"].as_u64().unwrap() > 0
    );
    let out = run_in(
        dir.path(),
        &[
            "resume",
            "--fleet",
            "registry:fleet.csv",
            "--progress-every",
            "0",
            "--migrations",
            &mpath,
        ],
    );
    expect_exit(&out, 0);
    for i in 0..12 {
        assert_eq!(
            sqlite_history(&registry_tenant(dir.path(), &format!("t{i:04}"))).await,
            vec![(1, true)]
        );
    }
}

/// The nightly job never needs a person after a crash: a `sync` killed
/// midway is taken over by the next `sync` of the fleet, which finishes it
/// (one rollout, completed, every tenant once); after a kill and a change of
/// the migration set, the next `sync` closes the old one as superseded
/// (recorded) and runs a new one.
#[tokio::test(flavor = "multi_thread")]
async fn a_sync_after_a_killed_sync_takes_it_over() {
    let dir = sqlite_fleet(40);
    let slow = "CREATE TABLE t (x INTEGER);\n\
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000) INSERT INTO t SELECT i FROM n;\n";
    let m = migration_dir(&[("0001_t.sql", slow)]);
    let args = |m: &std::path::Path| -> Vec<String> {
        [
            "sync",
            "--fleet",
            "sqlite-dir:tenants",
            "--progress-every",
            "0",
            "--concurrency",
            "1",
            "--migrations",
            m.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let kill_midway = |m: &std::path::Path, version: i64| {
        let mut child = fleetmig_process(dir.path()).args(args(m)).spawn().unwrap();
        let t0 = std::time::Instant::now();
        loop {
            let done = (0..40)
                .filter(|i| {
                    let p = tenant_path(dir.path(), &format!("t{i:04}"));
                    let c = rusqlite_count(&p, version);
                    c > 0
                })
                .count();
            if done >= 3 {
                break;
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(60),
                "no progress"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        let _ = child.wait();
    };
    kill_midway(m.path(), 1);
    let out = run_in(
        dir.path(),
        &args(m.path())
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    expect_exit(&out, 0);
    let mut s = sqlite(&dir.path().join(".fleetmig/state.db")).await;
    let rollouts: Vec<(String, String)> =
        sqlx::query_as("SELECT id, status FROM fleetmig_rollouts")
            .fetch_all(&mut s)
            .await
            .unwrap();
    assert_eq!(
        rollouts.len(),
        1,
        "taken over, not started anew: {rollouts:?}"
    );
    assert_eq!(rollouts[0].1, "completed");
    for i in 0..40 {
        assert_eq!(
            sqlite_history(&tenant_path(dir.path(), &format!("t{i:04}"))).await,
            vec![(1, true)]
        );
    }

    // a new migration, a kill midway, then the set changes again
    let m2 = migration_dir(&[
        ("0001_t.sql", slow),
        (
            "0002_u.sql",
            &slow.replace(" t ", " u ").replace("INTO t", "INTO u"),
        ),
    ]);
    kill_midway(m2.path(), 2);
    let m3 = migration_dir(&[
        ("0001_t.sql", slow),
        (
            "0002_u.sql",
            &slow.replace(" t ", " u ").replace("INTO t", "INTO u"),
        ),
        ("0003_v.sql", "CREATE TABLE v (x INTEGER);\n"),
    ]);
    let out = run_in(
        dir.path(),
        &args(m3.path())
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    expect_exit(&out, 0);
    let rollouts: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status, reason FROM fleetmig_rollouts ORDER BY created_at")
            .fetch_all(&mut s)
            .await
            .unwrap();
    assert_eq!(rollouts.len(), 3, "{rollouts:?}");
    assert_eq!(rollouts[1].0, "aborted");
    assert!(
        rollouts[1]
            .1
            .as_deref()
            .unwrap_or("")
            .contains("superseded"),
        "{rollouts:?}"
    );
    assert_eq!(rollouts[2].0, "completed");
    for i in 0..40 {
        assert_eq!(
            sqlite_history(&tenant_path(dir.path(), &format!("t{i:04}"))).await,
            vec![(1, true), (2, true), (3, true)]
        );
    }
}

/// Rows of version `v` in the history of the SQLite file at `p` (0 while
/// it has none, or is busy).
fn rusqlite_count(p: &std::path::Path, v: i64) -> i64 {
    std::process::Command::new("sqlite3")
        .arg(p)
        .arg(format!(
            "SELECT count(*) FROM _sqlx_migrations WHERE version = {v} AND success"
        ))
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}
