//! Helpers shared by the modules of the move tests: the example set, the
//! customers written and expected back, reading them, the registry, and
//! running `fleetmig move`.

use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::{Connection, Executor};

use crate::common::*;

pub fn set() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/moving/migrations")
}

/// One customer as the tests write it and expect it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    pub id: i64,
    pub name: String,
    pub balance: String,
    pub ratio: Option<f64>,
    pub active: bool,
    pub born: Option<NaiveDate>,
    pub seen_at: Option<NaiveDateTime>,
    pub paid_at: Option<DateTime<Utc>>,
    pub profile: serde_json::Value,
    pub avatar: Option<Vec<u8>>,
    pub external_id: String,
}

pub fn customer(i: i64) -> Customer {
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
pub fn expected(n: i64) -> Vec<Customer> {
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

pub const INSERT: &str = "INSERT INTO customers (id, name, balance, ratio, active, born, seen_at, paid_at, profile, avatar, external_id) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Customers 2..=`$n` and two orders each, into `$conn` in one
/// transaction (`customer` and `INSERT` from here, `Connection` in scope).
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
pub(crate) use fill;

/// A customer as SQL returns it (balance, profile and id as text).
pub type CustomerRow = (
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
pub async fn pg_customers(url: &str, schema: &str) -> Vec<Customer> {
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
pub async fn pg_count(url: &str, sql: &str) -> i64 {
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

pub fn registry(dir: &Path, url: &str) {
    std::fs::write(
        dir.join("fleet.csv"),
        format!("# tenants of the move tests\nid,url,schema,tags\nt1,{url},,tier=pro\nt2,sqlite:other.db,,\n"),
    )
    .unwrap();
}

/// The registry fleet in `dir` with t1 at `url`, synced to the set's head.
pub fn synced(dir: &Path, url: &str) {
    registry(dir, url);
    let out = sync_fleet(
        dir,
        "registry:fleet.csv",
        &set(),
        &["--state", "state.db", "--create-missing"],
    );
    expect_exit(&out, 0);
}

/// A registry fleet in `dir` whose tenant t1 is a SQLite file at the
/// set's head holding customers 1..=n and their orders.
pub async fn sqlite_source(dir: &Path, n: i64) {
    synced(dir, "sqlite:t1.db");
    let mut s = sqlite(&dir.join("t1.db")).await;
    fill!(s, n);
    s.close().await.unwrap();
}

pub fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
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

pub fn mv(dir: &Path, extra: &[&str]) -> Output {
    let set = set();
    let mut a = args(extra);
    a.extend(["--migrations", set.to_str().unwrap()]);
    run_in(dir, &a)
}

pub fn report(dir: &Path, o: &Output) -> serde_json::Value {
    let folder = stdout(o).lines().last().unwrap_or_default().to_string();
    let text = std::fs::read_to_string(dir.join(folder).join("move.json"))
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(o), stderr(o)));
    serde_json::from_str(&text).unwrap()
}

pub async fn moves(dir: &Path) -> Vec<(String, i64)> {
    let mut c = sqlite(&dir.join("state.db")).await;
    sqlx::query_as("SELECT status, rows_copied FROM fleetmig_moves ORDER BY started_at")
        .fetch_all(&mut c)
        .await
        .unwrap()
}

pub async fn mysql_database(prefix: &str) -> (String, String) {
    let name = format!("fmmv{prefix}{:06x}", rand::random::<u32>() & 0xffffff);
    mysql_exec(&mysql_base_url(), &format!("CREATE DATABASE `{name}`")).await;
    (name.clone(), with_db(&mysql_base_url(), &name))
}

pub async fn mysql_drop(name: &str) {
    mysql_exec(
        &mysql_base_url(),
        &format!("DROP DATABASE IF EXISTS `{name}`"),
    )
    .await;
}

pub fn new_pg_name(prefix: &str) -> (String, String) {
    let name = format!("fm_mv{prefix}_{:08x}", rand::random::<u32>());
    (name.clone(), with_db(&pg_base_url(), &name))
}

pub async fn pg_drop_database(name: &str) {
    let mut admin = pg_connect(&pg_base_url()).await;
    let _ = admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .await;
    let _ = admin.close().await;
}
