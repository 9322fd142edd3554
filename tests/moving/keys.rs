//! Keys that are not one integer page without skipping a row: NUMERIC and
//! composite keys, MariaDB DECIMAL keys past 2^53 (and a boolean that is
//! not one).

use std::path::Path;

use sqlx::Connection;

use crate::common::*;
use crate::shared::*;

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
    expect_exit(&out, 0);
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
    expect_exit(&out, 0);
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
    expect_exit(&out, 1);
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
    expect_exit(&out, 0);
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
