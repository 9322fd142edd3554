//! `fleetmig serve` over real stores, as a process, spoken to over HTTP:
//! a live PostgreSQL rollout with two processes on it, paused and resumed
//! from the controls (each recorded under the operator's name); actions
//! refused without a token, from another origin, or on a read-only server,
//! changing nothing; a tenant's hostile error message shown as text; the
//! tenant list paged and filtered on the server; /metrics; a web retry left
//! for the next process to pick up.

mod common;

use std::time::{Duration, Instant};

use common::web::{Serve, Watched, tokens_file};
use common::workers::*;
use common::*;

const TOKEN: &str = "alice-0123456789abcdef";

async fn text(c: &mut sqlx::PgConnection, sql: &str) -> String {
    sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(c)
        .await
        .unwrap()
}

async fn wait_status(c: &mut sqlx::PgConnection, id: &str, want: &str) {
    let t0 = Instant::now();
    loop {
        let got = text(
            c,
            &format!("SELECT status FROM fleetmig_rollouts WHERE id = '{id}'"),
        )
        .await;
        if got == want {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "still {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_postgres_rollout_is_watched_paused_and_resumed_from_the_browser() {
    let s = Setup::new("serve", 60, 0.25).await;
    let Watched {
        web,
        rollout: a,
        worker: b,
        id,
        mut c,
    } = Watched::start(&s, "alice", TOKEN).await;
    s.wait_ran(&mut c, 10).await;

    // /metrics while it runs: every series the Grafana dashboard reads
    let metrics = web.get("/metrics", None);
    assert_eq!(metrics.status, 200);
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/grafana/fleetmig-dashboard.json"),
    )
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut read = 0;
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let name: String = expr[expr.find("fleetmig_").unwrap()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                metrics.body.contains(&format!("# TYPE {name} gauge")),
                "{name} is not served:\n{}",
                metrics.body
            );
            read += 1;
        }
    }
    assert!(read >= 9);
    assert!(metrics.body.contains(&format!(
        "fleetmig_rollout_tenants{{rollout=\"{id}\",status=\"succeeded\"}}"
    )));

    // the pages, read-only without signing in
    let list = web.get("/", None);
    assert_eq!(list.status, 200);
    assert!(
        list.body.contains(&id) && list.body.contains("running"),
        "{}",
        list.body
    );
    let page = web.get(&format!("/rollouts/{id}"), None);
    assert_eq!(page.status, 200);
    for part in [
        "id=\"waves\"",
        "first",
        "rest",
        "id=\"workers\"",
        "id=\"policy\"",
        "bake",
        "data-live=\"/rollouts/",
    ] {
        assert!(page.body.contains(part), "{part} missing: {}", page.body);
    }
    assert!(
        !page.body.contains("id=\"pause\""),
        "controls shown without a token"
    );
    assert!(
        !page.body.contains("fleetmig-test-secret"),
        "a credential on the page"
    );
    // the page's stream says when the store changes
    assert!(web.changed_within(
        &format!("/rollouts/{id}/events"),
        None,
        Duration::from_secs(3)
    ));
    // and no stream is held open for a rollout the store does not have
    assert_eq!(web.get("/rollouts/nope/events", None).status, 404);

    // actions without a token, or from another origin, change nothing
    let pause = format!("/rollouts/{id}/pause");
    assert_eq!(web.post(&pause, None, Some(&web.base), &[]).status, 403);
    let cookie = web.sign_in(TOKEN);
    assert_eq!(
        web.post(&pause, Some(&cookie), Some("http://evil.example"), &[])
            .status,
        403
    );
    assert_eq!(web.post(&pause, Some(&cookie), None, &[]).status, 403);
    assert_eq!(
        web.post(
            "/login",
            None,
            Some(&web.base),
            &[("token", "wrong-token-0123456789")]
        )
        .status,
        401
    );
    let asked = text(
        &mut c,
        &format!("SELECT COALESCE(requested, 'none') FROM fleetmig_rollouts WHERE id = '{id}'"),
    )
    .await;
    assert_eq!(asked, "none");

    // signed in: the controls, and a pause both processes obey
    let page = web.get(&format!("/rollouts/{id}"), Some(&cookie));
    assert!(
        page.body.contains("id=\"pause\"") && page.body.contains(">alice<"),
        "{}",
        page.body
    );
    let done = web.post(&pause, Some(&cookie), Some(&web.base), &[]);
    assert_eq!(done.status, 303, "{}", done.body);
    wait_status(&mut c, &id, "paused").await;
    let (a, a_late) = wait_until(a, Instant::now() + Duration::from_secs(30));
    assert!(!a_late, "the rollout process did not stop: {}", said(&a));
    let at_pause = count(&mut c, "SELECT count(*) FROM public.ran").await;
    assert!(at_pause < 120, "everything ran before the pause took");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM public.ran").await,
        at_pause,
        "a migration ran while paused"
    );

    // resume: the waiting worker picks it up and finishes it
    let done = web.post(
        &format!("/rollouts/{id}/resume"),
        Some(&cookie),
        Some(&web.base),
        &[],
    );
    assert_eq!(done.status, 303, "{}", done.body);
    let (b, b_late) = wait_until(b, Instant::now() + Duration::from_secs(90));
    assert!(!b_late, "the worker did not finish: {}", said(&b));
    wait_status(&mut c, &id, "completed").await;
    assert_eq!(count(&mut c, "SELECT count(*) FROM public.ran").await, 120);
    ran_once(&mut c).await;
    let actions = text(
        &mut c,
        &format!("SELECT string_agg(operator || ':' || action, ',' ORDER BY at) FROM fleetmig_actions WHERE rollout_id = '{id}'"),
    )
    .await;
    assert_eq!(actions, "alice:pause,alice:resume");
    let page = web.get(&format!("/rollouts/{id}"), None);
    assert!(
        page.body.contains("alice") && page.body.contains("asked to pause"),
        "{}",
        page.body
    );

    // /metrics: the --metrics-file names for the newest rollout
    let metrics = web.get("/metrics", None);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("fleetmig_tenants{status=\"succeeded\"} 60"),
        "{}",
        metrics.body
    );
    drop(web);
    c.close_conn().await;
    s.db.drop_now().await;
}

/// `command` (sync, resume) on the registry fleet in `dir` with the set `m`.
fn on_registry(dir: &std::path::Path, command: &str, m: &std::path::Path) -> std::process::Output {
    let m = m.to_str().unwrap();
    run_in(
        dir,
        &[
            command,
            "--fleet",
            "registry:fleet.csv",
            "--migrations",
            m,
            "--progress-every",
            "0",
        ],
    )
}

/// A SQLite fleet of 30 tenants, one of which fails its first migration
/// with a message that holds markup.
fn hostile_fleet(dir: &std::path::Path) -> tempfile::TempDir {
    registry_fleet(dir, 30, 0);
    let m = migration_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);\n"),
        (
            "0002_b.sql",
            "INSERT INTO a SELECT count(*) FROM \"<script>alert(1)</script>\" WHERE 0;\n",
        ),
    ]);
    // every tenant but one has the table the second migration reads
    for i in 0..30 {
        let id = format!("t{i:04}");
        if id == "t0007" {
            continue;
        }
        let p = registry_tenant(dir, &id);
        let c = rusqlite_free_exec(&p, "CREATE TABLE \"<script>alert(1)</script>\" (y int)");
        assert!(c, "{}", p.display());
    }
    m
}

/// Runs `sql` on the SQLite file at `p` with the sqlite3 shell.
fn rusqlite_free_exec(p: &std::path::Path, sql: &str) -> bool {
    std::process::Command::new("sqlite3")
        .arg(p)
        .arg(sql)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_error_is_text_the_list_pages_on_the_server_and_a_retry_waits_for_a_process() {
    let dir = tempfile::tempdir().unwrap();
    let m = hostile_fleet(dir.path());
    let o = on_registry(dir.path(), "sync", m.path());
    expect_exit(&o, 1);
    let o = run_in(dir.path(), &["history"]);
    let id = stdout(&o)
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    // read-only: no controls, every action refused
    let web = Serve::start(dir.path(), &[]);
    let page = web.get(&format!("/rollouts/{id}"), None);
    assert_eq!(page.status, 200);
    let framed = web.get_with(&format!("/rollouts/{id}"), "Accept", "text/html");
    assert_eq!(
        framed.frame.as_deref(),
        Some("DENY"),
        "a page may be framed"
    );
    assert!(
        !page.body.contains("<script>alert(1)"),
        "markup from a tenant rendered: {}",
        page.body
    );
    assert!(
        page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("t0007"),
        "the failed tenant is not in its cluster"
    );
    let one = web.get(&format!("/rollouts/{id}/tenants/t0007"), None);
    assert!(
        one.body.contains("id=\"tenant-error\"") && one.body.contains("&lt;script&gt;"),
        "{}",
        one.body
    );
    assert!(!one.body.contains("<script>alert(1)"));
    assert_eq!(
        web.post(&format!("/rollouts/{id}/retry"), None, Some(&web.base), &[])
            .status,
        403
    );

    // paged and filtered on the server
    let first = web.get(&format!("/rollouts/{id}/tenants?prefix=t000"), None);
    assert!(first.body.contains("10 tenant(s) match"), "{}", first.body);
    let failed = web.get(&format!("/rollouts/{id}/tenants?status=failed"), None);
    assert!(failed.body.contains("1 tenant(s) match") && failed.body.contains("t0007"));
    let bad = web.get(&format!("/rollouts/{id}/tenants?status=nosuch"), None);
    assert_eq!(bad.status, 400);
    let missing = web.get("/rollouts/nosuch", None);
    assert_eq!(missing.status, 404);
    // another name for 127.0.0.1 (DNS rebinding) reads nothing
    let rebound = web.get_with(&format!("/rollouts/{id}"), "Host", "evil.example");
    assert_eq!(rebound.status, 403);
    assert!(!rebound.body.contains("t0007"));
    drop(web);

    // with a token: a retry of the failed tenant is left for a process
    let tokens = tokens_file(dir.path(), "bob", TOKEN);
    let web = Serve::start(dir.path(), &["--tokens-file", tokens.to_str().unwrap()]);
    let cookie = web.sign_in(TOKEN);
    let r = web.post(
        &format!("/rollouts/{id}/tenants/t0007/retry"),
        Some(&cookie),
        Some(&web.base),
        &[],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let again = web.post(
        &format!("/rollouts/{id}/tenants/t0007/retry"),
        Some(&cookie),
        Some(&web.base),
        &[],
    );
    assert_eq!(
        again.status, 409,
        "a second retry of a running rollout: {}",
        again.body
    );
    drop(web);
    assert!(rusqlite_free_exec(
        &registry_tenant(dir.path(), "t0007"),
        "CREATE TABLE \"<script>alert(1)</script>\" (y int)"
    ));
    let o = on_registry(dir.path(), "resume", m.path());
    expect_exit(&o, 0);
    assert_eq!(
        sqlite_history(&registry_tenant(dir.path(), "t0007")).await,
        vec![(1, true), (2, true)]
    );
    let o = run_in(dir.path(), &["status", "--rollout", &id]);
    assert!(stdout(&o).contains("completed"), "{}", stdout(&o));
}

#[test]
fn a_bind_beyond_loopback_without_tokens_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_in(dir.path(), &["serve", "--listen", "0.0.0.0:0"]);
    expect_exit(&o, 2);
    let e = stderr(&o);
    assert!(e.contains("--listen") && e.contains("--tokens-file"), "{e}");
}

/// curl, trusting only `ca`; the status line, headers and body.
fn curl(ca: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn https_with_a_certificate_and_a_secure_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // a store to look at
    registry_fleet(dir.path(), 3, 0);
    let m = demo_migrations();
    let o = on_registry(dir.path(), "sync", &m);
    expect_exit(&o, 0);
    let tokens = tokens_file(dir.path(), "carol", TOKEN);
    let web = Serve::start(
        dir.path(),
        &[
            "--tokens-file",
            tokens.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(web.base.starts_with("https://127.0.0.1:"), "{}", web.base);
    let page = curl(&cert, &[&format!("{}/login", web.base)]);
    let said = String::from_utf8_lossy(&page.stdout).to_string();
    assert!(
        said.starts_with("HTTP/1.1 200"),
        "{said}{}",
        String::from_utf8_lossy(&page.stderr)
    );
    let login = curl(
        &cert,
        &[
            "-H",
            &format!("Origin: {}", web.base),
            "--data-urlencode",
            &format!("token={TOKEN}"),
            &format!("{}/login", web.base),
        ],
    );
    let said = String::from_utf8_lossy(&login.stdout).to_string();
    let cookie = said
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("{said}"));
    for attr in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    // plain HTTP on the HTTPS port gets no page
    let plain = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            &web.base.replace("https://", "http://"),
        ])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("fleetmig"));
    drop(web);
    // a file that is not a certificate is named
    let o = run_in(
        dir.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            key.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    expect_exit(&o, 2);
    assert!(
        stderr(&o).contains("--tls-cert") && !stderr(&o).contains("PRIVATE KEY-----\nMII"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bound_beyond_loopback_every_page_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 2, 0);
    let o = on_registry(dir.path(), "sync", &demo_migrations());
    expect_exit(&o, 0);
    let tokens = tokens_file(dir.path(), "dave", TOKEN);
    let web = Serve::start_on(
        dir.path(),
        "0.0.0.0:0",
        &["--tokens-file", tokens.to_str().unwrap()],
    );
    let page = web.get("/", None);
    assert_eq!(page.status, 303, "a page without a token: {}", page.body);
    assert_eq!(web.get("/metrics", None).status, 401);
    assert_eq!(web.get("/events", None).status, 401);
    assert_eq!(web.get("/login", None).status, 200);
    let cookie = web.sign_in(TOKEN);
    let page = web.get("/", Some(&cookie));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("dave"));
    let bearer = web.get_with("/metrics", "Authorization", &format!("Bearer {TOKEN}"));
    assert_eq!(bearer.status, 200);
    assert!(
        bearer
            .body
            .contains("fleetmig_tenants{status=\"succeeded\"} 2"),
        "{}",
        bearer.body
    );
    let wrong = web.get_with(
        "/metrics",
        "Authorization",
        "Bearer not-the-token-0123456789",
    );
    assert_eq!(wrong.status, 401);
}

/// A rollout whose up-to-date tenants were folded reads as before: its
/// tenant list paged and filtered, a folded tenant's page, /metrics; a web
/// retry of a folded tenant gives it its row back, pending for a process.
#[tokio::test(flavor = "multi_thread")]
async fn a_folded_rollout_is_listed_whole_and_a_folded_tenant_can_be_retried() {
    let dir = tempfile::tempdir().unwrap();
    registry_fleet(dir.path(), 30, 0);
    let m = demo_migrations();
    expect_exit(&on_registry(dir.path(), "sync", &m), 0);
    let o = on_registry(dir.path(), "sync", &m);
    expect_exit(&o, 0);
    let id = report_dir(dir.path(), &o)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let store = dir.path().join(".fleetmig/state.db");
    let count = async |sql: &str| -> i64 {
        let mut c = sqlite(&store).await;
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(&id)
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    assert_eq!(
        count("SELECT count(*) FROM fleetmig_tenant_runs WHERE rollout_id = $1").await,
        0
    );
    assert_eq!(
        count("SELECT tenants FROM fleetmig_folds WHERE rollout_id = $1").await,
        30
    );

    let tokens = tokens_file(dir.path(), "bob", TOKEN);
    let web = Serve::start(dir.path(), &["--tokens-file", tokens.to_str().unwrap()]);
    let all = web.get(&format!("/rollouts/{id}/tenants"), None);
    assert!(all.body.contains("30 tenant(s) match"), "{}", all.body);
    let some = web.get(
        &format!("/rollouts/{id}/tenants?prefix=t001&status=succeeded"),
        None,
    );
    assert!(
        some.body.contains("10 tenant(s) match") && some.body.contains("t0019"),
        "{}",
        some.body
    );
    let one = web.get(&format!("/rollouts/{id}/tenants/t0012"), None);
    assert_eq!(one.status, 200);
    assert!(one.body.contains("succeeded"), "{}", one.body);
    let metrics = web.get("/metrics", None);
    assert!(
        metrics.body.contains("status=\"succeeded\"} 30"),
        "{}",
        metrics.body
    );

    let cookie = web.sign_in(TOKEN);
    let r = web.post(
        &format!("/rollouts/{id}/tenants/t0012/retry"),
        Some(&cookie),
        Some(&web.base),
        &[],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    drop(web);
    assert_eq!(
        count("SELECT tenants FROM fleetmig_folds WHERE rollout_id = $1").await,
        29
    );
    assert_eq!(
        count("SELECT count(*) FROM fleetmig_tenant_runs WHERE rollout_id = $1 AND tenant = 't0012' AND status = 'pending'").await,
        1
    );
    // the next process runs it, and the rollout is whole again
    expect_exit(&on_registry(dir.path(), "resume", &m), 0);
    let o = run_in(
        dir.path(),
        &["report", &id, "--fleet", "registry:fleet.csv"],
    );
    expect_exit(&o, 0);
    let rows = csv_rows(&report_dir(dir.path(), &o));
    assert_eq!(rows.len(), 30);
    assert!(rows.values().all(|r| r["status"] == "succeeded"));
}
