//! The edges an operator hits (issue 10), around the process itself: the
//! state store named wrongly, logs, a closed or full stdout, a server that
//! never answers, signals, a reports folder that cannot be written, pausing
//! and aborting a rollout another process runs, and rollouts that remember
//! their fleet.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use sqlx::{ConnectOptions, Connection};

/// `--state` in any case of `postgres://` is PostgreSQL; a look-alike is an
/// error with the password redacted and nothing created; a file holding
/// another application's tables is refused; `history` on a missing file says
/// so and creates nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_state_store_is_what_it_says_or_refused() {
    let db = pg_database("stateurl").await;
    let dir = sqlite_fleet(2);
    let upper = db.url.replacen("postgres://", "POSTGRES://", 1);
    let out = sync(dir.path(), &demo_migrations(), &["--state", &upper]);
    expect_exit(&out, 0);
    let mut c = db.conn().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM fleetmig_rollouts")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 1, "the rollout is in PostgreSQL");
    c.close().await.unwrap();
    assert!(!dir.path().join("POSTGRES:").exists());

    let typo = format!("postgres:/fleetmig:{TEST_PASSWORD}@127.0.0.1:5432/x");
    let out = sync(dir.path(), &demo_migrations(), &["--state", &typo]);
    expect_exit(&out, 2);
    let printed = stdout(&out) + &stderr(&out);
    assert!(printed.contains("--state"), "{printed}");
    assert!(!printed.contains(TEST_PASSWORD), "{printed}");
    assert!(
        !dir.path().join("postgres:").exists(),
        "a folder named after the URL"
    );

    let foreign = dir.path().join("app.db");
    let mut app = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&foreign)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE users (id INTEGER)")
        .execute(&mut app)
        .await
        .unwrap();
    app.close().await.unwrap();
    let out = sync(
        dir.path(),
        &demo_migrations(),
        &["--state", foreign.to_str().unwrap()],
    );
    expect_exit(&out, 3);
    assert!(
        stderr(&out).contains("not fleetmig's (users)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(sqlite_tables(&foreign).await, vec!["users"]);

    let missing = dir.path().join("nowhere/state.db");
    let out = run_in(
        dir.path(),
        &["history", "--state", missing.to_str().unwrap(), "--json"],
    );
    expect_exit(&out, 0);
    assert_eq!(stdout(&out).trim(), "[]");
    assert!(
        stderr(&out).contains("no state store at"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("nowhere").exists(), "history created it");
    db.drop_now().await;
}

/// sqlx's chatter stays out by default; asked for, it is redacted and,
/// off a terminal, has no colour codes.
#[tokio::test(flavor = "multi_thread")]
async fn logs_are_quiet_redacted_and_plain_off_a_terminal() {
    let db = pg_database("logs").await;
    db.exec("CREATE SCHEMA tenant_a;").await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}&sslpassword=hunter2", db.url);
    let status = |env: Option<(&str, &str)>| {
        let mut c = fleetmig();
        c.current_dir(dir.path())
            .args(["status", "--fleet", &fleet, "--migrations"])
            .arg(demo_migrations());
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = status(None);
    expect_exit(&out, 0);
    assert!(!stderr(&out).contains("unrecognized"), "{}", stderr(&out));
    let out = status(Some(("RUST_LOG", "sqlx=warn")));
    let err = stderr(&out);
    assert!(
        err.contains("ignoring unrecognized connect parameter"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "colour codes off a terminal: {err:?}"
    );
    db.drop_now().await;
}

/// `status | head -1` ends quietly; stdout on a full disk is an error naming
/// stdout; neither panics.
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_pipe_ends_quietly_and_a_full_disk_is_an_error() {
    // more output than a pipe buffers, so the writer meets the closed end
    let dir = sqlite_fleet(1500);
    let args = |cmd: &str| {
        vec![
            cmd.to_string(),
            "--fleet".into(),
            "sqlite-dir:tenants".into(),
            "--migrations".into(),
            demo_migrations().display().to_string(),
        ]
    };
    let mut child = fleetmig_process(dir.path())
        .args(args("status"))
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // the reader is dropped here: the pipe is closed
    let out = child.wait_with_output().unwrap();
    assert!(first.starts_with("tenant"), "{first}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");

    for cmd in ["status", "plan", "lint"] {
        let mut a = args(cmd);
        if cmd == "lint" {
            a = vec!["lint".into(), "--migrations".into(), a[4].clone()];
        }
        let out = fleetmig_process(dir.path())
            .args(&a)
            .stdout(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .unwrap(),
            )
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(3), "{cmd}: {err}");
        assert!(
            err.contains("stdout: No space left on device"),
            "{cmd}: {err}"
        );
        assert!(!err.contains("panicked"), "{cmd}: {err}");
    }
}

/// A server that accepts connections and never answers: discovery and the
/// state store give up after `--connect-timeout`; a signal ends a process
/// that is still waiting.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_times_out_and_a_signal_ends_the_wait() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        // accept and hold every connection, never writing a byte
        let mut open = Vec::new();
        for c in silent.incoming().take(8).flatten() {
            open.push(c);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let url = format!("postgres://fleetmig:{TEST_PASSWORD}@127.0.0.1:{port}/db");
    let dir = sqlite_fleet(1);
    for args in [
        vec![
            "status".to_string(),
            "--fleet".into(),
            format!("postgres-schemas:{url}"),
        ],
        vec![
            "sync".into(),
            "--fleet".into(),
            "sqlite-dir:tenants".into(),
            "--state".into(),
            url.clone(),
        ],
    ] {
        let t0 = Instant::now();
        let out = fleetmig()
            .current_dir(dir.path())
            .args(&args)
            .args(["--connect-timeout", "1s", "--migrations"])
            .arg(demo_migrations())
            .timeout(Duration::from_secs(20))
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains("timed out"), "{args:?}: {err}");
        assert!(!err.contains(TEST_PASSWORD), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    }
    let mut child = fleetmig_process(dir.path())
        .args(["status", "--connect-timeout", "60s", "--fleet"])
        .arg(format!("postgres-schemas:{url}"))
        .arg("--migrations")
        .arg(demo_migrations())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t0 = Instant::now();
    unsafe { libc_kill(child.id() as i32, 15) };
    let status = child.wait().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "SIGTERM did not end it"
    );
    assert_eq!(status.code(), Some(130));
    drop(held);
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A `--reports` folder that cannot be written is found before any tenant
/// is touched.
#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_reports_folder_is_refused_before_work() {
    let dir = sqlite_fleet(2);
    std::fs::write(dir.path().join("not-a-folder"), b"x").unwrap();
    let out = sync(
        dir.path(),
        &demo_migrations(),
        &["--reports", "not-a-folder/reports"],
    );
    expect_exit(&out, 3);
    assert!(stderr(&out).contains("not-a-folder"), "{}", stderr(&out));
    for i in 0..2 {
        assert!(
            sqlite_history(&tenant_path(dir.path(), &format!("t{i:04}")))
                .await
                .is_empty(),
            "a tenant was migrated"
        );
    }
}

/// Slow migrations, so that a rollout is still running when it is paused or
/// aborted from another process.
fn slow_set() -> tempfile::TempDir {
    let slow = "CREATE TABLE w (x INTEGER);\n\
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000) \
        INSERT INTO w SELECT x FROM c;\n";
    migration_dir(&[("0001_slow.sql", slow)])
}

/// `fleetmig abort` (and `pause`) while another process runs the rollout
/// reach it through the state store: it starts no new tenant, the rollout
/// ends aborted (paused), and the command returns once the holder stopped.
#[tokio::test(flavor = "multi_thread")]
async fn abort_and_pause_reach_the_running_process() {
    for (cmd, ends) in [("abort", "aborted"), ("pause", "paused")] {
        let dir = tempfile::tempdir().unwrap();
        registry_fleet(dir.path(), 80, 0);
        let m = slow_set();
        let child = fleetmig_process(dir.path())
            .args([
                "rollout",
                "--fleet",
                "registry:fleet.csv",
                "--concurrency",
                "2",
                "--lease",
                "2s",
                "--progress-every",
                "0",
                "--migrations",
            ])
            .arg(m.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // wait until some tenants are done
        let state = dir.path().join(".fleetmig/state.db");
        let t0 = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if state.exists() {
                let mut c = sqlite(&state).await;
                let done: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM fleetmig_tenant_runs WHERE status = 'succeeded'",
                )
                .fetch_one(&mut c)
                .await
                .unwrap_or(0);
                c.close().await.unwrap();
                if done >= 2 {
                    break;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the rollout never got going"
            );
        }
        let out = run_in(dir.path(), &[cmd, "--state", ".fleetmig/state.db"]);
        assert_eq!(out.status.code(), Some(0), "{cmd}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("waiting for it to stop"),
            "{}",
            stderr(&out)
        );
        let holder = child.wait_with_output().unwrap();
        let s = summary(&report_dir(dir.path(), &out));
        assert_eq!(s["status"], ends, "{s}");
        // nothing ran after the holder stopped: every tenant is either done
        // with its history, or untouched
        let rows = csv_rows(&report_dir(dir.path(), &out));
        let mut untouched = 0;
        for (id, row) in &rows {
            let history = sqlite_history(&registry_tenant(dir.path(), id)).await;
            match row["status"].as_str() {
                "succeeded" => assert_eq!(history.len(), 1, "{id}"),
                "skipped" if cmd == "abort" => {
                    assert!(history.is_empty(), "{id} ran after the stop");
                    untouched += 1;
                }
                "pending" | "not_started" if cmd == "pause" => {
                    assert!(history.is_empty(), "{id} ran after the stop");
                    untouched += 1;
                }
                other => panic!("{cmd}: {id}: {other}"),
            }
        }
        assert!(untouched > 0, "{cmd} came too late to matter");
        assert_eq!(
            holder.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&holder.stderr)
        );
    }
}

/// A rollout remembers its fleet, migration folder and report folder:
/// `resume` with only `--state`, from another folder, finishes it; a
/// `--fleet` that differs from the record is an error naming both.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_resumes_from_its_record_alone() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 6, 0);
    let m = demo_migrations();
    let out = run_in(
        dir.path(),
        &[
            "rollout",
            "--fleet",
            "registry:fleet.csv",
            "--progress-every",
            "0",
            "--waves",
            "first=2,rest",
            "--pause-after",
            "first",
            "--migrations",
            m.to_str().unwrap(),
        ],
    );
    let id = summary(&report_dir(dir.path(), &out))["rollout_id"]
        .as_str()
        .unwrap()
        .to_string();
    let elsewhere = tempfile::tempdir().unwrap();
    let state = dir.path().join(".fleetmig/state.db");
    let state = state.to_str().unwrap();
    let out = run_in(
        elsewhere.path(),
        &[
            "resume",
            &id,
            "--state",
            state,
            "--fleet",
            "sqlite-dir:somewhere-else",
        ],
    );
    expect_exit(&out, 2);
    assert!(
        stderr(&out).contains("is not the fleet of rollout") && stderr(&out).contains("fleet.csv"),
        "{}",
        stderr(&out)
    );
    let out = run_in(
        elsewhere.path(),
        &["status", "--rollout", &id, "--state", state],
    );
    assert_eq!(out.status.code(), Some(1), "paused: {}", stderr(&out));
    let out = run_in(
        elsewhere.path(),
        &["resume", "--state", state, "--progress-every", "0"],
    );
    expect_exit(&out, 0);
    let report = report_dir(elsewhere.path(), &out);
    assert!(report.starts_with(dir.path().join("reports")), "{report:?}");
    assert_eq!(summary(&report)["status"], "completed");
    for i in 0..6 {
        assert_eq!(
            sqlite_history(&registry_tenant(dir.path(), &format!("t{i:04}")))
                .await
                .len(),
            DEMO_REACHED as usize
        );
    }
    let out = run_in(elsewhere.path(), &["report", &id, "--state", state]);
    expect_exit(&out, 0);
    assert!(!elsewhere.path().join("reports").exists());
}

/// A signal while the tenants at head are read ahead (before the rollout
/// is recorded) stops the command with nothing written: no rollout is
/// left behind (a paused one would never be taken over by the next sync).
/// 40,000 tenants (hard links of one migrated file) take seconds to read in
/// this build; the signal goes once the progress shows the read under way.
#[tokio::test(flavor = "multi_thread")]
async fn a_signal_during_the_read_ahead_records_nothing() {
    let dir = sqlite_fleet(1);
    let m = demo_migrations();
    let sync = [
        "sync",
        "--fleet",
        "sqlite-dir:tenants",
        "--migrations",
        m.to_str().unwrap(),
    ];
    expect_exit(&run_in(dir.path(), &sync), 0);
    let one = dir.path().join("tenants/t0000.db");
    for i in 1..40_000 {
        std::fs::hard_link(&one, dir.path().join(format!("tenants/t{i:05}.db"))).unwrap();
    }
    std::fs::rename(&one, dir.path().join("tenants/t00000.db")).unwrap();
    let store = dir.path().join(".fleetmig/state.db");
    let rollouts = || {
        let c = std::process::Command::new("sqlite3")
            .arg(&store)
            .arg("SELECT count(*) FROM fleetmig_rollouts")
            .output()
            .unwrap();
        String::from_utf8_lossy(&c.stdout).trim().to_string()
    };
    assert_eq!(rollouts(), "1");
    let mut child = fleetmig_process(dir.path())
        .args([
            "sync",
            "--fleet",
            "sqlite-dir:tenants",
            "--progress-every",
            "1",
            "--migrations",
        ])
        .arg(demo_migrations())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "ended before reading: {seen}"
        );
        seen.push_str(&line);
        if line.contains("/40000 done") {
            break;
        }
    }
    assert!(
        !seen.contains("40000/40000"),
        "read it all before the signal: {seen}"
    );
    unsafe { libc_kill(child.id() as i32, 15) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(
        rest.contains("before the rollout was recorded: nothing was written"),
        "{rest}"
    );
    assert_eq!(rollouts(), "1", "no rollout recorded");
}
