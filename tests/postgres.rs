//! PostgreSQL fleets on a real server: schema-per-tenant and
//! database-per-tenant, locks, isolation, timeouts, error classes, concurrent
//! indexes, transaction modes, redaction.

mod common;

use std::time::Duration;

use common::*;
use sqlx::{Connection, Executor};

async fn schemas(db: &PgDb, n: usize) {
    let mut sql = String::new();
    for i in 0..n {
        sql.push_str(&format!("CREATE SCHEMA tenant_{i:03};"));
    }
    db.exec(&sql).await;
}

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
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
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
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
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
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
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
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
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

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_at_once_never_apply_a_migration_twice() {
    let db = pg_database("twoproc").await;
    schemas(&db, 40).await;
    // A migration that is not idempotent: applying it twice would fail.
    let m = migration_dir(&[
        (
            "0001_a.sql",
            "CREATE TABLE a (x int); SELECT pg_sleep(0.02);",
        ),
        ("0002_b.sql", "INSERT INTO a VALUES (1);"),
        ("0003_c.sql", "CREATE TABLE c (x int);"),
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
                    "--fleet",
                ])
                .arg(format!("postgres-schemas:{}", db.url))
                .arg("--migrations")
                .arg(m.path())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied_total = 0;
    for (child, d) in children.into_iter().zip(&dirs) {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
        for r in csv_rows(&report_dir(d.path(), &out)).values() {
            applied_total += r["applied_versions"]
                .split(';')
                .filter(|s| !s.is_empty())
                .count();
        }
    }
    assert_eq!(
        applied_total,
        40 * 3,
        "each migration applied exactly once across both processes"
    );
    let mut c = db.conn().await;
    for i in 0..40 {
        let s = format!("tenant_{i:03}");
        assert_eq!(pg_history(&mut c, &s).await.len(), 3);
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{s}\".a"
        )))
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(n, 1, "{s}: the insert ran once");
    }
    c.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_table_fails_fast_as_transient_and_is_retried() {
    let db = pg_database("locked").await;
    schemas(&db, 3).await;
    let base = migration_dir(&[("0001_a.sql", "CREATE TABLE accounts (id int);")]);
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    assert_eq!(
        sync_fleet(dir.path(), &fleet, base.path(), &[])
            .status
            .code(),
        Some(0)
    );
    std::fs::write(
        base.path().join("0002_b.sql"),
        "ALTER TABLE accounts ADD COLUMN plan text;",
    )
    .unwrap();

    // Another session holds the table: with one attempt, the tenant fails
    // quickly with a transient lock timeout, code and class in the report.
    let mut holder = db.conn().await;
    holder
        .execute("BEGIN; LOCK TABLE tenant_001.accounts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    let out = sync_fleet(
        dir.path(),
        &fleet,
        base.path(),
        &["--lock-timeout", "200ms", "--max-attempts", "1"],
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let r = &rows["tenant_001"];
    assert_eq!(
        (r["status"].as_str(), r["error_class"].as_str()),
        ("failed", "transient")
    );
    assert_eq!(
        (r["error_kind"].as_str(), r["error_code"].as_str()),
        ("lock_timeout", "55P03")
    );
    assert_eq!(rows["tenant_000"]["status"], "succeeded");

    // With retries, the lock is released after ~1.5 s and the tenant succeeds.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        holder.execute("COMMIT").await.unwrap();
        holder.close().await.unwrap();
    });
    let out = sync_fleet(
        dir.path(),
        &fleet,
        base.path(),
        &[
            "--lock-timeout",
            "200ms",
            "--max-attempts",
            "10",
            "--retry-backoff",
            "300ms",
        ],
    );
    release.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let attempts: u32 = rows["tenant_001"]["attempts"].parse().unwrap();
    assert!(attempts >= 2, "attempts {attempts}");
    let mut c = db.conn().await;
    assert_eq!(pg_history(&mut c, "tenant_001").await.len(), 2);
    c.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_syntax_error_is_permanent_and_never_retried() {
    let db = pg_database("syntax").await;
    schemas(&db, 2).await;
    let m = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);"),
        ("0002_b.sql", "CREATE TABEL b (x int);"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let out = sync_fleet(
        dir.path(),
        &format!("postgres-schemas:{}", db.url),
        m.path(),
        &["--max-attempts", "5"],
    );
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    for r in rows.values() {
        assert_eq!(r["attempts"], "1");
        assert_eq!(
            (
                r["error_class"].as_str(),
                r["error_kind"].as_str(),
                r["error_code"].as_str()
            ),
            ("permanent", "syntax", "42601")
        );
        assert_eq!(r["to_version"], "1");
    }
    let mut c = db.conn().await;
    assert_eq!(
        pg_history(&mut c, "tenant_000").await,
        vec![(1, true)],
        "not dirty: the migration rolled back"
    );
    c.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_tx_mode_moves_a_tenant_atomically() {
    let db = pg_database("txmode").await;
    schemas(&db, 2).await;
    let m = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);"),
        ("0002_b.sql", "CREATE TABLE b (x int);"),
        ("0003_c.sql", "CREATE TABLE c (x int);"),
        ("0004_d.sql", "CREATE TABLE d (x int);"),
        ("0005_e.sql", "CREATE TABLE e (x int);"),
        ("0006_f.sql", "CREATE TABLE f (x int);"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    assert_eq!(
        sync_fleet(dir.path(), &fleet, m.path(), &["--to", "1"])
            .status
            .code(),
        Some(0)
    );
    // tenant_001 will fail in the third of its five pending migrations (0004)
    db.exec("CREATE TABLE tenant_001.d (conflict int);").await;
    let out = sync_fleet(dir.path(), &fleet, m.path(), &["--tx-mode", "tenant"]);
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    assert_eq!(rows["tenant_000"]["status"], "succeeded");
    assert_eq!(
        (
            rows["tenant_001"]["error_version"].as_str(),
            rows["tenant_001"]["to_version"].as_str()
        ),
        ("4", "1")
    );
    let mut c = db.conn().await;
    assert_eq!(pg_history(&mut c, "tenant_001").await, vec![(1, true)]);
    assert_eq!(
        pg_tables(&mut c, "tenant_001").await,
        vec!["_sqlx_migrations", "a", "d"]
    );
    assert_eq!(pg_history(&mut c, "tenant_000").await.len(), 6);
    c.close().await.unwrap();
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_index_left_by_an_interrupted_concurrent_build_is_dropped_and_rebuilt() {
    let db = pg_database("cic").await;
    schemas(&db, 1).await;
    let base = migration_dir(&[(
        "0001_big.sql",
        "CREATE TABLE big (id int, x int); INSERT INTO big SELECT g, g % 1000003 FROM generate_series(1, 1500000) g;",
    )]);
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    assert_eq!(
        sync_fleet(dir.path(), &fleet, base.path(), &[])
            .status
            .code(),
        Some(0)
    );
    std::fs::write(
        base.path().join("0002_idx.sql"),
        // unquoted mixed case: the server folds it to big_x_idx
        "-- no-transaction\nCREATE INDEX CONCURRENTLY Big_X_Idx ON big (x, id);\n",
    )
    .unwrap();
    // Kill the backend building the index, mid-build: a real fault.
    let url = db.url.clone();
    let killer = tokio::spawn(async move {
        let mut c = pg_connect(&url).await;
        for _ in 0..400 {
            let pid: Option<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE '%CREATE INDEX CONCURRENTLY Big_X_Idx%' AND query NOT LIKE '%pg_stat_activity%' AND state = 'active' AND pid <> pg_backend_pid()",
            )
            .fetch_optional(&mut c)
            .await
            .unwrap();
            if let Some(pid) = pid {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                    .bind(pid)
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    });
    let out = sync_fleet(
        dir.path(),
        &fleet,
        base.path(),
        &["--max-attempts", "4", "--retry-backoff", "200ms"],
    );
    assert!(killer.await.unwrap(), "the index build was seen and killed");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let attempts: u32 = rows["tenant_000"]["attempts"].parse().unwrap();
    assert!(attempts >= 2, "the killed build was retried");
    let mut c = db.conn().await;
    assert_eq!(
        pg_history(&mut c, "tenant_000").await,
        vec![(1, true), (2, true)],
        "history not left dirty"
    );
    let valid: Vec<bool> = sqlx::query_scalar(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'big_x_idx'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(
        valid,
        vec![true],
        "one valid index, the invalid leftover is gone"
    );
    c.close().await.unwrap();
    db.drop_now().await;
}

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
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
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

#[tokio::test(flavor = "multi_thread")]
async fn per_server_limit_holds_across_shards() {
    // Two "servers" (127.0.0.1 and localhost are two server keys), 6 schemas
    // each; with --per-server 1 no two tenants of one server overlap in time.
    let db = pg_database("shards").await;
    schemas(&db, 12).await;
    let other = db.url.replace("127.0.0.1", "localhost");
    let mut csv = String::from("id,url,schema,tags\n");
    for i in 0..12 {
        let url = if i % 2 == 0 { &db.url } else { &other };
        csv.push_str(&format!("t{i:02},{url},tenant_{i:03},\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fleet.csv"), csv).unwrap();
    let m = migration_dir(&[(
        "0001_a.sql",
        "CREATE TABLE a (x int); SELECT pg_sleep(0.1);",
    )]);
    let out = sync_fleet(
        dir.path(),
        "registry:fleet.csv",
        m.path(),
        &["--concurrency", "8", "--per-server", "1"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let span = |id: &str| {
        let r = &rows[id];
        let p = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
        (p(&r["started_at"]), p(&r["finished_at"]))
    };
    let mut overlaps_across = 0;
    for a in 0..12 {
        for b in (a + 1)..12 {
            let (sa, ea) = span(&format!("t{a:02}"));
            let (sb, eb) = span(&format!("t{b:02}"));
            let overlap = sa < eb && sb < ea;
            if a % 2 == b % 2 {
                assert!(
                    !overlap,
                    "t{a:02} and t{b:02} share a server and overlapped"
                );
            } else if overlap {
                overlaps_across += 1;
            }
        }
    }
    assert!(
        overlaps_across > 0,
        "the two servers were worked on in parallel"
    );
    db.drop_now().await;
}

/// Restarts the PostgreSQL cluster in the middle of a run (runs alone: see
/// .config/nextest.toml).
#[tokio::test(flavor = "multi_thread")]
async fn server_restart_mid_run_is_retried_and_every_tenant_succeeds() {
    let db = pg_database("restart").await;
    schemas(&db, 40).await;
    let m = migration_dir(&[
        (
            "0001_a.sql",
            "CREATE TABLE a (x int); SELECT pg_sleep(0.05);",
        ),
        (
            "0002_b.sql",
            "CREATE TABLE b (x int); SELECT pg_sleep(0.05);",
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let child = fleetmig_process(dir.path())
        .args([
            "sync",
            "--progress-every",
            "0",
            "--concurrency",
            "4",
            "--max-attempts",
            "20",
            "--retry-backoff",
            "300ms",
            "--fleet",
        ])
        .arg(format!("postgres-schemas:{}", db.url))
        .arg("--migrations")
        .arg(m.path())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let clusters = std::process::Command::new("pg_lsclusters")
        .arg("-h")
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&clusters.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let mut cols = line.split_whitespace();
    let (version, cluster) = (
        cols.next().unwrap().to_string(),
        cols.next().unwrap().to_string(),
    );
    let restarted = std::process::Command::new("pg_ctlcluster")
        .args([&version, &cluster, "restart", "-m", "fast"])
        .status()
        .unwrap();
    assert!(restarted.success(), "pg_ctlcluster restart failed");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let rows = csv_rows(&report_dir(dir.path(), &out));
    let retried = rows.values().filter(|r| r["attempts"] != "1").count();
    assert!(retried > 0, "some tenant met the restart and was retried");
    let mut c = db.conn().await;
    for i in 0..40 {
        assert_eq!(
            pg_history(&mut c, &format!("tenant_{i:03}")).await,
            vec![(1, true), (2, true)]
        );
    }
    c.close().await.unwrap();
    db.drop_now().await;
}
