//! Redaction and hostile names: passwords never appear in output or
//! reports, and a hostile schema name is refused before any SQL runs on it.

use sqlx::Connection;

use crate::common::*;
use crate::shared::*;

#[tokio::test(flavor = "multi_thread")]
async fn passwords_never_appear_in_output_or_reports_and_hostile_names_are_refused() {
    let db = pg_database("secret").await;
    schemas(&db, 2).await;
    let dir = tempfile::tempdir().unwrap();
    // one good tenant, one whose URL has a wrong password, one on a closed port
    let bad_pw = db.url.replace(TEST_PASSWORD, "Wr0ng-Pa55word-xyz");
    let closed = with_db(&db.url.replace(":5432", ":1"), &db.name)
        .replace(TEST_PASSWORD, "Cl0sed-Pa55word-xyz");
    std::fs::write(
        dir.path().join("fleet.csv"),
        format!("id,url,schema,tags\ngood,{},tenant_000,\nbadpw,{bad_pw},tenant_001,\nclosed,{closed},tenant_001,\n", db.url),
    )
    .unwrap();
    let out = sync_fleet(
        dir.path(),
        "registry:fleet.csv",
        &demo_migrations(),
        &["--max-attempts", "1", "--connect-timeout", "2s"],
    );
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    assert_eq!(rows["good"]["status"], "succeeded");
    assert_eq!(rows["badpw"]["status"], "failed");
    assert_eq!(rows["closed"]["error_class"], "transient");
    let status = fleetmig()
        .current_dir(dir.path())
        .args([
            "status",
            "--json",
            "--connect-timeout",
            "2s",
            "--fleet",
            "registry:fleet.csv",
            "--migrations",
        ])
        .arg(demo_migrations())
        .output()
        .unwrap();
    let all = everything_printed(dir.path(), &out) + &stdout(&status) + &stderr(&status);
    assert!(all.contains("***"), "redaction marker present");
    for secret in [TEST_PASSWORD, "Wr0ng-Pa55word-xyz", "Cl0sed-Pa55word-xyz"] {
        // fleet.csv itself holds them; everything fleetmig wrote must not
        let leaked: Vec<&str> = all
            .lines()
            .filter(|l| {
                l.contains(secret)
                    && !l.starts_with("good,")
                    && !l.starts_with("badpw,")
                    && !l.starts_with("closed,")
            })
            .collect();
        assert!(leaked.is_empty(), "{secret} leaked: {leaked:?}");
    }

    // a hostile schema name is refused before any SQL runs on it: one failed
    // tenant (invalid_tenant), and the rest of the fleet is migrated
    db.exec(
        r#"CREATE SCHEMA "tenant_x""; DROP TABLE keep; --"; CREATE TABLE public.keep (x int);"#,
    )
    .await;
    let out = sync_fleet(
        dir.path(),
        &format!("postgres-schemas:{}", db.url),
        &demo_migrations(),
        &[],
    );
    expect_exit(&out, 1);
    assert!(!stderr(&out).contains(TEST_PASSWORD));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let hostile = rows
        .values()
        .find(|r| r["tenant"].contains("DROP TABLE keep"))
        .expect("the hostile name is a row of the report");
    assert_eq!(hostile["status"], "failed");
    assert_eq!(hostile["error_kind"], "invalid_tenant");
    assert_eq!(hostile["attempts"], "0");
    assert!(
        hostile["error_message"].contains("contains '\"'"),
        "{hostile:?}"
    );
    assert_eq!(rows["tenant_001"]["status"], "succeeded");
    let mut c = db.conn().await;
    assert_eq!(pg_tables(&mut c, "public").await, vec!["keep"]);
    assert!(
        pg_tables(&mut c, r#"tenant_x"; DROP TABLE keep; --"#)
            .await
            .is_empty(),
        "nothing touched the hostile schema"
    );
    assert!(
        !pg_history(&mut c, "tenant_001").await.is_empty(),
        "the rest of the fleet is migrated"
    );
    c.close().await.unwrap();
    db.drop_now().await;
}
