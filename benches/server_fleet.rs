//! Benchmark: fleetmig against the raw floor on real servers, in the same run.
//!
//! PostgreSQL: N tenant schemas × the demo set. The bare floor is `psql`
//! sending the same SQL, one transaction per tenant (`SET search_path`;
//! BEGIN; the demo scripts; COMMIT), with the same number of parallel
//! sessions, each session working through its share of the tenants, no
//! history. The floors fleetmig is held to do its bookkeeping too: sqlx's
//! history table and one history row per migration, in the tenant's one
//! transaction (against `--tx-mode tenant`) or each migration committed
//! with its row (against `--tx-mode migration`). fleetmig is the release
//! binary. MariaDB: M tenant databases × the demo set; the bare floor is
//! the `mariadb` client (`USE db`; the scripts), the one fleetmig is held
//! to also writes each migration's history row before and finishes it after
//! (as sqlx does where DDL commits on its own), with the same sessions.
//!
//! Each round runs every arm once, on fresh databases, in an order rotated
//! from round to round; a row's ratio is the median of its per-round ratios
//! (the arm against the floor of the same round), shown with their range.
//! The machine's speed drifts by a factor of two over minutes; a ratio taken
//! within a round drifts far less than best-of times taken minutes apart.
//!
//! Needs the servers of scripts/test-services.sh. Every URL uses
//! sslmode=disable (PostgreSQL) so that neither side pays a TLS handshake.
//!
//! cargo bench --bench server_fleet -- [--pg-tenants 1000] [--mysql-tenants 200] [--concurrency 2,4] [--rounds 5]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fleetmig::tenant::Dialect;
use sqlx::Connection;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn pg_base() -> String {
    std::env::var("FLEETMIG_TEST_PG_URL").unwrap_or_else(|_| {
        "postgres://fleetmig:fleetmig-test-secret@127.0.0.1:5432/fleetmig_test?sslmode=disable"
            .into()
    })
}

fn my_base() -> String {
    std::env::var("FLEETMIG_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://fleetmig:fleetmig-test-secret@127.0.0.1:3306/mysql".into())
}

fn with_db(base: &str, db: &str) -> String {
    let mut u = url::Url::parse(base).unwrap();
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// What `sync` applies (every migration but the held contract step), for
/// `dialect`: (version, SQL, runs outside a transaction). A batched backfill
/// is written out as fleetmig runs it on these small tenants: one batch with
/// `:batch_size` bound, which changes fewer rows than the size, and straight
/// after it (no pause) the run that confirms nothing is left.
fn scripts(dialect: Dialect) -> Vec<(i64, String, bool)> {
    let set = fleetmig::migration::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"))
        .unwrap();
    set.migrations
        .iter()
        .filter(|m| !fleetmig::rollout::is_contract(m))
        .map(|m| {
            let s = m.up.get(dialect).unwrap();
            let sql = match s.directives.batch {
                Some(b) => {
                    let one = s.sql.replace(":batch_size", &b.size.to_string());
                    let one = one.trim_end().trim_end_matches(';').to_string();
                    format!("{one};\n{one}")
                }
                None => s.sql.clone(),
            };
            (m.version, sql, s.no_tx)
        })
        .collect()
}

fn fleetmig(
    fleet: &str,
    pattern: &str,
    concurrency: usize,
    extra: &[&str],
    reports: &Path,
) -> Duration {
    let start = Instant::now();
    let out = Command::new(fleetmig_bin())
        .args([
            "sync",
            "--progress-every",
            "0",
            "--fleet",
            fleet,
            "--tenant-pattern",
            pattern,
        ])
        .arg("--migrations")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"))
        .arg("--reports")
        .arg(reports)
        .args(["--concurrency", &concurrency.to_string()])
        .args(extra)
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// Runs one client process per share of `scripts_per_session`, all at once.
fn run_clients(make: impl Fn(&Path) -> Command, sessions: Vec<String>, tmp: &Path) -> Duration {
    let files: Vec<PathBuf> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let p = tmp.join(format!("session-{i}-{}.sql", rand::random::<u32>()));
            std::fs::File::create(&p)
                .unwrap()
                .write_all(s.as_bytes())
                .unwrap();
            p
        })
        .collect();
    let start = Instant::now();
    let children: Vec<_> = files.iter().map(|f| make(f).spawn().unwrap()).collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    start.elapsed()
}

async fn pg_db_with_schemas(n: usize) -> String {
    let name = format!("fm_bench_{:08x}", rand::random::<u32>());
    let mut admin = sqlx::PgConnection::connect(&pg_base()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let mut c = sqlx::PgConnection::connect(&with_db(&pg_base(), &name))
        .await
        .unwrap();
    let sql: String = (0..n)
        .map(|i| format!("CREATE SCHEMA bench_{i:05};"))
        .collect();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    name
}

async fn pg_drop(name: &str) {
    let mut admin = sqlx::PgConnection::connect(&pg_base()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
}

/// Runs `stmt` (`CREATE DATABASE` or `DROP DATABASE IF EXISTS`) for each of
/// the `n` databases `<tag>_NNNN`, in one batch.
async fn my_each_db(stmt: &str, tag: &str, n: usize) {
    let mut c = sqlx::MySqlConnection::connect(&my_base()).await.unwrap();
    let sql: String = (0..n).map(|i| format!("{stmt} {tag}_{i:04};")).collect();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
}

/// CPU time, read from /proc: the database server's (PostgreSQL: backends
/// that have exited, reaped by the postmaster; MariaDB: the mysqld process)
/// plus this bench's reaped children (psql, mariadb, fleetmig). On a VM whose
/// speed drifts, CPU spent is steadier than wall time: it says how much work
/// each side made the machine do. Long-lived PostgreSQL processes
/// (checkpointer, WAL writer, background writer) are not counted; exited
/// autovacuum workers are, on both sides alike.
#[derive(Clone, Copy)]
enum Server {
    Postgres(u32),
    Mysql(u32),
}

fn stat_fields(pid: &str) -> Option<Vec<f64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the fields after "pid (comm)"; utime is the 12th of them
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0.0))
            .collect(),
    )
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds so far (see `Server`), if /proc can be read.
fn cpu_now(server: Option<Server>) -> Option<f64> {
    let me = stat_fields("self")?;
    let children = me[13] + me[14];
    let server = match server? {
        Server::Postgres(pm) => {
            let f = stat_fields(&pm.to_string())?;
            f[13] + f[14]
        }
        Server::Mysql(pid) => {
            let f = stat_fields(&pid.to_string())?;
            f[11] + f[12]
        }
    };
    Some((children + server) / clock_ticks())
}

async fn pg_server() -> Option<Server> {
    let mut c = sqlx::PgConnection::connect(&pg_base()).await.ok()?;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut c)
        .await
        .ok()?;
    // the backend's parent is the postmaster
    let ppid = stat_fields(&pid.to_string())?[1] as u32;
    c.close().await.ok()?;
    Some(Server::Postgres(ppid))
}

async fn mysql_server() -> Option<Server> {
    let mut c = sqlx::MySqlConnection::connect(&my_base()).await.ok()?;
    let file: String = sqlx::query_scalar("SELECT @@pid_file")
        .fetch_one(&mut c)
        .await
        .ok()?;
    c.close().await.ok()?;
    let pid = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    Some(Server::Mysql(pid))
}

/// Waits until no session is connected to `db` any more (their backends have
/// exited, so their CPU is counted), through `watch`, a connection kept for
/// the whole bench.
async fn pg_quiet(watch: &mut sqlx::PgConnection, db: &str) {
    for attempt in 0..200 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(db)
            .fetch_one(&mut *watch)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if attempt == 199 {
            eprintln!("warning: sessions on {db} still open after 4 s; CPU counted without them");
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One run of one arm: wall time and CPU seconds.
#[derive(Clone, Copy, Default)]
struct Sample {
    wall: Duration,
    cpu: Option<f64>,
}

/// The runs of one arm, against the floor of the same rounds that does the
/// same work (`vs`), and the bare floor (`bare`).
struct Arm {
    name: &'static str,
    vs: &'static str,
    runs: Vec<Sample>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Per-round ratios of `floor` to `arm` wall times (higher: the arm is
/// closer to, or faster than, the floor).
fn ratios(floor: &[Sample], arm: &[Sample]) -> Vec<f64> {
    floor
        .iter()
        .zip(arm)
        .map(|(f, m)| f.wall.as_secs_f64() / m.wall.as_secs_f64())
        .collect()
}

/// One table row: median throughputs; the wall-time ratio to the floor that
/// does the same bookkeeping as the median of the per-round ratios (each
/// arm against the floor of its own round, so that a slow minute of the
/// machine slows both sides of the ratio), with its range; the same to the
/// bare floor; and the CPU ratio (floor CPU over arm CPU, median of rounds).
fn row(n: usize, c: usize, floor: &[Sample], bare: &[Sample], arm: &Arm) {
    let tps = |s: &Sample| n as f64 / s.wall.as_secs_f64();
    let r = ratios(floor, &arm.runs);
    let (lo, hi) = r
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
    let cpu: Option<Vec<f64>> = floor
        .iter()
        .zip(&arm.runs)
        .map(|(f, m)| Some(f.cpu? / m.cpu?))
        .collect();
    let cpu = cpu.map_or("n/a".to_string(), |c| format!("{:.2}", median(c)));
    println!(
        "| {} | {c} | {n} | {} | {:.0} | {:.0} | **{:.2}** | {lo:.2}–{hi:.2} | {:.2} | {cpu} |",
        arm.name,
        arm.vs,
        median(floor.iter().map(tps).collect()),
        median(arm.runs.iter().map(tps).collect()),
        median(r),
        median(ratios(bare, &arm.runs)),
    );
}

/// Runs `arms` (each a closure measuring one run) `rounds` times in an order
/// rotated from round to round: their samples, by arm.
fn interleaved(rounds: usize, arms: &mut [&mut dyn FnMut() -> Sample]) -> Vec<Vec<Sample>> {
    let k = arms.len();
    let mut out = vec![Vec::new(); k];
    for r in 0..rounds {
        for i in (0..k).map(|i| (i + r) % k) {
            out[i].push(arms[i]());
        }
    }
    out
}

/// sqlx's PostgreSQL history table, and one row of it.
const PG_HISTORY: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (version BIGINT PRIMARY KEY, \
     description TEXT NOT NULL, installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), \
     success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL);\n";

fn pg_history_row(v: i64) -> String {
    format!("INSERT INTO _sqlx_migrations VALUES ({v}, 'm', now(), TRUE, '\\x00', 1);\n")
}

/// What a psql floor session sends for one tenant schema: bare (one
/// transaction, no history), with the history in the same transaction
/// (`--tx-mode tenant`), or each migration committed with its history row
/// (`--tx-mode migration`). Statements that run outside a transaction
/// (the concurrent index) come after, with their history row.
fn pg_tenant_script(schema: &str, scripts: &[(i64, String, bool)], shape: usize) -> String {
    let mut s = format!("SET search_path TO {schema};\n");
    let inside = scripts.iter().filter(|m| !m.2);
    let outside = scripts.iter().filter(|m| m.2);
    let book = shape > 0;
    match shape {
        0 | 1 => {
            s.push_str("BEGIN;\n");
            if book {
                s.push_str(PG_HISTORY);
            }
            for (v, sql, _) in inside {
                s.push_str(&format!("{sql}\n;\n"));
                if book {
                    s.push_str(&pg_history_row(*v));
                }
            }
            s.push_str("COMMIT;\n");
        }
        _ => {
            s.push_str(PG_HISTORY);
            for (v, sql, _) in inside {
                s.push_str(&format!(
                    "BEGIN;\n{sql}\n;\n{}COMMIT;\n",
                    pg_history_row(*v)
                ));
            }
        }
    }
    for (v, sql, _) in outside {
        s.push_str(&format!("{sql}\n;\n"));
        if book {
            s.push_str(&pg_history_row(*v));
        }
    }
    s
}

/// sqlx's MySQL history table; a migration's row is written unfinished
/// before it runs and finished after (MySQL's DDL commits on its own).
const MY_HISTORY: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (version BIGINT PRIMARY KEY, \
     description TEXT NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
     success BOOLEAN NOT NULL, checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);\n";

fn my_tenant_script(db: &str, scripts: &[(i64, String, bool)], book: bool) -> String {
    let mut s = format!("USE {db};\n");
    if book {
        s.push_str(MY_HISTORY);
    }
    for (v, sql, _) in scripts {
        let sql = sql.trim_end().trim_end_matches(';');
        if book {
            s.push_str(&format!(
                "INSERT INTO _sqlx_migrations VALUES ({v}, 'm', NOW(), FALSE, x'00', -1);\n\
                 {sql};\nUPDATE _sqlx_migrations SET success = TRUE, execution_time = 1 \
                 WHERE version = {v};\n"
            ));
        } else {
            s.push_str(&format!("{sql};\n"));
        }
    }
    s
}

fn main() {
    let pg_n: usize = arg("--pg-tenants", "1000").parse().unwrap();
    let my_n: usize = arg("--mysql-tenants", "200").parse().unwrap();
    let sessions: Vec<usize> = arg("--concurrency", "2,4")
        .split(',')
        .map(|c| c.parse().unwrap())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let reports = tmp.path().join("reports");
    let rounds: usize = arg("--rounds", "5").parse().unwrap();
    println!(
        "Server fleets × demo set, the same parallel sessions on both sides, sslmode=disable, \
         {rounds} rounds (arms interleaved, order rotated each round), {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "| run | sessions | tenants | floor | floor tenants/s | fleetmig tenants/s | \
         ratio (median of rounds) | range | × bare floor | CPU ratio |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    let run = Run {
        rt: &rt,
        tmp: tmp.path(),
        reports: &reports,
        rounds,
    };
    for &c in &sessions {
        if pg_n > 0 {
            run.postgres(pg_n, c);
        }
        if my_n > 0 {
            run.mariadb(my_n, c);
        }
    }
}

/// What every arm of a bench run shares.
struct Run<'a> {
    rt: &'a tokio::runtime::Runtime,
    tmp: &'a Path,
    reports: &'a Path,
    rounds: usize,
}

impl Run<'_> {
    /// PostgreSQL schemas at `c` sessions: the bare psql floor, psql with
    /// the bookkeeping of each transaction mode, and fleetmig in each mode.
    fn postgres(&self, n: usize, c: usize) {
        let (rt, tmp) = (self.rt, self.tmp);
        let pg = scripts(Dialect::Postgres);
        let server = rt.block_on(pg_server());
        let watch = std::cell::RefCell::new(
            rt.block_on(sqlx::PgConnection::connect(&pg_base()))
                .unwrap(),
        );
        // One run on a fresh database of `n` schemas: CPU is counted from
        // after the set-up until every session of the run has gone.
        let measure = |run: &dyn Fn(&str) -> Duration| {
            let db = rt.block_on(pg_db_with_schemas(n));
            rt.block_on(pg_quiet(&mut watch.borrow_mut(), &db));
            let before = cpu_now(server);
            let wall = run(&db);
            rt.block_on(pg_quiet(&mut watch.borrow_mut(), &db));
            let after = cpu_now(server);
            rt.block_on(pg_drop(&db));
            Sample {
                wall,
                cpu: before.zip(after).map(|(b, a)| a - b),
            }
        };
        let psql = |shape: usize, db: &str| {
            let mut sessions = vec![String::from("\\set ON_ERROR_STOP on\n"); c];
            for i in 0..n {
                sessions[i % c].push_str(&pg_tenant_script(&format!("bench_{i:05}"), &pg, shape));
            }
            let url = with_db(&pg_base(), db);
            run_clients(
                |f| {
                    let mut cmd = Command::new("psql");
                    cmd.args(["-X", "-q", "-f"]).arg(f).arg(&url);
                    cmd.stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::piped());
                    cmd
                },
                sessions,
                tmp,
            )
        };
        let fm = |mode: &str, db: &str| {
            let fleet = format!("postgres-schemas:{}", with_db(&pg_base(), db));
            fleetmig(&fleet, "bench_%", c, &["--tx-mode", mode], self.reports)
        };
        let s = interleaved(
            self.rounds,
            &mut [
                &mut || measure(&|db| psql(0, db)),
                &mut || measure(&|db| psql(1, db)),
                &mut || measure(&|db| psql(2, db)),
                &mut || measure(&|db| fm("tenant", db)),
                &mut || measure(&|db| fm("migration", db)),
            ],
        );
        let arm = |name, vs, runs: &Vec<Sample>| Arm {
            name,
            vs,
            runs: runs.clone(),
        };
        let bare = &s[0];
        let one_tx = "psql + history, one tx a tenant";
        let each_tx = "psql + history, one tx a migration";
        row(
            n,
            c,
            bare,
            bare,
            &arm(
                "PostgreSQL, psql + history, one tx a tenant",
                "bare psql",
                &s[1],
            ),
        );
        row(
            n,
            c,
            bare,
            bare,
            &arm(
                "PostgreSQL, psql + history, one tx a migration",
                "bare psql",
                &s[2],
            ),
        );
        row(
            n,
            c,
            &s[1],
            bare,
            &arm("PostgreSQL, fleetmig --tx-mode tenant", one_tx, &s[3]),
        );
        row(
            n,
            c,
            &s[2],
            bare,
            &arm("PostgreSQL, fleetmig --tx-mode migration", each_tx, &s[4]),
        );
    }

    /// MariaDB databases at `c` sessions: the bare `mariadb` client floor,
    /// the client with sqlx's bookkeeping, and fleetmig.
    fn mariadb(&self, n: usize, c: usize) {
        let rt = self.rt;
        let my = scripts(Dialect::Mysql);
        let server = rt.block_on(mysql_server());
        let u = url::Url::parse(&my_base()).unwrap();
        let client = |book: bool, tag: &str| {
            let mut sessions = vec![String::new(); c];
            for i in 0..n {
                sessions[i % c].push_str(&my_tenant_script(&format!("{tag}_{i:04}"), &my, book));
            }
            run_clients(
                |f| {
                    let mut cmd = Command::new("sh");
                    cmd.arg("-c")
                        .arg(format!(
                            "mariadb --protocol=tcp -h {} -P {} -u {} \"-p{}\" < {}",
                            u.host_str().unwrap(),
                            u.port().unwrap_or(3306),
                            u.username(),
                            u.password().unwrap_or(""),
                            f.display()
                        ))
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::piped());
                    cmd
                },
                sessions,
                self.tmp,
            )
        };
        let fm = |tag: &str| {
            let fleet = format!("mysql-databases:{}", my_base());
            fleetmig(&fleet, &format!("{tag}\\_%"), c, &[], self.reports)
        };
        let measure = |run: &dyn Fn(&str) -> Duration| {
            let tag = format!("fmb{:06x}", rand::random::<u32>() & 0xffffff);
            rt.block_on(my_each_db("CREATE DATABASE", &tag, n));
            let before = cpu_now(server);
            let wall = run(&tag);
            let cpu = before.zip(cpu_now(server)).map(|(b, a)| a - b);
            rt.block_on(my_each_db("DROP DATABASE IF EXISTS", &tag, n));
            Sample { wall, cpu }
        };
        let s = interleaved(
            self.rounds,
            &mut [
                &mut || measure(&|t| client(false, t)),
                &mut || measure(&|t| client(true, t)),
                &mut || measure(&|t| fm(t)),
            ],
        );
        let book = Arm {
            name: "MariaDB, mariadb client + history",
            vs: "bare mariadb",
            runs: s[1].clone(),
        };
        row(n, c, &s[0], &s[0], &book);
        let fm = Arm {
            name: "MariaDB, fleetmig",
            vs: "mariadb + history",
            runs: s[2].clone(),
        };
        row(n, c, &s[1], &s[0], &fm);
    }
}

/// The fleetmig binary measured: this build's, or `FLEETMIG_BIN` (an A/B
/// run of two builds, e.g. one of an older commit, interleaved).
fn fleetmig_bin() -> String {
    std::env::var("FLEETMIG_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fleetmig").to_string())
}
