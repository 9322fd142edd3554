//! Hostile and careless inputs (issue 18): each refused before anything
//! connects or is written, with a message that names what was wrong and
//! never prints a credential.

mod common;

use common::*;

const SECRET: &str = "Sup3r-Secret-Pw";

/// Malformed server URLs (one slash, none, an unencoded `@` in the
/// password) in a registry, a fleet and `--state`: refused (exit 2), the
/// password nowhere (output, reports, files left behind).
#[test]
fn malformed_urls_are_refused_before_any_connection_and_never_printed() {
    let m = migration_dir(&[("0001_t.sql", "CREATE TABLE t (id INTEGER PRIMARY KEY);")]);
    let urls = [
        format!("postgres:/fleetmig:{SECRET}@127.0.0.1/fleetmig_test"),
        format!("mysql:fleetmig:{SECRET}@127.0.0.1/mysql"),
        format!("postgres://fleetmig:{SECRET}@oops@127.0.0.1/fleetmig_test"),
    ];
    for url in &urls {
        // the registry (which holds the URL) lives apart from where
        // fleetmig runs, whose every file is read for the password
        let (dir, inputs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let registry = inputs.path().join("fleet.csv");
        std::fs::write(&registry, format!("id,url,schema,tags\nt1,{url},,\n")).unwrap();
        let fleet = format!("registry:{}", registry.display());
        let out = sync_fleet(dir.path(), &fleet, m.path(), &[]);
        expect_exit(&out, 2);
        assert!(
            stderr(&out).contains("fleet.csv:2"),
            "names the row: {}",
            stderr(&out)
        );
        let all = everything_printed(dir.path(), &out);
        assert!(!all.contains(SECRET), "{url}: {all}");

        let kind = if url.starts_with("mysql") {
            "mysql-databases"
        } else {
            "postgres-schemas"
        };
        let out = sync_fleet(dir.path(), &format!("{kind}:{url}"), m.path(), &[]);
        expect_exit(&out, 2);
        assert!(stderr(&out).contains("--fleet"), "{}", stderr(&out));
        let all = everything_printed(dir.path(), &out);
        assert!(!all.contains(SECRET), "{url}: {all}");

        let out = run_in(
            dir.path(),
            &["status", "--fleet", "sqlite-dir:x", "--state", url],
        );
        expect_exit(&out, 2);
        let all = everything_printed(dir.path(), &out);
        assert!(!all.contains(SECRET), "{url}: {all}");
        // nothing named after the URL was created
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(left.iter().all(|f| !f.contains("fleetmig")), "{left:?}");
    }
}

/// `--tenant-pattern '%'` takes no system schema (pg_*, information_schema,
/// public, fleetmig's scratch ones): only the tenants.
#[tokio::test(flavor = "multi_thread")]
async fn a_pattern_that_matches_everything_takes_no_system_schema() {
    let db = pg_database("sysschemas").await;
    db.exec("CREATE SCHEMA tenant_a; CREATE SCHEMA app_b; CREATE SCHEMA _fleetmig_scratch_x")
        .await;
    let m = migration_dir(&[("0001_t.sql", "CREATE TABLE t (x int);")]);
    let dir = tempfile::tempdir().unwrap();
    let out = sync_fleet(
        dir.path(),
        &format!("postgres-schemas:{}", db.url),
        m.path(),
        &["--tenant-pattern", "%"],
    );
    expect_exit(&out, 0);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let mut tenants: Vec<&String> = rows.keys().collect();
    tenants.sort();
    assert_eq!(tenants, vec!["app_b", "tenant_a"]);
    // `public` when named exactly
    let out = sync_fleet(
        dir.path(),
        &format!("postgres-schemas:{}", db.url),
        m.path(),
        &["--tenant-pattern", "public"],
    );
    expect_exit(&out, 0);
    assert!(csv_rows(&report_dir(dir.path(), &out)).contains_key("public"));
    db.drop_now().await;
}

/// A tenant query that returns NULL for an id is refused: no tenant named
/// NULL, nothing written for it.
#[test]
fn a_null_tenant_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("CREATE TABLE orgs (id TEXT); INSERT INTO orgs VALUES ('acme'), (NULL);")
        .status()
        .unwrap();
    let m = migration_dir(&[("0001_t.sql", "CREATE TABLE t (x int);")]);
    let out = sync_fleet(
        dir.path(),
        &format!("sqlite-rows:{}", db.display()),
        m.path(),
        &["--tenant-query", "SELECT id FROM orgs"],
    );
    expect_exit(&out, 3);
    assert!(
        stderr(&out).contains("returned NULL as the id of row 2"),
        "{}",
        stderr(&out)
    );
}

/// With neither `$USER` nor `$LOGNAME` (cron, a container), the operator
/// is this process's user, from its uid: never "unknown".
#[test]
fn the_operator_is_named_from_the_uid_without_user() {
    let dir = sqlite_fleet(1);
    let m = migration_dir(&[("0001_t.sql", "CREATE TABLE t (x int);")]);
    let out = fleetmig()
        .current_dir(dir.path())
        .env_remove("USER")
        .env_remove("LOGNAME")
        .args([
            "sync",
            "--fleet",
            "sqlite-dir:tenants",
            "--progress-every",
            "0",
        ])
        .arg("--migrations")
        .arg(m.path())
        .output()
        .unwrap();
    expect_exit(&out, 0);
    let s = summary(&report_dir(dir.path(), &out));
    let operator = s["operator"].as_str().unwrap_or("").to_string();
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    assert_eq!(operator, String::from_utf8_lossy(&me.stdout).trim(), "{s}");
}

/// `history`, `status --rollout` and `report` never create the state store
/// on PostgreSQL (they created nine tables in an application's database),
/// and work with a role that may only read it.
#[tokio::test(flavor = "multi_thread")]
async fn read_commands_create_nothing_and_work_with_a_read_only_role() {
    let app = pg_database("appdb").await;
    let dir = tempfile::tempdir().unwrap();
    for cmd in [
        vec!["history"],
        vec!["report", "x"],
        vec!["status", "--rollout", "x"],
    ] {
        let mut args: Vec<&str> = cmd.clone();
        args.extend(["--state", &app.url]);
        let out = run_in(dir.path(), &args);
        assert_ne!(
            out.status.code(),
            Some(0),
            "{cmd:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("no state store here"),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }
    let mut c = app.conn().await;
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'fleetmig%'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(n, 0, "a read command created tables");
    drop(c);

    // a store with one rollout in it, read by a role that may only read
    let store = pg_database("rostore").await;
    let fleet = sqlite_fleet(2);
    let m = migration_dir(&[("0001_t.sql", "CREATE TABLE t (x int);")]);
    let out = sync(fleet.path(), m.path(), &["--state", &store.url]);
    expect_exit(&out, 0);
    store
        .exec(
            "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fleetmig_reader') THEN \
             CREATE ROLE fleetmig_reader LOGIN PASSWORD 'reader-secret'; END IF; END$$; \
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO fleetmig_reader",
        )
        .await;
    let mut u = url::Url::parse(&store.url).unwrap();
    u.set_username("fleetmig_reader").unwrap();
    u.set_password(Some("reader-secret")).unwrap();
    let reader = u.to_string();
    let out = run_in(fleet.path(), &["history", "--state", &reader]);
    expect_exit(&out, 0);
    assert!(stdout(&out).contains("sync"), "{}", stdout(&out));
    let id = stdout(&out)
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .find(|w| w.contains('T') && w.contains('Z') && w.contains('-'))
        })
        .unwrap_or_default()
        .to_string();
    let out = run_in(
        fleet.path(),
        &["report", &id, "--state", &reader, "--reports", "again"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{id}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = run_in(
        fleet.path(),
        &["status", "--rollout", &id, "--state", &reader],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{id}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    app.drop_now().await;
    store.drop_now().await;
}

/// A state store on a port nobody listens on is answered at once, as the
/// system says it, not after the whole connect timeout as "pool timed out".
#[test]
fn a_refused_state_store_port_is_said_at_once() {
    let dir = sqlite_fleet(1);
    let t0 = std::time::Instant::now();
    let out = run_in(
        dir.path(),
        &[
            "history",
            "--state",
            "postgres://fleetmig:pw-not-shown@127.0.0.1:1/x",
            "--connect-timeout",
            "20s",
        ],
    );
    expect_exit(&out, 3);
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t0.elapsed()
    );
    let err = stderr(&out);
    assert!(err.to_lowercase().contains("refused"), "{err}");
    assert!(
        !err.contains("pool timed out") && !err.contains("pw-not-shown"),
        "{err}"
    );
}

/// With the contract step 9 held, the demo set takes every tenant to 8:
/// the report's target is 8, not 9.
#[test]
fn the_reports_target_is_the_version_tenants_were_taken_to() {
    let dir = sqlite_fleet(2);
    let out = sync(dir.path(), &demo_migrations(), &[]);
    expect_exit(&out, 0);
    let report = report_dir(dir.path(), &out);
    assert_eq!(summary(&report)["target_version"], DEMO_REACHED);
    let md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(
        md.contains(&format!("target version {DEMO_REACHED}")),
        "{md}"
    );
}
