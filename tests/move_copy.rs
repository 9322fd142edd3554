//! `fleetmig move` copies like the tools people trust: the target's
//! triggers and foreign keys do not fire during the copy (PostgreSQL as a
//! superuser and as a role that is not one, MariaDB, SQLite), foreign keys
//! are checked after it (a cycle and a self-reference copy in any order; an
//! orphan fails the move naming the key and the row), and the triggers work
//! again after. Also: `--drop-source` of a PostgreSQL database (exit 1 when
//! it cannot be dropped), `--json` printing JSON only, a column type the
//! target cannot fill refused before the target exists, a schema target in
//! a database that does not exist yet, and a value the target changes named
//! by table, key and column.

mod common;

use std::path::Path;

use common::moves::*;
use common::*;
use sqlx::{Connection, Executor};

/// Tables `a` and `b` referencing each other, `a` referencing itself, and
/// an `audit` table an AFTER INSERT trigger on `a` writes to.
fn cycle_set() -> tempfile::TempDir {
    migration_dir(&[
        (
            "0001_cycle.sql",
            "CREATE TABLE a (id INTEGER PRIMARY KEY, b_id INTEGER REFERENCES b (id), parent INTEGER REFERENCES a (id));
             CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a (id));
             CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT NOT NULL);
             CREATE TRIGGER a_log AFTER INSERT ON a BEGIN INSERT INTO audit (what) VALUES ('a ' || NEW.id); END;",
        ),
        (
            "0001_cycle.postgres.sql",
            "CREATE TABLE a (id int PRIMARY KEY, b_id int, parent int REFERENCES a (id));
             CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a (id));
             CREATE INDEX b_by_a ON b (a_id) WHERE a_id IS NOT NULL;
             ALTER TABLE a ADD CONSTRAINT a_b FOREIGN KEY (b_id) REFERENCES b (id);
             CREATE TABLE audit (id serial PRIMARY KEY, what text NOT NULL);
             CREATE FUNCTION log_a() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO audit (what) VALUES ('a ' || NEW.id); RETURN NEW; END $$;
             CREATE TRIGGER a_log AFTER INSERT ON a FOR EACH ROW EXECUTE FUNCTION log_a();",
        ),
        (
            "0001_cycle.mysql.sql",
            "CREATE TABLE a (id int PRIMARY KEY, b_id int, parent int, FOREIGN KEY (parent) REFERENCES a (id));
             CREATE TABLE b (id int PRIMARY KEY, a_id int, FOREIGN KEY (a_id) REFERENCES a (id));
             ALTER TABLE a ADD CONSTRAINT a_b FOREIGN KEY (b_id) REFERENCES b (id);
             CREATE TABLE audit (id int AUTO_INCREMENT PRIMARY KEY, what varchar(100) NOT NULL);
             CREATE TRIGGER a_log AFTER INSERT ON a FOR EACH ROW INSERT INTO audit (what) VALUES (CONCAT('a ', NEW.id));",
        ),
    ])
}

/// A SQLite source: 60 rows of `a` and `b` pointing at each other (and `a`
/// at its parent, a later row), and the 60 audit rows its trigger wrote.
async fn cycle_source(dir: &Path, set: &Path, orphan: bool) {
    fleet(dir, "sqlite:t1.db", set);
    let mut c = sqlite(&dir.join("t1.db")).await;
    c.execute("PRAGMA foreign_keys = OFF").await.unwrap();
    for i in 1..=60i64 {
        sqlx::query("INSERT INTO a (id, b_id, parent) VALUES (?, ?, ?)")
            .bind(i)
            .bind(61 - i)
            .bind(if i < 60 { Some(i + 1) } else { None })
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("INSERT INTO b (id, a_id) VALUES (?, ?)")
            .bind(i)
            .bind(if orphan && i == 42 { 4242 } else { i })
            .execute(&mut c)
            .await
            .unwrap();
    }
    c.close().await.unwrap();
}

async fn pg_n(url: &str, schema: &str, table: &str) -> i64 {
    let mut c = pg_connect(url).await;
    let n = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{schema}\".{table}"
    )))
    .fetch_one(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    n
}

/// The audit trigger fires again: one more `a` row, one more audit row.
async fn pg_trigger_fires(url: &str, schema: &str) {
    let mut c = pg_connect(url).await;
    c.execute(sqlx::AssertSqlSafe(format!(
        "SET search_path = \"{schema}\"; INSERT INTO a (id) VALUES (1000)"
    )))
    .await
    .unwrap();
    c.close().await.unwrap();
    assert_eq!(pg_n(url, schema, "audit").await, 61);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgresql_targets_fire_nothing_during_the_copy_as_superuser_and_as_owner() {
    let set = cycle_set();
    let dir = tempfile::tempdir().unwrap();
    cycle_source(dir.path(), set.path(), false).await;
    // as the superuser: session_replication_role
    let db = pg_database("mvtrig").await;
    let out = mv(
        dir.path(),
        set.path(),
        &["--to", &db.url, "--schema", "moved"],
    );
    expect_exit(&out, 0);
    assert_eq!(pg_n(&db.url, "moved", "a").await, 60);
    assert_eq!(
        pg_n(&db.url, "moved", "audit").await,
        60,
        "the trigger did not fire"
    );
    pg_trigger_fires(&db.url, "moved").await;
    db.drop_now().await;

    // as a role that may create databases but is no superuser: the owner's
    // triggers off, its foreign keys dropped and put back
    let dir = tempfile::tempdir().unwrap();
    cycle_source(dir.path(), set.path(), false).await;
    let mut admin = pg_connect(&pg_base_url()).await;
    admin
        .execute(
            "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fleetmig_owner') THEN \
             CREATE ROLE fleetmig_owner LOGIN CREATEDB PASSWORD 'owner-secret'; END IF; END$$",
        )
        .await
        .unwrap();
    admin.close().await.unwrap();
    let name = format!("fm_mvowner_{:08x}", rand::random::<u32>());
    let mut owner_url = url::Url::parse(&with_db(&pg_base_url(), &name)).unwrap();
    owner_url.set_username("fleetmig_owner").unwrap();
    owner_url.set_password(Some("owner-secret")).unwrap();
    let owner_url = owner_url.to_string();
    let out = mv(dir.path(), set.path(), &["--to", &owner_url]);
    expect_exit(&out, 0);
    assert!(!stdout(&out).contains("owner-secret"));
    assert_eq!(pg_n(&owner_url, "public", "b").await, 60);
    assert_eq!(
        pg_n(&owner_url, "public", "audit").await,
        60,
        "the trigger did not fire"
    );
    // the foreign keys are back, and hold
    let mut c = pg_connect(&owner_url).await;
    let keys: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(keys, 3);
    let e = c
        .execute("INSERT INTO b (id, a_id) VALUES (999, 4242)")
        .await;
    assert!(e.is_err(), "the foreign key is enforced again");
    c.close().await.unwrap();
    pg_trigger_fires(&owner_url, "public").await;
    let mut admin = pg_connect(&pg_base_url()).await;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE \"{name}\" WITH (FORCE)"
        )))
        .await
        .unwrap();
    admin.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_targets_get_their_triggers_back_and_an_orphan_fails_the_move_by_name() {
    let set = cycle_set();
    let dir = tempfile::tempdir().unwrap();
    cycle_source(dir.path(), set.path(), false).await;
    let name = format!("fmmvtrig{:06x}", rand::random::<u32>() & 0xffffff);
    let url = with_db(&mysql_base_url(), &name);
    let out = mv(dir.path(), set.path(), &["--to", &url]);
    expect_exit(&out, 0);
    let mut m = mysql_connect(&url).await;
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    assert_eq!(
        count("SELECT COUNT(*) FROM audit")
            .fetch_one(&mut m)
            .await
            .unwrap(),
        60
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()")
            .fetch_one(&mut m)
            .await
            .unwrap(),
        1
    );
    m.execute("INSERT INTO a (id) VALUES (1000)").await.unwrap();
    assert_eq!(
        count("SELECT COUNT(*) FROM audit")
            .fetch_one(&mut m)
            .await
            .unwrap(),
        61
    );
    m.close().await.unwrap();
    mysql_exec(&mysql_base_url(), &format!("DROP DATABASE `{name}`")).await;

    // b 42 points at an `a` that does not exist: the move fails naming it
    let dir = tempfile::tempdir().unwrap();
    cycle_source(dir.path(), set.path(), true).await;
    let out = mv(dir.path(), set.path(), &["--to", &url]);
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{said}{}", stderr(&out));
    assert!(said.contains("foreign key"), "{said}");
    assert!(said.contains("id=42, a_id=4242"), "{said}");
    let mut c = mysql_connect(&mysql_base_url()).await;
    let left: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(&name)
    .fetch_one(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    assert_eq!(left, 0, "the database the failed move created is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_source_json_and_refusals_before_the_target_exists() {
    let set = migration_dir(&[
        (
            "0001_t.sql",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, mood TEXT, tags TEXT, word TEXT);",
        ),
        (
            "0001_t.postgres.sql",
            "CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE TABLE t (id int PRIMARY KEY, mood mood, tags text[], word text);",
        ),
        (
            "0001_t.mysql.sql",
            "CREATE TABLE t (id int PRIMARY KEY, mood varchar(10), tags text, word char(10));",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    fleet(dir.path(), "sqlite:t1.db", set.path());
    let mut c = sqlite(&dir.path().join("t1.db")).await;
    c.execute("INSERT INTO t VALUES (1, 'ok', 'a', 'x'), (2, 'sad', 'b', 'padded  ')")
        .await
        .unwrap();
    c.close().await.unwrap();

    // PostgreSQL's variant makes an enum and an array the move cannot
    // fill: refused before the target database exists
    let name = format!("fm_mvenum_{:08x}", rand::random::<u32>());
    let url = with_db(&pg_base_url(), &name);
    let out = mv(dir.path(), set.path(), &["--to", &url]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}{err}", stdout(&out));
    assert!(
        err.contains("t.mood") && err.contains("cannot fill"),
        "{err}"
    );
    let mut admin = pg_connect(&pg_base_url()).await;
    let target: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(target, 0, "the target database is not left");
    // scratch databases of moves other tests run at the same time come and
    // go: none may stay
    let t0 = std::time::Instant::now();
    loop {
        let scratch: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_database WHERE datname LIKE '\\_fleetmig\\_scratch%'",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if scratch == 0 {
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "a scratch database is left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // MariaDB's CHAR(10) drops trailing spaces: verification names it
    let my = format!("fmmvchar{:06x}", rand::random::<u32>() & 0xffffff);
    let my_url = with_db(&mysql_base_url(), &my);
    let out = mv(dir.path(), set.path(), &["--to", &my_url]);
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{said}{}", stderr(&out));
    assert!(
        said.contains("table t:") && said.contains("key id=2, column word"),
        "{said}"
    );

    // into a schema of a database that does not exist yet: both created;
    // --json prints the report and nothing else
    let set2 = migration_dir(&[(
        "0001_t.sql",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, mood TEXT, tags TEXT, word TEXT);",
    )]);
    let out = mv(
        dir.path(),
        set2.path(),
        &["--to", &url, "--schema", "t1", "--json"],
    );
    expect_exit(&out, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("stdout is JSON only");
    assert_eq!(json["status"], "done");
    assert_eq!(json["created"], "database");
    assert!(
        json["report_dir"]
            .as_str()
            .unwrap()
            .contains(json["id"].as_str().unwrap())
    );
    assert_eq!(pg_n(&url, "t1", "t").await, 2);

    // t1 is now a schema tenant; moved to a PostgreSQL database, dropping
    // the schema; then that database tenant moved on, dropping it while a
    // session holds it open: exit 1, saying why
    let (db2, db3) = (
        pg_database("mvdrop2").await,
        format!("fm_mvdrop3_{:08x}", rand::random::<u32>()),
    );
    let out = mv(
        dir.path(),
        set2.path(),
        &["--to", &db2.url, "--drop-source"],
    );
    expect_exit(&out, 0);
    let schemas: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM pg_database WHERE datname = '{name}'"
    )))
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(schemas, 1, "only the schema was dropped");
    assert_eq!(
        pg_n(&url, "pg_catalog", "pg_namespace WHERE nspname = 't1'").await,
        0
    );
    let holder = pg_connect(&db2.url).await;
    let url3 = with_db(&pg_base_url(), &db3);
    let out = mv(dir.path(), set2.path(), &["--to", &url3, "--drop-source"]);
    expect_exit(&out, 1);
    assert!(
        stdout(&out).contains("the source was not dropped"),
        "{}",
        stdout(&out)
    );
    holder.close().await.unwrap();
    // and without the other session, a database tenant is dropped
    let (db4, url4) = {
        let n = format!("fm_mvdrop4_{:08x}", rand::random::<u32>());
        (n.clone(), with_db(&pg_base_url(), &n))
    };
    let out = mv(dir.path(), set2.path(), &["--to", &url4, "--drop-source"]);
    expect_exit(&out, 0);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&db3)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "the PostgreSQL database tenant was dropped");
    for d in [&name, &db4, &db2.name] {
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{d}\" WITH (FORCE)"
            )))
            .await
            .unwrap();
    }
    admin.close().await.unwrap();
}
