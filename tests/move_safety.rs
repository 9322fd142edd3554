//! `fleetmig move` never writes into a place that holds data that is not
//! its own: another tenant's SQLite file, PostgreSQL schema or MariaDB
//! database, a copy of a tenant that is in no fleet, the tenant's own place
//! spelled another way, a target marked by another tenant's move, a place
//! holding an object the migration set does not make. Each is refused
//! before a byte changes, and the victim's rows are counted after. An empty
//! place is taken, marked while the copy runs, and unmarked when done.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use sqlx::{Connection, Executor};

fn set() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/moving/migrations")
}

/// `fleetmig move` of `tenant` in the registry fleet of `dir`.
fn mv(dir: &Path, tenant: &str, extra: &[&str]) -> Output {
    let set = set();
    let mut a = vec![
        "move",
        "--fleet",
        "registry:fleet.csv",
        "--tenant",
        tenant,
        "--state",
        "state.db",
        "--migrations",
        set.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    run_in(dir, &a)
}

fn sync_all(dir: &Path) {
    let out = sync_fleet(
        dir,
        "registry:fleet.csv",
        &set(),
        &["--state", "state.db", "--create-missing"],
    );
    expect_exit(&out, 0);
}

/// Customers 2..=n added to the SQLite tenant at `path`.
async fn sqlite_fill(path: &Path, n: i64) {
    let mut c = sqlite(path).await;
    for i in 2..=n {
        sqlx::query("INSERT INTO customers (id, name, balance, active) VALUES (?, ?, '1.50', 1)")
            .bind(i)
            .bind(format!("c{i}"))
            .execute(&mut c)
            .await
            .unwrap();
    }
    c.close().await.unwrap();
}

async fn sqlite_count(path: &Path) -> i64 {
    let mut c = sqlite(path).await;
    let n = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    n
}

async fn pg_scalar(url: &str, sql: &str) -> i64 {
    let mut c = pg_connect(url).await;
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    c.close().await.unwrap();
    n
}

/// The rows of `fleetmig_moves`: none is left copying by a refusal.
async fn moves(dir: &Path) -> Vec<String> {
    let Ok(mut c) = sqlx::sqlite::SqliteConnection::connect(&format!(
        "sqlite:{}",
        dir.join("state.db").display()
    ))
    .await
    else {
        return Vec::new();
    };
    sqlx::query_scalar("SELECT status FROM fleetmig_moves ORDER BY started_at")
        .fetch_all(&mut c)
        .await
        .unwrap_or_default()
}

/// A refusal: `code`, the message holds `says`, nothing recorded as copying.
async fn refused(dir: &Path, out: &Output, code: i32, says: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{}{err}", stdout(out));
    assert!(err.contains(says), "expected {says:?} in: {err}");
    assert!(err.contains("nothing was touched"), "{err}");
    assert!(!err.contains(TEST_PASSWORD), "{err}");
    assert!(!moves(dir).await.iter().any(|s| s == "copying"));
}

/// t1 and t2, two SQLite tenants at the set's head with 5 and 7 customers.
async fn two_sqlite_tenants(dir: &Path) {
    std::fs::create_dir_all(dir.join("d")).unwrap();
    std::fs::write(
        dir.join("fleet.csv"),
        "# two tenants\nid,url,schema,tags\nt1,sqlite:d/t1.db,,\nt2,sqlite:d/t2.db,,\n",
    )
    .unwrap();
    sync_all(dir);
    sqlite_fill(&dir.join("d/t1.db"), 5).await;
    sqlite_fill(&dir.join("d/t2.db"), 7).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tenants_file_and_the_tenants_own_file_spelled_otherwise_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    two_sqlite_tenants(dir.path()).await;
    let registry = std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap();

    // another tenant's file, spelled as the registry spells it and not
    let out = mv(dir.path(), "t1", &["--to", "sqlite:d/t2.db"]);
    refused(dir.path(), &out, 2, "is tenant t2's location").await;
    let abs = format!("sqlite:{}/d/../d/./t2.db", dir.path().display());
    let out = mv(dir.path(), "t1", &["--to", &abs]);
    refused(dir.path(), &out, 2, "is tenant t2's location").await;
    // a link to it is the same file
    std::os::unix::fs::symlink(dir.path().join("d/t2.db"), dir.path().join("alias.db")).unwrap();
    let out = mv(dir.path(), "t1", &["--to", "sqlite:alias.db"]);
    refused(dir.path(), &out, 2, "is tenant t2's location").await;
    // the tenant's own file through `..`
    let out = mv(dir.path(), "t1", &["--to", "sqlite:d/../d/t1.db"]);
    refused(dir.path(), &out, 2, "is where the tenant already is").await;

    assert_eq!(sqlite_count(&dir.path().join("d/t1.db")).await, 5);
    assert_eq!(sqlite_count(&dir.path().join("d/t2.db")).await, 7);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap(),
        registry
    );

    // a copy of t2 that is in no fleet holds rows: refused, naming the table
    std::fs::copy(dir.path().join("d/t2.db"), dir.path().join("copy.db")).unwrap();
    let out = mv(dir.path(), "t1", &["--to", "sqlite:copy.db"]);
    refused(dir.path(), &out, 2, "table customers holds rows").await;
    assert_eq!(sqlite_count(&dir.path().join("copy.db")).await, 7);

    // a file holding a table of its own, no rows: not the set's object
    std::fs::write(dir.path().join("odd.db"), b"").unwrap();
    let mut c = sqlite(&dir.path().join("odd.db")).await;
    c.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    c.close().await.unwrap();
    let out = mv(dir.path(), "t1", &["--to", "sqlite:odd.db"]);
    refused(
        dir.path(),
        &out,
        2,
        "holds table notes, which the migration set does not create",
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap(),
        registry
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_place_is_taken_marked_while_filled_and_unmarked_when_done() {
    let dir = tempfile::tempdir().unwrap();
    two_sqlite_tenants(dir.path()).await;
    // an empty file someone provisioned, and an empty schema
    std::fs::write(dir.path().join("empty.db"), b"").unwrap();
    let out = mv(dir.path(), "t1", &["--to", "sqlite:empty.db"]);
    expect_exit(&out, 0);
    assert_eq!(sqlite_count(&dir.path().join("empty.db")).await, 5);
    // the mark is gone, the histories are the source's
    let tables = sqlite_tables(&dir.path().join("empty.db")).await;
    assert!(
        !tables.iter().any(|t| t.starts_with("_fleetmig")),
        "{tables:?}"
    );
    assert_eq!(
        sqlite_history(&dir.path().join("empty.db")).await,
        sqlite_history(&dir.path().join("d/t1.db")).await
    );
    let summary = std::fs::read_to_string(
        dir.path()
            .join(stdout(&out).lines().last().unwrap())
            .join("summary.md"),
    )
    .unwrap();
    assert!(
        summary.contains("into an existing, empty target"),
        "{summary}"
    );

    let db = pg_database("mvsafe").await;
    db.exec("CREATE SCHEMA provisioned").await;
    let out = mv(
        dir.path(),
        "t2",
        &["--to", &db.url, "--schema", "provisioned"],
    );
    expect_exit(&out, 0);
    assert_eq!(
        pg_scalar(&db.url, "SELECT count(*) FROM provisioned.customers").await,
        7
    );
    assert_eq!(
        pg_scalar(
            &db.url,
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE '\\_fleetmig%'"
        )
        .await,
        0
    );
    // no scratch schema or database is left behind
    assert_eq!(
        pg_scalar(
            &db.url,
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE '\\_fleetmig\\_scratch%'"
        )
        .await,
        0
    );
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn live_postgresql_schemas_and_a_database_tenants_own_schema_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = pg_database("mvlive").await;
    let db2 = pg_database("mvdbt").await;
    db.exec("CREATE SCHEMA tenant_t2").await;
    // t1: SQLite; t2: a schema of db; t3: all of db2
    std::fs::write(
        dir.path().join("fleet.csv"),
        format!(
            "id,url,schema,tags\nt1,sqlite:t1.db,,\nt2,{},tenant_t2,\nt3,{},,\n",
            db.url, db2.url
        ),
    )
    .unwrap();
    sync_all(dir.path());
    sqlite_fill(&dir.path().join("t1.db"), 5).await;
    db.exec("INSERT INTO tenant_t2.customers (id, name, balance, active) SELECT g + 1, 'x' || g, 1, true FROM generate_series(1, 9) g")
        .await;
    let registry = std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap();

    // t2's schema, reached through another host name for the same server
    let other_spelling = db.url.replace("127.0.0.1", "localhost");
    assert_ne!(other_spelling, db.url);
    let out = mv(
        dir.path(),
        "t1",
        &["--to", &other_spelling, "--schema", "tenant_t2"],
    );
    refused(dir.path(), &out, 2, "is tenant t2's location").await;
    // any schema of t3's database is t3's
    let out = mv(
        dir.path(),
        "t1",
        &["--to", &db2.url, "--schema", "elsewhere"],
    );
    refused(dir.path(), &out, 2, "is tenant t3's location").await;
    // t3's own database, as `--schema public`
    let out = mv(dir.path(), "t3", &["--to", &db2.url, "--schema", "public"]);
    refused(dir.path(), &out, 2, "is where the tenant already is").await;
    // a schema in no fleet that holds rows (a copy of t2)
    db.exec("CREATE SCHEMA copy_of_t2; CREATE TABLE copy_of_t2.customers AS SELECT * FROM tenant_t2.customers")
        .await;
    let out = mv(
        dir.path(),
        "t1",
        &["--to", &db.url, "--schema", "copy_of_t2"],
    );
    refused(dir.path(), &out, 2, "table customers holds rows").await;

    assert_eq!(
        pg_scalar(&db.url, "SELECT count(*) FROM tenant_t2.customers").await,
        10
    );
    assert_eq!(
        pg_scalar(&db.url, "SELECT count(*) FROM copy_of_t2.customers").await,
        10
    );
    assert_eq!(
        pg_scalar(&db2.url, "SELECT count(*) FROM customers").await,
        1
    );
    assert_eq!(sqlite_count(&dir.path().join("t1.db")).await, 5);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap(),
        registry
    );
    db.drop_now().await;
    db2.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_of_a_mariadb_tenant_and_another_tenants_marked_target_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let victim = format!("fmvictim{:06x}", rand::random::<u32>() & 0xffffff);
    let victim_url = with_db(&mysql_base_url(), &victim);
    mysql_exec(&mysql_base_url(), &format!("CREATE DATABASE `{victim}`")).await;
    std::fs::write(
        dir.path().join("fleet.csv"),
        format!("id,url,schema,tags\nt1,sqlite:t1.db,,\nt2,sqlite:t2.db,,\nv,{victim_url},,\n"),
    )
    .unwrap();
    sync_all(dir.path());
    sqlite_fill(&dir.path().join("t1.db"), 5).await;
    sqlite_fill(&dir.path().join("t2.db"), 6).await;
    mysql_exec(
        &victim_url,
        "INSERT INTO customers (name, balance, active) VALUES ('a', 1, 1), ('b', 2, 0)",
    )
    .await;
    // a copy of the victim, in no fleet
    let copy = format!("{victim}_copy");
    let copy_url = with_db(&mysql_base_url(), &copy);
    mysql_exec(
        &mysql_base_url(),
        &format!(
            "CREATE DATABASE `{copy}`; CREATE TABLE `{copy}`.customers AS SELECT * FROM `{victim}`.customers"
        ),
    )
    .await;
    let out = mv(dir.path(), "t1", &["--to", &copy_url]);
    refused(dir.path(), &out, 2, "table customers holds rows").await;
    let out = mv(
        dir.path(),
        "t1",
        &["--to", &victim_url.replace("127.0.0.1", "localhost")],
    );
    refused(dir.path(), &out, 2, "is tenant v's location").await;
    let mut m = mysql_connect(&copy_url).await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers")
        .fetch_one(&mut m)
        .await
        .unwrap();
    assert_eq!(n, 3);
    m.close().await.unwrap();

    // a database half filled by a move of t1 that was killed (its mark
    // and a row): t2's move may not take it over
    let target = format!("{victim}_new");
    let target_url = with_db(&mysql_base_url(), &target);
    mysql_exec(
        &mysql_base_url(),
        &format!(
            "CREATE DATABASE `{target}`; CREATE TABLE `{target}`.customers (id BIGINT PRIMARY KEY); \
             INSERT INTO `{target}`.customers VALUES (1); \
             CREATE TABLE `{target}`._fleetmig_move (move_id VARCHAR(64), tenant VARCHAR(255), source TEXT); \
             INSERT INTO `{target}`._fleetmig_move VALUES ('m-old', 't1', 'sqlite:/elsewhere')"
        ),
    )
    .await;
    let out = mv(dir.path(), "t2", &["--to", &target_url]);
    refused(dir.path(), &out, 4, "is marked by move m-old of tenant t1").await;
    // t1 itself from another place: its mark names another source
    let out = mv(dir.path(), "t1", &["--to", &target_url]);
    refused(dir.path(), &out, 4, "from another place").await;
    let mut m = mysql_connect(&target_url).await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers")
        .fetch_one(&mut m)
        .await
        .unwrap();
    assert_eq!(n, 1, "the half-filled target is as it was");
    m.close().await.unwrap();
    for d in [&victim, &copy, &target] {
        mysql_exec(&mysql_base_url(), &format!("DROP DATABASE IF EXISTS `{d}`")).await;
    }
}
