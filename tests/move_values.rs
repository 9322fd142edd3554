//! `fleetmig move` carries every value exactly or refuses it by name:
//! JSON as text (a `json` column byte for byte, `jsonb` numbers never
//! through a float), PostgreSQL's infinities, BC dates and years past 9999
//! into PostgreSQL, refused (table, column, key) where the target cannot
//! hold them; MySQL zero dates into MySQL as they are, refused elsewhere
//! unless `--zero-dates null`; a database tenant's second schema moved with
//! it, or the move refused naming it. A refused value leaves no target
//! behind.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use sqlx::Connection;

/// One table of every troublesome kind, in each system's spelling; `audit`:
/// a second version putting a table in a second PostgreSQL schema.
fn values_set(audit: bool) -> tempfile::TempDir {
    let mut files = vec![
        (
            "0001_values.postgres.sql",
            "CREATE TABLE v (id int PRIMARY KEY, j json, jb jsonb, d date, ts timestamp, tz timestamptz, n numeric);",
        ),
        (
            "0001_values.mysql.sql",
            "CREATE TABLE v (id int PRIMARY KEY, j json, jb json, d date, ts datetime(6), tz timestamp(6) NULL, n decimal(40,10));",
        ),
        (
            "0001_values.sql",
            "CREATE TABLE v (id INTEGER PRIMARY KEY, j JSON, jb JSON, d DATE, ts TIMESTAMP, tz TIMESTAMPTZ, n NUMERIC);",
        ),
    ];
    if audit {
        files.push((
            "0002_audit.postgres.sql",
            "CREATE SCHEMA audit; CREATE TABLE audit.events (id int PRIMARY KEY, what text);",
        ));
        files.push((
            "0002_audit.sql",
            "CREATE TABLE audit_events (id int PRIMARY KEY, what text);",
        ));
    }
    migration_dir(&files)
}

fn mv(dir: &Path, set: &Path, to: &str, extra: &[&str]) -> Output {
    let mut a = vec![
        "move",
        "--fleet",
        "registry:fleet.csv",
        "--tenant",
        "t1",
        "--state",
        "state.db",
        "--migrations",
        set.to_str().unwrap(),
        "--to",
        to,
    ];
    a.extend_from_slice(extra);
    run_in(dir, &a)
}

/// A registry whose t1 is at `url`, synced with `set`.
fn fleet(dir: &Path, url: &str, set: &Path) {
    std::fs::write(
        dir.join("fleet.csv"),
        format!("id,url,schema,tags\nt1,{url},,\n"),
    )
    .unwrap();
    let out = sync_fleet(dir, "registry:fleet.csv", set, &["--state", "state.db"]);
    expect_exit(&out, 0);
}

/// Every row of `v` as PostgreSQL prints it.
async fn pg_rows(url: &str, table: &str) -> Vec<String> {
    let mut c = pg_connect(url).await;
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT t::text FROM {table} t ORDER BY 1"
    )))
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    rows
}

async fn pg_exists(name: &str) -> bool {
    let mut c = pg_connect(&pg_base_url()).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    n > 0
}

async fn mysql_exists(name: &str) -> bool {
    let mut c = mysql_connect(&mysql_base_url()).await;
    let n: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(name)
    .fetch_one(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    n > 0
}

/// id, then j, d, ts, tz and n as MariaDB prints them.
type MyRow = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn name(prefix: &str) -> String {
    format!("fm_{prefix}_{:08x}", rand::random::<u32>())
}

const PG_ROWS: &str = r#"INSERT INTO v VALUES
 (1, '{"b":1,  "a":2, "b":3}', '{"n": 12345678901234567890123456789, "f": 0.1000000000000000055511151231257827}',
  'infinity', '-infinity', 'infinity', 'NaN'),
 (2, '[1.0, 1e2,  -0]', '[1.0, 1e2, -0]', '0044-03-15 BC', '0044-03-15 12:00:00.5 BC', '2026-01-01 10:00:00.123456+02', '12345678901234567890.1234567890123'),
 (3, '"\u00e9\n"', '{"a": {"b": [true, null]}}', '5874897-12-31', '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00', '-0.000000000000000000001'),
 (4, NULL, NULL, '2026-03-01', '2026-03-01 10:20:30', NULL, '1.50')"#;

#[tokio::test(flavor = "multi_thread")]
async fn postgresql_values_arrive_exactly_and_what_mariadb_cannot_hold_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let set = values_set(false);
    let src = pg_database("mvval").await;
    fleet(dir.path(), &src.url, set.path());
    src.exec(PG_ROWS).await;

    // into MariaDB: the infinity of row 1 is refused, naming it, and the
    // database the move created is removed again
    let my = name("mvvalmy");
    let my_url = with_db(&mysql_base_url(), &my);
    let out = mv(dir.path(), set.path(), &my_url, &[]);
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{said}{}", stderr(&out));
    assert!(
        said.contains(
            "v.d at id=1: cannot carry infinity into date (mysql): the column holds no infinity"
        ),
        "{said}"
    );
    assert!(!said.contains("panicked"), "{said}");
    assert!(
        !mysql_exists(&my).await,
        "the target the move created is gone"
    );

    // into another PostgreSQL database: every value as it was, text for text
    let dst = name("mvvaldst");
    let dst_url = with_db(&pg_base_url(), &dst);
    let out = mv(dir.path(), set.path(), &dst_url, &[]);
    expect_exit(&out, 0);
    assert_eq!(pg_rows(&dst_url, "v").await, pg_rows(&src.url, "v").await);
    let rows = pg_rows(&dst_url, "v").await;
    assert!(
        rows[0].contains(r#"{""b"":1,  ""a"":2, ""b"":3}"#),
        "json byte for byte: {}",
        rows[0]
    );
    assert!(
        rows[0].contains("12345678901234567890123456789"),
        "{}",
        rows[0]
    );
    assert!(
        rows[0].contains("0.1000000000000000055511151231257827"),
        "{}",
        rows[0]
    );
    assert!(rows[1].contains("0044-03-15 BC"), "{}", rows[1]);
    assert!(rows[2].contains("5874897-12-31"), "{}", rows[2]);
    src.drop_now().await;
    let mut admin = pg_connect(&pg_base_url()).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{dst}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_zero_dates_stay_in_mysql_and_are_refused_or_nulled_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let set = values_set(false);
    let src = name("mvzero");
    let src_url = with_db(&mysql_base_url(), &src);
    mysql_exec(&mysql_base_url(), &format!("CREATE DATABASE `{src}`")).await;
    fleet(dir.path(), &src_url, set.path());
    mysql_exec(
        &src_url,
        r#"SET SESSION sql_mode = ''; INSERT INTO v VALUES
         (1, '{"n": 12345678901234567890123456789,  "z":1}', '{"n": 0.1000000000000000055511151231257827}',
          '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '1.5'),
         (2, '[]', '{}', '2020-00-15', '2026-01-01 10:00:00.5', '2026-01-01 10:00:00.5', '-0.0000000001'),
         (3, NULL, NULL, '2026-03-01', NULL, NULL, '123456789012345678901234567890.1234567890')"#,
    )
    .await;

    // into PostgreSQL: refused by name, and nothing left behind
    let dst = name("mvzerodst");
    let dst_url = with_db(&pg_base_url(), &dst);
    let out = mv(dir.path(), set.path(), &dst_url, &[]);
    let said = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{said}{}", stderr(&out));
    assert!(
        said.contains("v.d at id=1: cannot carry 0000-00-00 into date"),
        "{said}"
    );
    assert!(said.contains("--zero-dates null"), "{said}");
    assert!(!pg_exists(&dst).await);

    // with --zero-dates null: NULL where the zero dates were, the rest exact
    let out = mv(dir.path(), set.path(), &dst_url, &["--zero-dates", "null"]);
    expect_exit(&out, 0);
    let rows = pg_rows(&dst_url, "v").await;
    assert_eq!(
        rows,
        vec![
            r#"(1,"{""n"": 12345678901234567890123456789,  ""z"":1}","{""n"": 0.1000000000000000055511151231257827}",,,,1.5000000000)"#,
            r#"(2,[],{},,"2026-01-01 10:00:00.5","2026-01-01 10:00:00.5+00",-0.0000000001)"#,
            r#"(3,,,2026-03-01,,,123456789012345678901234567890.1234567890)"#,
        ]
    );
    let mut admin = pg_connect(&pg_base_url()).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{dst}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();

    // the registry now says t1 is on PostgreSQL; put it back on MariaDB and
    // move it to another MariaDB database: zero dates as they are
    fleet(dir.path(), &src_url, set.path());
    let copy = name("mvzerocopy");
    let copy_url = with_db(&mysql_base_url(), &copy);
    let out = mv(dir.path(), set.path(), &copy_url, &[]);
    expect_exit(&out, 0);
    let read = |url: String| async move {
        let mut c = mysql_connect(&url).await;
        let rows: Vec<MyRow> = sqlx::query_as(
            "SELECT id, CAST(j AS CHAR), CAST(d AS CHAR), CAST(ts AS CHAR), CAST(tz AS CHAR), CAST(n AS CHAR) FROM v ORDER BY id",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
        rows
    };
    let (a, b) = (read(src_url.clone()).await, read(copy_url.clone()).await);
    assert_eq!(a, b);
    assert_eq!(a[0].2.as_deref(), Some("0000-00-00"));
    assert_eq!(a[1].2.as_deref(), Some("2020-00-15"));
    for d in [&src, &copy] {
        mysql_exec(&mysql_base_url(), &format!("DROP DATABASE IF EXISTS `{d}`")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_tenants_second_schema_moves_with_it_or_the_move_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let set = values_set(true);
    let src = pg_database("mvschemas").await;
    fleet(dir.path(), &src.url, set.path());
    src.exec("INSERT INTO v (id, n) VALUES (1, 1); INSERT INTO audit.events VALUES (1, 'created'), (2, 'renamed')")
        .await;

    // a schema target cannot hold the audit schema: refused before anything
    let other = pg_database("mvschemas2").await;
    let out = mv(dir.path(), set.path(), &other.url, &["--schema", "t1"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}{err}", stdout(&out));
    assert!(err.contains("schema audit"), "{err}");
    assert_eq!(
        pg_rows(&other.url, "pg_namespace")
            .await
            .iter()
            .filter(|n| n.contains("t1"))
            .count(),
        0,
        "no schema was created"
    );
    // SQLite has one namespace too
    let out = mv(dir.path(), set.path(), "sqlite:t1.db", &[]);
    expect_exit(&out, 2);
    assert!(!dir.path().join("t1.db").exists());

    // a new database: both schemas, every row
    let dst = name("mvschemasdst");
    let dst_url = with_db(&pg_base_url(), &dst);
    let out = mv(dir.path(), set.path(), &dst_url, &[]);
    expect_exit(&out, 0);
    assert_eq!(
        pg_rows(&dst_url, "audit.events").await,
        pg_rows(&src.url, "audit.events").await
    );
    assert_eq!(pg_rows(&dst_url, "v").await, pg_rows(&src.url, "v").await);
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            dir.path()
                .join(stdout(&out).lines().last().unwrap())
                .join("move.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let tables: Vec<&str> = json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert!(tables.contains(&"audit.events"), "{tables:?}");
    src.drop_now().await;
    other.drop_now().await;
    let mut admin = pg_connect(&pg_base_url()).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{dst}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
}

/// PostgreSQL targets are filled with binary COPY: each value in its
/// column's own width and form. A MySQL tenant with the narrow types and
/// their edge values arrives in PostgreSQL as it was, read back by the
/// server: 2- and 4-byte integers at their ends, `real`, numerics of a
/// fixed scale (negative, zero, below one), `char`, `timestamp(3)`,
/// `uuid`.
#[tokio::test(flavor = "multi_thread")]
async fn narrow_types_arrive_in_postgresql_in_their_own_width() {
    let dir = tempfile::tempdir().unwrap();
    let set = migration_dir(&[
        (
            "0001_narrow.postgres.sql",
            "CREATE TABLE w (id int PRIMARY KEY, s smallint, i integer, r real, n numeric(12,3), \
             c char(5), v varchar(20), t timestamp(3), u uuid);",
        ),
        (
            "0001_narrow.mysql.sql",
            "CREATE TABLE w (id int PRIMARY KEY, s smallint, i int, r float, n decimal(12,3), \
             c char(5), v varchar(20), t datetime(3), u char(36));",
        ),
    ]);
    let db = format!("fm_narrow_{:08x}", rand::random::<u32>());
    let src = with_db(&mysql_base_url(), &db);
    mysql_exec(&mysql_base_url(), &format!("CREATE DATABASE {db}")).await;
    fleet(dir.path(), &src, set.path());
    mysql_exec(
        &src,
        "INSERT INTO w VALUES \
         (1, -32768, -2147483648, -1.5, -123456789.125, 'ab', 'x', '1999-12-31 23:59:59.999', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), \
         (2, 32767, 2147483647, 0.25, 0.001, '', '', '2000-01-01 00:00:00.000', '00000000-0000-0000-0000-000000000000'), \
         (3, 0, 0, 16777216, 0, 'abcde', 'née ✓', '1970-01-01 00:00:00.001', 'ffffffff-ffff-ffff-ffff-ffffffffffff'), \
         (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    .await;
    let target = pg_database("narrow").await;
    let out = mv(dir.path(), set.path(), &target.url, &[]);
    expect_exit(&out, 0);
    let mut c = pg_connect(&target.url).await;
    let rows: Vec<(i32, Option<String>)> = sqlx::query_as(
        "SELECT id, concat_ws('|', s, i, r, n, '[' || c || ']', v, t, u) FROM w ORDER BY id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    assert_eq!(
        rows,
        vec![
            (1, Some("-32768|-2147483648|-1.5|-123456789.125|[ab]|x|1999-12-31 23:59:59.999|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())),
            (2, Some("32767|2147483647|0.25|0.001|[]||2000-01-01 00:00:00|00000000-0000-0000-0000-000000000000".into())),
            (3, Some("0|0|1.6777216e+07|0.000|[abcde]|née ✓|1970-01-01 00:00:00.001|ffffffff-ffff-ffff-ffff-ffffffffffff".into())),
            (4, Some("".into())),
        ]
    );
    mysql_exec(&mysql_base_url(), &format!("DROP DATABASE {db}")).await;
    target.drop_now().await;
}
