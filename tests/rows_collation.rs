//! Row tenants whose ids differ only where a collation looks away (`acme`,
//! `ACME`, `Acme`): under a binary column they are three tenants and each
//! gets its own history (the history table compares ids byte for byte, and
//! an old one made with the database's case-blind collation is converted);
//! under a case-blind column they are one tenant to the database and the
//! listing is refused, naming them, before anything is written. On
//! MariaDB, PostgreSQL (a nondeterministic ICU collation) and SQLite
//! (NOCASE).

mod common;

use std::path::Path;

use common::*;
use sqlx::{AnyConnection, Connection};

async fn scalar(url: &str, sql: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let mut c = AnyConnection::connect(url).await.unwrap();
    let cast = if url.starts_with("mysql") {
        "SIGNED"
    } else {
        "BIGINT"
    };
    let v: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(({sql}) AS {cast}) AS n"
    )))
    .fetch_one(&mut c)
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.close().await.unwrap();
    v
}

fn sync_rows(dir: &Path, fleet: &str, query: &str, m: &Path) -> std::process::Output {
    run_in(
        dir,
        &[
            "sync",
            "--fleet",
            fleet,
            "--tenant-query",
            query,
            "--migrations",
            m.to_str().unwrap(),
            "--progress-every",
            "0",
            "--state",
            "state.db",
        ],
    )
}

fn bump() -> tempfile::TempDir {
    migration_dir(&[(
        "0001_bump.sql",
        "-- fleetmig: scope=tenant\nUPDATE notes SET n = n + 1 WHERE org = :tenant_id;\n",
    )])
}

/// The refusal names the colliding ids and exits 3 (the fleet cannot be
/// discovered), before anything is written.
fn assert_refused(out: &std::process::Output, dir: &Path, ids: &[&str]) {
    let all = everything_printed(dir, out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains("one tenant to the database"), "{all}");
    for id in ids {
        assert!(all.contains(&format!("\"{id}\"")), "{id} not named: {all}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_ids_equal_under_a_collation() {
    let name = format!("fm_coll_{:08x}", rand::random::<u32>());
    let base = mysql_base_url();
    mysql_exec(
        &base,
        &format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"),
    )
    .await;
    let url = with_db(&base, &name);
    // the history table as fleetmig made it before: the database's
    // case-blind collation, where Acme's record passed for ACME's
    mysql_exec(
        &url,
        "CREATE TABLE _fleetmig_tenant_migrations (tenant_id VARCHAR(255) NOT NULL, \
         version BIGINT NOT NULL, description TEXT NOT NULL, success BIGINT NOT NULL, \
         checksum BLOB NOT NULL, execution_time BIGINT NOT NULL, installed_at BIGINT NOT NULL, \
         PRIMARY KEY (tenant_id, version)); \
         CREATE TABLE notes (org VARCHAR(20) COLLATE utf8mb4_bin NOT NULL, n INT NOT NULL); \
         INSERT INTO notes VALUES ('acme', 0), ('ACME', 0), ('Acme', 0); \
         CREATE TABLE members (org VARCHAR(20) NOT NULL); \
         INSERT INTO members VALUES ('acme'), ('ACME'), ('zeta');",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = bump();
    let fleet = format!("mysql-rows:{url}");

    // binary ids: three tenants, each bumped once and recorded once
    let out = sync_rows(
        dir.path(),
        &fleet,
        "SELECT DISTINCT org FROM notes",
        m.path(),
    );
    let all = everything_printed(dir.path(), &out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(stdout(&out).contains("3 succeeded"), "{all}");
    for id in ["acme", "ACME", "Acme"] {
        let sql = format!("SELECT n FROM notes WHERE org = '{id}'");
        assert_eq!(scalar(&url, &sql).await, 1, "{id}");
        let sql = format!(
            "SELECT count(*) FROM _fleetmig_tenant_migrations WHERE CAST(tenant_id AS BINARY) = '{id}'"
        );
        assert_eq!(scalar(&url, &sql).await, 1, "{id}");
    }
    let out = sync_rows(
        dir.path(),
        &fleet,
        "SELECT DISTINCT org FROM notes",
        m.path(),
    );
    assert!(stdout(&out).contains("(3 up to date)"), "{}", stdout(&out));

    // case-blind ids: refused by name, nothing written
    let out = sync_rows(dir.path(), &fleet, "SELECT org FROM members", m.path());
    assert_refused(&out, dir.path(), &["acme", "ACME"]);
    assert!(!stderr(&out).contains("zeta"), "{}", stderr(&out));
    assert_eq!(
        scalar(&url, "SELECT count(*) FROM _fleetmig_tenant_migrations").await,
        3
    );
    mysql_exec(&base, &format!("DROP DATABASE `{name}`")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_ids_equal_under_a_nondeterministic_collation() {
    let db = pg_database("coll").await;
    db.exec(
        "CREATE COLLATION blind (provider = icu, locale = 'und-u-ks-level2', deterministic = false); \
         CREATE TABLE notes (org TEXT NOT NULL, n INT NOT NULL); \
         INSERT INTO notes VALUES ('acme', 0), ('ACME', 0), ('Acme', 0); \
         CREATE TABLE members (org TEXT COLLATE blind NOT NULL); \
         INSERT INTO members VALUES ('acme'), ('ACME'), ('Acme'), ('zeta');",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let m = bump();
    let fleet = format!("postgres-rows:{}", db.url);
    let out = sync_rows(dir.path(), &fleet, "SELECT org FROM members", m.path());
    assert_refused(&out, dir.path(), &["acme", "ACME", "Acme"]);
    assert_eq!(
        scalar(&db.url, "SELECT count(*) FROM notes WHERE n <> 0").await,
        0
    );
    let out = sync_rows(
        dir.path(),
        &fleet,
        "SELECT DISTINCT org FROM notes",
        m.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        everything_printed(dir.path(), &out)
    );
    assert_eq!(
        scalar(&db.url, "SELECT count(*) FROM notes WHERE n = 1").await,
        3
    );
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_ids_equal_under_nocase() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    sqlx::any::install_default_drivers();
    let mut c = AnyConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE notes (org TEXT NOT NULL COLLATE NOCASE, n INT NOT NULL); \
         INSERT INTO notes VALUES ('acme', 0), ('ACME', 0), ('beta', 0);",
    )
    .execute(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    let m = bump();
    let fleet = format!("sqlite-rows:{}", file.display());
    let out = sync_rows(dir.path(), &fleet, "SELECT org FROM notes;", m.path());
    assert_refused(&out, dir.path(), &["acme", "ACME"]);
    let url = format!("sqlite://{}", file.display());
    assert_eq!(
        scalar(&url, "SELECT count(*) FROM notes WHERE n <> 0").await,
        0
    );
}
