//! MySQL/MariaDB tenants: one database each, a connection of its own. The
//! tenant lock is `GET_LOCK('fleetmig:<database>', timeout)`. MySQL commits DDL
//! implicitly, so sqlx records the history row as dirty before running the
//! script and marks it clean after; a failure in the middle leaves the tenant
//! dirty, which is the truth.

use std::str::FromStr;

use std::time::Instant;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection, Executor};

use super::{AppliedStep, Conn, Connector, Session, Step};
use crate::error::TenantError;
use crate::migration::split::split_statements;
use crate::tenant::{Dialect, DiscoverOptions, redact_url, scrub_secrets};

fn connect_options(url: &str) -> Result<MySqlConnectOptions, sqlx::Error> {
    Ok(MySqlConnectOptions::from_str(url)?.disable_statement_logging())
}

pub(crate) async fn open(c: &Connector, url: &str) -> Result<Session, TenantError> {
    let conn_err = |e: sqlx::Error| {
        let mut t = super::classify(&e, Dialect::Mysql);
        t.message = format!(
            "cannot connect to {}: {}",
            redact_url(url),
            scrub_secrets(&t.message, [url])
        );
        t
    };
    let opts = connect_options(url).map_err(conn_err)?;
    let database = opts.get_database().unwrap_or_default().to_string();
    let conn = tokio::time::timeout(
        c.settings.connect_timeout,
        MySqlConnection::connect_with(&opts),
    )
    .await
    .map_err(|_| {
        TenantError::transient(
            "connection",
            format!("connecting to {} timed out", redact_url(url)),
        )
    })?
    .map_err(conn_err)?;
    let mut s = Session {
        conn: Conn::Mysql(conn),
        dialect: Dialect::Mysql,
        table: "`_sqlx_migrations`".to_string(),
        schema: None,
        locked: false,
        history_ready: false,
        fresh: false,
        url: Some(url.to_string()),
        lock_wait: c.settings.lock_timeout,
        exists_hint: None,
        setup: String::new(),
        broken: false,
        pg_history: Default::default(),
        lock_key: format!("fleetmig:{database}").chars().take(64).collect(),
    };
    let secs = c.settings.lock_timeout.as_secs().max(1);
    let mut setup =
        format!("SET SESSION lock_wait_timeout = {secs}, innodb_lock_wait_timeout = {secs}");
    let Conn::Mysql(conn) = &mut s.conn else {
        unreachable!()
    };
    if let Err(e) = conn.execute(sqlx::AssertSqlSafe(setup.clone())).await {
        let t = s.err(e);
        s.close().await;
        return Err(t);
    }
    if let Some(st) = c.settings.statement_timeout {
        // MariaDB's name; MySQL's max_execution_time only covers SELECT.
        setup = format!("SET SESSION max_statement_time = {}", st.as_secs_f64());
        let _ = conn.execute(sqlx::AssertSqlSafe(setup)).await;
    }
    Ok(s)
}

fn conn_mut(s: &mut Session) -> &mut MySqlConnection {
    match &mut s.conn {
        Conn::Mysql(c) => c,
        _ => unreachable!("mysql session without a mysql connection"),
    }
}

pub(crate) async fn lock(s: &mut Session) -> Result<(), TenantError> {
    let key = s.lock_key.clone();
    let timeout = s.lock_wait.as_secs().max(1) as i64;
    let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(&key)
        .bind(timeout)
        .fetch_one(conn_mut(s))
        .await
        .map_err(|e| s.err(e))?;
    match got {
        Some(1) => Ok(()),
        _ => Err(TenantError::transient(
            "tenant_locked",
            "another session holds this tenant's migration lock (GET_LOCK timed out)",
        )),
    }
}

pub(crate) async fn history_exists(c: &mut MySqlConnection) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '_sqlx_migrations'",
    )
    .fetch_one(c)
    .await?;
    Ok(n > 0)
}

/// Applies one migration statement by statement. MySQL commits each DDL
/// statement on its own, so the history row is written as dirty first (as
/// sqlx does) and made clean at the end; a failure after some statements ran
/// leaves it dirty and says which statement ran last. A failure of the first
/// statement leaves nothing behind, so the row is removed and the tenant stays
/// clean (and a transient failure can be retried).
pub(crate) async fn apply(s: &mut Session, step: Step<'_>) -> Result<AppliedStep, TenantError> {
    s.ensure_history().await?;
    let v = step.migration.version;
    let statements = split_statements(&step.script.sql);
    let conn = conn_mut(s);
    sqlx::query(
        "INSERT INTO `_sqlx_migrations` (version, description, success, checksum, execution_time) \
         VALUES (?, ?, FALSE, ?, -1)",
    )
    .bind(v)
    .bind(step.migration.description.as_str())
    .bind(step.script.checksum.as_slice())
    .execute(&mut *conn)
    .await
    .map_err(|e| s.err(e).at_version(v))?;
    let t0 = Instant::now();
    for (i, st) in statements.iter().enumerate() {
        let conn = conn_mut(s);
        if let Err(e) = conn.execute(sqlx::AssertSqlSafe(st.sql.clone())).await {
            let mut t = s.err(e).at_version(v);
            if i == 0 {
                let cleaned = sqlx::query(
                    "DELETE FROM `_sqlx_migrations` WHERE version = ? AND success = FALSE",
                )
                .bind(v)
                .execute(conn_mut(s))
                .await;
                if cleaned.is_err() {
                    t.message.push_str(" (the history row of this migration could not be removed: the tenant is marked dirty)");
                }
                return Err(t);
            }
            let last = &statements[i - 1];
            t.class = crate::error::ErrorClass::Permanent;
            t.message = format!(
                "{} — statement {} of {} (line {}) failed after statements 1..{} were committed \
                 (MySQL DDL is not transactional), so the tenant is dirty. The last statement that ran \
                 (line {}): `{}`. Finish or undo the migration by hand, then delete its row from \
                 _sqlx_migrations and run again",
                t.message,
                i + 1,
                statements.len(),
                st.line,
                i,
                last.line,
                crate::dialect::one_line(&last.sql)
                    .chars()
                    .take(200)
                    .collect::<String>()
            );
            return Err(t);
        }
    }
    let duration = t0.elapsed();
    if let Some((file, vsql)) = &step.script.verify {
        let rows: Vec<Vec<String>> = sqlx::raw_sql(sqlx::AssertSqlSafe(vsql.clone()))
            .fetch_all(conn_mut(s))
            .await
            .map_err(|e| s.err(e).at_version(v))?
            .iter()
            .map(super::render_row)
            .collect();
        if let Some(why) = super::verdict(&rows) {
            return Err(super::verify_failed(file, &why, false).at_version(v));
        }
    }
    sqlx::query(
        "UPDATE `_sqlx_migrations` SET success = TRUE, execution_time = ? WHERE version = ?",
    )
    .bind(duration.as_nanos() as i64)
    .bind(v)
    .execute(conn_mut(s))
    .await
    .map_err(|e| s.err(e).at_version(v))?;
    Ok(AppliedStep {
        version: v,
        duration,
        already_applied: false,
    })
}

/// Databases of the server at `url` matching the pattern or returned by the query.
pub async fn list_databases(url: &str, opts: &DiscoverOptions) -> Result<Vec<String>, String> {
    let o = connect_options(url).map_err(|e| scrub_secrets(&e.to_string(), [url]))?;
    let mut conn = MySqlConnection::connect_with(&o).await.map_err(|e| {
        format!(
            "cannot connect to {}: {}",
            redact_url(url),
            scrub_secrets(&e.to_string(), [url])
        )
    })?;
    let r = match &opts.query {
        Some(q) => sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(q.clone()))
            .fetch_all(&mut conn)
            .await,
        None => sqlx::query_scalar::<_, String>(
            "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata WHERE schema_name LIKE ? ORDER BY 1",
        )
        .bind(&opts.pattern)
        .fetch_all(&mut conn)
        .await,
    };
    let _ = conn.close().await;
    r.map_err(|e| scrub_secrets(&e.to_string(), [url]))
}

/// MySQL/MariaDB preflight: the tenant's size and largest tables, a
/// transaction older than `max_age` open on its database (it may hold the
/// metadata lock the DDL needs: deferred), and free connections.
pub(crate) async fn preflight(
    s: &mut Session,
    max_age: std::time::Duration,
    min_free: i64,
) -> Result<Option<String>, TenantError> {
    let c = conn_mut(s);
    let sizes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT CAST(table_name AS CHAR), CAST(COALESCE(data_length, 0) + COALESCE(index_length, 0) AS SIGNED) \
         FROM information_schema.tables WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' \
         ORDER BY 2 DESC, 1",
    )
    .fetch_all(&mut *c)
    .await
    .map_err(|e| super::classify(&e, Dialect::Mysql))?;
    let old: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT CAST(t.trx_mysql_thread_id AS SIGNED), CAST(TIMESTAMPDIFF(SECOND, t.trx_started, NOW()) AS SIGNED) \
         FROM information_schema.innodb_trx t JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id \
         WHERE p.db = DATABASE() AND t.trx_mysql_thread_id <> CONNECTION_ID() \
         AND t.trx_started < NOW() - INTERVAL ? SECOND ORDER BY 2 DESC",
    )
    .bind(max_age.as_secs() as i64)
    .fetch_all(&mut *c)
    .await
    .map_err(|e| super::classify(&e, Dialect::Mysql))?;
    let free: i64 = sqlx::query_scalar(
        "SELECT CAST(@@max_connections - (SELECT COUNT(*) FROM information_schema.processlist) AS SIGNED)",
    )
    .fetch_one(&mut *c)
    .await
    .map_err(|e| super::classify(&e, Dialect::Mysql))?;
    if let Some((thread, age)) = old.first() {
        return Err(TenantError::transient(
            "preflight_deferred",
            format!(
                "connection {thread} has had a transaction open on this database for {age}s: \
                 DDL would wait for its metadata lock and every query behind the DDL; deferred"
            ),
        ));
    }
    if free < min_free {
        return Err(TenantError::transient(
            "preflight_deferred",
            format!("the server has {free} free connection(s), fewer than {min_free}; deferred"),
        ));
    }
    let total: i64 = sizes.iter().map(|(_, b)| b).sum();
    let largest: Vec<String> = sizes
        .iter()
        .take(3)
        .map(|(t, b)| format!("{t} {} kB", b / 1024))
        .collect();
    Ok(Some(format!(
        "size {} kB; largest: {}; {free} free connection(s)",
        total / 1024,
        if largest.is_empty() {
            "none".to_string()
        } else {
            largest.join(", ")
        }
    )))
}
