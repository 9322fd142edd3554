//! Error classes on a real server: a locked table is a transient lock
//! timeout and retried, a syntax error is permanent and never retried, and
//! --tx-mode tenant moves a tenant atomically.

use std::time::Duration;

use sqlx::{Connection, Executor};

use crate::common::*;
use crate::shared::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_table_fails_fast_as_transient_and_is_retried() {
    let db = pg_database("locked").await;
    schemas(&db, 3).await;
    let base = migration_dir(&[("0001_a.sql", "CREATE TABLE accounts (id int);")]);
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    assert_eq!(
        sync_fleet(dir.path(), &fleet, base.path(), &[])
            .status
            .code(),
        Some(0)
    );
    std::fs::write(
        base.path().join("0002_b.sql"),
        "ALTER TABLE accounts ADD COLUMN plan text;",
    )
    .unwrap();

    // Another session holds the table: with one attempt, the tenant fails
    // quickly with a transient lock timeout, code and class in the report.
    let mut holder = db.conn().await;
    holder
        .execute("BEGIN; LOCK TABLE tenant_001.accounts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    let out = sync_fleet(
        dir.path(),
        &fleet,
        base.path(),
        &["--lock-timeout", "200ms", "--max-attempts", "1"],
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let r = &rows["tenant_001"];
    assert_eq!(
        (r["status"].as_str(), r["error_class"].as_str()),
        ("failed", "transient")
    );
    assert_eq!(
        (r["error_kind"].as_str(), r["error_code"].as_str()),
        ("lock_timeout", "55P03")
    );
    assert_eq!(rows["tenant_000"]["status"], "succeeded");

    // With retries, the lock is released after ~1.5 s and the tenant succeeds.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        holder.execute("COMMIT").await.unwrap();
        holder.close().await.unwrap();
    });
    let out = sync_fleet(
        dir.path(),
        &fleet,
        base.path(),
        &[
            "--lock-timeout",
            "200ms",
            "--max-attempts",
            "10",
            "--retry-backoff",
            "300ms",
        ],
    );
    release.await.unwrap();
    expect_exit(&out, 0);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let attempts: u32 = rows["tenant_001"]["attempts"].parse().unwrap();
    assert!(attempts >= 2, "attempts {attempts}");
    let mut c = db.conn().await;
    assert_eq!(pg_history(&mut c, "tenant_001").await.len(), 2);
    c.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_syntax_error_is_permanent_and_never_retried() {
    let db = pg_database("syntax").await;
    schemas(&db, 2).await;
    let m = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);"),
        ("0002_b.sql", "CREATE TABEL b (x int);"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let out = sync_fleet(
        dir.path(),
        &format!("postgres-schemas:{}", db.url),
        m.path(),
        &["--max-attempts", "5"],
    );
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    for r in rows.values() {
        assert_eq!(r["attempts"], "1");
        assert_eq!(
            (
                r["error_class"].as_str(),
                r["error_kind"].as_str(),
                r["error_code"].as_str()
            ),
            ("permanent", "syntax", "42601")
        );
        assert_eq!(r["to_version"], "1");
        // the migration's file and line, never the server's C source line
        // (sqlx appends " at line N" of scan.l)
        let m = &r["error_message"];
        assert!(m.contains("0002_b.sql:1"), "{m}");
        assert!(!m.contains("at line"), "{m}");
    }
    let mut c = db.conn().await;
    assert_eq!(
        pg_history(&mut c, "tenant_000").await,
        vec![(1, true)],
        "not dirty: the migration rolled back"
    );
    c.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_tx_mode_moves_a_tenant_atomically() {
    let db = pg_database("txmode").await;
    schemas(&db, 2).await;
    let m = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);"),
        ("0002_b.sql", "CREATE TABLE b (x int);"),
        ("0003_c.sql", "CREATE TABLE c (x int);"),
        ("0004_d.sql", "CREATE TABLE d (x int);"),
        ("0005_e.sql", "CREATE TABLE e (x int);"),
        ("0006_f.sql", "CREATE TABLE f (x int);"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    assert_eq!(
        sync_fleet(dir.path(), &fleet, m.path(), &["--to", "1"])
            .status
            .code(),
        Some(0)
    );
    // tenant_001 will fail in the third of its five pending migrations (0004)
    db.exec("CREATE TABLE tenant_001.d (conflict int);").await;
    let out = sync_fleet(dir.path(), &fleet, m.path(), &["--tx-mode", "tenant"]);
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    assert_eq!(rows["tenant_000"]["status"], "succeeded");
    assert_eq!(
        (
            rows["tenant_001"]["error_version"].as_str(),
            rows["tenant_001"]["to_version"].as_str()
        ),
        ("4", "1")
    );
    let mut c = db.conn().await;
    assert_eq!(pg_history(&mut c, "tenant_001").await, vec![(1, true)]);
    assert_eq!(
        pg_tables(&mut c, "tenant_001").await,
        vec!["_sqlx_migrations", "a", "d"]
    );
    assert_eq!(pg_history(&mut c, "tenant_000").await.len(), 6);
    c.close().await.unwrap();
    db.drop_now().await;
}
