//! The partitioning example (`examples/partitioning`) across a fleet of
//! PostgreSQL schemas: a new range-partitioned table, and a plain table with
//! rows converted to a partitioned one by a batched copy, verified, switched
//! in one transaction, the old table dropped only by the contract step.

mod common;

use common::*;

async fn scalar(c: &mut sqlx::PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_converts_a_table_to_a_partitioned_one() {
    let db = pg_database("partition").await;
    let schemas: String = (0..8)
        .map(|i| format!("CREATE SCHEMA tenant_{i};"))
        .collect();
    db.exec(&schemas).await;
    let dir = tempfile::tempdir().unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/partitioning");
    let fleet = format!("postgres-schemas:{}", db.url);
    let state = dir.path().join("state.db");
    let state = state.to_str().unwrap();

    let out = sync_fleet(dir.path(), &fleet, &example, &["--state", state]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        everything_printed(dir.path(), &out)
    );
    assert!(
        stderr(&out).contains("phase=contract and is held"),
        "{}",
        stderr(&out)
    );
    let mut c = db.conn().await;
    for i in 0..8 {
        let s = format!("tenant_{i}");
        let history: Vec<i64> = pg_history(&mut c, &s).await.iter().map(|h| h.0).collect();
        assert_eq!(history, vec![1, 2, 3, 4, 5], "{s}");
        // page_views is the partitioned table now, with every row; the old
        // one waits for the contract step
        let kind: String = sqlx::query_scalar(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = 'page_views'",
        )
        .bind(&s)
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(kind, "p", "{s}: page_views is partitioned");
        assert_eq!(
            scalar(&mut c, &format!("SELECT count(*) FROM {s}.page_views")).await,
            10050
        );
        assert_eq!(
            scalar(&mut c, &format!("SELECT count(*) FROM {s}.page_views_old")).await,
            10050
        );
        // each row in the partition of its month; the 2025 ones in the default
        assert_eq!(
            scalar(
                &mut c,
                &format!("SELECT count(*) FROM {s}.page_views_default")
            )
            .await,
            50
        );
        assert_eq!(
            scalar(
                &mut c,
                &format!(
                    "SELECT count(*) FROM {s}.page_views_y2026m02 \
                     WHERE viewed_at < '2026-02-01' OR viewed_at >= '2026-03-01'"
                )
            )
            .await,
            0
        );
        assert!(
            scalar(
                &mut c,
                &format!("SELECT count(*) FROM {s}.page_views_y2026m02")
            )
            .await
                > 0
        );
        // the same rows, id for id
        assert_eq!(
            scalar(
                &mut c,
                &format!(
                    "SELECT count(*) FROM (SELECT id, path, viewed_at FROM {s}.page_views_old \
                     EXCEPT SELECT id, path, viewed_at FROM {s}.page_views) d"
                )
            )
            .await,
            0
        );
        // events: a partitioned table of 13 partitions
        assert_eq!(
            scalar(
                &mut c,
                &format!(
                    "SELECT count(*) FROM pg_inherits WHERE inhparent = '{s}.events'::regclass"
                )
            )
            .await,
            13
        );
    }
    // the copy ran in batches of 2,000 (a checkpoint per tenant)
    let batches: i64 = {
        let mut s = sqlite(std::path::Path::new(state)).await;
        sqlx::query_scalar("SELECT min(batches) FROM fleetmig_backfills WHERE version = 4")
            .fetch_one(&mut s)
            .await
            .unwrap()
    };
    assert!(batches >= 6, "10,050 rows in batches of 2,000: {batches}");

    // the contract step, once the operator says so: the old table goes, the
    // id sequence stays with the new one
    let out = sync_fleet(
        dir.path(),
        &fleet,
        &example,
        &["--state", state, "--allow-contract"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        everything_printed(dir.path(), &out)
    );
    for i in 0..8 {
        let s = format!("tenant_{i}");
        assert_eq!(pg_history(&mut c, &s).await.len(), 6);
        assert_eq!(
            scalar(&mut c, &format!("SELECT count(*) FROM pg_tables WHERE schemaname = '{s}' AND tablename = 'page_views_old'")).await,
            0
        );
        let id = scalar(
            &mut c,
            &format!("INSERT INTO {s}.page_views (path, viewed_at) VALUES ('/new', '2026-05-02') RETURNING id"),
        )
        .await;
        assert_eq!(id, 10051, "{s}: ids go on from the old table's");
    }
    let _ = sqlx::Connection::close(c).await;
    db.drop_now().await;
}
