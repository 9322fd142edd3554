//! Several coordinators on one rollout, through the PostgreSQL state store:
//! three real processes on 300 schema tenants in two waves with a gate, one
//! SIGKILLed mid-wave, one SIGSTOPped past its lease and then continued.
//! Afterwards every tenant holds each migration exactly once (and ran it
//! once), every gate was evaluated once, and the report counts every tenant
//! once.

mod common;

use std::time::{Duration, Instant};

use common::workers::*;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_share_a_rollout_through_a_kill_and_a_stall() {
    let s = Setup::new("workers", 300, 0.05).await;
    std::fs::write(
        s.dir.path().join("gate.sql"),
        "SELECT count(*) FROM t HAVING count(*) <> 100",
    )
    .unwrap();
    let a = s.start(&[
        "rollout",
        "--fleet",
        &s.fleet,
        "--migrations",
        s.m.path().to_str().unwrap(),
        "--waves",
        "first=30%,rest",
        "--gate-max-failures",
        "0",
        "--gate-sql",
        "gate.sql",
        "--concurrency",
        "4",
    ]);
    let mut c = s.db.conn().await;
    let id = s.rollout_id(&mut c).await;
    let b = s.worker(&id, &["--concurrency", "4"]);
    let stalled = s.worker(&id, &["--concurrency", "4"]);

    // kill b mid-wave, once tenants are being done
    s.wait_ran(&mut c, 60).await;
    signal(&b, SIGKILL);
    let _ = b.wait_with_output();
    // stall the third past its lease, then let it go on
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&stalled, SIGSTOP);
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&stalled, SIGCONT);

    let deadline = Instant::now() + Duration::from_secs(120);
    let (a, a_late) = wait_until(a, deadline);
    let (st, st_late) = wait_until(stalled, deadline);
    assert!(
        !a_late && !st_late,
        "a worker hung:\nrollout: {}\nstalled worker: {}",
        said(&a),
        said(&st)
    );
    assert_eq!(a.status.code(), Some(0), "rollout: {}", said(&a));
    assert_eq!(st.status.code(), Some(0), "stalled worker: {}", said(&st));

    // each migration ran and is recorded exactly once on every tenant
    assert_eq!(count(&mut c, "SELECT count(*) FROM public.ran").await, 600);
    ran_once(&mut c).await;
    for i in [0, 77, 150, 299] {
        assert_eq!(
            pg_history(&mut c, &format!("tenant_{i:03}")).await,
            vec![(1, true), (2, true)]
        );
    }
    // each gate evaluated once, by one worker
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM fleetmig_gates").await,
        2,
        "two waves, two gate evaluations"
    );
    assert!(
        count(
            &mut c,
            "SELECT count(DISTINCT worker) FROM fleetmig_tenant_runs"
        )
        .await
            >= 2,
        "the work was shared"
    );
    // the report counts every tenant once
    let report = report_dir(s.dir.path(), &a);
    let rows = csv_rows(&report);
    assert_eq!(rows.len(), 300);
    assert!(rows.values().all(|r| r["status"] == "succeeded"));
    let summary = summary(&report);
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["totals"]["succeeded"], 300);
    // a migration applied by a worker that died before recording it is
    // credited by the one that took the tenant over
    let uncredited: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT tenant, COALESCE(worker, ''), applied FROM fleetmig_tenant_runs WHERE applied <> '1;2'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(uncredited, vec![], "{}", said(&a));
    assert_eq!(summary["totals"]["migrations_applied"], 600);

    let out = s.run(&["status", "--rollout", &id]);
    let text = stdout(&out);
    let listed = text
        .lines()
        .filter(|l| l.contains('@') && (l.ends_with("stopped") || l.ends_with("working")))
        .count();
    assert!(listed >= 3, "three workers listed: {text}");
    c.close_conn().await;
    s.db.drop_now().await;
}

/// Each tenant's history is what its run row says was applied, and a
/// prefix of the migrations (an abort stops a tenant between them).
async fn histories_match_rows(c: &mut sqlx::PgConnection, n: usize) {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT tenant, applied FROM fleetmig_tenant_runs ORDER BY tenant")
            .fetch_all(&mut *c)
            .await
            .unwrap();
    assert_eq!(rows.len(), n);
    for (tenant, applied) in rows {
        let history: Vec<String> = pg_history(c, &tenant)
            .await
            .into_iter()
            .map(|(v, ok)| {
                assert!(ok, "{tenant}: {v} failed");
                v.to_string()
            })
            .collect();
        assert_eq!(history.join(";"), applied, "{tenant}");
    }
}

/// `fleetmig pause` and `fleetmig abort` reach every worker of a rollout
/// within a heartbeat: each stops after the migrations it is running, the
/// last one out records the rollout paused (aborted), and a resume with two
/// workers picks it up where it stopped.
#[tokio::test(flavor = "multi_thread")]
async fn pause_and_abort_reach_every_worker() {
    let s = Setup::new("wpause", 200, 0.1).await;
    let a = s.start(&[
        "rollout",
        "--fleet",
        &s.fleet,
        "--migrations",
        s.m.path().to_str().unwrap(),
        "--concurrency",
        "2",
    ]);
    let mut c = s.db.conn().await;
    let id = s.rollout_id(&mut c).await;
    let b = s.worker(&id, &["--concurrency", "2", "--once"]);
    s.wait_ran(&mut c, 30).await;
    let asked = Instant::now();
    let out = s.run(&["pause", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (a, a_late) = wait_until(a, deadline);
    let (b, b_late) = wait_until(b, deadline);
    assert!(!a_late && !b_late, "{}\n{}", said(&a), said(&b));
    // a heartbeat (half a second) and the migrations in flight (0.2 s)
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        b.status.code(),
        Some(1),
        "--once on a paused rollout: {}",
        said(&b)
    );
    let status: (String, i64) =
        sqlx::query_as("SELECT status, (SELECT count(*) FROM fleetmig_tenant_runs WHERE status = 'running') FROM fleetmig_rollouts")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(status, ("paused".to_string(), 0), "{}", said(&a));
    let done = count(&mut c, "SELECT count(*) FROM public.ran").await;
    assert!(done < 400, "paused before the end: {done}");
    assert!(
        count(
            &mut c,
            "SELECT count(DISTINCT worker) FROM fleetmig_tenant_runs"
        )
        .await
            == 2,
        "both worked"
    );
    ran_once(&mut c).await;
    histories_match_rows(&mut c, 200).await;

    // resume with two workers, then abort
    let a = s.start(&["resume", &id, "--fleet", &s.fleet, "--concurrency", "2"]);
    let b = s.worker(&id, &["--concurrency", "2"]);
    s.wait_ran(&mut c, done + 30).await;
    let out = s.run(&["abort", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (a, a_late) = wait_until(a, deadline);
    let (b, b_late) = wait_until(b, deadline);
    assert!(!a_late && !b_late, "{}\n{}", said(&a), said(&b));
    assert_eq!(
        b.status.code(),
        Some(1),
        "--rollout on an aborted rollout: {}",
        said(&b)
    );
    let (status, skipped, todo): (String, i64, i64) = sqlx::query_as(
        "SELECT status, (SELECT count(*) FROM fleetmig_tenant_runs WHERE status = 'skipped'), \
         (SELECT count(*) FROM fleetmig_tenant_runs WHERE status IN ('pending', 'running', 'not_started')) \
         FROM fleetmig_rollouts",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    // the rows left to run, if any, and who touched them last
    let left: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT tenant, status, worker FROM fleetmig_tenant_runs \
         WHERE status IN ('pending', 'running', 'not_started')",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), todo),
        ("aborted", 0),
        "{left:?}\n{}\n{}",
        said(&a),
        said(&b)
    );
    assert!(skipped > 0, "tenants left were skipped");
    ran_once(&mut c).await;
    histories_match_rows(&mut c, 200).await;
    c.close_conn().await;
    s.db.drop_now().await;
}

/// A gate that fails halts the rollout, and the halt reaches every worker:
/// the next wave starts nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_halt_reaches_every_worker() {
    let s = Setup::new("whalt", 80, 0.02).await;
    // every tenant of the first wave fails the gate
    std::fs::write(s.dir.path().join("gate.sql"), "SELECT count(*) FROM t").unwrap();
    let a = s.start(&[
        "rollout",
        "--fleet",
        &s.fleet,
        "--migrations",
        s.m.path().to_str().unwrap(),
        "--waves",
        "canary=50%,rest",
        "--gate-sql",
        "gate.sql",
        "--concurrency",
        "2",
    ]);
    let mut c = s.db.conn().await;
    let id = s.rollout_id(&mut c).await;
    let b = s.worker(&id, &["--concurrency", "2"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (a, a_late) = wait_until(a, deadline);
    let (b, b_late) = wait_until(b, deadline);
    assert!(!a_late && !b_late, "{}\n{}", said(&a), said(&b));
    assert_eq!(b.status.code(), Some(1), "{}", said(&b));
    assert_ne!(a.status.code(), Some(0), "{}", said(&a));
    let status: String = sqlx::query_scalar("SELECT status FROM fleetmig_rollouts")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(status, "halted");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM fleetmig_gates").await,
        1
    );
    // the first wave ran, the second did not start anywhere
    assert_eq!(count(&mut c, "SELECT count(*) FROM public.ran").await, 80);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM fleetmig_tenant_runs WHERE wave = 1 AND status = 'pending' AND started_at IS NULL").await,
        40
    );
    ran_once(&mut c).await;
    histories_match_rows(&mut c, 80).await;
    c.close_conn().await;
    s.db.drop_now().await;
}

/// The SQLite state store, which one process at a time runs, refuses
/// `worker` with a message that says why and what to use.
#[test]
fn a_sqlite_store_refuses_a_worker() {
    let dir = sqlite_fleet(1);
    let out = run_in(
        dir.path(),
        &["worker", "--state", "state.db", "--rollout", "x"],
    );
    // the store does not exist: nothing is created for a refused worker
    assert_ne!(out.status.code(), Some(0));
    assert!(!dir.path().join("state.db").exists());
    let out = sync(dir.path(), &demo_migrations(), &["--state", "state.db"]);
    expect_exit(&out, 0);
    let out = run_in(dir.path(), &["worker", "--state", "state.db"]);
    expect_exit(&out, 2);
    assert!(
        stderr(&out).contains("fleetmig worker: needs a state store several processes share"),
        "{}",
        stderr(&out)
    );
}

/// A `worker --once` waiting for a rollout exits with that rollout's
/// outcome when it ran and ended between two of the worker's looks: a
/// fleet found at head is done the moment its rollout is recorded (its
/// tenants are read before), and the worker must not wait for ever.
#[tokio::test(flavor = "multi_thread")]
async fn worker_once_exits_when_the_rollout_ended_before_it_could_join() {
    let db = pg_database("once").await;
    let dir = sqlite_fleet(30);
    let m = demo_migrations();
    let sync = |dir: &std::path::Path| {
        run_in(
            dir,
            &[
                "sync",
                "--state",
                &db.url,
                "--fleet",
                "sqlite-dir:tenants",
                "--migrations",
            ]
            .into_iter()
            .chain([m.to_str().unwrap(), "--progress-every", "0"])
            .collect::<Vec<_>>(),
        )
    };
    expect_exit(&sync(dir.path()), 0);
    let worker = fleetmig_process(dir.path())
        .args([
            "worker",
            "--once",
            "--state",
            &db.url,
            "--fleet",
            "sqlite-dir:tenants",
        ])
        .arg("--migrations")
        .arg(&m)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = sync(dir.path());
    expect_exit(&out, 0);
    assert!(stdout(&out).contains("(30 up to date)"), "{}", stdout(&out));
    let (done, late) = wait_until(worker, Instant::now() + Duration::from_secs(20));
    assert!(
        !late,
        "the worker still waited 20 s after the rollout ended: {}",
        said(&done)
    );
    assert_eq!(done.status.code(), Some(0), "{}", said(&done));
    let why = "ran and ended (completed) before this worker could join it";
    assert!(said(&done).contains(why), "{}", said(&done));
    db.drop_now().await;
}
