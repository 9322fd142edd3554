//! Whole tenants moved between the systems with every kind of value
//! (examples/moving), read back and compared: MariaDB to a PostgreSQL
//! database, SQLite to a PostgreSQL schema, SQLite to MariaDB and back.

use std::path::Path;

use chrono::NaiveDateTime;
use sqlx::{Connection, Executor};

use crate::common::*;
use crate::shared::*;

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
    expect_exit(&out, 0);
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
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)));
    let t1 = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "t1")
        .expect("t1 in status");
    assert_eq!(t1["dialect"], "postgres", "{t1}");
    assert_eq!(t1["version"], 2, "{t1}");
    assert_eq!(t1["state"], "up_to_date", "{t1}");
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
    expect_exit(&out, 0);
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
    expect_exit(&out, 0);
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
    expect_exit(&out, 0);
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
