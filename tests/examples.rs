//! The safe-change example set (examples/safe-change/migrations): expand,
//! batched backfill, concurrent index with a SQLite variant, verified
//! contract, on SQLite and PostgreSQL fleets.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/safe-change/migrations")
}

#[test]
fn the_example_set_is_lint_clean() {
    let out = fleetmig()
        .args(["lint", "--migrations"])
        .arg(example())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn expand_backfill_index_then_contract_on_sqlite() {
    let dir = sqlite_fleet(3);
    let out = sync(dir.path(), &example(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("5 (drop name) is phase=contract and is held"),
        "{}",
        stderr(&out)
    );
    for i in 0..3 {
        assert_eq!(
            sqlite_history(&tenant_path(dir.path(), &format!("t{i:04}")))
                .await
                .len(),
            4
        );
    }
    let out = sync(dir.path(), &example(), &["--allow-contract"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut c = sqlite(&tenant_path(dir.path(), "t0001")).await;
    let cols: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('users') ORDER BY cid")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(cols, vec!["id", "email", "full_name"]);
    let names: Vec<String> = sqlx::query_scalar("SELECT full_name FROM users ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(
        names,
        vec!["Ada Lovelace", "Grace Hopper", "Edsger Dijkstra"]
    );
    sqlx::Connection::close(c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_set_on_postgres_uses_the_concurrent_index() {
    let db = pg_database("example").await;
    db.exec("CREATE SCHEMA tenant_1; CREATE SCHEMA tenant_2;")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    assert_eq!(
        sync_fleet(dir.path(), &fleet, &example(), &[])
            .status
            .code(),
        Some(0)
    );
    let out = sync_fleet(dir.path(), &fleet, &example(), &["--allow-contract"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut c = db.conn().await;
    for s in ["tenant_1", "tenant_2"] {
        assert_eq!(pg_history(&mut c, s).await.len(), 5);
        let valid: bool = sqlx::query_scalar(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'idx_users_email' AND n.nspname = $1",
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
