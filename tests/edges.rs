//! The edges an operator hits (issue 10): nothing touched outside the fleet,
//! one bad tenant is one failed tenant, an empty fleet is an error, bad
//! settings and near-miss directives are refused before any work.

mod common;

use common::*;

/// The default pattern is `tenant\_%`: `_` is literal, so `tenants` and
/// `tenantx_control` are not tenants. A tenant query runs read-only, and a
/// name it returns twice is an error naming it.
#[tokio::test(flavor = "multi_thread")]
async fn only_tenant_schemas_are_found_and_the_tenant_query_cannot_write() {
    let db = pg_database("pattern").await;
    db.exec("CREATE SCHEMA tenant_1; CREATE SCHEMA tenants; CREATE SCHEMA tenantx_control;")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let plan = |extra: &[&str]| {
        fleetmig()
            .current_dir(dir.path())
            .args(["plan", "--json", "--fleet", &fleet, "--migrations"])
            .arg(demo_migrations())
            .args(extra)
            .output()
            .unwrap()
    };
    let out = plan(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<&str> = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tenant_1"]);

    let out = plan(&["--tenant-query", "CREATE TABLE public.oops (x int)"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("--tenant-query failed"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
    let mut c = db.conn().await;
    assert!(
        pg_tables(&mut c, "public").await.is_empty(),
        "the query wrote"
    );

    let out = plan(&[
        "--tenant-query",
        "SELECT 'tenant_1' UNION ALL SELECT 'tenant_1'",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("tenant tenant_1 is listed twice"),
        "{}",
        stderr(&out)
    );
    sqlx::Connection::close(c).await.unwrap();
    db.drop_now().await;
}

/// A stray file in a sqlite-dir (hidden, a space, an over-long name) is one
/// failed tenant (`invalid_tenant`, never opened); the rest is migrated.
#[tokio::test(flavor = "multi_thread")]
async fn a_stray_file_is_one_failed_tenant_and_the_rest_is_migrated() {
    let dir = sqlite_fleet(3);
    let tenants = dir.path().join("tenants");
    let long = format!("{}.db", "x".repeat(200));
    for stray in [".hidden.db", "my tenant.db", long.as_str()] {
        std::fs::write(tenants.join(stray), b"not a database").unwrap();
    }
    let out = sync(dir.path(), &demo_migrations(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    for i in 0..3 {
        let id = format!("t{i:04}");
        assert_eq!(rows[&id]["status"], "succeeded");
        assert_eq!(
            sqlite_history(&tenant_path(dir.path(), &id)).await.len(),
            DEMO_REACHED as usize
        );
    }
    let refused: Vec<_> = rows
        .values()
        .filter(|r| r["error_kind"] == "invalid_tenant")
        .collect();
    assert_eq!(refused.len(), 3, "{rows:?}");
    for r in &refused {
        assert_eq!(r["status"], "failed");
        assert_eq!(r["attempts"], "0");
        assert_eq!(r["wave"], "discovery");
        assert!(
            r["tenant"].len() < 160,
            "a long name is cut: {}",
            r["tenant"]
        );
    }
    for stray in [".hidden.db", "my tenant.db", long.as_str()] {
        assert_eq!(
            std::fs::read(tenants.join(stray)).unwrap(),
            b"not a database",
            "{stray} was touched"
        );
    }
    let out = fleetmig()
        .current_dir(dir.path())
        .args(["status", "--fleet", "sqlite-dir:tenants", "--migrations"])
        .arg(demo_migrations())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out).matches("refused: ").count(),
        3,
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("\"my tenant\""), "{}", stdout(&out));
}

/// An empty fleet is an error (exit 3) unless `--allow-empty`; a registry
/// row whose file does not exist is `missing`, not `pending`.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_fleet_is_an_error_unless_allowed_and_a_missing_file_says_so() {
    let dir = sqlite_fleet(0);
    let out = sync(dir.path(), &demo_migrations(), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(stderr(&out).contains("--allow-empty"), "{}", stderr(&out));
    assert!(
        !dir.path().join("reports").exists(),
        "no report for nothing"
    );
    let out = sync(dir.path(), &demo_migrations(), &["--allow-empty"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("0 tenants"), "{}", stdout(&out));

    std::fs::write(
        dir.path().join("fleet.csv"),
        "id,url,schema,tags\ngone,sqlite://db/gone.db,,\n",
    )
    .unwrap();
    let out = fleetmig()
        .current_dir(dir.path())
        .args(["status", "--fleet", "registry:fleet.csv", "--migrations"])
        .arg(demo_migrations())
        .output()
        .unwrap();
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("gone "))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("missing"), "{}", stdout(&out));
    assert!(!dir.path().join("db").exists(), "status created the tenant");
}

/// Durations too long for the databases, a `--to` that names no migration,
/// and a near-miss directive are refused with exit 2 before any tenant is
/// touched.
#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_and_near_miss_directives_are_refused_before_any_work() {
    let dir = sqlite_fleet(2);
    let m = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);"),
        ("0002_b.sql", "CREATE TABLE b (x int);"),
        ("0005_c.sql", "CREATE TABLE c (x int);"),
    ]);
    let refused = |extra: &[&str], needle: &str| {
        let out = sync(dir.path(), m.path(), extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{extra:?}: {}", stderr(&out));
    };
    refused(
        &["--lock-timeout", "30d"],
        "--lock-timeout \"30d\": at most",
    );
    refused(&["--statement-timeout", "400days"], "--statement-timeout");
    refused(&["--to", "42"], "--to 42");
    refused(&["--to", "3"], "nearest below is 2");
    for i in 0..2 {
        assert!(
            sqlite_history(&tenant_path(dir.path(), &format!("t{i:04}")))
                .await
                .is_empty()
        );
    }
    let contract = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);"),
        (
            "0002_drop.sql",
            "-- FLEETMIG: phase=contract\nDROP TABLE a;\n",
        ),
    ]);
    let out = sync(dir.path(), contract.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("0002_drop.sql:1: ")
            && stderr(&out).contains("looks like a fleetmig directive"),
        "{}",
        stderr(&out)
    );
    assert!(
        sqlite_history(&tenant_path(dir.path(), "t0000"))
            .await
            .is_empty()
    );
}
