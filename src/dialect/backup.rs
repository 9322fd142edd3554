//! Per-tenant backups taken before the first migration touches a tenant, and
//! restores: SQLite `VACUUM INTO`, PostgreSQL `pg_dump` (`-n SCHEMA` for a
//! schema tenant, the database otherwise) and `mysqldump`/`mariadb-dump`.
//! Passwords go to the tools through their environment (`PGPASSWORD`,
//! `MYSQL_PWD`), never on a command line that `ps` shows.

use crate::error::FailureKind;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::TenantError;
use crate::tenant::{Locator, Tenant, redact_url, scrub_secrets};

use super::quote_ident;

/// The file a tenant's backup goes to.
pub fn backup_path(dir: &Path, rollout: &str, tenant: &Tenant) -> PathBuf {
    let ext = match tenant.locator {
        Locator::Sqlite { .. } => "db",
        _ => "sql",
    };
    dir.join(rollout).join(format!("{}.{ext}", tenant.id))
}

fn tool_error(tool: &str, out: &std::process::Output, url: Option<&str>) -> TenantError {
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    TenantError::permanent(
        FailureKind::Backup,
        format!(
            "{tool} failed: {}",
            scrub_secrets(&super::one_line(&text), url)
        ),
    )
}

/// A URL without its password, and the password.
fn split_password(url: &str) -> (String, Option<String>) {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let pw = u.password().map(|p| {
                url::form_urlencoded::parse(format!("p={p}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_else(|| p.to_string())
            });
            let _ = u.set_password(None);
            (u.to_string(), pw)
        }
        Err(_) => (url.to_string(), None),
    }
}

fn run(
    mut cmd: Command,
    tool: &str,
    url: Option<&str>,
) -> Result<std::process::Output, TenantError> {
    let out = cmd.output().map_err(|e| {
        TenantError::permanent(
            FailureKind::Backup,
            format!("cannot run {tool}: {e} (is it installed?)"),
        )
    })?;
    if !out.status.success() {
        return Err(tool_error(tool, &out, url));
    }
    Ok(out)
}

/// Makes `path`'s folder and returns the temporary file a backup is written
/// to before it is renamed into place (`finish`): a half-written backup never
/// has the final name.
pub(crate) fn prepare(path: &Path) -> Result<PathBuf, TenantError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            TenantError::permanent(FailureKind::Backup, format!("{}: {e}", parent.display()))
        })?;
    }
    let tmp = path.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    Ok(tmp)
}

/// Renames a complete backup into place.
pub(crate) fn finish(tmp: &Path, path: &Path) -> Result<(), TenantError> {
    std::fs::rename(tmp, path).map_err(|e| {
        TenantError::permanent(FailureKind::Backup, format!("{}: {e}", path.display()))
    })
}

/// Runs a dump tool off the async runtime.
async fn run_blocking(cmd: Command, tool: &'static str, url: &str) -> Result<(), TenantError> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || run(cmd, tool, Some(&url)))
        .await
        .map_err(|e| TenantError::permanent(FailureKind::Backup, e.to_string()))?
        .map(|_| ())
}

/// `pg_dump` of a schema tenant (`-n SCHEMA`) or a whole database (with
/// `--clean`, so that loading it replaces what it holds) into `path`.
pub(crate) async fn pg_dump(
    url: &str,
    schema: Option<&str>,
    path: &Path,
) -> Result<(), TenantError> {
    let tmp = prepare(path)?;
    let (bare, pw) = split_password(url);
    let mut cmd = Command::new("pg_dump");
    cmd.arg(format!("--dbname={bare}"))
        .arg("--no-owner")
        .arg("-f")
        .arg(&tmp);
    match schema {
        Some(s) => {
            cmd.arg("-n").arg(quote_ident(s));
        }
        None => {
            cmd.arg("--clean").arg("--if-exists");
        }
    }
    if let Some(pw) = pw {
        cmd.env("PGPASSWORD", pw);
    }
    run_blocking(cmd, "pg_dump", url).await?;
    finish(&tmp, path)
}

/// `mariadb-dump` (or `mysqldump`) of the tenant's database into `path`.
pub(crate) async fn mysql_dump(url: &str, path: &Path) -> Result<(), TenantError> {
    let tmp = prepare(path)?;
    let u = url::Url::parse(url).map_err(|e| {
        TenantError::permanent(FailureKind::Backup, format!("{}: {e}", redact_url(url)))
    })?;
    let (_, pw) = split_password(url);
    let tool = if which("mariadb-dump") {
        "mariadb-dump"
    } else {
        "mysqldump"
    };
    let mut cmd = Command::new(tool);
    cmd.arg("--single-transaction")
        .arg("--protocol=tcp")
        .arg(format!("--host={}", u.host_str().unwrap_or("localhost")))
        .arg(format!("--port={}", u.port().unwrap_or(3306)))
        .arg(format!("--user={}", u.username()))
        .arg(format!("--result-file={}", tmp.display()))
        .arg(u.path().trim_start_matches('/'));
    if let Some(pw) = pw {
        cmd.env("MYSQL_PWD", pw);
    }
    run_blocking(cmd, tool, url).await?;
    finish(&tmp, path)
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Drops every table, view, materialized view, sequence and foreign table
/// of a database outside the system schemas (extension members excluded),
/// before a database tenant's dump is loaded.
const DROP_PG_RELATIONS: &str = r#"DO $fleetmig$
DECLARE r record;
BEGIN
  FOR r IN
    SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relkind
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                      AND d.objid = c.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP %s IF EXISTS %s CASCADE',
      CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
        WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
      r.name);
  END LOOP;
END
$fleetmig$;"#;

/// Puts the backup at `path` back in place of `tenant`'s current state.
pub fn restore(tenant: &Tenant, path: &Path) -> Result<(), TenantError> {
    if !path.is_file() {
        return Err(TenantError::permanent(
            FailureKind::Restore,
            format!("no backup at {}", path.display()),
        ));
    }
    match &tenant.locator {
        Locator::Row { .. } => Err(TenantError::permanent(
            FailureKind::Restore,
            "a row tenant's rows share their tables with other tenants: restore the database",
        )),
        Locator::Sqlite { path: db } => restore_sqlite(db, path),
        Locator::Postgres { url, schema } => restore_postgres(url, schema.as_deref(), path),
        Locator::Mysql { url } => restore_mysql(url, path),
    }
}

/// The file put back whole (its journal and WAL files removed first).
fn restore_sqlite(db: &Path, path: &Path) -> Result<(), TenantError> {
    for suffix in ["-journal", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let tmp = db.with_extension("restoring");
    std::fs::copy(path, &tmp)
        .map_err(|e| TenantError::permanent(FailureKind::Restore, e.to_string()))?;
    std::fs::rename(&tmp, db)
        .map_err(|e| TenantError::permanent(FailureKind::Restore, e.to_string()))?;
    Ok(())
}

/// The schema dropped (a database tenant: the relations created since),
/// then the dump run by `psql`.
fn restore_postgres(url: &str, schema: Option<&str>, path: &Path) -> Result<(), TenantError> {
    let (bare, pw) = split_password(url);
    let psql = |args: &[String]| {
        let mut cmd = Command::new("psql");
        cmd.arg("-X")
            .arg("-q")
            .arg("-v")
            .arg("ON_ERROR_STOP=1")
            .arg(format!("--dbname={bare}"));
        cmd.args(args);
        if let Some(pw) = &pw {
            cmd.env("PGPASSWORD", pw);
        }
        run(cmd, "psql", Some(url))
    };
    match schema {
        Some(s) => psql(&[
            "-c".into(),
            format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(s)),
        ])?,
        // The dump (--clean) drops and recreates what it holds; the
        // relations created since (by the migrations) go first.
        None => psql(&["-c".into(), DROP_PG_RELATIONS.into()])?,
    };
    psql(&["-f".into(), path.display().to_string()])?;
    Ok(())
}

/// The tables and views created since dropped, then the dump loaded by the
/// `mariadb` (or `mysql`) client.
fn restore_mysql(url: &str, path: &Path) -> Result<(), TenantError> {
    let u = url::Url::parse(url).map_err(|e| {
        TenantError::permanent(FailureKind::Restore, format!("{}: {e}", redact_url(url)))
    })?;
    let (_, pw) = split_password(url);
    let tool = if which("mariadb") { "mariadb" } else { "mysql" };
    let client = |stdin: Stdio| {
        let mut cmd = Command::new(tool);
        cmd.arg("--protocol=tcp")
            .arg(format!("--host={}", u.host_str().unwrap_or("localhost")))
            .arg(format!("--port={}", u.port().unwrap_or(3306)))
            .arg(format!("--user={}", u.username()))
            .arg("--batch")
            .arg("--skip-column-names")
            .arg(u.path().trim_start_matches('/'))
            .stdin(stdin);
        if let Some(pw) = &pw {
            cmd.env("MYSQL_PWD", pw);
        }
        cmd
    };
    // The dump recreates the tables it holds; the tables and views
    // created since (by the migrations) are dropped first, so the
    // database is what it was.
    let mut list = client(Stdio::piped());
    list.arg(
        "--execute=SELECT CONCAT(IF(table_type = 'VIEW', 'DROP VIEW IF EXISTS `', \
         'DROP TABLE IF EXISTS `'), REPLACE(table_name, '`', '``'), '`;') \
         FROM information_schema.tables WHERE table_schema = DATABASE() \
         ORDER BY table_type = 'VIEW' DESC",
    );
    let drops = run(list, tool, Some(url))?;
    let mut script = b"SET FOREIGN_KEY_CHECKS = 0;\n".to_vec();
    script.extend_from_slice(&drops.stdout);
    let mut drop = client(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            TenantError::permanent(FailureKind::Restore, format!("cannot run {tool}: {e}"))
        })?;
    drop.stdin
        .take()
        .expect("piped stdin")
        .write_all(&script)
        .map_err(|e| TenantError::permanent(FailureKind::Restore, e.to_string()))?;
    let out = drop
        .wait_with_output()
        .map_err(|e| TenantError::permanent(FailureKind::Restore, e.to_string()))?;
    if !out.status.success() {
        return Err(tool_error(tool, &out, Some(url)));
    }
    let load = client(
        std::fs::File::open(path)
            .map_err(|e| TenantError::permanent(FailureKind::Restore, e.to_string()))?
            .into(),
    );
    run(load, tool, Some(url))?;
    Ok(())
}
