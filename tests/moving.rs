//! `fleetmig move` on the real servers: a MariaDB database to a PostgreSQL
//! database and a SQLite file to a PostgreSQL schema with every kind of
//! value (examples/moving), verified; a move killed mid-copy and run again;
//! a type that cannot be carried; a source written to during the copy.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use common::*;
use sqlx::{Connection, Executor};

fn set() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/moving/migrations")
}

/// One customer as the tests write it and expect it back.
#[derive(Debug, Clone, PartialEq)]
struct Customer {
    id: i64,
    name: String,
    balance: String,
    ratio: Option<f64>,
    active: bool,
    born: Option<NaiveDate>,
    seen_at: Option<NaiveDateTime>,
    paid_at: Option<DateTime<Utc>>,
    profile: serde_json::Value,
    avatar: Option<Vec<u8>>,
    external_id: String,
}

fn customer(i: i64) -> Customer {
    let at = NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_micro_opt(0, 0, 0, ((i * 1013) % 1_000_000) as u32)
        .unwrap()
        + chrono::Duration::seconds(i * 3601);
    Customer {
        id: i,
        name: format!("customer {i} ünïcödé 'q' \"d\" back\\slash\ttab\nline"),
        balance: format!("{}.{:02}", i * 7 - 500, i % 100),
        ratio: (i % 5 != 0).then(|| i as f64 / 3.0),
        active: i % 2 == 0,
        born: (i % 7 != 0)
            .then(|| NaiveDate::from_ymd_opt(1990, 1, 1).unwrap() + chrono::Duration::days(i)),
        seen_at: (i % 6 != 0).then_some(at),
        paid_at: (i % 4 != 1).then(|| (at + chrono::Duration::minutes(7)).and_utc()),
        profile: serde_json::json!({"i": i, "tags": ["a", "b"], "nested": {"x": i % 3 == 0}}),
        avatar: (i % 4 != 0).then(|| vec![0u8, 255, (i % 256) as u8, 10]),
        external_id: format!("{:08x}-0000-4000-8000-{:012x}", i, i * 31),
    }
}

/// The seeded row 1 and customers 2..=n.
fn expected(n: i64) -> Vec<Customer> {
    let mut v = vec![Customer {
        id: 1,
        name: "house account".into(),
        balance: "0.00".into(),
        ratio: None,
        active: true,
        born: None,
        seen_at: None,
        paid_at: None,
        profile: serde_json::json!({"house": true}),
        avatar: None,
        external_id: "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into(),
    }];
    v.extend((2..=n).map(customer));
    v
}

const INSERT: &str = "INSERT INTO customers (id, name, balance, ratio, active, born, seen_at, paid_at, profile, avatar, external_id) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

macro_rules! fill {
    ($conn:expr, $n:expr) => {{
        let mut tx = $conn.begin().await.unwrap();
        for i in 2..=$n {
            let c = customer(i);
            sqlx::query(INSERT)
                .bind(c.id)
                .bind(&c.name)
                .bind(&c.balance)
                .bind(c.ratio)
                .bind(c.active)
                .bind(c.born)
                .bind(c.seen_at)
                .bind(c.paid_at)
                .bind(c.profile.to_string())
                .bind(c.avatar.clone())
                .bind(&c.external_id)
                .execute(&mut *tx)
                .await
                .unwrap();
            for k in 0..2 {
                sqlx::query("INSERT INTO orders (id, customer_id, total) VALUES (?, ?, ?)")
                    .bind(i * 2 + k)
                    .bind(i)
                    .bind(format!("{}.99", i % 50))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
        }
        tx.commit().await.unwrap();
    }};
}

/// A customer as SQL returns it (balance, profile and id as text).
type CustomerRow = (
    i64,
    String,
    String,
    Option<f64>,
    bool,
    Option<NaiveDate>,
    Option<NaiveDateTime>,
    Option<DateTime<Utc>>,
    String,
    Option<Vec<u8>>,
    String,
);

impl From<CustomerRow> for Customer {
    fn from(r: CustomerRow) -> Customer {
        Customer {
            id: r.0,
            name: r.1,
            balance: r.2,
            ratio: r.3,
            active: r.4,
            born: r.5,
            seen_at: r.6,
            paid_at: r.7,
            profile: serde_json::from_str(&r.8).unwrap(),
            avatar: r.9,
            external_id: r.10,
        }
    }
}

/// The customers of a PostgreSQL tenant (`schema`), in id order.
async fn pg_customers(url: &str, schema: &str) -> Vec<Customer> {
    let mut c = pg_connect(url).await;
    let rows: Vec<CustomerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, name, balance::text, ratio, active, born, seen_at, paid_at, profile::text, avatar, external_id::text \
         FROM \"{schema}\".customers ORDER BY id"
    )))
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    rows.into_iter().map(Customer::from).collect()
}

/// A count on the server at `url`; 0 while the database does not exist.
async fn pg_count(url: &str, sql: &str) -> i64 {
    let Ok(mut c) = sqlx::PgConnection::connect(url).await else {
        return 0;
    };
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut c)
        .await
        .unwrap_or(0);
    c.close().await.unwrap();
    n
}

fn registry(dir: &Path, url: &str) {
    std::fs::write(
        dir.join("fleet.csv"),
        format!("# tenants of the move tests\nid,url,schema,tags\nt1,{url},,tier=pro\nt2,sqlite:other.db,,\n"),
    )
    .unwrap();
}

/// The registry fleet in `dir` with t1 at `url`, synced to the set's head.
fn synced(dir: &Path, url: &str) {
    registry(dir, url);
    let out = sync_fleet(
        dir,
        "registry:fleet.csv",
        &set(),
        &["--state", "state.db", "--create-missing"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// A registry fleet in `dir` whose tenant t1 is a SQLite file at the
/// set's head holding customers 1..=n and their orders.
async fn sqlite_source(dir: &Path, n: i64) {
    synced(dir, "sqlite:t1.db");
    let mut s = sqlite(&dir.join("t1.db")).await;
    fill!(s, n);
    s.close().await.unwrap();
}

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "move",
        "--fleet",
        "registry:fleet.csv",
        "--tenant",
        "t1",
        "--state",
        "state.db",
    ];
    v.extend_from_slice(extra);
    v
}

fn mv(dir: &Path, extra: &[&str]) -> Output {
    let set = set();
    let mut a = args(extra);
    a.extend(["--migrations", set.to_str().unwrap()]);
    run_in(dir, &a)
}

fn report(dir: &Path, o: &Output) -> serde_json::Value {
    let folder = stdout(o).lines().last().unwrap_or_default().to_string();
    let text = std::fs::read_to_string(dir.join(folder).join("move.json"))
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(o), stderr(o)));
    serde_json::from_str(&text).unwrap()
}

async fn moves(dir: &Path) -> Vec<(String, i64)> {
    let mut c = sqlite(&dir.join("state.db")).await;
    sqlx::query_as("SELECT status, rows_copied FROM fleetmig_moves ORDER BY started_at")
        .fetch_all(&mut c)
        .await
        .unwrap()
}

async fn mysql_database(prefix: &str) -> (String, String) {
    let name = format!("fmmv{prefix}{:06x}", rand::random::<u32>() & 0xffffff);
    mysql_exec(&mysql_base_url(), &format!("CREATE DATABASE `{name}`")).await;
    (name.clone(), with_db(&mysql_base_url(), &name))
}

async fn mysql_drop(name: &str) {
    mysql_exec(
        &mysql_base_url(),
        &format!("DROP DATABASE IF EXISTS `{name}`"),
    )
    .await;
}

fn new_pg_name(prefix: &str) -> (String, String) {
    let name = format!("fm_mv{prefix}_{:08x}", rand::random::<u32>());
    (name.clone(), with_db(&pg_base_url(), &name))
}

async fn pg_drop_database(name: &str) {
    let mut admin = pg_connect(&pg_base_url()).await;
    let _ = admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .await;
    let _ = admin.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mariadb_database_moves_to_a_new_postgresql_database_with_every_type() {
    let dir = tempfile::tempdir().unwrap();
    let (src, src_url) = mysql_database("a").await;
    synced(dir.path(), &src_url);
    let mut m = mysql_connect(&src_url).await;
    fill!(m, 300);
    // the source's own row 1, not the one the target's migration seeds
    sqlx::query("UPDATE customers SET name = 'house account (renamed)' WHERE id = 1")
        .execute(&mut m)
        .await
        .unwrap();
    // the last customer goes: its id is not to be given again after the move
    m.execute("DELETE FROM orders WHERE customer_id = 300; DELETE FROM customers WHERE id = 300")
        .await
        .unwrap();
    m.close().await.unwrap();

    let (dst, dst_url) = new_pg_name("a");
    let out = mv(dir.path(), &["--to", &dst_url, "--batch-rows", "64"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // the registry keeps its URLs as written; nothing fleetmig prints does
    let all = everything_printed(&dir.path().join("reports"), &out);
    assert!(
        !all.contains(TEST_PASSWORD),
        "a password was printed: {all}"
    );

    // every value, as written to MariaDB, now in PostgreSQL
    let got = pg_customers(&dst_url, "public").await;
    let mut want = expected(299);
    want[0].name = "house account (renamed)".into();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    assert_eq!(pg_count(&dst_url, "SELECT count(*) FROM orders").await, 596);
    // the target's history is the source's, and its sequence is past the keys
    let mut c = pg_connect(&dst_url).await;
    assert_eq!(
        pg_history(&mut c, "public").await,
        vec![(1, true), (2, true)]
    );
    let next: i64 = sqlx::query_scalar(
        "INSERT INTO customers (name, balance, active) VALUES ('new', 1, true) RETURNING id",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(next, 301);
    c.close().await.unwrap();

    let r = report(dir.path(), &out);
    assert_eq!(r["status"], "done");
    assert_eq!(r["rows"], 299 + 596);
    let tables: Vec<(String, u64)> = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                t["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    // parents first
    assert_eq!(
        tables,
        vec![("customers".into(), 299), ("orders".into(), 596)]
    );
    assert!(
        r["tables"][0]["checksum"]
            .as_str()
            .unwrap()
            .starts_with("299:")
    );
    assert_eq!(moves(dir.path()).await, vec![("done".to_string(), 895)]);
    // the registry row points at the new place; the rest of the file stays
    let registry = std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap();
    assert!(
        registry.contains(&format!("t1,{dst_url},,tier=pro")),
        "{registry}"
    );
    assert!(registry.starts_with("# tenants of the move tests\n"));
    assert!(registry.contains("t2,sqlite:other.db,,"));
    assert!(r["registry_backup"].as_str().unwrap().ends_with(".bak"));
    // the source is untouched
    let mut m = mysql_connect(&src_url).await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers")
        .fetch_one(&mut m)
        .await
        .unwrap();
    assert_eq!(n, 299);
    m.close().await.unwrap();
    // status through the switched registry: at version 2 on PostgreSQL
    let out = run_in(
        dir.path(),
        &[
            "status",
            "--fleet",
            "registry:fleet.csv",
            "--migrations",
            set().to_str().unwrap(),
        ],
    );
    assert!(
        stdout(&out).contains("t1"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    mysql_drop(&src).await;
    pg_drop_database(&dst).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_file_moves_to_a_postgresql_schema_and_the_source_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    synced(dir.path(), "sqlite:t1.db");
    let mut s = sqlite(&dir.path().join("t1.db")).await;
    fill!(s, 120);
    s.close().await.unwrap();

    let db = pg_database("mvs").await;
    let out = mv(
        dir.path(),
        &["--to", &db.url, "--schema", "tenant_t1", "--drop-source"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let got = pg_customers(&db.url, "tenant_t1").await;
    assert_eq!(got, expected(120));
    assert_eq!(
        pg_count(&db.url, "SELECT count(*) FROM tenant_t1.orders").await,
        238
    );
    assert!(!dir.path().join("t1.db").exists(), "--drop-source");
    let r = report(dir.path(), &out);
    assert_eq!(r["source_dropped"], true);
    let registry = std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap();
    assert!(registry.contains(",tenant_t1,tier=pro"), "{registry}");
    let md = std::fs::read_to_string(
        dir.path()
            .join(stdout(&out).lines().last().unwrap())
            .join("summary.md"),
    )
    .unwrap();
    assert!(md.contains("| customers | 120 |"), "{md}");
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_move_killed_mid_copy_starts_over_cleanly_when_run_again() {
    let dir = tempfile::tempdir().unwrap();
    sqlite_source(dir.path(), 4000).await;
    let before = std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap();

    let db = pg_database("mvk").await;
    let set = set();
    let mut a = args(&[
        "--to",
        &db.url,
        "--schema",
        "moved",
        "--batch-rows",
        "50",
        "--pause",
        "30ms",
    ]);
    a.extend(["--migrations", set.to_str().unwrap()]);
    let mut child = fleetmig_process(dir.path()).args(&a).spawn().unwrap();
    let t0 = Instant::now();
    // customers are written (PostgreSQL targets are filled a table at a
    // time), the orders are being read
    loop {
        let n = pg_count(&db.url, "SELECT count(*) FROM moved.customers").await;
        if n == 4000 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the copy never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    let _ = child.wait();
    // mid-copy: every customer written, no order yet (a PostgreSQL target
    // takes a table's rows at the table's end)
    assert_eq!(
        pg_count(&db.url, "SELECT count(*) FROM moved.customers").await,
        4000
    );
    assert_eq!(
        pg_count(&db.url, "SELECT count(*) FROM moved.orders").await,
        0
    );
    // the target is the killed move's: another tenant's move into it waits
    let out = run_in(
        dir.path(),
        &[
            "move",
            "--fleet",
            "registry:fleet.csv",
            "--tenant",
            "t2",
            "--to",
            &db.url,
            "--schema",
            "moved",
            "--migrations",
            set.to_str().unwrap(),
            "--state",
            "state.db",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("a move of tenant t1 into"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap(),
        before,
        "the registry is not switched by a move that did not finish"
    );

    let out = mv(dir.path(), &["--to", &db.url, "--schema", "moved"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let r = report(dir.path(), &out);
    assert!(r["restarted_from"].is_string(), "{r}");
    assert_eq!(pg_customers(&db.url, "moved").await, expected(4000));
    assert_eq!(
        pg_count(&db.url, "SELECT count(*) FROM moved.orders").await,
        7998
    );
    let m = moves(dir.path()).await;
    assert_eq!(m.len(), 2);
    assert_eq!(
        m[0].0, "failed",
        "the killed move is recorded as interrupted"
    );
    assert_eq!(m[1], ("done".to_string(), 4000 + 7998));
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_type_that_cannot_be_carried_is_refused_before_anything_moves() {
    let dir = tempfile::tempdir().unwrap();
    let db = pg_database("mvt").await;
    db.exec("CREATE SCHEMA tenant_t1").await;
    std::fs::write(
        dir.path().join("fleet.csv"),
        format!("id,url,schema,tags\nt1,{},tenant_t1,\n", db.url),
    )
    .unwrap();
    let out = sync_fleet(
        dir.path(),
        "registry:fleet.csv",
        &set(),
        &["--state", "state.db"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    db.exec("ALTER TABLE tenant_t1.customers ADD COLUMN stay int4range")
        .await;
    let before = std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap();
    let out = mv(dir.path(), &["--to", "sqlite:moved/t1.db"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("customers.stay")
            && err.contains("int4range")
            && err.contains("nothing was moved"),
        "{err}"
    );
    assert!(!err.contains(TEST_PASSWORD));
    assert!(
        !dir.path().join("moved/t1.db").exists(),
        "no target was created"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap(),
        before
    );
    assert!(moves(dir.path()).await.is_empty());
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_written_to_during_the_copy_fails_the_move() {
    let dir = tempfile::tempdir().unwrap();
    let (src, src_url) = mysql_database("w").await;
    synced(dir.path(), &src_url);
    let mut m = mysql_connect(&src_url).await;
    fill!(m, 1500);
    let before = std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap();

    let (dst, dst_url) = new_pg_name("w");
    let set = set();
    let mut a = args(&["--to", &dst_url, "--batch-rows", "50", "--pause", "40ms"]);
    a.extend(["--migrations", set.to_str().unwrap()]);
    let child = fleetmig_process(dir.path()).args(&a).spawn().unwrap();
    let t0 = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if pg_count(&dst_url, "SELECT count(*) FROM customers").await > 100 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the copy never started"
        );
    }
    // the application writes while the copy runs
    sqlx::query("UPDATE customers SET name = 'renamed during the move' WHERE id = 1400")
        .execute(&mut m)
        .await
        .unwrap();
    m.close().await.unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let said = stdout(&out);
    assert!(
        said.contains("written to during the copy")
            && said.contains("customers (1500 rows when copied, 1500 now, rows changed)"),
        "{said}"
    );
    assert_eq!(report(dir.path(), &out)["status"], "failed");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap(),
        before
    );
    assert_eq!(moves(dir.path()).await[0].0, "failed");
    mysql_drop(&src).await;
    pg_drop_database(&dst).await;
}

/// The customers of a SQLite tenant, in id order (balance with its two
/// decimals: SQLite keeps NUMERIC as a number).
async fn sqlite_customers(path: &Path) -> Vec<Customer> {
    let mut c = sqlite(path).await;
    let rows: Vec<CustomerRow> = sqlx::query_as(
        "SELECT id, name, printf('%.2f', balance), ratio, active, born, seen_at, paid_at, profile, avatar, external_id \
         FROM customers ORDER BY id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    rows.into_iter().map(Customer::from).collect()
}

/// The writers of the other two systems: SQLite → MariaDB → SQLite, every
/// value the same at the end, the history carried along.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_moves_to_mariadb_and_back_to_sqlite_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    sqlite_source(dir.path(), 150).await;
    let name = format!("fmmvb{:06x}", rand::random::<u32>() & 0xffffff);
    let url = with_db(&mysql_base_url(), &name);
    let out = mv(dir.path(), &["--to", &url]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let mut m = mysql_connect(&url).await;
    let (n, seen): (i64, Option<NaiveDateTime>) =
        sqlx::query_as("SELECT COUNT(*), MAX(seen_at) FROM customers")
            .fetch_one(&mut m)
            .await
            .unwrap();
    assert_eq!(n, 150);
    assert_eq!(seen, expected(150).iter().filter_map(|c| c.seen_at).max());
    // AUTO_INCREMENT continues after the copied keys
    let id = sqlx::query("INSERT INTO customers (name, balance, active) VALUES ('new', 1, true)")
        .execute(&mut m)
        .await
        .unwrap()
        .last_insert_id();
    assert_eq!(id, 151);
    sqlx::query("DELETE FROM customers WHERE id = 151")
        .execute(&mut m)
        .await
        .unwrap();
    m.close().await.unwrap();

    let out = mv(dir.path(), &["--to", "sqlite:back/t1.db", "--drop-source"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // the MariaDB database is gone
    let mut admin = mysql_connect(&mysql_base_url()).await;
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(&name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(left.is_empty(), "--drop-source left {left:?}");
    admin.close().await.unwrap();
    let back = dir.path().join("back/t1.db");
    assert_eq!(sqlite_customers(&back).await, expected(150));
    assert_eq!(sqlite_history(&back).await, vec![(1, true), (2, true)]);
    let registry = std::fs::read_to_string(dir.path().join("fleet.csv")).unwrap();
    assert!(
        registry.contains(&format!("t1,sqlite:{},,", back.display())),
        "{registry}"
    );
    assert_eq!(moves(dir.path()).await.len(), 2);
    mysql_drop(&name).await;
}

/// `sync` of the registry fleet in `dir` with the set at `set`: it succeeds.
fn sync_one(dir: &Path, set: &str) {
    let out = run_in(
        dir,
        &[
            "sync",
            "--fleet",
            "registry:fleet.csv",
            "--migrations",
            set,
            "--state",
            "state.db",
            "--progress-every",
            "0",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Keys that are not one integer page without skipping a row: a NUMERIC key
/// (PostgreSQL would sort it as text if the read cast were what ORDER BY
/// named) and a composite text key, in pages of 7.
#[tokio::test(flavor = "multi_thread")]
async fn numeric_and_composite_keys_page_without_skipping_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let set = migration_dir(&[(
        "0001_keys.sql",
        "CREATE TABLE items (k NUMERIC(12, 2) PRIMARY KEY, label TEXT NOT NULL);\n\
         CREATE TABLE pairs (a VARCHAR(10) NOT NULL, b INTEGER NOT NULL, v TEXT, PRIMARY KEY (a, b));\n",
    )]);
    let db = pg_database("mvkeys").await;
    db.exec("CREATE SCHEMA tenant_t1").await;
    std::fs::write(
        dir.path().join("fleet.csv"),
        format!("id,url,schema,tags\nt1,{},tenant_t1,\n", db.url),
    )
    .unwrap();
    let s = set.path().to_str().unwrap();
    sync_one(dir.path(), s);
    db.exec(
        "INSERT INTO tenant_t1.items SELECT i + 0.25, 'item ' || i FROM generate_series(1, 1000) i; \
         INSERT INTO tenant_t1.pairs SELECT chr(65 + i % 3) || chr(97 + i % 26), i, 'v' || i FROM generate_series(1, 300) i",
    )
    .await;
    let out = run_in(
        dir.path(),
        &[
            "move",
            "--fleet",
            "registry:fleet.csv",
            "--tenant",
            "t1",
            "--to",
            "sqlite:t1.db",
            "--batch-rows",
            "7",
            "--migrations",
            s,
            "--state",
            "state.db",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let mut c = sqlite(&dir.path().join("t1.db")).await;
    let (n, sum): (i64, f64) = sqlx::query_as("SELECT count(*), sum(k) FROM items")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!((n, sum), (1000, 500_500.0 + 250.0));
    let n: i64 = sqlx::query_scalar("SELECT count(DISTINCT a || '/' || b) FROM pairs")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 300);
    c.close().await.unwrap();
    db.drop_now().await;
}

/// MariaDB: DECIMAL keys past 2^53 (a double cannot tell them apart) page
/// one by one; a TINYINT(1) holding 2 is refused by a PostgreSQL boolean,
/// not carried as true; its data fixed, the move is run again (the schema
/// the failed move created was removed again).
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_big_decimal_keys_and_a_boolean_that_is_not_one() {
    let dir = tempfile::tempdir().unwrap();
    let set = migration_dir(&[(
        "0001_big.sql",
        "CREATE TABLE big (k DECIMAL(30, 0) PRIMARY KEY, flag BOOLEAN NOT NULL);\n",
    )]);
    let (src, src_url) = mysql_database("big").await;
    std::fs::write(
        dir.path().join("fleet.csv"),
        format!("id,url,schema,tags\nt1,{src_url},,\n"),
    )
    .unwrap();
    let s = set.path().to_str().unwrap();
    sync_one(dir.path(), s);
    let mut m = mysql_connect(&src_url).await;
    for i in 0..51i64 {
        sqlx::query(
            "INSERT INTO big (k, flag) VALUES (CAST(? AS DECIMAL(30, 0)) + 9007199254740992, ?)",
        )
        .bind(i)
        .bind(if i == 40 { 2 } else { i % 2 })
        .execute(&mut m)
        .await
        .unwrap();
    }
    let db = pg_database("mvbig").await;
    let mv = |dir: &Path| {
        run_in(
            dir,
            &[
                "move",
                "--fleet",
                "registry:fleet.csv",
                "--tenant",
                "t1",
                "--to",
                &db.url,
                "--schema",
                "big_t1",
                "--batch-rows",
                "3",
                "--migrations",
                s,
                "--state",
                "state.db",
            ],
        )
    };
    let out = mv(dir.path());
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("big.flag at k=\"9007199254741032\": cannot carry 2 into boolean"),
        "{}",
        stdout(&out)
    );
    // the schema the failed move created is gone again: nothing blocks a re-run
    assert_eq!(report(dir.path(), &out)["target_removed"], true);
    assert_eq!(
        pg_count(
            &db.url,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'big_t1'"
        )
        .await,
        0
    );
    sqlx::query("UPDATE big SET flag = 1 WHERE flag = 2")
        .execute(&mut m)
        .await
        .unwrap();
    m.close().await.unwrap();
    let out = mv(dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(report(dir.path(), &out)["created"], "schema");
    let mut c = pg_connect(&db.url).await;
    let keys: Vec<String> = sqlx::query_scalar("SELECT k::text FROM big_t1.big ORDER BY k")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(
        keys,
        (0..51)
            .map(|i| (9007199254740992i64 + i).to_string())
            .collect::<Vec<_>>()
    );
    c.close().await.unwrap();
    mysql_drop(&src).await;
    db.drop_now().await;
}
