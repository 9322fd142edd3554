//! Schema-per-tenant and database-per-tenant fleets, found by discovery or
//! a tenant query: every object in its own schema, and a history table
//! that sqlx's own migrator agrees with.

use sqlx::{Connection, Executor};

use crate::common::*;
use crate::shared::*;

#[tokio::test(flavor = "multi_thread")]
async fn schema_fleet_through_a_small_pool_keeps_every_object_in_its_own_schema() {
    let db = pg_database("schemas").await;
    schemas(&db, 30).await;
    db.exec("CREATE SCHEMA other; CREATE TABLE public.keep (x int);")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let out = sync_fleet(
        dir.path(),
        &fleet,
        &demo_migrations(),
        &["--concurrency", "6", "--per-server", "3"],
    );
    expect_exit(&out, 0);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    assert_eq!(rows.len(), 30, "the `other` schema is not a tenant");
    let mut c = db.conn().await;
    for i in 0..30 {
        let s = format!("tenant_{i:03}");
        assert_eq!(pg_history(&mut c, &s).await, demo_history(), "{s}");
        assert_eq!(
            pg_tables(&mut c, &s).await,
            vec!["_sqlx_migrations", "accounts", "invoices"],
            "{s}"
        );
        let plans: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{s}\".accounts WHERE plan IS NOT NULL"
        )))
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(plans, 3);
        let idx: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = 'idx_invoices_account'",
        )
        .bind(&s)
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(idx, 1, "{s}");
    }
    assert_eq!(pg_tables(&mut c, "public").await, vec!["keep"]);
    assert!(pg_tables(&mut c, "other").await.is_empty());

    // The history table has sqlx's columns, types, defaults and key, and no
    // TOAST table (description and checksum are stored PLAIN).
    let toasted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname = '_sqlx_migrations' AND n.nspname LIKE 'tenant\\_%' AND c.reltoastrelid <> 0",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(toasted, 0);
    let columns: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, is_nullable::text, column_default::text \
         FROM information_schema.columns WHERE table_schema = 'tenant_007' \
         AND table_name = '_sqlx_migrations' ORDER BY ordinal_position",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let col =
        |n: &str, t: &str, d: Option<&str>| (n.into(), t.into(), "NO".into(), d.map(String::from));
    assert_eq!(
        columns,
        vec![
            col("version", "bigint", None),
            col("description", "text", None),
            col("installed_on", "timestamp with time zone", Some("now()")),
            col("success", "boolean", None),
            col("checksum", "bytea", None),
            col("execution_time", "bigint", None),
        ]
    );
    let pk: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE conrelid = '\"tenant_007\"._sqlx_migrations'::regclass AND contype = 'p'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(pk, "PRIMARY KEY (version)");

    // sqlx's own migrator, pointed at one tenant by search_path, agrees.
    let plain = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);"),
        ("0002_b.sql", "CREATE TABLE b (x int);"),
    ]);
    let out = sync_fleet(
        dir.path(),
        &format!("postgres-schemas:{}", db.url),
        plain.path(),
        &["--tenant-pattern", "other"],
    );
    expect_exit(&out, 0);
    c.execute("SET search_path TO other").await.unwrap();
    let before: Vec<(i64, i64)> =
        sqlx::query_as("SELECT version, execution_time FROM _sqlx_migrations ORDER BY 1")
            .fetch_all(&mut c)
            .await
            .unwrap();
    sqlx::migrate::Migrator::new(plain.path())
        .await
        .unwrap()
        .run(&mut c)
        .await
        .unwrap();
    let after: Vec<(i64, i64)> =
        sqlx::query_as("SELECT version, execution_time FROM _sqlx_migrations ORDER BY 1")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(before.len(), 2);
    assert_eq!(before, after);
    c.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_query_and_database_fleets() {
    let db = pg_database("query").await;
    schemas(&db, 4).await;
    db.exec("CREATE TABLE public.tenants (schema_name text); INSERT INTO public.tenants VALUES ('tenant_001'), ('tenant_003');")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let out = sync_fleet(
        dir.path(),
        &format!("postgres-schemas:{}", db.url),
        &demo_migrations(),
        &["--tenant-query", "SELECT schema_name FROM public.tenants"],
    );
    expect_exit(&out, 0);
    let mut c = db.conn().await;
    assert_eq!(
        pg_history(&mut c, "tenant_001").await.len(),
        DEMO_REACHED as usize
    );
    assert_eq!(
        pg_history(&mut c, "tenant_003").await.len(),
        DEMO_REACHED as usize
    );
    assert!(pg_history(&mut c, "tenant_000").await.is_empty());
    c.close().await.unwrap();
    db.drop_now().await;

    // database per tenant
    let tag = format!("{:06x}", rand::random::<u32>() & 0xffffff);
    let mut admin = pg_connect(&pg_base_url()).await;
    for i in 0..3 {
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE fmdb_{tag}_{i}"
            )))
            .await
            .unwrap();
    }
    let out = sync_fleet(
        dir.path(),
        &format!("postgres-databases:{}", pg_base_url()),
        &demo_migrations(),
        &["--tenant-pattern", &format!("fmdb_{tag}_%")],
    );
    expect_exit(&out, 0);
    assert_eq!(csv_rows(&report_dir(dir.path(), &out)).len(), 3);
    for i in 0..3 {
        let mut c = pg_connect(&with_db(&pg_base_url(), &format!("fmdb_{tag}_{i}"))).await;
        assert_eq!(
            pg_history(&mut c, "public").await.len(),
            DEMO_REACHED as usize
        );
        c.close().await.unwrap();
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE fmdb_{tag}_{i} WITH (FORCE)"
            )))
            .await
            .unwrap();
    }
    admin.close().await.unwrap();
}
