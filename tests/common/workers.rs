//! What the tests of several workers on one rollout share: real processes
//! started, signalled and waited for, and a database of schema tenants
//! whose migrations leave a row when (and only when) they commit.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::*;

unsafe extern "C" {
    #[link_name = "kill"]
    pub fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub fn signal(child: &Child, sig: i32) {
    unsafe { libc_kill(child.id() as i32, sig) };
}

pub const SIGKILL: i32 = 9;
pub const SIGSTOP: i32 = 19;
pub const SIGCONT: i32 = 18;

/// Waits for `child` until `deadline`; kills it past that, so a worker that
/// hangs fails the test with what it said instead of hanging it.
pub fn wait_until(mut child: Child, deadline: Instant) -> (std::process::Output, bool) {
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

pub fn start(dir: &std::path::Path, args: &[&str]) -> Child {
    fleetmig_process(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub async fn count(c: &mut sqlx::PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(c)
        .await
        .unwrap()
}

/// A database of `n` schema tenants, a `public.ran` table where each
/// migration leaves a row when (and only when) it commits, and the common
/// flags of the processes that share its rollouts.
pub struct Setup {
    pub db: PgDb,
    pub dir: tempfile::TempDir,
    pub m: tempfile::TempDir,
    pub fleet: String,
}

impl Setup {
    pub async fn new(prefix: &str, n: usize, sleep: f64) -> Setup {
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
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
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

    pub fn start(&self, extra: &[&str]) -> Child {
        let args = self.args(extra);
        start(
            self.dir.path(),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }

    /// A command that runs nothing (pause, abort, status): the state only.
    pub fn run(&self, extra: &[&str]) -> std::process::Output {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["--state", &self.db.url]);
        run_in(self.dir.path(), &args)
    }

    /// A worker joining rollout `id` (the fleet's URL has a password, which
    /// the record does not keep: it comes again).
    pub fn worker(&self, id: &str, extra: &[&str]) -> Child {
        let mut a = vec!["worker", "--rollout", id, "--fleet", &self.fleet];
        a.extend_from_slice(extra);
        self.start(&a)
    }

    /// The id of the one rollout, once it is recorded.
    pub async fn rollout_id(&self, c: &mut sqlx::PgConnection) -> String {
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
    pub async fn wait_ran(&self, c: &mut sqlx::PgConnection, n: i64) {
        let t0 = Instant::now();
        while count(c, "SELECT count(*) FROM public.ran").await < n {
            assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// No migration committed twice on any tenant.
pub async fn ran_once(c: &mut sqlx::PgConnection) {
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

pub fn said(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub trait CloseConn {
    async fn close_conn(self);
}

impl CloseConn for sqlx::PgConnection {
    async fn close_conn(self) {
        let _ = sqlx::Connection::close(self).await;
    }
}
