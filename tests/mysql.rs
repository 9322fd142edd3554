//! MySQL/MariaDB fleets (database per tenant) on a real MariaDB server.

mod common;

use std::time::Duration;

use common::*;
use sqlx::{Connection, Executor};

struct Fleet {
    tag: String,
    names: Vec<String>,
}

async fn databases(prefix: &str, n: usize) -> Fleet {
    let tag = format!("fm{prefix}{:06x}", rand::random::<u32>() & 0xffffff);
    let names: Vec<String> = (0..n).map(|i| format!("{tag}_t{i:02}")).collect();
    let sql: String = names
        .iter()
        .map(|n| format!("CREATE DATABASE `{n}`;"))
        .collect();
    mysql_exec(&mysql_base_url(), &sql).await;
    Fleet { tag, names }
}

impl Fleet {
    fn spec(&self) -> String {
        format!("mysql-databases:{}", mysql_base_url())
    }

    fn pattern(&self) -> String {
        format!("{}\\_t%", self.tag)
    }

    fn url(&self, name: &str) -> String {
        with_db(&mysql_base_url(), name)
    }

    async fn history(&self, name: &str) -> Vec<(i64, bool)> {
        let mut c = mysql_connect(&self.url(name)).await;
        let rows: Vec<(i64, bool)> =
            sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&mut c)
                .await
                .unwrap_or_default();
        c.close().await.unwrap();
        rows
    }

    async fn drop_all(self) {
        let sql: String = self
            .names
            .iter()
            .map(|n| format!("DROP DATABASE IF EXISTS `{n}`;"))
            .collect();
        mysql_exec(&mysql_base_url(), &sql).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn database_fleet_reaches_head_with_the_mysql_variant() {
    let f = databases("head", 8).await;
    let dir = tempfile::tempdir().unwrap();
    let out = sync_fleet(
        dir.path(),
        &f.spec(),
        &demo_migrations(),
        &["--tenant-pattern", &f.pattern()],
    );
    expect_exit(&out, 0);
    assert_eq!(csv_rows(&report_dir(dir.path(), &out)).len(), 8);
    for n in &f.names {
        assert_eq!(f.history(n).await, demo_history(), "{n}");
        let mut c = mysql_connect(&f.url(n)).await;
        let idx: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND index_name = 'idx_invoices_account'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(idx, 1);
        let free: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE plan = 'free'")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(free, 2);
        c.close().await.unwrap();
    }
    let again = sync_fleet(
        dir.path(),
        &f.spec(),
        &demo_migrations(),
        &["--tenant-pattern", &f.pattern()],
    );
    assert_eq!(again.status.code(), Some(0));
    assert!(
        csv_rows(&report_dir(dir.path(), &again))
            .values()
            .all(|r| r["status"] == "succeeded" && r["applied_versions"].is_empty())
    );
    f.drop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_at_once_never_apply_a_migration_twice() {
    let f = databases("two", 16).await;
    let m = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x INT); DO SLEEP(0.02);"),
        ("0002_b.sql", "INSERT INTO a VALUES (1);"),
    ]);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            fleetmig_process(d.path())
                .args([
                    "sync",
                    "--progress-every",
                    "0",
                    "--concurrency",
                    "4",
                    "--lock-timeout",
                    "30s",
                ])
                .args([
                    "--tenant-pattern",
                    &f.pattern(),
                    "--fleet",
                    &f.spec(),
                    "--migrations",
                ])
                .arg(m.path())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied = 0;
    for (child, d) in children.into_iter().zip(&dirs) {
        let out = child.wait_with_output().unwrap();
        expect_exit(&out, 0);
        for r in csv_rows(&report_dir(d.path(), &out)).values() {
            applied += r["applied_versions"]
                .split(';')
                .filter(|s| !s.is_empty())
                .count();
        }
    }
    assert_eq!(applied, 16 * 2);
    for n in &f.names {
        let mut c = mysql_connect(&f.url(n)).await;
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM a")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(rows, 1, "{n}");
        c.close().await.unwrap();
    }
    f.drop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_table_times_out_as_transient_and_is_retried() {
    let f = databases("lock", 2).await;
    let m = migration_dir(&[("0001_a.sql", "CREATE TABLE accounts (id INT);")]);
    let dir = tempfile::tempdir().unwrap();
    let args = ["--tenant-pattern", &f.pattern()];
    assert_eq!(
        sync_fleet(dir.path(), &f.spec(), m.path(), &args)
            .status
            .code(),
        Some(0)
    );
    std::fs::write(
        m.path().join("0002_b.sql"),
        "ALTER TABLE accounts ADD COLUMN plan VARCHAR(20);",
    )
    .unwrap();

    let mut holder = mysql_connect(&f.url(&f.names[1])).await;
    holder.execute("LOCK TABLES accounts WRITE").await.unwrap();
    let out = sync_fleet(
        dir.path(),
        &f.spec(),
        m.path(),
        &[
            "--tenant-pattern",
            &f.pattern(),
            "--lock-timeout",
            "1s",
            "--max-attempts",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let r = &rows[&f.names[1]];
    assert_eq!(
        (
            r["error_class"].as_str(),
            r["error_kind"].as_str(),
            r["error_code"].as_str()
        ),
        ("transient", "lock_timeout", "1205")
    );
    assert_eq!(
        f.history(&f.names[1]).await,
        vec![(1, true)],
        "a first-statement failure leaves the history clean"
    );

    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        holder.execute("UNLOCK TABLES").await.unwrap();
        holder.close().await.unwrap();
    });
    let out = sync_fleet(
        dir.path(),
        &f.spec(),
        m.path(),
        &[
            "--tenant-pattern",
            &f.pattern(),
            "--lock-timeout",
            "1s",
            "--max-attempts",
            "10",
            "--retry-backoff",
            "300ms",
        ],
    );
    release.await.unwrap();
    expect_exit(&out, 0);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    assert!(rows[&f.names[1]]["attempts"].parse::<u32>().unwrap() >= 2);
    assert_eq!(f.history(&f.names[1]).await, vec![(1, true), (2, true)]);
    f.drop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_mid_migration_marks_the_tenant_dirty_and_names_the_last_statement() {
    let f = databases("dirty", 1).await;
    let m = migration_dir(&[(
        "0001_three.sql",
        "CREATE TABLE x1 (a INT);\nCREATE TABLE x2 (a INT);\nCREATE TABLEE x3 (a INT);\n",
    )]);
    let dir = tempfile::tempdir().unwrap();
    let out = sync_fleet(
        dir.path(),
        &f.spec(),
        m.path(),
        &["--tenant-pattern", &f.pattern(), "--max-attempts", "3"],
    );
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let r = &rows[&f.names[0]];
    assert_eq!(
        (
            r["error_class"].as_str(),
            r["error_kind"].as_str(),
            r["attempts"].as_str()
        ),
        ("permanent", "syntax", "1")
    );
    let msg = &r["error_message"];
    assert!(msg.contains("statement 3 of 3 (line 3)"), "{msg}");
    assert!(msg.contains("CREATE TABLE x2"), "{msg}");
    assert_eq!(f.history(&f.names[0]).await, vec![(1, false)]);
    // the next run refuses the dirty tenant with what to do
    let out = sync_fleet(
        dir.path(),
        &f.spec(),
        m.path(),
        &["--tenant-pattern", &f.pattern()],
    );
    let rows = csv_rows(&report_dir(dir.path(), &out));
    assert_eq!(rows[&f.names[0]]["error_kind"], "dirty");
    assert!(
        rows[&f.names[0]]["error_message"]
            .contains("DELETE FROM _sqlx_migrations WHERE version = 1")
    );
    f.drop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_never_printed() {
    let f = databases("pw", 1).await;
    let url = f
        .url(&f.names[0])
        .replace(TEST_PASSWORD, "My-Wr0ng-Secret-77");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fleet.csv"),
        format!("id,url,schema,tags\nt1,{url},,\n"),
    )
    .unwrap();
    let out = sync_fleet(
        dir.path(),
        "registry:fleet.csv",
        &demo_migrations(),
        &["--max-attempts", "1"],
    );
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    assert_eq!(rows["t1"]["error_kind"], "permission_denied");
    let all = everything_printed(&dir.path().join("reports"), &out);
    assert!(!all.contains("My-Wr0ng-Secret-77"), "{all}");
    assert!(all.contains("***"));
    f.drop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn preflight_defers_a_database_with_an_old_open_transaction() {
    let f = databases("pre", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let m = demo_migrations();
    let pat = f.pattern();
    let out = sync_fleet(
        dir.path(),
        &f.spec(),
        &m,
        &["--tenant-pattern", &pat, "--to", "2"],
    );
    expect_exit(&out, 0);
    let mut reader = mysql_connect(&f.url(&f.names[1])).await;
    reader.execute("BEGIN").await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let args = [
        "--tenant-pattern",
        &pat,
        "--preflight",
        "--preflight-max-xact-age",
        "1s",
        "--max-attempts",
        "1",
    ];
    let out = sync_fleet(dir.path(), &f.spec(), &m, &args);
    expect_exit(&out, 1);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    assert_eq!(
        rows[&f.names[1]]["error_kind"], "preflight_deferred",
        "{:?}",
        rows[&f.names[1]]
    );
    assert_eq!(rows[&f.names[0]]["status"], "succeeded");
    assert!(
        rows[&f.names[0]]["preflight"].contains("largest: "),
        "{:?}",
        rows[&f.names[0]]
    );
    assert_eq!(
        f.history(&f.names[1]).await.len(),
        2,
        "deferred: nothing touched"
    );
    reader.execute("COMMIT").await.unwrap();
    reader.close().await.unwrap();
    let out = sync_fleet(dir.path(), &f.spec(), &m, &args);
    expect_exit(&out, 0);
    assert_eq!(f.history(&f.names[1]).await.len(), DEMO_REACHED as usize);
    f.drop_all().await;
}

/// `--backup` then `restore` on MariaDB: a destructive migration undone from
/// the `mariadb-dump` backup, the table the migration created dropped, the
/// history back to before the rollout, the other tenant untouched, and no
/// password anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn restore_brings_back_what_a_migration_destroyed() {
    let f = databases("restore", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let m = migration_dir(&[
        (
            "0001_notes.sql",
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n",
        ),
        (
            "0002_oops.sql",
            "-- fleetmig: phase=contract\nDROP TABLE notes;\n\
             CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);\n\
             CREATE TABLE made_later (id INTEGER PRIMARY KEY);\n",
        ),
    ]);
    let pattern = f.pattern();
    let args = |extra: &[&'static str]| {
        let mut a = vec!["--tenant-pattern", pattern.as_str()];
        a.extend_from_slice(extra);
        a
    };
    let out = sync_fleet(dir.path(), &f.spec(), m.path(), &args(&["--to", "1"]));
    expect_exit(&out, 0);
    let victim = &f.names[1];
    mysql_exec(
        &f.url(victim),
        "INSERT INTO notes (id, body) VALUES (1, 'precious'), (2, 'also precious');",
    )
    .await;
    let backups = dir.path().join("backups");
    let backup_arg = backups.to_str().unwrap().to_string();
    let mut extra = args(&["--allow-contract", "--backup"]);
    extra.push(&backup_arg);
    let out = sync_fleet(dir.path(), &f.spec(), m.path(), &extra);
    expect_exit(&out, 0);
    assert!(
        !everything_printed(dir.path(), &out).contains(TEST_PASSWORD),
        "no password in dumps, reports or output"
    );
    let mut c = mysql_connect(&f.url(victim)).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 0, "the migration destroyed the data");

    let out = fleetmig()
        .current_dir(dir.path())
        .args(["restore", "--tenant", victim, "--fleet", &f.spec()])
        .args(["--tenant-pattern", &pattern])
        .output()
        .unwrap();
    expect_exit(&out, 0);
    assert!(!stdout(&out).contains(TEST_PASSWORD) && !stderr(&out).contains(TEST_PASSWORD));
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(bodies, vec!["precious", "also precious"]);
    let later: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'made_later'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(later, 0, "the table the migration created is gone");
    c.close().await.unwrap();
    assert_eq!(f.history(victim).await, vec![(1, true)]);
    assert_eq!(
        f.history(&f.names[0]).await.len(),
        2,
        "other tenant untouched"
    );
    f.drop_all().await;
}

/// A statement sent in one round trip with its progress write (and, for a
/// first statement, with the unfinished history row) that the server
/// refuses is named as the statement's failure, not the bookkeeping's: a
/// refused first row change leaves the tenant clean, and once its table is
/// there the next run applies it once; a duplicate key in the third
/// statement, after two took effect, leaves the tenant dirty naming it.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_statement_sent_with_its_progress_is_named_as_the_statements() {
    let f = databases("sent", 2).await;
    let m = migration_dir(&[(
        "0001_rows.sql",
        "INSERT INTO pre (a) VALUES (1);\nCREATE TABLE made (a INT);\n",
    )]);
    let dir = tempfile::tempdir().unwrap();
    let args = ["--tenant-pattern", &f.pattern(), "--max-attempts", "1"];
    let out = sync_fleet(dir.path(), &f.spec(), m.path(), &args);
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    for name in &f.names {
        let r = &rows[name];
        assert_eq!(r["error_class"], "permanent", "{r:?}");
        let msg = &r["error_message"];
        assert!(msg.contains("statement 1 of 2"), "{msg}");
        assert!(msg.contains("doesn't exist"), "{msg}");
        assert!(f.history(name).await.is_empty(), "nothing was applied");
    }
    for name in &f.names {
        mysql_exec(&f.url(name), "CREATE TABLE pre (a INT)").await;
    }
    let out = sync_fleet(dir.path(), &f.spec(), m.path(), &args);
    expect_exit(&out, 0);
    for name in &f.names {
        assert_eq!(f.history(name).await, vec![(1, true)]);
        let mut c = mysql_connect(&f.url(name)).await;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pre")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(n, 1, "the row change ran once");
    }

    let m = migration_dir(&[(
        "0001_dup.sql",
        "CREATE TABLE u (a INT PRIMARY KEY);\nINSERT INTO u VALUES (1);\nINSERT INTO u VALUES (1);\n",
    )]);
    let g = databases("sentdup", 1).await;
    let args = ["--tenant-pattern", &g.pattern(), "--max-attempts", "1"];
    let out = sync_fleet(dir.path(), &g.spec(), m.path(), &args);
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let msg = &rows[&g.names[0]]["error_message"];
    assert!(msg.contains("statement 3 of 3"), "{msg}");
    assert!(msg.contains("Duplicate entry"), "{msg}");
    assert_eq!(g.history(&g.names[0]).await, vec![(1, false)]);
    f.drop_all().await;
    g.drop_all().await;
}
