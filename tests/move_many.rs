//! `fleetmig move --select`: many tenants of a registry fleet moved as one
//! rollout. Twenty SQLite tenants consolidated into schemas of one
//! PostgreSQL database, the process SIGKILLed midway and the rollout
//! resumed: every tenant moved once, every row of every tenant compared with
//! its source, the registry switched row by row, refusals before anything.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sqlx::Connection;

const TENANTS: usize = 20;
const ROWS: usize = 20_000;

fn set() -> tempfile::TempDir {
    migration_dir(&[(
        "0001_items.sql",
        "CREATE TABLE items (id BIGINT PRIMARY KEY, owner VARCHAR(100) NOT NULL, qty BIGINT NOT NULL, note TEXT);",
    )])
}

/// A registry of `TENANTS` SQLite tenants at the set's head, each holding
/// `ROWS` rows of its own (quotes, non-ASCII text, NULLs among them).
async fn fleet(dir: &std::path::Path, m: &std::path::Path) {
    registry_fleet(dir, TENANTS, 0);
    let mut csv = std::fs::read_to_string(dir.join("fleet.csv")).unwrap();
    csv.insert_str(csv.find('\n').unwrap() + 1, "# the shop fleet, by hand\n\n");
    std::fs::write(dir.join("fleet.csv"), csv).unwrap();
    let out = sync_fleet(dir, "registry:fleet.csv", m, &[]);
    expect_exit(&out, 0);
    for i in 0..TENANTS {
        let id = format!("t{i:04}");
        let mut c = sqlite(&registry_tenant(dir, &id)).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {ROWS}) \
             INSERT INTO items SELECT x, '{id}''s ' || (x % 97), x * {} - 5000, \
             CASE WHEN x % 5 = 0 THEN NULL ELSE 'née ' || x || ' ✓' END FROM n",
            i + 1
        )))
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
    }
}

type Row = (i64, String, i64, Option<String>);

async fn source_rows(dir: &std::path::Path, id: &str) -> Vec<Row> {
    let mut c = sqlite(&registry_tenant(dir, id)).await;
    let rows = sqlx::query_as("SELECT id, owner, qty, note FROM items ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    rows
}

async fn target_rows(c: &mut sqlx::PgConnection, schema: &str) -> Vec<Row> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, owner, qty, note FROM \"{schema}\".items ORDER BY id"
    )))
    .fetch_all(c)
    .await
    .unwrap()
}

fn moved(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("fleet.csv"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("postgres://"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_sqlite_tenants_into_schemas_through_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let m = set();
    let m = m.path().to_str().unwrap();
    fleet(dir, m.as_ref()).await;
    let db = pg_database("many").await;
    let args = [
        "move",
        "--fleet",
        "registry:fleet.csv",
        "--migrations",
        m,
        "--select",
        "tag:tier=free",
        "--to",
        &db.url,
        "--schema",
        "{tenant}",
        "--concurrency",
        "2",
        "--progress-every",
        "0",
    ];
    let mut first = fleetmig_process(dir).args(args).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while moved(dir) < 4 {
        assert!(Instant::now() < deadline, "no tenant moved in two minutes");
        assert!(first.try_wait().unwrap().is_none(), "the move ended early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap();
    let _ = first.wait();
    let at_kill = moved(dir);
    assert!(
        at_kill < TENANTS,
        "killed after every tenant had moved: no kill midway"
    );

    // the store keeps the target without its password: a resume needs it
    let h = run_in(dir, &["history", "--json"]);
    assert!(!stdout(&h).contains(TEST_PASSWORD), "{}", stdout(&h));
    let out = run_in(dir, &["resume", "--progress-every", "0"]);
    expect_exit(&out, 2);
    assert!(stderr(&out).contains("pass --to"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(TEST_PASSWORD), "{}", stderr(&out));
    let out = run_in(dir, &["resume", "--progress-every", "0", "--to", &db.url]);
    expect_exit(&out, 0);
    let report = report_dir(dir, &out);
    let s = summary(&report);
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["totals"]["succeeded"], TENANTS, "{s}");

    // every row of every tenant, against its source (kept: no --drop-source)
    let mut c = pg_connect(&db.url).await;
    for i in 0..TENANTS {
        let id = format!("t{i:04}");
        let want = source_rows(dir, &id).await;
        assert_eq!(want.len(), ROWS);
        assert_eq!(target_rows(&mut c, &id).await, want, "{id}");
        let marks: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '{id}' AND tablename LIKE '%fleetmig_move%'"
        )))
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(marks, 0, "{id}: the move's mark is gone once it is done");
    }
    c.close().await.unwrap();

    // the registry: every row switched, every other byte as written
    let csv = std::fs::read_to_string(dir.join("fleet.csv")).unwrap();
    assert!(
        csv.contains("id,url,schema,tags\n# the shop fleet, by hand\n\n"),
        "{csv}"
    );
    for i in 0..TENANTS {
        let id = format!("t{i:04}");
        assert!(
            csv.contains(&format!("{id},{},{id},tier=free\n", db.url)),
            "{id}: {csv}"
        );
    }
    // the report: one row per tenant, verified, with its rows
    let moves = std::fs::read_to_string(report.join("moves.csv")).unwrap();
    let verified = moves.lines().filter(|l| l.contains(",done,yes,")).count();
    assert_eq!(verified, TENANTS, "{moves}");
    assert!(moves.contains(&format!(",{ROWS},")), "{moves}");
    // rows, bytes and time per tenant: every tenant carried the same shape
    let mut lines = moves.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let bytes: u64 = cells[col("bytes")].parse().unwrap();
        // 20,000 rows of an id, a name, a number and (four in five) a note
        assert!(bytes > 20_000 * 20, "{line}");
        assert!(cells[col("duration_ms")].parse::<u64>().is_ok(), "{line}");
    }
    let md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(md.contains("## Moves"), "{md}");
    // a second run has nothing left to move: each tenant is at its target
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_move_is_refused_before_anything_when_it_cannot_be_done() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let m = set();
    let m = m.path().to_str().unwrap();
    registry_fleet(dir, 3, 0);
    let out = sync_fleet(dir, "registry:fleet.csv", m.as_ref(), &[]);
    expect_exit(&out, 0);
    let before = std::fs::read_to_string(dir.join("fleet.csv")).unwrap();
    let base = pg_base_url();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // one place for every tenant
        (
            vec![
                "--fleet",
                "registry:fleet.csv",
                "--to",
                &base,
                "--schema",
                "same",
            ],
            "{tenant}",
        ),
        // a discovered fleet would find the old copies
        (
            vec![
                "--fleet",
                "sqlite-dir:db",
                "--to",
                &base,
                "--schema",
                "{tenant}",
            ],
            "registry fleet",
        ),
        // a selector that takes nobody
        (
            vec![
                "--fleet",
                "registry:fleet.csv",
                "--to",
                &base,
                "--schema",
                "{tenant}",
                "--select",
                "tag:nope",
            ],
            "no tenant",
        ),
        // one selector, not waves
        (
            vec![
                "--fleet",
                "registry:fleet.csv",
                "--to",
                &base,
                "--schema",
                "{tenant}",
                "--select",
                "1,rest",
            ],
            "one selector",
        ),
    ];
    for (extra, said) in cases {
        let mut a = vec!["move", "--migrations", m, "--progress-every", "0"];
        if !extra.contains(&"--select") {
            a.extend(["--select", "tag:tier=free"]);
        }
        a.extend(extra.iter().copied());
        let out = run_in(dir, &a);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{a:?}: {}{err}", stdout(&out));
        assert!(err.contains(said), "{a:?}: {err}");
        assert!(!err.contains(TEST_PASSWORD), "{err}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("fleet.csv")).unwrap(),
        before
    );
    // refused before a rollout was recorded (the sync's is the only one)
    let out = run_in(dir, &["history", "--fleet", "registry:fleet.csv", "--json"]);
    expect_exit(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let commands: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rollout"]["command"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(commands, ["sync"], "{v}");
}

/// A tenant whose lock another process holds (a stalled worker) is moved
/// once that process lets go: the stall slows the rollout, it does not fail
/// the tenant.
#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_move_waits_out_a_tenant_another_process_holds() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let m = set();
    let db = pg_database("mvheld").await;
    std::fs::write(
        dir.join("fleet.csv"),
        format!("id,url,schema,tags\nheld,{},,\n", db.url),
    )
    .unwrap();
    let out = sync_fleet(dir, "registry:fleet.csv", m.path(), &[]);
    expect_exit(&out, 0);
    db.exec("INSERT INTO items VALUES (1, 'a', 2, NULL), (2, 'b''s', 3, 'née')")
        .await;
    // another process holds the tenant's lock (a database tenant's key)
    let mut holder = db.conn().await;
    sqlx::query(
        "SELECT pg_advisory_lock(hashtextextended('fleetmig:' || current_database() || '/' || '', 0))",
    )
    .execute(&mut holder)
    .await
    .unwrap();
    let mut child = fleetmig_process(dir)
        .args([
            "move",
            "--fleet",
            "registry:fleet.csv",
            "--select",
            "ids:held",
        ])
        .arg("--migrations")
        .arg(m.path())
        .args(["--to", "sqlite:{tenant}.db", "--lock-timeout", "300ms"])
        .args(["--progress-every", "0", "--log-level", "info"])
        .spawn()
        .unwrap();
    // once the move has met the lock and waits to try again, let go
    let stderr = child.stderr.take().unwrap();
    let (met, told) = std::sync::mpsc::channel();
    let said = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("trying again") {
                let _ = met.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let waited = told.recv_timeout(Duration::from_secs(60));
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = said.join().unwrap();
    assert!(waited.is_ok(), "the move never met the held lock: {said}");
    assert_eq!(out.status.code(), Some(0), "{said}");
    let mut moved = sqlite(&dir.join("held.db")).await;
    let rows: Vec<(i64, String, i64, Option<String>)> =
        sqlx::query_as("SELECT id, owner, qty, note FROM items ORDER BY id")
            .fetch_all(&mut moved)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            (1, "a".into(), 2, None),
            (2, "b's".into(), 3, Some("née".into()))
        ]
    );
    let registry = std::fs::read_to_string(dir.join("fleet.csv")).unwrap();
    assert!(registry.contains("held.db"), "{registry}");
    holder.close().await.unwrap();
    db.drop_now().await;
}
