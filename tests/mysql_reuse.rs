//! A MariaDB server's connections kept between its tenant databases
//! (`src/dialect/mysql/reuse.rs`): reused, reset so that nothing one
//! tenant's migrations set reaches the next, and replaced when the server
//! closed them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;

use common::*;
use fleetmig::dialect::{Access, Connector, Session};
use fleetmig::tenant::{Locator, Tenant, TenantId};
use sqlx::Connection;

async fn databases(names: &[String]) {
    let sql: String = names
        .iter()
        .map(|n| format!("CREATE DATABASE `{n}`;"))
        .collect();
    mysql_exec(&mysql_base_url(), &sql).await;
}

/// `n` new tenant databases `<prefix><random>_t<i>`: the tag, the names.
async fn fleet(prefix: &str, n: usize) -> (String, Vec<String>) {
    let tag = format!("{prefix}{:06x}", rand::random::<u32>() & 0xffffff);
    let names: Vec<String> = (0..n).map(|i| format!("{tag}_t{i}")).collect();
    databases(&names).await;
    (tag, names)
}

/// The rows of `sql` in tenant database `name`.
async fn rows_of<T>(name: &str, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::mysql::MySqlRow> + Send + Unpin,
{
    let mut c = mysql_connect(&with_db(&mysql_base_url(), name)).await;
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_all(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{name}: {sql}: {e}"));
    c.close().await.unwrap();
    rows
}

async fn drop_databases(names: &[String]) {
    let sql: String = names
        .iter()
        .map(|n| format!("DROP DATABASE IF EXISTS `{n}`;"))
        .collect();
    mysql_exec(&mysql_base_url(), &sql).await;
}

/// What each tenant's migration saw of its session, by tenant.
async fn seen(names: &[String]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for n in names {
        let rows: Vec<(String, String)> = rows_of(n, "SELECT k, v FROM seen").await;
        out.insert(n.clone(), rows.into_iter().collect());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_connection_is_reset_so_nothing_one_tenant_set_reaches_the_next() {
    let tag = format!("fmreuse{:06x}", rand::random::<u32>() & 0xffffff);
    let names: Vec<String> = (0..5).map(|i| format!("{tag}_t{i}")).collect();
    // a database of the test's own, outside the fleet, for a temporary table
    let shared = format!("{tag}_shared");
    let all: Vec<String> = names.iter().cloned().chain([shared.clone()]).collect();
    databases(&all).await;
    let lock = format!("{tag}_lock");
    // Reads the session as the previous tenant's migration would have left
    // it without a reset, then leaves every kind of session state behind.
    let leave_state = format!(
        "CREATE TEMPORARY TABLE `{shared}`.leak (x INT);
CREATE TABLE seen (k VARCHAR(64) PRIMARY KEY, v TEXT);
INSERT INTO seen VALUES
  ('connection', CONNECTION_ID()),
  ('user_variable', COALESCE(@fm_leak, 'none')),
  ('foreign_key_checks', @@session.foreign_key_checks),
  ('wait_timeout', @@session.wait_timeout = @@global.wait_timeout),
  ('sql_mode_ansi', FIND_IN_SET('ANSI_QUOTES', @@session.sql_mode) > 0),
  ('time_zone', @@session.time_zone),
  ('lock_wait_timeout', @@session.innodb_lock_wait_timeout),
  ('named_lock_free', IS_FREE_LOCK('{lock}')),
  ('database', DATABASE());
SET @fm_leak = DATABASE();
SET SESSION foreign_key_checks = 0;
SET SESSION wait_timeout = 77;
SET SESSION sql_mode = CONCAT(@@session.sql_mode, ',ANSI_QUOTES');
SET SESSION time_zone = '+05:00';
SET SESSION innodb_lock_wait_timeout = 99;
DO GET_LOCK('{lock}', 0);
"
    );
    let (out, rows) = sync_files(
        &format!("{tag}\\_t%"),
        &[("1_leave_state.sql", leave_state)],
        &["--concurrency", "1", "--lock-timeout", "7s"],
    );
    expect_exit(&out, 0);
    assert_eq!(rows.len(), 5);
    assert!(
        rows.values().all(|r| r["status"] == "succeeded"),
        "{rows:?}"
    );
    let seen = seen(&names).await;
    let connections: BTreeSet<&String> = seen.values().map(|s| &s["connection"]).collect();
    // one tenant at a time: the first tenant's connection served them all
    assert_eq!(connections.len(), 1, "{seen:?}");
    for (n, s) in &seen {
        assert_eq!(s["database"], *n);
        assert_eq!(s["user_variable"], "none", "{n}");
        assert_eq!(s["foreign_key_checks"], "1", "{n}");
        assert_eq!(s["wait_timeout"], "1", "{n}");
        assert_eq!(s["sql_mode_ansi"], "0", "{n}");
        assert_eq!(s["time_zone"], "+00:00", "{n}");
        assert_eq!(s["lock_wait_timeout"], "7", "{n}");
        assert_eq!(s["named_lock_free"], "1", "{n}");
    }
    drop_databases(&all).await;
}

type Rows = std::collections::HashMap<String, std::collections::HashMap<String, String>>;

/// Syncs the databases matching `pattern` with the migrations `files` and
/// the `extra` arguments: the run, and its report's rows by tenant.
fn sync_files(pattern: &str, files: &[(&str, String)], extra: &[&str]) -> (Output, Rows) {
    let m = tempfile::tempdir().unwrap();
    for (name, sql) in files {
        std::fs::write(m.path().join(name), sql).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--tenant-pattern", pattern];
    args.extend(extra);
    let out = sync_fleet(
        dir.path(),
        &format!("mysql-databases:{}", mysql_base_url()),
        m.path(),
        &args,
    );
    let rows = csv_rows(&report_dir(dir.path(), &out));
    (out, rows)
}

/// Syncs the databases `tag_t%` one tenant at a time with the migrations
/// `files`, returning the report's rows by tenant.
fn sync_one_by_one(tag: &str, files: &[(&str, String)]) -> Rows {
    sync_files(&format!("{tag}\\_t%"), files, &["--concurrency", "1"]).1
}

/// The connection each tenant's first migration ran on (`conn` table).
async fn connection_ids(names: &[String]) -> BTreeSet<i64> {
    let mut ids = BTreeSet::new();
    for n in names {
        let id: Vec<(i64,)> = rows_of(n, "SELECT id FROM conn").await;
        ids.insert(id[0].0);
    }
    ids
}

const RECORD_CONNECTION: &str =
    "CREATE TABLE conn (id BIGINT); INSERT INTO conn VALUES (CONNECTION_ID());";

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_connection_parses_and_is_privileged_as_a_new_one() {
    let (tag, names) = fleet("fmfresh", 3).await;
    let role = format!("{tag}_role");
    mysql_exec(&mysql_base_url(), &format!("CREATE ROLE `{role}`")).await;
    // a new connection has IGNORE_SPACE (sqlx's login flag): `COUNT (*)`
    // parses on every tenant, the first one's connection or a kept one;
    // a migration's role does not outlive its session
    let rows = sync_one_by_one(
        &tag,
        &[
            ("1_record.sql", RECORD_CONNECTION.to_string()),
            (
                "2_count_space.sql",
                "CREATE TABLE c AS SELECT COUNT (*) AS n, CAST(CURRENT_ROLE() AS CHAR) AS role \
                 FROM information_schema.schemata;"
                    .to_string(),
            ),
            ("3_role.sql", format!("SET ROLE `{role}`;")),
        ],
    );
    mysql_exec(&mysql_base_url(), &format!("DROP ROLE `{role}`")).await;
    assert_eq!(rows.len(), 3);
    assert!(
        rows.values().all(|r| r["status"] == "succeeded"),
        "{rows:?}"
    );
    for n in &names {
        let role: Vec<(Option<String>,)> = rows_of(n, "SELECT role FROM c").await;
        assert_eq!(role, [(None,)], "{n}: the role a migration set reached it");
    }
    // the role set by a migration costs its connection, not a tenant
    assert_eq!(connection_ids(&names).await.len(), 3);
    drop_databases(&names).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_tenants_connection_is_not_kept() {
    let (tag, names) = fleet("fmxa", 3).await;
    // An XA transaction left prepared survives a reset and makes every
    // InnoDB access of its connection fail: the tenant fails (its history
    // row cannot be written), and the next tenant must not inherit that.
    let rows = sync_one_by_one(
        &tag,
        &[
            ("1_record.sql", RECORD_CONNECTION.to_string()),
            (
                "2_xa.sql",
                "CREATE TABLE x (a INT) ENGINE=InnoDB;\n\
                 SET @xid = CONCAT('fmxa-', DATABASE());\n\
                 SET @s = CONCAT('XA START ', QUOTE(@xid));\n\
                 PREPARE s FROM @s;\nEXECUTE s;\n\
                 INSERT INTO x VALUES (1);\n\
                 SET @s = CONCAT('XA END ', QUOTE(@xid));\nPREPARE s FROM @s;\nEXECUTE s;\n\
                 SET @s = CONCAT('XA PREPARE ', QUOTE(@xid));\nPREPARE s FROM @s;\nEXECUTE s;\n"
                    .to_string(),
            ),
        ],
    );
    // the prepared transactions outlive their sessions by design
    let mut c = mysql_connect(&mysql_base_url()).await;
    for n in &names {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("XA ROLLBACK 'fmxa-{n}'")))
            .execute(&mut c)
            .await;
    }
    c.close().await.unwrap();
    assert_eq!(rows.len(), 3);
    for n in &names {
        // each tenant got as far as its own XA migration
        assert_eq!(rows[n]["status"], "failed", "{rows:?}");
        assert_eq!(rows[n]["applied_versions"], "1", "{n}: {rows:?}");
    }
    assert_eq!(connection_ids(&names).await.len(), 3);
    drop_databases(&names).await;
}

fn tenant(name: &str) -> Tenant {
    Tenant {
        id: TenantId::new(name).unwrap(),
        locator: Locator::Mysql {
            url: with_db(&mysql_base_url(), name),
        },
        tags: Default::default(),
    }
}

/// The ids of the fleetmig user's connections whose current database is
/// `db` (the test user sees its own user's connections).
async fn connections_in(db: &str) -> Vec<i64> {
    let mut c = mysql_connect(&mysql_base_url()).await;
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
    )
    .bind(db)
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    ids
}

async fn locked_session(connector: &Connector, name: &str) -> Box<dyn Session> {
    let mut s = connector.open(&tenant(name), Access::Write).await.unwrap();
    s.lock().await.unwrap();
    s.history().await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_connection_the_server_closed_is_replaced_without_failing_the_tenant() {
    let (_, names) = fleet("fmkill", 3).await;
    let connector = Connector::new(Default::default());

    // a closed session's connection moves on to the next database
    locked_session(&connector, &names[0]).await.close().await;
    let first = connections_in(&names[0]).await;
    assert_eq!(first.len(), 1, "kept after the session closed");
    // kept, but holding nothing: the tenant's lock is free
    let mut c = mysql_connect(&mysql_base_url()).await;
    let free: i64 = sqlx::query_scalar("SELECT IS_FREE_LOCK(?)")
        .bind(format!("fleetmig:{}", names[0]))
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(free, 1, "the lock of a closed session is released");
    c.close().await.unwrap();
    locked_session(&connector, &names[1]).await.close().await;
    assert_eq!(connections_in(&names[1]).await, first, "reused");
    assert!(connections_in(&names[0]).await.is_empty());

    // the server closes the kept connection: the next tenant connects anew
    mysql_exec(&mysql_base_url(), &format!("KILL CONNECTION {}", first[0])).await;
    let mut s = locked_session(&connector, &names[2]).await;
    assert!(s.check("SELECT 1").await.unwrap().is_none());
    let now = connections_in(&names[2]).await;
    assert_eq!(now.len(), 1);
    assert_ne!(now, first);
    s.close().await;

    // the end of the command closes what is kept
    connector.close().await;
    assert!(connections_in(&names[2]).await.is_empty());
    drop_databases(&names).await;
}

/// Syncs `tag`'s tenants one by one: a table `t`, then `second`.
fn table_then(tag: &str, second: &str) -> Rows {
    sync_one_by_one(
        tag,
        &[
            (
                "1_table.sql",
                "CREATE TABLE t (a INT) ENGINE=InnoDB;".to_string(),
            ),
            ("2_second.sql", second.to_string()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_that_leaves_a_transaction_open_fails_its_tenant_dirty() {
    let (tag, names) = fleet("fmopen", 2).await;
    // its history row would be finished inside the open transaction, and
    // rolled back with it when the session ends: reported applied, found
    // unfinished
    let rows = table_then(&tag, "SET autocommit = 0;\nINSERT INTO t VALUES (1);\n");
    assert_eq!(rows.len(), 2);
    for n in &names {
        let r = &rows[n];
        assert_eq!(r["status"], "failed", "{r:?}");
        assert_eq!(r["applied_versions"], "1", "{r:?}");
        assert_eq!(r["error_version"], "2", "{r:?}");
        assert_eq!(r["error_kind"], "dirty", "{r:?}");
        assert!(
            r["error_message"].contains("left a transaction open"),
            "{r:?}"
        );
        // it cannot tell what of the migration's own work was committed
        assert!(
            r["error_message"].contains("what the migration committed"),
            "{r:?}"
        );
        let history: Vec<(i64, bool, i64)> = rows_of(
            n,
            "SELECT version, success, execution_time FROM _sqlx_migrations ORDER BY version",
        )
        .await;
        assert_eq!(history.len(), 2, "{n}");
        assert_eq!((history[0].0, history[0].1), (1, true), "{n}");
        assert_eq!(history[1], (2, false, -1), "{n}: left dirty");
        let inserted: Vec<(i64,)> = rows_of(n, "SELECT COUNT(*) FROM t").await;
        assert_eq!(inserted, [(0,)], "{n}: rolled back");
    }
    drop_databases(&names).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_a_migration_set_never_reaches_or_fails_the_next_tenant() {
    let (tag, names) = fleet("fmrole", 3).await;
    let (user, pass) = (format!("{tag}_u"), "fm-role-secret");
    // two roles told apart by case only, both with the tenants' privileges;
    // the user reaches its tenants through its default role, but for t0
    let mut sql = format!(
        "CREATE ROLE `{tag}_r`; CREATE ROLE `{tag}_R`; \
         GRANT ALL ON `{tag}\\_t%`.* TO `{tag}_r`; GRANT ALL ON `{tag}\\_t%`.* TO `{tag}_R`;"
    );
    for host in ["localhost", "127.0.0.1"] {
        sql.push_str(&format!(
            "CREATE USER '{user}'@'{host}' IDENTIFIED BY '{pass}'; \
             GRANT ALL ON `{tag}_t0`.* TO '{user}'@'{host}'; \
             GRANT `{tag}_r` TO '{user}'@'{host}'; GRANT `{tag}_R` TO '{user}'@'{host}'; \
             SET DEFAULT ROLE `{tag}_r` FOR '{user}'@'{host}';"
        ));
    }
    mysql_exec(&mysql_base_url(), &sql).await;
    let mut url = url::Url::parse(&with_db(&mysql_base_url(), &names[0])).unwrap();
    url.set_username(&user).unwrap();
    url.set_password(Some(pass)).unwrap();
    let sync = |files: &[(&str, &str)]| {
        let m = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(m.path().join(name), text).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let out = sync_fleet(
            dir.path(),
            &format!("mysql-databases:{url}"),
            m.path(),
            &[
                "--tenant-pattern",
                &format!("{tag}\\_t%"),
                "--concurrency",
                "1",
            ],
        );
        csv_rows(&report_dir(dir.path(), &out))
    };
    let record = "CREATE TABLE seen (role TEXT); INSERT INTO seen VALUES (CURRENT_ROLE());";
    let other_role = format!("SET ROLE `{tag}_R`;");
    let first = sync(&[("1_record.sql", record), ("2_role.sql", &other_role)]);
    // dropping the role: t0 keeps its own grant, the others fail their own
    // migration, never their connection
    let second = sync(&[
        ("1_record.sql", record),
        ("2_role.sql", &other_role),
        ("3_no_role.sql", "SET ROLE NONE;"),
    ]);
    let mut drop = format!("DROP ROLE `{tag}_r`; DROP ROLE `{tag}_R`;");
    for host in ["localhost", "127.0.0.1"] {
        drop.push_str(&format!("DROP USER '{user}'@'{host}';"));
    }
    mysql_exec(&mysql_base_url(), &drop).await;

    assert_eq!(first.len(), 3);
    assert!(
        first.values().all(|r| r["status"] == "succeeded"),
        "{first:?}"
    );
    for n in &names {
        let role: Vec<(Option<String>,)> = rows_of(n, "SELECT role FROM seen").await;
        assert_eq!(role, [(Some(format!("{tag}_r")),)], "{n}: the login's role");
    }
    assert_eq!(second[&names[0]]["status"], "succeeded", "{second:?}");
    for n in &names[1..] {
        let r = &second[n];
        assert_eq!(r["status"], "failed", "{r:?}");
        assert_eq!(r["error_version"], "3", "{n}: its own migration: {r:?}");
        assert!(!r["error_message"].contains("cannot connect"), "{r:?}");
    }
    drop_databases(&names).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_whose_long_names_share_a_start_lock_apart() {
    let tag = format!("fmlong{:06x}", rand::random::<u32>() & 0xffffff);
    // 61 characters, the same first 58: `fleetmig:<name>` is over the 64 a
    // lock's name may have
    let stem = format!("{tag}_{}", "x".repeat(45));
    let names: Vec<String> = (0..2).map(|i| format!("{stem}_t{i}")).collect();
    databases(&names).await;
    let (out, rows) = sync_files(
        &format!("{tag}\\_x%"),
        &[("1_slow.sql", "DO SLEEP(1.5);".to_string())],
        &["--concurrency", "2", "--lock-timeout", "1s"],
    );
    expect_exit(&out, 0);
    assert_eq!(rows.len(), 2);
    for n in &names {
        // no wait on the other's lock: one attempt each
        assert_eq!(rows[n]["status"], "succeeded", "{rows:?}");
        assert_eq!(rows[n]["attempts"], "1", "{rows:?}");
    }
    drop_databases(&names).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chained_commit_leaves_the_migration_applied() {
    let (tag, names) = fleet("fmchain", 2).await;
    // the COMMIT that finishes the row change's history row opens the next
    // transaction itself: open at the end, but holding nothing
    let rows = table_then(
        &tag,
        "SET SESSION completion_type = 'CHAIN';\nINSERT INTO t VALUES (11);\n",
    );
    for n in &names {
        assert_eq!(rows[n]["status"], "succeeded", "{rows:?}");
        let history: Vec<(i64, bool)> = rows_of(
            n,
            "SELECT version, success FROM _sqlx_migrations ORDER BY version",
        )
        .await;
        assert_eq!(history, vec![(1, true), (2, true)], "{n}");
        let inserted: Vec<(i64,)> = rows_of(n, "SELECT COUNT(*) FROM t").await;
        assert_eq!(inserted, [(1,)], "{n}");
    }
    drop_databases(&names).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_of_their_own_users_hold_no_more_connections_than_sessions() {
    let (tag, names) = fleet("fmusers", 4).await;
    // a user per tenant: a connection kept for one is never another's, and
    // must not stay idle beside the next tenant's
    let pass = "fm-users-secret";
    let mut sql = String::new();
    for (i, n) in names.iter().enumerate() {
        for host in ["localhost", "127.0.0.1"] {
            sql.push_str(&format!(
                "CREATE USER '{tag}_u{i}'@'{host}' IDENTIFIED BY '{pass}'; \
                 GRANT ALL ON `{n}`.* TO '{tag}_u{i}'@'{host}'; \
                 GRANT PROCESS ON *.* TO '{tag}_u{i}'@'{host}';"
            ));
        }
    }
    mysql_exec(&mysql_base_url(), &sql).await;
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,url,schema,tags\n");
    for (i, n) in names.iter().enumerate() {
        let mut url = url::Url::parse(&with_db(&mysql_base_url(), n)).unwrap();
        url.set_username(&format!("{tag}_u{i}")).unwrap();
        url.set_password(Some(pass)).unwrap();
        csv.push_str(&format!("{n},{url},,\n"));
    }
    std::fs::write(dir.path().join("fleet.csv"), csv).unwrap();
    let m = tempfile::tempdir().unwrap();
    std::fs::write(
        m.path().join("1_count.sql"),
        format!(
            "CREATE TABLE open_now AS SELECT COUNT(*) AS n FROM information_schema.processlist \
             WHERE user LIKE '{tag}\\_u%';"
        ),
    )
    .unwrap();
    let out = sync_fleet(
        dir.path(),
        "registry:fleet.csv",
        m.path(),
        &["--concurrency", "1"],
    );
    let mut drop = String::new();
    for i in 0..names.len() {
        for host in ["localhost", "127.0.0.1"] {
            drop.push_str(&format!("DROP USER '{tag}_u{i}'@'{host}';"));
        }
    }
    mysql_exec(&mysql_base_url(), &drop).await;
    expect_exit(&out, 0);
    for n in &names {
        let open: Vec<(i64,)> = rows_of(n, "SELECT n FROM open_now").await;
        assert_eq!(
            open,
            [(1,)],
            "{n}: connections of the fleet's users while it ran"
        );
    }
    drop_databases(&names).await;
}
