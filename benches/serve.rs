//! Benchmark: `fleetmig serve`.
//!
//! 1. Pages with a rollout of N tenants in a PostgreSQL state store (a real
//!    rollout of two schemas, its tenant rows then filled to N with
//!    generated ones, 1 in 500 failed): each page's time, median of 10 over
//!    HTTP (the rollout page once with its report gathered afresh, once
//!    from the 3-second cache, once as the live fragment), and the
//!    server's peak RSS.
//! 2. Its cost to a running rollout: the same rollout (S schema tenants,
//!    two migrations, `--concurrency 4`, the state in the same server)
//!    timed with `serve` running and nobody watching, and with headless
//!    Chromium on its live page; rounds interleave; medians and the ratio.
//!
//! cargo bench --bench serve -- [--tenants 100000] [--schemas 400] [--rounds 3]
//!     [--only pages|cost] [--browser-nice 19]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sqlx::Connection;

/// `fleetmig serve` over `state`, read-only, on a port of its own.
struct Served {
    child: Child,
    base: String,
}

impl Served {
    fn start(dir: &Path, state: &str) -> Served {
        use std::io::BufRead;
        let mut child = Command::new(fleetmig_bin())
            .current_dir(dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--state", state])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .to_string();
        Served { child, base }
    }

    /// The time of one GET of `path` (the whole body read).
    fn get(&self, path: &str, fragment: bool) -> Duration {
        let t0 = Instant::now();
        let mut req = ureq::get(&format!("{}{path}", self.base));
        if fragment {
            req = req.set("X-Fragment", "1");
        }
        let r = req.call().unwrap_or_else(|e| panic!("{path}: {e}"));
        let body = r.into_string().unwrap();
        assert!(!body.is_empty());
        t0.elapsed()
    }

    /// The CPU seconds it has used (user + system).
    fn cpu_s(&self) -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // the fields after the command name, which is in parentheses
        let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// Its peak RSS in MB.
    fn peak_mb(&self) -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A migration set of two small steps.
fn set(dir: &Path) -> std::path::PathBuf {
    let m = dir.join("set");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(
        m.join("0001_items.sql"),
        "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL);\n\
         INSERT INTO items SELECT g, g % 7 FROM generate_series(1, 100) g;\n",
    )
    .unwrap();
    std::fs::write(
        m.join("0002_note.sql"),
        "ALTER TABLE items ADD COLUMN note text;\n",
    )
    .unwrap();
    m
}

async fn exec(url: &str, sql: &str) {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
}

async fn one(url: &str, sql: &str) -> String {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let v: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    v
}

/// A database of `n` empty tenant schemas: (its name, its URL).
async fn schemas(n: usize) -> (String, String) {
    let (name, url) = pg_create("fmserve").await;
    let ddl: String = (0..n)
        .map(|i| format!("CREATE SCHEMA tenant_{i:06};"))
        .chain(["CREATE SCHEMA seed_0;".to_string()])
        .collect();
    exec(&url, &ddl).await;
    (name, url)
}

fn rollout(dir: &Path, url: &str, m: &Path, extra: &[&str]) -> Duration {
    let t0 = Instant::now();
    let out = Command::new(fleetmig_bin())
        .current_dir(dir)
        .args([
            "rollout",
            "--fleet",
            &format!("postgres-schemas:{url}"),
            "--state",
            url,
        ])
        .arg("--migrations")
        .arg(m)
        .args(["--progress-every", "0"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    t0.elapsed()
}

async fn pages(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let m = set(dir.path());
    let (name, url) = schemas(2).await;
    rollout(dir.path(), &url, &m, &["--waves", "first=50%,rest"]);
    let id = one(&url, "SELECT id FROM fleetmig_rollouts").await;
    // N tenants: the two real ones, then generated rows like them
    exec(
        &url,
        &format!(
            "INSERT INTO fleetmig_tenant_runs (rollout_id, tenant, wave, status, attempts, \
             from_version, to_version, applied, started_at, finished_at, duration_ms, \
             error_class, error_kind, error_message) \
             SELECT '{id}', 'tenant_g' || lpad(g::text, 6, '0'), CASE WHEN g % 10 = 0 THEN 0 ELSE 1 END, \
             CASE WHEN g % 500 = 0 THEN 'failed' ELSE 'succeeded' END, 1 + (g % 500 = 0)::int, 0, \
             CASE WHEN g % 500 = 0 THEN 0 ELSE 2 END, CASE WHEN g % 500 = 0 THEN '' ELSE '1,2' END, \
             1796000000000 + g * 3, 1796000000000 + g * 3 + 30 + g % 41, 30 + g % 41, \
             CASE WHEN g % 500 = 0 THEN 'transient' END, CASE WHEN g % 500 = 0 THEN 'lock_timeout' END, \
             CASE WHEN g % 500 = 0 THEN 'canceling statement due to lock timeout' END \
             FROM generate_series(1, {}) g; ANALYZE fleetmig_tenant_runs",
            n - 2
        ),
    )
    .await;
    let web = Served::start(dir.path(), &url);
    let r = format!("/rollouts/{id}");
    let middle = format!("tenant_g{:06}", n / 2);
    let cases: Vec<(&str, String, bool, bool)> = vec![
        ("rollouts (/)", "/".into(), false, false),
        ("rollout page, report gathered", r.clone(), false, true),
        ("rollout page, report cached", r.clone(), false, false),
        ("rollout live fragment", r.clone(), true, false),
        ("tenants, first page", format!("{r}/tenants"), false, false),
        (
            "tenants, a later page",
            format!("{r}/tenants?after={middle}"),
            false,
            false,
        ),
        (
            "tenants, status=failed",
            format!("{r}/tenants?status=failed"),
            false,
            false,
        ),
        (
            "tenants, prefix tenant_g09",
            format!("{r}/tenants?prefix=tenant_g09"),
            false,
            false,
        ),
        (
            "tenants, kind + wave",
            format!("{r}/tenants?kind=lock_timeout&wave=1"),
            false,
            false,
        ),
        ("one tenant", format!("{r}/tenants/{middle}"), false, false),
        ("/metrics", "/metrics".into(), false, true),
    ];
    // the first look gathers the report: how long the cache keeps it
    let gathered = web.get(&r, false);
    println!("serve: pages with a rollout of {n} tenants in a PostgreSQL store (median of 10, ms)");
    for (label, path, fragment, cold) in cases {
        let times: Vec<f64> = (0..10)
            .map(|_| {
                if cold {
                    // past the report cache (ten times its gathering)
                    std::thread::sleep(Duration::from_millis(3100).max(gathered * 11));
                } else {
                    web.get(&path, fragment);
                }
                ms(web.get(&path, fragment))
            })
            .collect();
        println!(
            "  {label:32} {:8.1}   ({})",
            median(times.clone()),
            range(&times)
        );
    }
    println!("  serve peak RSS: {:.1} MB", web.peak_mb());
    drop(web);
    pg_drop(&name).await;
}

/// The CPU seconds used so far by process `root` and every process below
/// it (Chromium is a tree of processes).
fn tree_cpu_s(root: u32) -> f64 {
    let mut procs: Vec<(u32, u32, f64)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split_whitespace().collect();
        let ticks = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
        procs.push((pid, f[1].parse().unwrap_or(0), ticks / 100.0));
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(procs.iter().filter(|c| c.1 == p).map(|c| c.0));
        i += 1;
    }
    procs
        .iter()
        .filter(|p| tree.contains(&p.0))
        .map(|p| p.2)
        .sum()
}

/// Headless Chromium on `url` until killed (its page's script keeps the
/// live stream open and fetches the page's part on every change), at
/// niceness `nice`: an operator's browser runs on their own machine; on
/// this one it shares the two cores with the rollout, and at 19 it takes
/// what they leave (`--browser-nice 0` puts it on equal terms).
fn browser(url: &str, profile: &Path, nice: &str) -> Child {
    Command::new("nice")
        .args(["-n", nice, "chromium"])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn cost(schemas_n: usize, rounds: usize, nice: &str) {
    let mut alone = Vec::new();
    let mut watched = Vec::new();
    let mut serve_cpu = (Vec::new(), Vec::new());
    let mut browser_cpu = Vec::new();
    for round in 0..rounds * 2 {
        let watch = round % 2 == 1;
        let dir = tempfile::tempdir().unwrap();
        let m = set(dir.path());
        let (name, url) = schemas(schemas_n).await;
        // the store first (a rollout of one seed schema): serve reads one
        rollout(dir.path(), &url, &m, &["--tenant-pattern", "seed\\_%"]);
        // serve and the browser are there before the rollout starts (the
        // browser on the rollouts page, which shows it as it starts and
        // runs, live)
        let web = Served::start(dir.path(), &url);
        let profile = tempfile::tempdir().unwrap();
        let mut chromium = watch.then(|| browser(&format!("{}/", web.base), profile.path(), nice));
        std::thread::sleep(Duration::from_secs(3));
        let browser_before = chromium.as_ref().map_or(0.0, |c| tree_cpu_s(c.id()));
        let start = Instant::now();
        let mut run = Command::new(fleetmig_bin())
            .current_dir(dir.path())
            .args([
                "rollout",
                "--fleet",
                &format!("postgres-schemas:{url}"),
                "--state",
                &url,
            ])
            .arg("--migrations")
            .arg(&m)
            .args([
                "--progress-every",
                "0",
                "--concurrency",
                "4",
                "--waves",
                "first=5%,rest",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let status = run.wait().unwrap();
        let took = start.elapsed().as_secs_f64();
        assert!(status.success(), "the rollout failed");
        let cpu = web.cpu_s();
        if watch {
            serve_cpu.1.push(cpu)
        } else {
            serve_cpu.0.push(cpu)
        }
        if let Some(c) = chromium.as_mut() {
            browser_cpu.push(tree_cpu_s(c.id()) - browser_before);
            let _ = c.kill();
            let _ = c.wait();
        }
        drop(web);
        pg_drop(&name).await;
        if watch {
            watched.push(took)
        } else {
            alone.push(took)
        }
    }
    let (a, w) = (median(alone.clone()), median(watched.clone()));
    println!(
        "serve: a rollout of {schemas_n} schemas with serve running, {rounds} rounds interleaved (s)"
    );
    println!("  nobody watching            {a:8.2}   ({})", range(&alone));
    println!(
        "  Chromium on its live page  {w:8.2}   ({})   (nice {nice})",
        range(&watched)
    );
    println!("  watched / alone: {:.3}", w / a);
    println!(
        "  serve's CPU over a run: {:.2} s nobody watching, {:.2} s watched; \
         Chromium's during the rollout (on the same 2 cores): {:.2} s (medians)",
        median(serve_cpu.0),
        median(serve_cpu.1),
        median(browser_cpu)
    );
}

fn main() {
    let n: usize = arg("--tenants", "100000").parse().unwrap();
    let s: usize = arg("--schemas", "400").parse().unwrap();
    let rounds: usize = arg("--rounds", "3").parse().unwrap();
    let only = arg("--only", "both");
    let rt = tokio::runtime::Runtime::new().unwrap();
    if only != "cost" {
        rt.block_on(pages(n));
    }
    if only != "pages" {
        rt.block_on(cost(s, rounds, &arg("--browser-nice", "19")));
    }
}
