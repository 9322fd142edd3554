//! Sources, targets and moves: tenants made on each system (and dropped
//! however the test ends), filled with generated rows, moved by the real
//! binary.

use std::path::{Path, PathBuf};
use std::process::Output;

use sqlx::Connection;

use crate::common::*;
use crate::rows::{Num, Row, Timed};
use crate::systems::{Lite, My, Pg, Sys};

/// Databases to drop when the test ends, however it ends.
#[derive(Default)]
pub struct Cleanup {
    pg: Vec<String>,
    my: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (pg, my) = (std::mem::take(&mut self.pg), std::mem::take(&mut self.my));
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if !pg.is_empty()
                    && let Ok(mut c) = sqlx::PgConnection::connect(&pg_base_url()).await
                {
                    for d in pg {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{d}\" WITH (FORCE)"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                    let _ = c.close().await;
                }
                if !my.is_empty()
                    && let Ok(mut c) = sqlx::MySqlConnection::connect(&mysql_base_url()).await
                {
                    for d in my {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS `{d}`"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}

pub fn name(prefix: &str) -> String {
    format!("fm_{prefix}_{:08x}", rand::random::<u32>())
}

/// A tenant of `sys`: its URL (SQLite: a file in `dir`).
pub struct Place {
    pub sys: Sys,
    pub url: String,
    /// The SQLite file.
    pub path: PathBuf,
    /// The PostgreSQL table to read (`v`, or `schema.v`).
    pub table: String,
}

pub async fn source(sys: Sys, dir: &Path, clean: &mut Cleanup) -> Place {
    let (url, path) = match sys {
        Lite => {
            let path = dir.join("src.db");
            std::fs::write(&path, b"").unwrap();
            ("sqlite://src.db".to_string(), path)
        }
        Pg => {
            let db = pg_database("mprop").await;
            clean.pg.push(db.name.clone());
            (db.url.clone(), PathBuf::new())
        }
        My => {
            let n = name("mprop");
            clean.my.push(n.clone());
            mysql_exec(&mysql_base_url(), &format!("CREATE DATABASE `{n}`")).await;
            (with_db(&mysql_base_url(), &n), PathBuf::new())
        }
    };
    Place {
        sys,
        url,
        path,
        table: "v".into(),
    }
}

/// A place for a move's target that does not exist yet (`schema`: a new
/// schema in a PostgreSQL database made here), and the `--to` arguments.
pub async fn target(
    sys: Sys,
    dir: &Path,
    clean: &mut Cleanup,
    schema: bool,
) -> (Place, Vec<String>) {
    match sys {
        Lite => {
            let file = format!("{}.db", name("dst"));
            let path = dir.join(&file);
            let to = format!("sqlite:{file}");
            (
                Place {
                    sys,
                    url: to.clone(),
                    path,
                    table: "v".into(),
                },
                vec!["--to".into(), to],
            )
        }
        Pg if schema => {
            let db = pg_database("mpropt").await;
            clean.pg.push(db.name.clone());
            (
                Place {
                    sys,
                    url: db.url.clone(),
                    path: PathBuf::new(),
                    table: "tenant_t1.v".into(),
                },
                vec![
                    "--to".into(),
                    db.url.clone(),
                    "--schema".into(),
                    "tenant_t1".into(),
                ],
            )
        }
        Pg => {
            let n = name("mpropt");
            clean.pg.push(n.clone());
            let url = with_db(&pg_base_url(), &n);
            (
                Place {
                    sys,
                    url: url.clone(),
                    path: PathBuf::new(),
                    table: "v".into(),
                },
                vec!["--to".into(), url],
            )
        }
        My => {
            let n = name("mpropt");
            clean.my.push(n.clone());
            let url = with_db(&mysql_base_url(), &n);
            (
                Place {
                    sys,
                    url: url.clone(),
                    path: PathBuf::new(),
                    table: "v".into(),
                },
                vec!["--to".into(), url],
            )
        }
    }
}

/// Whether the target the move was given exists (a file, a database, the
/// schema of a schema target).
pub async fn exists(p: &Place) -> bool {
    match p.sys {
        Lite => p.path.exists(),
        Pg => {
            let db = url::Url::parse(&p.url)
                .unwrap()
                .path()
                .trim_start_matches('/')
                .to_string();
            let mut c = pg_connect(&pg_base_url()).await;
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
                .bind(&db)
                .fetch_one(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
            if n == 0 || !p.table.contains('.') {
                return n > 0;
            }
            let mut c = pg_connect(&p.url).await;
            let s: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_t1'")
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
            c.close().await.unwrap();
            s > 0
        }
        My => {
            let db = url::Url::parse(&p.url)
                .unwrap()
                .path()
                .trim_start_matches('/')
                .to_string();
            let mut c = mysql_connect(&mysql_base_url()).await;
            let n: i64 = sqlx::query_scalar(
                "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            )
            .bind(&db)
            .fetch_one(&mut c)
            .await
            .unwrap();
            c.close().await.unwrap();
            n > 0
        }
    }
}

/// The registry says t1 is at `url`.
pub fn point(dir: &Path, url: &str) {
    std::fs::write(
        dir.join("fleet.csv"),
        format!("id,url,schema,tags\nt1,{url},,\n"),
    )
    .unwrap();
}

pub fn mv(dir: &Path, set: &Path, args: &[String]) -> Output {
    let mut a: Vec<&str> = vec![
        "move",
        "--fleet",
        "registry:fleet.csv",
        "--tenant",
        "t1",
        "--state",
        "state.db",
        "--migrations",
        set.to_str().unwrap(),
    ];
    a.extend(args.iter().map(String::as_str));
    run_in(dir, &a)
}

pub fn said(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// Empties the source's table and inserts `rows`.
pub async fn fill(p: &Place, rows: &[Row]) {
    match p.sys {
        Pg => fill_pg(&p.url, rows).await,
        My => fill_my(&p.url, rows).await,
        Lite => fill_lite(&p.path, rows).await,
    }
}

pub fn placeholders(n: usize, row: impl Fn(usize) -> String) -> String {
    (0..n).map(row).collect::<Vec<_>>().join(", ")
}

pub async fn fill_pg(url: &str, rows: &[Row]) {
    let mut c = pg_connect(url).await;
    sqlx::raw_sql("SET TimeZone = 'UTC'; DELETE FROM v")
        .execute(&mut c)
        .await
        .unwrap();
    for chunk in rows.chunks(400) {
        let values = placeholders(chunk.len(), |k| {
            let p: Vec<usize> = (1..=14).map(|c| k * 14 + c).collect();
            format!(
                "(${}, ${}, ${}, ${}, CAST(${} AS numeric), ${}, ${}, CAST(${} AS date), \
                 CAST(${} AS timestamp), CAST(${} AS timestamptz), CAST(${} AS json), \
                 CAST(${} AS jsonb), ${}, CAST(${} AS uuid))",
                p[0],
                p[1],
                p[2],
                p[3],
                p[4],
                p[5],
                p[6],
                p[7],
                p[8],
                p[9],
                p[10],
                p[11],
                p[12],
                p[13]
            )
        });
        let sql =
            format!("INSERT INTO v (id, i, f, r, n, t, b, d, ts, tz, j, jb, x, u) VALUES {values}");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            let text = |t: &Option<Timed>| t.as_ref().map(|t| t.text.clone());
            q = q
                .bind(r.id)
                .bind(r.i)
                .bind(r.f)
                .bind(r.r.map(|v| v as f32))
                .bind(r.n.as_ref().map(|n| match n {
                    Num::Dec(s) => s.clone(),
                    _ => unreachable!("a SQLite value"),
                }))
                .bind(r.t.clone())
                .bind(r.b)
                .bind(text(&r.d))
                .bind(text(&r.ts))
                .bind(text(&r.tz))
                .bind(r.j.clone())
                .bind(r.jb.clone())
                .bind(r.x.clone())
                .bind(r.u.as_ref().map(|u| u.text.clone()));
        }
        q.execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("filling the PostgreSQL source: {e}"));
    }
    c.close().await.unwrap();
}

pub async fn fill_my(url: &str, rows: &[Row]) {
    let mut c = mysql_connect(url).await;
    sqlx::raw_sql(
        "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'; \
         DELETE FROM v",
    )
    .execute(&mut c)
    .await
    .unwrap();
    for chunk in rows.chunks(400) {
        let values = placeholders(chunk.len(), |_| {
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)".to_string()
        });
        let sql =
            format!("INSERT INTO v (id, i, f, r, n, t, b, d, ts, tz, j, jb, x, u) VALUES {values}");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            let text = |t: &Option<Timed>| t.as_ref().map(|t| t.text.clone());
            q = q
                .bind(r.id)
                .bind(r.i)
                .bind(r.f)
                .bind(r.r.map(|v| v as f32))
                .bind(r.n.as_ref().map(|n| match n {
                    Num::Dec(s) => s.clone(),
                    _ => unreachable!("a SQLite value"),
                }))
                .bind(r.t.clone())
                .bind(r.b)
                .bind(text(&r.d))
                .bind(text(&r.ts))
                .bind(text(&r.tz))
                .bind(r.j.clone())
                .bind(r.jb.clone())
                .bind(r.x.clone())
                .bind(r.u.as_ref().map(|u| u.text.clone()));
        }
        q.execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("filling the MariaDB source: {e}"));
    }
    c.close().await.unwrap();
}

pub async fn fill_lite(path: &Path, rows: &[Row]) {
    let mut c = sqlite(path).await;
    sqlx::raw_sql("DELETE FROM v")
        .execute(&mut c)
        .await
        .unwrap();
    let mut tx = c.begin().await.unwrap();
    for chunk in rows.chunks(400) {
        let values = placeholders(chunk.len(), |_| {
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)".to_string()
        });
        let sql =
            format!("INSERT INTO v (id, i, f, r, n, t, b, d, ts, tz, j, jb, x, u) VALUES {values}");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            let text = |t: &Option<Timed>| t.as_ref().map(|t| t.text.clone());
            q = q.bind(r.id).bind(r.i).bind(r.f).bind(r.r);
            q = match &r.n {
                Some(Num::Int(i)) => q.bind(Some(*i)),
                Some(Num::Real(f)) => q.bind(Some(*f)),
                Some(Num::Dec(_)) => unreachable!("not a SQLite value"),
                None => q.bind(None::<i64>),
            };
            q = q
                .bind(r.t.clone())
                .bind(r.b.map(i64::from))
                .bind(text(&r.d))
                .bind(text(&r.ts))
                .bind(text(&r.tz))
                .bind(r.j.clone())
                .bind(r.jb.clone())
                .bind(r.x.clone())
                .bind(r.u.as_ref().map(|u| u.text.clone()));
        }
        q.execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("filling the SQLite source: {e}"));
    }
    tx.commit().await.unwrap();
    c.close().await.unwrap();
}

/// Runs `sql` on the source.
pub async fn exec(p: &Place, sql: &str) {
    match p.sys {
        Pg => {
            let mut c = pg_connect(&p.url).await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            c.close().await.unwrap();
        }
        My => {
            mysql_exec(
                &p.url,
                &format!("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'; {sql}"),
            )
            .await
        }
        Lite => {
            let mut c = sqlite(&p.path).await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            c.close().await.unwrap();
        }
    }
}

/// A tenant on `src` and its migrated table: the registry in `dir` says so.
pub async fn synced_source(src: Sys, dir: &Path, set: &Path, clean: &mut Cleanup) -> Place {
    let p = source(src, dir, clean).await;
    point(dir, &p.url);
    let out = sync_fleet(dir, "registry:fleet.csv", set, &["--state", "state.db"]);
    assert_eq!(out.status.code(), Some(0), "sync: {}", said(&out));
    p
}
