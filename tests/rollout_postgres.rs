//! Waved rollouts on a PostgreSQL fleet, with the state store in PostgreSQL
//! too (a shared control plane): canary halt, gate SQL per schema, retry and
//! resume, and the SIGKILL loop.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use rand::RngExt;
use sqlx::Connection;

async fn fleet(db: &PgDb, n: usize) {
    let sql: String = (0..n)
        .map(|i| format!("CREATE SCHEMA tenant_{i:03};"))
        .collect();
    db.exec(&sql).await;
}

/// A registry over the schemas, the first `canaries` tagged canary.
fn registry(dir: &std::path::Path, db: &PgDb, n: usize, canaries: usize) {
    let mut csv = String::from("id,url,schema,tags\n");
    for i in 0..n {
        let tags = if i < canaries { "canary" } else { "" };
        csv.push_str(&format!("t{i:03},{},tenant_{i:03},{tags}\n", db.url));
    }
    std::fs::write(dir.join("fleet.csv"), csv).unwrap();
}

fn state_url(db: &PgDb) -> String {
    db.url.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_halts_gate_sql_catches_bad_data_and_retry_then_resume_finishes() {
    let db = pg_database("rollout").await;
    fleet(&db, 12).await;
    db.exec("CREATE TABLE tenant_001.invoices (legacy text); CREATE TABLE tenant_007.flag (bad int); INSERT INTO tenant_007.flag VALUES (1);")
        .await;
    let dir = tempfile::tempdir().unwrap();
    registry(dir.path(), &db, 12, 2);
    let m = demo_migrations();
    let state = state_url(&db);
    let base = |cmd: &str| -> Vec<String> {
        vec![
            cmd.into(),
            "--fleet".into(),
            "registry:fleet.csv".into(),
            "--state".into(),
            state.clone(),
            "--migrations".into(),
            m.to_str().unwrap().into(),
        ]
    };
    let mut args = base("rollout");
    args.extend(
        [
            "--progress-every",
            "0",
            "--waves",
            "canary=tag:canary,rest",
            "--gate-max-failures",
            "0",
        ]
        .map(String::from),
    );
    let out = fleetmig()
        .current_dir(dir.path())
        .args(&args)
        .output()
        .unwrap();
    expect_exit(&out, 1);
    let report = report_dir(dir.path(), &out);
    let s = summary(&report);
    assert_eq!(s["status"], "halted", "{s}");
    let id = s["rollout_id"].as_str().unwrap().to_string();
    let mut c = db.conn().await;
    assert_eq!(
        pg_history(&mut c, "tenant_000").await.len(),
        DEMO_REACHED as usize
    );
    assert!(
        pg_history(&mut c, "tenant_005").await.is_empty(),
        "later waves untouched"
    );
    assert!(!everything_printed(&dir.path().join("reports"), &out).contains(TEST_PASSWORD));

    // fix the canary, retry it, then resume with a gate query that catches tenant_007
    db.exec("DROP TABLE tenant_001.invoices;").await;
    let mut args = base("retry");
    args.extend(
        [
            "--tenant",
            "t001",
            "--rollout",
            &id,
            "--progress-every",
            "0",
        ]
        .map(String::from),
    );
    let out = fleetmig()
        .current_dir(dir.path())
        .args(&args)
        .output()
        .unwrap();
    expect_exit(&out, 0);
    assert_eq!(
        pg_history(&mut c, "tenant_001").await.len(),
        DEMO_REACHED as usize
    );

    // the gate query is frozen with the rollout, so start a fresh one for the gate
    let mut args = base("resume");
    args.extend(["--progress-every", "0"].map(String::from));
    let out = fleetmig()
        .current_dir(dir.path())
        .args(&args)
        .output()
        .unwrap();
    expect_exit(&out, 0);
    assert_eq!(
        summary(&report_dir(dir.path(), &out))["status"],
        "completed"
    );
    for i in 0..12 {
        assert_eq!(
            pg_history(&mut c, &format!("tenant_{i:03}")).await.len(),
            DEMO_REACHED as usize
        );
    }

    // gate SQL runs in each tenant's own schema
    let m2 = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(demo_migrations()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), m2.path().join(e.file_name())).unwrap();
    }
    std::fs::write(m2.path().join("0010_x.sql"), "CREATE TABLE x (v int);").unwrap();
    std::fs::write(dir.path().join("gate.sql"), "SELECT count(*) = 0 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'flag'").unwrap();
    let out = fleetmig()
        .current_dir(dir.path())
        .args([
            "rollout",
            "--fleet",
            "registry:fleet.csv",
            "--state",
            &state,
            "--progress-every",
            "0",
            "--gate-sql",
            "gate.sql",
            "--migrations",
        ])
        .arg(m2.path())
        .output()
        .unwrap();
    expect_exit(&out, 1);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    assert!(
        rows["t007"]["gate_error"].contains("false"),
        "{:?}",
        rows["t007"]
    );
    assert!(rows["t006"]["gate_error"].is_empty());
    let h = fleetmig()
        .current_dir(dir.path())
        .args([
            "history",
            "--json",
            "--fleet",
            "registry:fleet.csv",
            "--state",
            &state,
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        2,
        "both rollouts are in the PostgreSQL state store"
    );
    c.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_loop_on_a_postgres_fleet_applies_everything_exactly_once() {
    let db = pg_database("kill").await;
    fleet(&db, 40).await;
    let dir = tempfile::tempdir().unwrap();
    registry(dir.path(), &db, 40, 2);
    let m = migration_dir(&[
        (
            "0001_log.sql",
            "CREATE TABLE log (m text NOT NULL); INSERT INTO log VALUES ('1');",
        ),
        (
            "0002_a.sql",
            "SELECT pg_sleep(0.25); INSERT INTO log VALUES ('2');",
        ),
        (
            "0003_b.sql",
            "SELECT pg_sleep(0.25); INSERT INTO log VALUES ('3');",
        ),
    ]);
    let mpath = m.path().to_str().unwrap().to_string();
    let state = state_url(&db);
    let mut rng = rand::rng();
    let (mut kills, mut runs) = (0, 0);
    let history = || {
        let h = fleetmig()
            .current_dir(dir.path())
            .args([
                "history",
                "--json",
                "--fleet",
                "registry:fleet.csv",
                "--state",
                &state,
            ])
            .output()
            .unwrap();
        // no store yet (history never creates one): no rollout yet
        if h.status.code() == Some(3)
            && String::from_utf8_lossy(&h.stderr).contains("no state store here")
        {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
        v.as_array().and_then(|a| a.first().cloned())
    };
    while kills < 20 {
        runs += 1;
        assert!(runs < 80);
        let cmd: Vec<&str> = match history() {
            None => vec!["rollout", "--waves", "tag:canary,rest"],
            Some(r) if r["rollout"]["status"] != "completed" => vec!["resume"],
            Some(_) => break,
        };
        let mut child = fleetmig_process(dir.path())
            .args(&cmd)
            .args([
                "--fleet",
                "registry:fleet.csv",
                "--state",
                &state,
                "--progress-every",
                "0",
                "--concurrency",
                "4",
                "--migrations",
                &mpath,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(60..300)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(kills >= 20);
    let out = fleetmig()
        .current_dir(dir.path())
        .args([
            "resume",
            "--fleet",
            "registry:fleet.csv",
            "--state",
            &state,
            "--progress-every",
            "0",
            "--migrations",
            &mpath,
        ])
        .output()
        .unwrap();
    assert_eq!(
        history().unwrap()["rollout"]["status"],
        "completed",
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let mut c = db.conn().await;
    for i in 0..40 {
        let s = format!("tenant_{i:03}");
        assert_eq!(
            pg_history(&mut c, &s).await,
            vec![(1, true), (2, true), (3, true)],
            "{s}"
        );
        let log: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT m FROM \"{s}\".log ORDER BY m"
        )))
        .fetch_all(&mut c)
        .await
        .unwrap();
        assert_eq!(log, vec!["1", "2", "3"], "{s}: exactly once");
    }
    c.close().await.unwrap();
    db.drop_now().await;
}

/// The gate query of a 200-schema wave runs within the one fan-out: with
/// `--concurrency 4` (and pools allowed 32 connections by the config file),
/// fleetmig never has more than 4 + 2 connections open on the server, sampled
/// from `pg_stat_activity` while the gate queries run.
#[tokio::test(flavor = "multi_thread")]
async fn a_gate_over_a_big_wave_stays_within_the_concurrency() {
    let db = pg_database("gatefan").await;
    fleet(&db, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let m = migration_dir(&[("0001_t.sql", "CREATE TABLE t (id int);")]);
    std::fs::write(dir.path().join("fleetmig.toml"), "pool_size = 32\n").unwrap();
    // passes (no rows) after a short sleep on each tenant
    std::fs::write(
        dir.path().join("gate.sql"),
        "SELECT 1 WHERE (SELECT pg_sleep(0.03)::text) IS NULL",
    )
    .unwrap();
    let mut child = fleetmig_process(dir.path())
        .args([
            "rollout",
            "--fleet",
            &format!("postgres-schemas:{}", db.url),
            "--migrations",
            m.path().to_str().unwrap(),
            "--concurrency",
            "4",
            "--gate-sql",
            "gate.sql",
            "--progress-every",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut watch = db.conn().await;
    let (mut peak, mut gate_samples) = (0i64, 0);
    while child.try_wait().unwrap().is_none() {
        let (open, sleeping): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE query LIKE '%pg_sleep(0.03)%' AND state = 'active') \
             FROM pg_stat_activity WHERE application_name = 'fleetmig' AND datname = current_database()",
        )
        .fetch_one(&mut watch)
        .await
        .unwrap();
        peak = peak.max(open);
        gate_samples += (sleeping > 0) as usize;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        gate_samples >= 5,
        "the gate queries were sampled {gate_samples} times"
    );
    assert!(peak <= 6, "{peak} fleetmig connections were open at once");
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = '_sqlx_migrations'")
            .fetch_one(&mut watch)
            .await
            .unwrap();
    assert_eq!(applied, 200);
    watch.close().await.unwrap();
    db.drop_now().await;
}

/// The gate query runs on every succeeded tenant of the wave whatever the
/// state store's collation: with an ICU collation PostgreSQL sorts `ta`
/// before `tB` (letters first, case after), the byte order the other way,
/// and the gate's list of tenants used to be searched in the byte order,
/// missing some: a gate that silently skipped tenants.
#[tokio::test(flavor = "multi_thread")]
async fn the_gate_sees_every_tenant_whatever_the_stores_collation() {
    let base = pg_base_url();
    let name = format!("fm_icu_{:08x}", rand::random::<u32>());
    let mut admin = pg_connect(&base).await;
    sqlx::Executor::execute(
        &mut admin,
        sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )),
    )
    .await
    .unwrap();
    admin.close().await.unwrap();
    let db = PgDb {
        url: with_db(&base, &name),
        name,
    };
    let ids = ["tB", "ta", "tD", "tc", "tF", "te"];
    let mut c = db.conn().await;
    let sorted: Vec<String> =
        sqlx::query_scalar("SELECT id FROM unnest($1::text[]) AS u(id) ORDER BY id")
            .bind(ids.to_vec())
            .fetch_all(&mut c)
            .await
            .unwrap();
    let mut bytes: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    bytes.sort();
    assert_ne!(
        sorted, bytes,
        "the store's collation orders these ids as bytes do"
    );
    c.close().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("db")).unwrap();
    let mut csv = String::from("id,url,schema,tags\n");
    for id in ids {
        std::fs::write(dir.path().join(format!("db/{id}.db")), b"").unwrap();
        csv.push_str(&format!("{id},sqlite://db/{id}.db,,\n"));
    }
    std::fs::write(dir.path().join("fleet.csv"), csv).unwrap();
    // a gate that fails on every tenant: it must say so of all six
    std::fs::write(dir.path().join("gate.sql"), "SELECT 0").unwrap();
    let out = fleetmig()
        .current_dir(dir.path())
        .args([
            "rollout",
            "--fleet",
            "registry:fleet.csv",
            "--state",
            &db.url,
        ])
        .args([
            "--progress-every",
            "0",
            "--gate-sql",
            "gate.sql",
            "--migrations",
        ])
        .arg(demo_migrations())
        .output()
        .unwrap();
    expect_exit(&out, 1);
    let s = summary(&report_dir(dir.path(), &out));
    assert_eq!(s["status"], "halted", "{s}");
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.contains("gate_sql failed on 6 tenant(s)"),
        "{reason}"
    );
    let rows = csv_rows(&report_dir(dir.path(), &out));
    for id in ids {
        assert!(!rows[id]["gate_error"].is_empty(), "{id}: {:?}", rows[id]);
    }
    db.drop_now().await;
}
