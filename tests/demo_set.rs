//! The demo set's safe-change sequence (migrations/0006-0009): expand,
//! batched backfill, concurrent index with a SQLite variant, verified
//! contract, on SQLite and PostgreSQL fleets.

mod common;

use common::*;

#[test]
fn the_demo_set_is_lint_clean() {
    let out = fleetmig()
        .args(["lint", "--migrations"])
        .arg(demo_migrations())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn expand_backfill_index_then_contract_on_sqlite() {
    let dir = sqlite_fleet(3);
    let out = sync(dir.path(), &demo_migrations(), &[]);
    expect_exit(&out, 0);
    assert!(
        stderr(&out).contains("9 (drop accounts name) is phase=contract and is held"),
        "{}",
        stderr(&out)
    );
    for i in 0..3 {
        assert_eq!(
            sqlite_history(&tenant_path(dir.path(), &format!("t{i:04}"))).await,
            demo_history()
        );
    }
    let out = sync(dir.path(), &demo_migrations(), &["--allow-contract"]);
    expect_exit(&out, 0);
    let mut c = sqlite(&tenant_path(dir.path(), "t0001")).await;
    let cols: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('accounts') ORDER BY cid")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(cols, vec!["id", "created_at", "plan", "display_name"]);
    let names: Vec<String> = sqlx::query_scalar("SELECT display_name FROM accounts ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(
        names,
        vec!["first account", "second account", "third account"]
    );
    sqlx::Connection::close(c).await.unwrap();
    assert_eq!(
        sqlite_history(&tenant_path(dir.path(), "t0001"))
            .await
            .len(),
        9
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_set_on_postgres_uses_the_concurrent_index() {
    let db = pg_database("example").await;
    db.exec("CREATE SCHEMA tenant_1; CREATE SCHEMA tenant_2;")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    assert_eq!(
        sync_fleet(dir.path(), &fleet, &demo_migrations(), &[])
            .status
            .code(),
        Some(0)
    );
    let out = sync_fleet(
        dir.path(),
        &fleet,
        &demo_migrations(),
        &["--allow-contract"],
    );
    expect_exit(&out, 0);
    let mut c = db.conn().await;
    for s in ["tenant_1", "tenant_2"] {
        assert_eq!(pg_history(&mut c, s).await.len(), 9);
        let valid: bool = sqlx::query_scalar(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'idx_accounts_display_name' AND n.nspname = $1",
        )
        .bind(s)
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert!(valid);
    }
    sqlx::Connection::close(c).await.unwrap();
    db.drop_now().await;
}
