//! A kill inside a `-- no-transaction` migration is an ordinary event: the
//! process is SIGKILLed while PostgreSQL builds an index concurrently on a
//! table large enough to take seconds (the server finishes the build after
//! the client is gone); the next run finds the statement recorded as
//! running, sees the index VALID, counts it done and goes on. The rollout
//! completes with every version once, and nothing of fleetmig's is left in
//! the tenant. (It used to run the file again and fail the tenant for good:
//! `relation "ix_big_v" already exists`.)

mod common;

use std::time::{Duration, Instant};

use common::*;

fn set() -> tempfile::TempDir {
    migration_dir(&[
        (
            "0001_big.sql",
            "CREATE TABLE big (id bigint PRIMARY KEY, v bigint NOT NULL, pad text NOT NULL);\n\
             INSERT INTO big SELECT g, (g::bigint * 7919) % 1000003, repeat('x', 40) FROM generate_series(1, 800000) g;\n",
        ),
        (
            "0002_index.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY ix_big_v ON big (v, pad);\n\
             CREATE INDEX CONCURRENTLY ix_big_pad ON big (pad, v);\n",
        ),
        ("0003_after.sql", "CREATE TABLE after_index (x int);\n"),
    ])
}

/// Waits until a backend runs `CREATE INDEX CONCURRENTLY ix_big_v`.
async fn building(db: &PgDb) {
    let mut c = db.conn().await;
    let t0 = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE '%CREATE INDEX CONCURRENTLY ix_big_v%' AND state = 'active' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        if n > 0 {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the index build never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the client goes away during the build.
#[derive(Clone, Copy)]
enum Kill {
    /// SIGKILL while the server builds: the server may give up the build
    /// (an INVALID index, dropped and built again).
    During,
    /// SIGSTOP until the server finished the build (the index VALID), then
    /// SIGKILL: the statement took effect, and no history row says so.
    AfterTheServerFinished,
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

async fn killed_then_resumed(kill: Kill, expect: &[&str]) {
    let db = pg_database("cicresume").await;
    db.exec("CREATE SCHEMA tenant_a").await;
    let m = set();
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let args = [
        "sync",
        "--fleet",
        &fleet,
        "--migrations",
        m.path().to_str().unwrap(),
        "--progress-every",
        "0",
        "--state",
        "state.db",
    ];
    let mut child = fleetmig_process(dir.path()).args(args).spawn().unwrap();
    building(&db).await;
    if let Kill::AfterTheServerFinished = kill {
        unsafe { libc_kill(child.id() as i32, 19) }; // SIGSTOP
        let mut c = db.conn().await;
        let t0 = Instant::now();
        loop {
            let valid: Option<bool> = sqlx::query_scalar(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('tenant_a.ix_big_v')",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            if valid == Some(true) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "the build never finished"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    // the interrupted sync is resumed (its id in the state store)
    let mut s = sqlite(&dir.path().join("state.db")).await;
    let id: String = sqlx::query_scalar("SELECT id FROM fleetmig_rollouts")
        .fetch_one(&mut s)
        .await
        .unwrap();
    drop(s);
    let out = run_in(
        dir.path(),
        &[
            "resume",
            &id,
            "--fleet",
            &fleet,
            "--migrations",
            m.path().to_str().unwrap(),
            "--progress-every",
            "0",
            "--state",
            "state.db",
            "--log-level",
            "info",
        ],
    );
    expect_exit(&out, 0);
    // the statement the kill left running was decided, not run blindly
    let log = stderr(&out);
    assert!(expect.iter().any(|e| log.contains(e)), "{log}");
    let mut c = db.conn().await;
    assert_eq!(
        pg_history(&mut c, "tenant_a").await,
        vec![(1, true), (2, true), (3, true)]
    );
    let valid: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'tenant_a' AND c.relname LIKE 'ix_big%' ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(
        valid,
        vec![
            ("ix_big_pad".to_string(), true),
            ("ix_big_v".to_string(), true)
        ]
    );
    let gone: bool =
        sqlx::query_scalar("SELECT to_regclass('tenant_a._fleetmig_statements') IS NULL")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert!(
        gone,
        "the statements of an applied version are forgotten, and their table"
    );
    drop(c);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_during_a_concurrent_index_build_resumes_and_completes() {
    // the server gives the build up, or finishes it: either is decided
    killed_then_resumed(
        Kill::During,
        &[
            "dropping the INVALID index an interrupted attempt left",
            "an interrupted attempt's statement had taken effect",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_the_server_finished_after_the_kill_counts_as_done() {
    killed_then_resumed(
        Kill::AfterTheServerFinished,
        &["an interrupted attempt's statement had taken effect"],
    )
    .await;
}

/// The same through the PostgreSQL state store: the worker building the
/// index is SIGKILLed; another worker takes the tenant over once the dead
/// one's lease lapses, decides the statement in flight, and completes the
/// rollout.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_during_a_concurrent_index_build_is_taken_over() {
    let db = pg_database("cicworker").await;
    db.exec("CREATE SCHEMA tenant_a").await;
    let m = set();
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let common = [
        "--state",
        db.url.as_str(),
        "--lease",
        "2s",
        "--progress-every",
        "0",
        "--log-level",
        "info",
    ];
    let mut first = fleetmig_process(dir.path())
        .args(["rollout", "--fleet", &fleet, "--migrations"])
        .arg(m.path())
        .args(common)
        .spawn()
        .unwrap();
    building(&db).await;
    first.kill().unwrap(); // SIGKILL
    let _ = first.wait();
    let mut c = db.conn().await;
    let id: String = sqlx::query_scalar("SELECT id FROM fleetmig_rollouts")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let out = run_in(
        dir.path(),
        &[
            &["worker", "--rollout", &id, "--fleet", &fleet][..],
            &common[..],
        ]
        .concat(),
    );
    expect_exit(&out, 0);
    let log = stderr(&out);
    assert!(
        log.contains("dropping the INVALID index an interrupted attempt left")
            || log.contains("an interrupted attempt's statement had taken effect"),
        "{log}"
    );
    assert_eq!(
        pg_history(&mut c, "tenant_a").await,
        vec![(1, true), (2, true), (3, true)]
    );
    let runs: Vec<(String, String)> =
        sqlx::query_as("SELECT tenant, status FROM fleetmig_tenant_runs")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(
        runs,
        vec![("tenant_a".to_string(), "succeeded".to_string())]
    );
    let invalid: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'tenant_a' AND NOT i.indisvalid",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(invalid, 0);
    drop(c);
    db.drop_now().await;
}

/// A file of concurrent indexes only keeps no record of its statements: the
/// catalogue is the record. A unique index whose build fails on duplicates
/// leaves its INVALID index behind (a real stopped build, as a lost
/// connection leaves one): `baseline` refuses to record the version as
/// applied, naming it; once the data is fixed, `sync` drops the INVALID
/// index, builds it again and records the version, and nothing of
/// fleetmig's is left in the tenant.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_concurrent_build_is_found_by_its_invalid_index() {
    let db = pg_database("cicinvalid").await;
    db.exec("CREATE SCHEMA tenant_a").await;
    let m = migration_dir(&[
        (
            "0001_t.sql",
            "CREATE TABLE t (x int);\nINSERT INTO t VALUES (1), (1), (2);\n",
        ),
        (
            "0002_unique.sql",
            "-- no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY t_x ON t (x);\n",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let run = |cmd: &str, extra: &[&str]| {
        let mut args = vec![cmd, "--fleet", &fleet, "--migrations"];
        args.push(m.path().to_str().unwrap());
        args.extend(extra);
        run_in(dir.path(), &args)
    };
    let sync = ["--progress-every", "0", "--log-level", "info"];
    let out = run("sync", &[&sync[..], &["--max-attempts", "1"]].concat());
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut c = db.conn().await;
    let index = async |c: &mut sqlx::PgConnection| -> Option<bool> {
        sqlx::query_scalar(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('tenant_a.t_x')",
        )
        .fetch_optional(c)
        .await
        .unwrap()
    };
    assert_eq!(index(&mut c).await, Some(false), "the failed build left it");
    assert_eq!(pg_history(&mut c, "tenant_a").await, vec![(1, true)]);
    let recorded: bool =
        sqlx::query_scalar("SELECT to_regclass('tenant_a._fleetmig_statements') IS NOT NULL")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert!(
        !recorded,
        "concurrent indexes are recorded by the catalogue"
    );

    let out = run("baseline", &["--version", "2"]);
    assert_ne!(out.status.code(), Some(0));
    let all = stdout(&out) + &stderr(&out);
    assert!(
        all.contains("migration 2 was interrupted part-way"),
        "{all}"
    );
    assert_eq!(pg_history(&mut c, "tenant_a").await, vec![(1, true)]);

    db.exec(
        "UPDATE tenant_a.t SET x = 3 WHERE ctid = (SELECT min(ctid) FROM tenant_a.t WHERE x = 1)",
    )
    .await;
    let out = run("sync", &sync);
    expect_exit(&out, 0);
    let log = stderr(&out);
    assert!(
        log.contains("dropping the INVALID index an interrupted attempt left"),
        "{log}"
    );
    assert_eq!(
        pg_history(&mut c, "tenant_a").await,
        vec![(1, true), (2, true)]
    );
    assert_eq!(index(&mut c).await, Some(true));
    drop(c);
    db.drop_now().await;
}
