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

/// A database of `n` schema tenants, a `public.ran` table where each
/// migration leaves a row when (and only when) it commits, and the common
/// flags of the processes that share its rollouts.
struct Setup {
    db: PgDb,
    dir: tempfile::TempDir,
    m: tempfile::TempDir,
    fleet: String,
}

impl Setup {
    async fn new(prefix: &str, n: usize, sleep: f64) -> Setup {
        let db = pg_database(prefix).await;
        let schemas: String = (0..n)
            .map(|i| format!("CREATE SCHEMA tenant_{i:03};"))
            .collect();
        db.exec(&format!(
            "{schemas} CREATE TABLE public.ran (tenant text NOT NULL, version int NOT NULL)"
        ))
        .await;
        let m = migration_dir(&[
            (
                "0001_t.sql",
                &format!(
                    "CREATE TABLE t (x int);\nINSERT INTO t SELECT generate_series(1, 100);\n\
                     INSERT INTO public.ran SELECT current_schema(), 1;\nSELECT pg_sleep({sleep});\n"
                ),
            ),
            (
                "0002_u.sql",
                &format!(
                    "ALTER TABLE t ADD COLUMN y int;\nINSERT INTO public.ran SELECT current_schema(), 2;\n\
                     SELECT pg_sleep({sleep});\n"
                ),
            ),
        ]);
        let fleet = format!("postgres-schemas:{}", db.url);
        Setup {
            db,
            dir: tempfile::tempdir().unwrap(),
            m,
            fleet,
        }
    }

    /// `extra`, then the flags every process of these tests shares.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(
            [
                "--state",
                &self.db.url,
                "--lease",
                "2s",
                "--progress-every",
                "0",
                "--log-level",
                "info",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        v
    }

    fn start(&self, extra: &[&str]) -> Child {
        let args = self.args(extra);
        start(
            self.dir.path(),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }

    /// A command that runs nothing (pause, abort, status): the state only.
    fn run(&self, extra: &[&str]) -> std::process::Output {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["--state", &self.db.url]);
        run_in(self.dir.path(), &args)
    }

    /// A worker joining rollout `id` (the fleet's URL has a password, which
    /// the record does not keep: it comes again).
    fn worker(&self, id: &str, extra: &[&str]) -> Child {
        let mut a = vec!["worker", "--rollout", id, "--fleet", &self.fleet];
        a.extend_from_slice(extra);
        self.start(&a)
    }

    /// The id of the one rollout, once it is recorded.
    async fn rollout_id(&self, c: &mut sqlx::PgConnection) -> String {
        let t0 = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let found: Option<String> =
                sqlx::query_scalar("SELECT id FROM fleetmig_rollouts LIMIT 1")
                    .fetch_optional(&mut *c)
                    .await
                    .unwrap_or(None);
            if let Some(id) = found {
                return id;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "no rollout started");
        }
    }

    /// Waits until `n` migrations committed.
    async fn wait_ran(&self, c: &mut sqlx::PgConnection, n: i64) {
        let t0 = Instant::now();
        while count(c, "SELECT count(*) FROM public.ran").await < n {
            assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// No migration committed twice on any tenant.
async fn ran_once(c: &mut sqlx::PgConnection) {
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM (SELECT tenant, version FROM public.ran GROUP BY 1, 2 HAVING count(*) > 1) d"
        )
        .await,
        0,
        "a migration ran twice"
    );
}

fn said(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

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

/// Claims are fair: a sync (concurrency 2) and a worker that joins it
/// (concurrency 2) on 200 schemas that each take about 50 ms: each runs
/// between a third and two thirds of them. (A claim used to take every
/// tenant of the wave: `IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)` was
/// planned as a semi-join that ran the LIMIT again for each row.)
#[tokio::test(flavor = "multi_thread")]
async fn two_workers_share_a_wave_fairly() {
    let s = Setup::new("fair", 200, 0.025).await;
    let mut c = s.db.conn().await;
    let m = s.m.path().to_str().unwrap().to_string();
    let first = s.start(&[
        "sync",
        "--fleet",
        &s.fleet,
        "--migrations",
        &m,
        "--concurrency",
        "2",
    ]);
    let id = s.rollout_id(&mut c).await;
    let second = s.worker(&id, &["--migrations", &m, "--concurrency", "2"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (a, _) = wait_until(first, deadline);
    let (b, _) = wait_until(second, deadline);
    assert_eq!(a.status.code(), Some(0), "{}", said(&a));
    assert!(b.status.code() == Some(0), "{}", said(&b));
    ran_once(&mut c).await;
    let per: Vec<(String, i64)> = sqlx::query_as(
        "SELECT worker, count(*) FROM fleetmig_tenant_runs WHERE rollout_id = $1 GROUP BY worker ORDER BY 1",
    )
    .bind(&id)
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(per.len(), 2, "both ran tenants: {per:?}");
    assert_eq!(per.iter().map(|p| p.1).sum::<i64>(), 200);
    for (w, n) in &per {
        assert!((67..=133).contains(n), "worker {w} ran {n} of 200: {per:?}");
    }
    s.db.drop_now().await;
}

/// The case the claim was found by: a rollout at concurrency 1 on 20
/// schemas and a worker at concurrency 3 that joins it; the first claim
/// takes 2 tenants (its batch), not the wave, so the worker runs most.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_takes_its_batch_and_no_more() {
    let s = Setup::new("claim", 20, 0.1).await;
    let mut c = s.db.conn().await;
    let m = s.m.path().to_str().unwrap().to_string();
    let first = s.start(&[
        "rollout",
        "--fleet",
        &s.fleet,
        "--migrations",
        &m,
        "--concurrency",
        "1",
    ]);
    let id = s.rollout_id(&mut c).await;
    // the rollout's first claim, counted in the store
    let t0 = Instant::now();
    let claimed = loop {
        let n = count(
            &mut c,
            &format!("SELECT count(*) FROM fleetmig_tenant_runs WHERE rollout_id = '{id}' AND claimed_by IS NOT NULL"),
        )
        .await;
        if n > 0 || t0.elapsed() > Duration::from_secs(20) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        (1..=2).contains(&claimed),
        "the first claim took {claimed} tenants"
    );
    let second = s.worker(&id, &["--migrations", &m, "--concurrency", "3"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (a, _) = wait_until(first, deadline);
    let (b, _) = wait_until(second, deadline);
    assert_eq!(a.status.code(), Some(0), "{}", said(&a));
    assert_eq!(b.status.code(), Some(0), "{}", said(&b));
    ran_once(&mut c).await;
    let by_worker: i64 = count(
        &mut c,
        &format!("SELECT count(*) FROM fleetmig_tenant_runs WHERE rollout_id = '{id}' AND worker LIKE '%' AND worker IN (SELECT worker FROM fleetmig_workers WHERE rollout_id = '{id}' ORDER BY started_at DESC LIMIT 1)"),
    )
    .await;
    assert!(
        by_worker >= 8,
        "the worker at concurrency 3 ran {by_worker} of 20"
    );
    s.db.drop_now().await;
}
