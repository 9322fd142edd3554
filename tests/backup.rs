//! Backups before the first migration, and restore: a migration that destroys
//! data, undone from the backup, on SQLite and PostgreSQL (schema and
//! database tenants; MariaDB is in tests/mysql.rs).

mod common;

use common::*;
use sqlx::{Connection, Executor};

fn destructive() -> tempfile::TempDir {
    migration_dir(&[
        (
            "0001_notes.sql",
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n",
        ),
        (
            "0002_oops.sql",
            "-- fleetmig: phase=contract\nUPDATE notes SET body = 'lost' WHERE id > 0;\nDROP TABLE notes;\nCREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n",
        ),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_restore_brings_back_what_a_migration_destroyed() {
    let dir = sqlite_fleet(2);
    let m = destructive();
    assert_eq!(
        sync(dir.path(), m.path(), &["--to", "1"]).status.code(),
        Some(0)
    );
    let p = tenant_path(dir.path(), "t0001");
    let mut c = sqlite(&p).await;
    c.execute("INSERT INTO notes (body) VALUES ('precious'), ('also precious')")
        .await
        .unwrap();
    c.close().await.unwrap();
    let backups = dir.path().join("backups");
    let out = sync(
        dir.path(),
        m.path(),
        &["--allow-contract", "--backup", backups.to_str().unwrap()],
    );
    expect_exit(&out, 0);
    let id = summary(&report_dir(dir.path(), &out))["rollout_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(backups.join(&id).join("t0001.db").is_file());
    let mut c = sqlite(&p).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 0, "the migration destroyed the data");
    c.close().await.unwrap();

    let out = fleetmig()
        .current_dir(dir.path())
        .args([
            "restore",
            "--tenant",
            "t0001",
            "--fleet",
            "sqlite-dir:tenants",
        ])
        .output()
        .unwrap();
    expect_exit(&out, 0);
    let mut c = sqlite(&p).await;
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(bodies, vec!["precious", "also precious"]);
    c.close().await.unwrap();
    assert_eq!(
        sqlite_history(&p).await,
        vec![(1, true)],
        "the history is back to before the rollout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_schema_restore_from_pg_dump() {
    let db = pg_database("backup").await;
    db.exec("CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b;")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let m = destructive();
    assert_eq!(
        sync_fleet(dir.path(), &fleet, m.path(), &["--to", "1"])
            .status
            .code(),
        Some(0)
    );
    db.exec("INSERT INTO tenant_b.notes (id, body) VALUES (1, 'precious'), (2, 'also precious');")
        .await;
    let backups = dir.path().join("backups");
    let out = sync_fleet(
        dir.path(),
        &fleet,
        m.path(),
        &["--allow-contract", "--backup", backups.to_str().unwrap()],
    );
    expect_exit(&out, 0);
    let everything = everything_printed(dir.path(), &out);
    assert!(
        !everything.contains(TEST_PASSWORD),
        "no password in dumps, reports or output"
    );
    let mut c = db.conn().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_b.notes")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let out = fleetmig()
        .current_dir(dir.path())
        .args(["restore", "--tenant", "tenant_b", "--fleet", &fleet])
        .output()
        .unwrap();
    expect_exit(&out, 0);
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM tenant_b.notes ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(bodies, vec!["precious", "also precious"]);
    assert_eq!(pg_history(&mut c, "tenant_b").await, vec![(1, true)]);
    assert_eq!(
        pg_history(&mut c, "tenant_a").await.len(),
        2,
        "other tenants untouched"
    );
    c.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_database_restore_drops_what_came_later() {
    let tag = format!("{:06x}", rand::random::<u32>() & 0xffffff);
    let names: Vec<String> = (0..2).map(|i| format!("fmrs_{tag}_{i}")).collect();
    let mut admin = pg_connect(&pg_base_url()).await;
    for n in &names {
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {n}")))
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-databases:{}", pg_base_url());
    let pattern = format!("fmrs_{tag}_%");
    let m = migration_dir(&[
        (
            "0001_notes.sql",
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n",
        ),
        (
            "0002_oops.sql",
            "-- fleetmig: phase=contract\nDROP TABLE notes;\n\
             CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n\
             CREATE TABLE made_later (id SERIAL PRIMARY KEY);\n\
             CREATE VIEW later_view AS SELECT id FROM made_later;\n",
        ),
    ]);
    let out = sync_fleet(
        dir.path(),
        &fleet,
        m.path(),
        &["--tenant-pattern", &pattern, "--to", "1"],
    );
    expect_exit(&out, 0);
    let url = with_db(&pg_base_url(), &names[1]);
    let mut c = pg_connect(&url).await;
    c.execute("INSERT INTO notes VALUES (1, 'precious'), (2, 'also precious')")
        .await
        .unwrap();
    let backups = dir.path().join("backups");
    let out = sync_fleet(
        dir.path(),
        &fleet,
        m.path(),
        &[
            "--tenant-pattern",
            &pattern,
            "--allow-contract",
            "--backup",
            backups.to_str().unwrap(),
        ],
    );
    expect_exit(&out, 0);
    let out = fleetmig()
        .current_dir(dir.path())
        .args(["restore", "--tenant", &names[1], "--fleet", &fleet])
        .args(["--tenant-pattern", &pattern])
        .output()
        .unwrap();
    expect_exit(&out, 0);
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(bodies, vec!["precious", "also precious"]);
    let later: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relname IN ('made_later', 'later_view', 'made_later_id_seq')",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert!(later.is_empty(), "created after the backup: {later:?}");
    assert_eq!(pg_history(&mut c, "public").await, vec![(1, true)]);
    c.close().await.unwrap();
    let mut other = pg_connect(&with_db(&pg_base_url(), &names[0])).await;
    assert_eq!(
        pg_history(&mut other, "public").await.len(),
        2,
        "other tenant untouched"
    );
    other.close().await.unwrap();
    for n in &names {
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {n} WITH (FORCE)"
            )))
            .await
            .unwrap();
    }
    admin.close().await.unwrap();
}
