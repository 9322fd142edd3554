//! Several coordinators on one rollout, through the PostgreSQL state store:
//! three real processes on 300 schema tenants in two waves with a gate, one
//! SIGKILLed mid-wave, one SIGSTOPped past its lease and then continued.
//! Afterwards every tenant holds each migration exactly once (and ran it
//! once), every gate was evaluated once, and the report counts every tenant
//! once.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn signal(child: &Child, sig: i32) {
    unsafe { libc_kill(child.id() as i32, sig) };
}

const SIGKILL: i32 = 9;
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

/// Waits for `child` until `deadline`; kills it past that, so a worker that
/// hangs fails the test with what it said instead of hanging it.
fn wait_until(mut child: Child, deadline: Instant) -> (std::process::Output, bool) {
    let mut late = false;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            late = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (child.wait_with_output().unwrap(), late)
}

fn start(dir: &std::path::Path, args: &[&str]) -> Child {
    fleetmig_process(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn count(c: &mut sqlx::PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_share_a_rollout_through_a_kill_and_a_stall() {
    let db = pg_database("workers").await;
    let schemas: String = (0..300)
        .map(|i| format!("CREATE SCHEMA tenant_{i:03};"))
        .collect();
    db.exec(&format!(
        "{schemas} CREATE TABLE public.ran (tenant text NOT NULL, version int NOT NULL)"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    // each migration leaves a row in public.ran when (and only when) it commits
    let m = migration_dir(&[
        (
            "0001_t.sql",
            "CREATE TABLE t (x int);\nINSERT INTO t SELECT generate_series(1, 100);\n\
             INSERT INTO public.ran SELECT current_schema(), 1;\nSELECT pg_sleep(0.05);\n",
        ),
        (
            "0002_u.sql",
            "ALTER TABLE t ADD COLUMN y int;\nINSERT INTO public.ran SELECT current_schema(), 2;\nSELECT pg_sleep(0.05);\n",
        ),
    ]);
    std::fs::write(
        dir.path().join("gate.sql"),
        "SELECT count(*) FROM t HAVING count(*) <> 100",
    )
    .unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let state = db.url.clone();
    let common = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(
            [
                "--state",
                &state,
                "--lease",
                "2s",
                "--concurrency",
                "4",
                "--progress-every",
                "0",
                "--log-level",
                "info",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        v
    };
    let a_args = common(&[
        "rollout",
        "--fleet",
        &fleet,
        "--migrations",
        m.path().to_str().unwrap(),
        "--waves",
        "first=30%,rest",
        "--gate-max-failures",
        "0",
        "--gate-sql",
        "gate.sql",
    ]);
    let a = start(
        dir.path(),
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    // the rollout's id, once it is recorded
    let mut c = db.conn().await;
    let t0 = Instant::now();
    let id: String = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let found: Option<String> = sqlx::query_scalar("SELECT id FROM fleetmig_rollouts LIMIT 1")
            .fetch_optional(&mut c)
            .await
            .unwrap_or(None);
        if let Some(id) = found {
            break id;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no rollout started");
    };
    // the fleet's URL has a password, which the record does not keep
    let w_args = common(&["worker", "--rollout", &id, "--fleet", &fleet]);
    let w_args: Vec<&str> = w_args.iter().map(String::as_str).collect();
    let b = start(dir.path(), &w_args);
    let stalled = start(dir.path(), &w_args);

    // kill b mid-wave, once tenants are being done
    let t0 = Instant::now();
    while count(&mut c, "SELECT count(*) FROM public.ran").await < 60 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&b, SIGKILL);
    let _ = b.wait_with_output();
    // stall the third past its lease, then let it go on
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&stalled, SIGSTOP);
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&stalled, SIGCONT);

    let deadline = Instant::now() + Duration::from_secs(120);
    let (a, a_late) = wait_until(a, deadline);
    let (s, s_late) = wait_until(stalled, deadline);
    let said = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(
        !a_late && !s_late,
        "a worker hung:\nrollout: {}\nstalled worker: {}",
        said(&a),
        said(&s)
    );
    assert_eq!(a.status.code(), Some(0), "rollout: {}", said(&a));
    assert_eq!(s.status.code(), Some(0), "stalled worker: {}", said(&s));

    // each migration ran and is recorded exactly once on every tenant
    assert_eq!(count(&mut c, "SELECT count(*) FROM public.ran").await, 600);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM (SELECT tenant, version FROM public.ran GROUP BY 1, 2 HAVING count(*) > 1) d"
        )
        .await,
        0,
        "a migration ran twice"
    );
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
    let report = report_dir(dir.path(), &a);
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

    let out = run_in(dir.path(), &["status", "--rollout", &id, "--state", &state]);
    let text = stdout(&out);
    let listed = text
        .lines()
        .filter(|l| l.contains('@') && (l.ends_with("stopped") || l.ends_with("working")))
        .count();
    assert!(listed >= 3, "three workers listed: {text}");
    c.close_conn().await;
    db.drop_now().await;
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
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run_in(dir.path(), &["worker", "--state", "state.db"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("fleetmig worker needs a state store several processes share"),
        "{}",
        stderr(&out)
    );
}

trait CloseConn {
    async fn close_conn(self);
}

impl CloseConn for sqlx::PgConnection {
    async fn close_conn(self) {
        let _ = sqlx::Connection::close(self).await;
    }
}
