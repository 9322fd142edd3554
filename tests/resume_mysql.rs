//! A kill inside a MySQL migration is an ordinary event. MySQL commits each
//! DDL statement on its own, so a migration of several statements killed in
//! the middle has some of them done: each is recorded in the tenant as it
//! starts and ends, and the next run resumes after the last that completed,
//! deciding the one in flight from the database (the column the killed
//! ALTER adds is there, or not). Row changes run again only when they did
//! not commit (they commit with their record). A statement nobody can judge
//! leaves the tenant dirty, naming the file and the statement. (Before, any
//! kill left the history row dirty and a person had to step in.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use sqlx::Connection;

struct Tenant {
    name: String,
    url: String,
}

async fn tenant(prefix: &str, big_rows: u32) -> Tenant {
    let name = format!("fm{prefix}{:06x}", rand::random::<u32>() & 0xffffff);
    mysql_exec(&mysql_base_url(), &format!("CREATE DATABASE `{name}`")).await;
    let url = with_db(&mysql_base_url(), &name);
    if big_rows > 0 {
        mysql_exec(
            &url,
            &format!(
                "CREATE TABLE big (id INT PRIMARY KEY, pad VARCHAR(100) NOT NULL) ENGINE=InnoDB;\
                 INSERT INTO big SELECT seq, REPEAT('x', 90) FROM seq_1_to_{big_rows}"
            ),
        )
        .await;
    }
    Tenant { name, url }
}

impl Tenant {
    /// How many of the tables `names` the tenant has.
    async fn tables(&self, names: &[&str]) -> i64 {
        let list: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
        self.scalar(&format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() \
             AND table_name IN ({})",
            list.join(", ")
        ))
        .await
    }

    /// Its history rows × 10 + those that succeeded (22: two, both clean).
    async fn history_rows(&self) -> i64 {
        self.scalar("SELECT COUNT(*) * 10 + SUM(success) FROM _sqlx_migrations")
            .await
    }

    /// `fleetmig sync` of this one tenant with the set at `m`.
    fn sync(&self, m: &std::path::Path) -> std::process::Output {
        let dir = one_tenant_fleet(&self.url);
        sync_fleet(dir.path(), "registry:fleet.csv", m, &[])
    }

    async fn drop_now(self) {
        mysql_exec(&mysql_base_url(), &format!("DROP DATABASE `{}`", self.name)).await;
    }

    async fn scalar(&self, sql: &str) -> i64 {
        let mut c = mysql_connect(&self.url).await;
        // (SUM is DECIMAL to MySQL)
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(({sql}) AS SIGNED)"
        )))
        .fetch_one(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        c.close().await.unwrap();
        n
    }

    /// Waits until the server runs a statement starting with `prefix`.
    async fn running(&self, prefix: &str) {
        let t0 = Instant::now();
        let sql = format!(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE db = '{}' AND info LIKE '{prefix}%'",
            self.name
        );
        let mut c = mysql_connect(&mysql_base_url()).await;
        loop {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
                .fetch_one(&mut c)
                .await
                .unwrap();
            if n > 0 {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "{prefix} never ran"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Starts `sync` on the one tenant, SIGKILLs it once the server runs a
/// statement starting with `prefix`, then resumes the interrupted sync.
async fn killed_during(t: &Tenant, set: &std::path::Path, prefix: &str) -> std::process::Output {
    let dir = one_tenant_fleet(&t.url);
    let args = [
        "--fleet",
        "registry:fleet.csv",
        "--migrations",
        set.to_str().unwrap(),
        "--progress-every",
        "0",
        "--state",
        "state.db",
        "--log-level",
        "info",
    ];
    let mut child = fleetmig_process(dir.path())
        .arg("sync")
        .args(args)
        .spawn()
        .unwrap();
    t.running(prefix).await;
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    let mut s = sqlite(&dir.path().join("state.db")).await;
    let id: String = sqlx::query_scalar("SELECT id FROM fleetmig_rollouts")
        .fetch_one(&mut s)
        .await
        .unwrap();
    s.close().await.unwrap();
    let mut resume = vec!["resume", id.as_str()];
    resume.extend(args);
    run_in(dir.path(), &resume)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_inside_a_multi_statement_mysql_migration_resumes_after_the_last_completed() {
    let t = tenant("rsm", 300_000).await;
    let m = migration_dir(&[
        (
            "0001_reshape.sql",
            "CREATE TABLE made (x INT NOT NULL);\n\
             INSERT INTO made VALUES (1);\n\
             ALTER TABLE big ADD COLUMN c INT NOT NULL DEFAULT 7, ALGORITHM=COPY;\n\
             INSERT INTO made VALUES (2);\n\
             CREATE TABLE last_made (y INT);\n",
        ),
        ("0002_after.sql", "CREATE TABLE after_reshape (z INT);\n"),
    ]);
    let out = killed_during(&t, m.path(), "ALTER TABLE big").await;
    expect_exit(&out, 0);
    // the ALTER the kill interrupted was judged from the database
    let log = stderr(&out);
    assert!(
        log.contains("an interrupted attempt's statement had taken effect")
            || log.contains("an interrupted attempt's statement had not taken effect"),
        "{log}"
    );
    // every statement exactly once, every version once and clean
    let h = t.history_rows().await;
    assert_eq!(h, 22, "two history rows, both successful");
    assert_eq!(t.scalar("SELECT COUNT(*) FROM made").await, 2);
    assert_eq!(t.scalar("SELECT SUM(x) FROM made").await, 3);
    assert_eq!(t.scalar("SELECT SUM(c) FROM big").await, 7 * 300_000);
    assert_eq!(
        t.tables(&["last_made", "after_reshape", "_fleetmig_statements"])
            .await,
        2,
        "both tables made, and fleetmig's own table of statements gone"
    );
    t.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_statement_nobody_can_judge_leaves_the_tenant_dirty_naming_it() {
    let t = tenant("rsu", 0).await;
    let m = migration_dir(&[(
        "0001_wait.sql",
        "CREATE TABLE first (x INT);\nDO SLEEP(30);\nCREATE TABLE never (y INT);\n",
    )]);
    let out = killed_during(&t, m.path(), "DO SLEEP").await;
    expect_exit(&out, 1);
    let all = stdout(&out) + &stderr(&out);
    assert!(
        all.contains("statement 2 of 3") && all.contains("0001_wait.sql:2"),
        "{all}"
    );
    // dirty: the history row says so, and nothing after ran
    assert_eq!(t.history_rows().await, 10);
    assert_eq!(t.tables(&["never"]).await, 0);
    // the server's own sleep ends with its connection
    t.drop_now().await;
}

/// A retry after a transient failure resumes on a new session: the `SET`
/// the skipped statements ran under is run again first (here
/// NO_BACKSLASH_ESCAPES: without it the value would be stored otherwise).
#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_migration_sets_its_session_up_again() {
    let t = tenant("rss", 0).await;
    mysql_exec(&t.url, "CREATE TABLE held (s TEXT)").await;
    let m = migration_dir(&[(
        "0001_escapes.sql",
        "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES');\n\
         CREATE TABLE made (x INT);\n\
         INSERT INTO held VALUES ('a\\b');\n",
    )]);
    // the third statement waits on a table another session locked, times
    // out (transient), and is retried once the lock is gone
    let mut locker = mysql_connect(&t.url).await;
    sqlx::raw_sql("LOCK TABLES held WRITE")
        .execute(&mut locker)
        .await
        .unwrap();
    let dir = one_tenant_fleet(&t.url);
    let child = fleetmig_process(dir.path())
        .args(["sync", "--fleet", "registry:fleet.csv", "--migrations"])
        .arg(m.path())
        .args([
            "--lock-timeout",
            "1s",
            "--max-attempts",
            "10",
            "--progress-every",
            "0",
        ])
        .spawn()
        .unwrap();
    t.running("INSERT INTO held").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut locker)
        .await
        .unwrap();
    locker.close().await.unwrap();
    let out = child.wait_with_output().unwrap();
    expect_exit(&out, 0);
    let rows = csv_rows(&report_dir(dir.path(), &out));
    assert!(
        rows["t1"]["attempts"].parse::<u32>().unwrap() >= 2,
        "{rows:?}"
    );
    // stored with its backslash as written: the SET held on the retry
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM held WHERE s = CONCAT('a', CHAR(92), 'b')")
            .await,
        1,
        "the value was stored under the file's sql_mode"
    );
    assert_eq!(t.history_rows().await, 11);
    t.drop_now().await;
}

/// A file with statements a resume cannot stand between (mysqldump's
/// LOCK TABLES) runs whole, as before, without records.
#[tokio::test(flavor = "multi_thread")]
async fn a_dump_with_lock_tables_runs_whole() {
    let t = tenant("rsl", 0).await;
    let m = migration_dir(&[(
        "0001_dump.sql",
        "CREATE TABLE d (x INT);\nLOCK TABLES d WRITE;\nINSERT INTO d VALUES (1), (2);\nUNLOCK TABLES;\n",
    )]);
    let out = t.sync(m.path());
    expect_exit(&out, 0);
    assert_eq!(t.scalar("SELECT SUM(x) FROM d").await, 3);
    assert_eq!(t.history_rows().await, 11);
    t.drop_now().await;
}

/// The fingerprint earlier fleetmig versions kept of each statement in
/// `_fleetmig_statements` (FNV-1a of its trimmed text, hex).
fn old_hash(sql: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in sql.trim().as_bytes() {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A tenant an earlier fleetmig left part-way, its statements recorded in
/// `_fleetmig_statements` (two ended, the third marked running when the
/// process died before it began), is resumed from those records: what
/// ended is not run again, the third is judged from the database, and the
/// old table goes.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_an_earlier_fleetmig_left_part_way_resumes_from_its_records() {
    let t = tenant("rsold", 0).await;
    let stmts = [
        "CREATE TABLE a (x INT)",
        "INSERT INTO a VALUES (1)",
        "CREATE TABLE b (y INT)",
    ];
    let m = migration_dir(&[("0001_three.sql", &format!("{};\n", stmts.join(";\n")))]);
    mysql_exec(
        &t.url,
        &format!(
            "CREATE TABLE a (x INT); INSERT INTO a VALUES (1);\
             CREATE TABLE _fleetmig_statements (version BIGINT NOT NULL, statement INT NOT NULL, \
             sql_hash VARCHAR(32) NOT NULL, started_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
             finished_at DATETIME(6) NULL, PRIMARY KEY (version, statement)) ENGINE=InnoDB;\
             INSERT INTO _fleetmig_statements VALUES (1, 0, '{}', NOW(6), NOW(6)), \
             (1, 1, '{}', NOW(6), NOW(6)), (1, 2, '{}', NOW(6), NULL)",
            old_hash(stmts[0]),
            old_hash(stmts[1]),
            old_hash(stmts[2])
        ),
    )
    .await;
    let out = t.sync(m.path());
    expect_exit(&out, 0);
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM a").await,
        1,
        "not inserted twice"
    );
    assert_eq!(t.history_rows().await, 11);
    assert_eq!(
        t.tables(&["b", "_fleetmig_statements"]).await,
        1,
        "b made, and the old table of statements gone"
    );
    t.drop_now().await;
}

/// A migration left unfinished (its history row holds its progress) whose
/// file changed since is refused by name: nobody can tell which of the new
/// statements ran. Nothing runs and the row stays as it was.
#[tokio::test(flavor = "multi_thread")]
async fn an_unfinished_migration_whose_file_changed_is_refused_naming_it() {
    let t = tenant("rschg", 0).await;
    let m = migration_dir(&[(
        "0001_two.sql",
        "CREATE TABLE a (x INT);\nCREATE TABLE b (y INT);\n",
    )]);
    // statement 1 ended, statement 2 not started (progress -4), under a
    // checksum that is not the file's
    mysql_exec(
        &t.url,
        "CREATE TABLE a (x INT); CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, \
         description TEXT NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
         success BOOLEAN NOT NULL, checksum BLOB NOT NULL, execution_time BIGINT NOT NULL); \
         INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (1, 'two', FALSE, x'00', -4)",
    )
    .await;
    let out = t.sync(m.path());
    expect_exit(&out, 1);
    let all = stdout(&out) + &stderr(&out);
    assert!(all.contains("0001_two.sql has changed since"), "{all}");
    assert_eq!(
        t.scalar("SELECT execution_time FROM _sqlx_migrations WHERE version = 1 AND NOT success")
            .await,
        -4
    );
    assert_eq!(t.tables(&["b"]).await, 0);
    // with the file as it was (its checksum, as another tenant the file
    // ran on records it), the same row resumes at b
    let other = tenant("rschk", 0).await;
    expect_exit(&other.sync(m.path()), 0);
    mysql_exec(
        &t.url,
        &format!(
            "UPDATE _sqlx_migrations SET checksum = \
             (SELECT checksum FROM `{}`._sqlx_migrations WHERE version = 1) WHERE version = 1",
            other.name
        ),
    )
    .await;
    other.drop_now().await;
    let out = t.sync(m.path());
    expect_exit(&out, 0);
    assert_eq!(t.history_rows().await, 11);
    t.drop_now().await;
}

/// Writes a fleet file of the one tenant at `url` into a new directory.
fn one_tenant_fleet(url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fleet.csv"),
        format!("id,url,schema,tags\nt1,{url},,\n"),
    )
    .unwrap();
    dir
}

/// sqlx's checksum of version `v` of the set at `m`, as a tenant the set
/// ran on records it.
async fn recorded_checksum(m: &std::path::Path, v: i64) -> String {
    let other = tenant("rsck", 0).await;
    expect_exit(&other.sync(m), 0);
    let hex = other
        .text(&format!(
            "SELECT HEX(checksum) FROM _sqlx_migrations WHERE version = {v}"
        ))
        .await;
    other.drop_now().await;
    hex
}

impl Tenant {
    async fn text(&self, sql: &str) -> String {
        let mut c = mysql_connect(&self.url).await;
        let s: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        c.close().await.unwrap();
        s
    }
}

/// A migration that switches database (`USE`) mid-file does not take its
/// progress with it: the history row stays in the tenant's database, and
/// the other database gets no history table.
#[tokio::test(flavor = "multi_thread")]
async fn a_use_inside_a_migration_leaves_its_progress_in_the_tenant() {
    let t = tenant("rsuse", 0).await;
    let other = tenant("rsusx", 0).await;
    let m = migration_dir(&[
        (
            "0001_elsewhere.sql",
            &format!(
                "CREATE TABLE here (x INT);\nUSE `{}`;\nCREATE TABLE there (y INT);\nINSERT INTO there VALUES (1);\n",
                other.name
            ),
        ),
        ("0002_after.sql", "CREATE TABLE after_use (z INT);\n"),
    ]);
    let out = t.sync(m.path());
    expect_exit(&out, 0);
    assert_eq!(t.history_rows().await, 22);
    assert_eq!(other.scalar("SELECT COUNT(*) FROM there").await, 1);
    assert_eq!(
        other.tables(&["_sqlx_migrations", "after_use"]).await,
        0,
        "no history, and not the next migration, in the other database"
    );
    assert_eq!(t.tables(&["here", "after_use"]).await, 2);
    other.drop_now().await;
    t.drop_now().await;
}

/// A history table someone made MyISAM (it does not roll back): a row
/// change cannot commit with its progress there, so its end is written
/// after it; the migration still applies once and is recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_history_table_that_does_not_roll_back_still_records_each_migration() {
    let t = tenant("rsmy", 0).await;
    mysql_exec(
        &t.url,
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
         checksum BLOB NOT NULL, execution_time BIGINT NOT NULL) ENGINE=MyISAM",
    )
    .await;
    let m = migration_dir(&[(
        "0001_rows.sql",
        "CREATE TABLE a (x INT) ENGINE=InnoDB;\nINSERT INTO a VALUES (1);\nINSERT INTO a VALUES (2);\n",
    )]);
    expect_exit(&t.sync(m.path()), 0);
    assert_eq!(t.scalar("SELECT SUM(x) FROM a").await, 3);
    assert_eq!(t.history_rows().await, 11);
    t.drop_now().await;
}

/// A lower version added while a higher one is unfinished is applied, and
/// the unfinished one then resumes where it stopped (its first statement is
/// not run again: it would fail, the table being there). Baselining the
/// unfinished one is refused: half of it ran.
#[tokio::test(flavor = "multi_thread")]
async fn an_unfinished_migration_resumes_after_a_lower_one_added_since() {
    let m = migration_dir(&[
        ("0001_low.sql", "CREATE TABLE low (x INT);\n"),
        (
            "0002_two.sql",
            "CREATE TABLE a (x INT);\nCREATE TABLE b (y INT);\n",
        ),
    ]);
    let sum = recorded_checksum(m.path(), 2).await;
    let t = tenant("rslow", 0).await;
    // version 2's first statement ended, its second not started (-4)
    mysql_exec(
        &t.url,
        &format!(
            "CREATE TABLE a (x INT); CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
             success BOOLEAN NOT NULL, checksum BLOB NOT NULL, execution_time BIGINT NOT NULL); \
             INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (2, 'two', FALSE, x'{sum}', -4)"
        ),
    )
    .await;
    let dir = one_tenant_fleet(&t.url);
    let out = run_in(
        dir.path(),
        &[
            "baseline",
            "--fleet",
            "registry:fleet.csv",
            "--migrations",
            m.path().to_str().unwrap(),
            "--version",
            "2",
        ],
    );
    assert_ne!(out.status.code(), Some(0));
    let all = stdout(&out) + &stderr(&out);
    assert!(all.contains("interrupted part-way"), "{all}");
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM _sqlx_migrations").await,
        1,
        "baseline recorded nothing, not even version 1"
    );
    let out = sync_fleet(dir.path(), "registry:fleet.csv", m.path(), &[]);
    expect_exit(&out, 0);
    assert_eq!(t.history_rows().await, 22);
    assert_eq!(t.tables(&["low", "a", "b"]).await, 3);
    t.drop_now().await;
}

/// Random SIGKILLs across a MariaDB fleet, over and over, at instants
/// nobody chose: inside DDL that copies a table, inside row changes, between
/// a statement and its progress. Every statement of this set can be judged
/// from the database, so no kill may leave a tenant dirty or failed, and
/// each statement takes effect exactly once: the log rows (no key, so a
/// second INSERT would show), the counter every row was raised by once,
/// one clean history row per version.
#[tokio::test(flavor = "multi_thread")]
async fn random_kills_across_a_mariadb_fleet_apply_every_statement_once() {
    const TENANTS: usize = 6;
    const ROWS: i64 = 30_000;
    let mut tenants = Vec::new();
    for _ in 0..TENANTS {
        tenants.push(tenant("rsk", ROWS as u32).await);
    }
    let m = migration_dir(&[
        (
            "0001_reshape.sql",
            "CREATE TABLE log (step INT NOT NULL);\n\
             INSERT INTO log VALUES (1);\n\
             ALTER TABLE big ADD COLUMN a INT NOT NULL DEFAULT 1, ALGORITHM=COPY;\n\
             INSERT INTO log VALUES (2);\n\
             UPDATE big SET a = a + 1;\n\
             INSERT INTO log VALUES (3);\n",
        ),
        (
            "0002_index.sql",
            "CREATE INDEX big_a ON big (a);\nINSERT INTO log VALUES (4);\n\
             ALTER TABLE big DROP COLUMN pad;\nINSERT INTO log SELECT 5;\n",
        ),
        (
            "0003_last.sql",
            "UPDATE big SET a = a * 10;\nCREATE TABLE done (x INT);\n",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let rows: String = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| format!("t{i},{},,\n", t.url))
        .collect();
    std::fs::write(
        dir.path().join("fleet.csv"),
        format!("id,url,schema,tags\n{rows}"),
    )
    .unwrap();
    let args = [
        "--fleet",
        "registry:fleet.csv",
        "--migrations",
        m.path().to_str().unwrap(),
        "--progress-every",
        "0",
        "--state",
        "state.db",
        "--concurrency",
        "3",
        "--lock-timeout",
        "2s",
    ];
    // (resume takes these from the rollout)
    let sync_only = [
        "--max-attempts",
        "20",
        "--allow-lint-findings",
        "--allow-contract",
    ];
    let mut id: Option<String> = None;
    let mut kills = 0;
    let mut finished = None;
    for _ in 0..25 {
        let mut cmd = fleetmig_process(dir.path());
        match &id {
            None => cmd.arg("sync").args(sync_only),
            Some(id) => cmd.args(["resume", id.as_str()]),
        };
        let mut child = cmd.args(args).spawn().unwrap();
        if kills == 0 {
            // the first kill lands inside the fleet's work, wherever
            tenants[0].running("ALTER TABLE big").await;
        }
        let wait = Duration::from_millis(rand::random_range(20..700));
        let t0 = Instant::now();
        let mut done = None;
        while t0.elapsed() < wait {
            if let Some(status) = child.try_wait().unwrap() {
                done = Some(status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if done.is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let out = child.wait_with_output().unwrap();
        if id.is_none() && dir.path().join("state.db").exists() {
            let mut s = sqlite(&dir.path().join("state.db")).await;
            id = sqlx::query_scalar("SELECT id FROM fleetmig_rollouts")
                .fetch_optional(&mut s)
                .await
                .unwrap();
            s.close().await.unwrap();
        }
        if done.is_some() {
            finished = Some(out);
            break;
        }
    }
    let out = match finished {
        Some(out) => out,
        // the last resume runs to its end, unkilled
        None => {
            let id = id.expect("a rollout was started");
            let mut resume = vec!["resume", id.as_str()];
            resume.extend(args);
            run_in(dir.path(), &resume)
        }
    };
    // a kill after the rollout was recorded complete, before the process
    // exited, leaves nothing to resume: that is an end too
    if !stderr(&out).contains("completed; nothing to resume") {
        expect_exit(&out, 0);
    }
    assert!(kills > 0, "no kill landed: the test proved nothing");
    for t in &tenants {
        let say = format!("{} after {kills} kills", t.name);
        assert_eq!(
            t.history_rows().await,
            33,
            "{say}: three clean history rows"
        );
        assert_eq!(
            t.text("SELECT CAST(GROUP_CONCAT(step ORDER BY step) AS CHAR) FROM log")
                .await,
            "1,2,3,4,5",
            "{say}: each logged step once"
        );
        assert_eq!(
            t.scalar("SELECT SUM(a) FROM big").await,
            20 * ROWS,
            "{say}: every row raised once, then multiplied once"
        );
        assert_eq!(
            t.scalar(
                "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE() \
                 AND table_name = 'big' AND column_name = 'pad'"
            )
            .await,
            0,
            "{say}"
        );
        assert_eq!(
            t.tables(&["done", "_fleetmig_statements"]).await,
            1,
            "{say}"
        );
    }
    eprintln!("{kills} kills");
    for t in tenants {
        t.drop_now().await;
    }
}

/// A row change the server refused part-way on a table that does not roll
/// back (MyISAM keeps the rows it inserted before the duplicate) may have
/// taken effect: the tenant is left dirty, naming the statement, never
/// cleaned for a run that would insert those rows again.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_change_refused_part_way_on_myisam_leaves_the_tenant_dirty() {
    let t = tenant("rsmyp", 0).await;
    mysql_exec(
        &t.url,
        "CREATE TABLE t (id INT PRIMARY KEY) ENGINE=MyISAM; INSERT INTO t VALUES (1)",
    )
    .await;
    let m = migration_dir(&[("0001_dup.sql", "INSERT INTO t VALUES (10), (1);\n")]);
    let out = t.sync(m.path());
    expect_exit(&out, 1);
    let all = stdout(&out) + &stderr(&out);
    assert!(all.contains("refused part-way"), "{all}");
    assert_eq!(t.scalar("SELECT COUNT(*) FROM t").await, 2, "10 stayed");
    assert_eq!(
        t.scalar(
            "SELECT COUNT(*) * 10 + SUM(success) FROM _sqlx_migrations WHERE execution_time = -1"
        )
        .await,
        10,
        "a dirty row, not none"
    );
    t.drop_now().await;
}

/// A migration left unfinished whose file is gone is not run over: the next
/// version is refused, naming the unfinished one, and nothing of it runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_is_not_applied_over_an_unfinished_one_whose_file_is_gone() {
    let t = tenant("rsgone", 0).await;
    mysql_exec(
        &t.url,
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
         checksum BLOB NOT NULL, execution_time BIGINT NOT NULL); \
         INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (1, 'gone', FALSE, x'00', -5)",
    )
    .await;
    let m = migration_dir(&[("0002_next.sql", "CREATE TABLE next_one (x INT);\n")]);
    let out = t.sync(m.path());
    expect_exit(&out, 1);
    let all = stdout(&out) + &stderr(&out);
    assert!(
        all.contains("migration 1 was interrupted part-way"),
        "{all}"
    );
    assert_eq!(t.tables(&["next_one"]).await, 0);
    assert_eq!(t.history_rows().await, 10, "only the unfinished row");
    t.drop_now().await;
}

/// The history rows fleetmig sends as text (the unfinished row a first
/// attempt writes, a finished backfill's row): description and checksum are exact,
/// whatever the description holds (a quote, a backslash, a non-ASCII
/// letter) and whatever the session's `sql_mode` says of backslashes (an
/// earlier migration of the same session turned escapes off).
#[tokio::test(flavor = "multi_thread")]
async fn history_rows_sent_as_text_are_exact_whatever_the_sql_mode() {
    let m = migration_dir(&[
        (
            "0001_no_escapes.sql",
            "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES');\n",
        ),
        ("0002_it's_a\\back_é.sql", "CREATE TABLE w (x INT);\n"),
        ("0003_rows_\\'.sql", "INSERT INTO w VALUES (1);\n"),
        (
            "0004_batch_\\'_ü.sql",
            "-- fleetmig: batch size=10\n\
             UPDATE w SET x = 2 WHERE x IN (SELECT x FROM (SELECT x FROM w WHERE x = 1 \
             LIMIT :batch_size) AS todo);\n",
        ),
    ]);
    let t = tenant("rstxt", 0).await;
    let dir = one_tenant_fleet(&t.url);
    let out = sync_fleet(dir.path(), "registry:fleet.csv", m.path(), &[]);
    expect_exit(&out, 0);
    let set = fleetmig::migration::load(m.path()).unwrap();
    for (v, description) in [(2, "it's a\\back é"), (3, "rows \\'"), (4, "batch \\' ü")] {
        let script = set
            .get(v)
            .unwrap()
            .up
            .get(fleetmig::tenant::Dialect::Mysql)
            .unwrap();
        assert_eq!(
            t.text(&format!(
                "SELECT CONCAT(HEX(description), ':', HEX(checksum), ':', success) \
                 FROM _sqlx_migrations WHERE version = {v}"
            ))
            .await,
            format!(
                "{}:{}:1",
                fleetmig::migration::hex(description.as_bytes()).to_uppercase(),
                fleetmig::migration::hex(&script.checksum).to_uppercase()
            ),
            "version {v}"
        );
    }
    assert_eq!(t.scalar("SELECT COUNT(*) FROM w WHERE x = 2").await, 1);
    t.drop_now().await;
}

/// Values fleetmig writes into text it sends (the lock's name, a database's
/// name, a migration's description, its checksum) read back exactly on the
/// server, under the default `sql_mode`, with backslash escapes off and
/// with ANSI quotes: strings generated from quotes, backslashes, `%`, `_`,
/// control characters (NUL, Ctrl-Z), accented letters and emoji.
#[tokio::test(flavor = "multi_thread")]
async fn literals_sent_as_text_read_back_exactly_under_every_sql_mode() {
    use fleetmig::dialect::mysql::{bytes_literal, literal};
    use rand::RngExt;
    const POOL: &[&str] = &[
        "'", "\\", "\"", "`", "%", "_", "\0", "\n", "\r", "\u{1a}", "\t", "a", "Z", "0", " ", "é",
        "ß", "€", "😀", "'\\", "\\'", "''", ";", "--", "/*",
    ];
    let mut rng = rand::rng();
    let mut c = mysql_connect(&mysql_base_url()).await;
    for mode in [
        "",
        "NO_BACKSLASH_ESCAPES",
        "ANSI_QUOTES,NO_BACKSLASH_ESCAPES",
        "ANSI",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET SESSION sql_mode = '{mode}'"
        )))
        .execute(&mut c)
        .await
        .unwrap();
        for _ in 0..200 {
            let len = rng.random_range(0..12);
            let s: String = (0..len)
                .map(|_| POOL[rng.random_range(0..POOL.len())])
                .collect();
            let sql = format!(
                "SELECT HEX({}), HEX({})",
                literal(&s),
                bytes_literal(s.as_bytes())
            );
            let row = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .fetch_one(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{sql} under '{mode}': {e}"));
            use sqlx::Row;
            let want = fleetmig::migration::hex(s.as_bytes()).to_uppercase();
            assert_eq!(row.get::<String, _>(0), want, "{s:?} under '{mode}'");
            assert_eq!(
                row.get::<String, _>(1),
                want,
                "{s:?} as bytes under '{mode}'"
            );
        }
    }
    c.close().await.unwrap();
}

/// A tenant's session is set up in one statement with what sqlx would have
/// sent (its `sql_mode` additions, UTC or the URL's `timezone`, utf8mb4)
/// and the lock waits of `--lock-timeout`: a migration sees all of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_session_is_set_up_as_sqlx_would_with_the_lock_waits() {
    let m = migration_dir(&[(
        "0001_session.sql",
        "CREATE TABLE s AS SELECT CAST(@@session.time_zone AS CHAR(64)) AS tz, \
         CAST(@@session.sql_mode AS CHAR(512)) AS mode, \
         CAST(@@session.character_set_client AS CHAR(64)) AS cs, \
         @@session.lock_wait_timeout AS lw, @@session.innodb_lock_wait_timeout AS ilw;\n",
    )]);
    for (zone, want) in [(None, "+00:00"), (Some("%2B02:00"), "+02:00")] {
        let t = tenant("rsset", 0).await;
        let url = match zone {
            Some(z) => format!("{}?timezone={z}", t.url),
            None => t.url.clone(),
        };
        let dir = one_tenant_fleet(&url);
        let out = sync_fleet(
            dir.path(),
            "registry:fleet.csv",
            m.path(),
            &["--lock-timeout", "7s"],
        );
        expect_exit(&out, 0);
        assert_eq!(
            t.text("SELECT CONCAT_WS('|', tz, cs, lw, ilw) FROM s")
                .await,
            format!("{want}|utf8mb4|7|7")
        );
        let mode = t.text("SELECT mode FROM s").await;
        for flag in ["PIPES_AS_CONCAT", "NO_ENGINE_SUBSTITUTION"] {
            assert!(mode.split(',').any(|f| f == flag), "{flag} missing: {mode}");
        }
        t.drop_now().await;
    }
}

/// A row change commits in the round trip that sends it only when its end
/// moved the migration's history row (the server checks before the
/// `COMMIT`): a statement that deletes its own migration's row is rolled
/// back with its end, and the tenant is failed naming the vanished row.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_change_whose_history_row_vanished_is_rolled_back() {
    let m = migration_dir(&[
        ("0001_w.sql", "CREATE TABLE w (x INT);\n"),
        (
            "0002_gone.sql",
            "INSERT INTO w VALUES (1);\nDELETE FROM _sqlx_migrations WHERE version = 2;\n",
        ),
    ]);
    let t = tenant("rsgone", 0).await;
    let dir = one_tenant_fleet(&t.url);
    let out = sync_fleet(dir.path(), "registry:fleet.csv", m.path(), &[]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("was gone while it ran"), "{all}");
    // the first statement committed with its end; the DELETE was rolled
    // back with its end: the row is there, saying statement 2 may have started
    assert_eq!(t.scalar("SELECT COUNT(*) FROM w").await, 1);
    assert_eq!(
        t.scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE version = 2 AND NOT success")
            .await,
        1
    );
    t.drop_now().await;
}
