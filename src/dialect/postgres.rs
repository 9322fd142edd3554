//! PostgreSQL tenants: a schema in a shared database (pooled connections,
//! `search_path` set to that schema only) or a whole database (a connection of
//! its own). The tenant lock is a session advisory lock keyed on
//! `hashtextextended('fleetmig:<database>/<schema>')`, not sqlx's lock (keyed
//! on the database alone, which would queue every schema of a database behind
//! one another). Pooled connections are reset before they go back to the pool.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migrate, MigrationType};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor};

use super::{
    AppliedStep, Conn, Connector, Session, Step, quote_ident, quote_literal, sqlx_migration,
};
use crate::error::TenantError;
use crate::tenant::{Dialect, DiscoverOptions, redact_url, scrub_secrets, validate_identifier};

pub(crate) fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?
        .application_name("fleetmig")
        .disable_statement_logging())
}

fn pg_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

pub(crate) async fn open(
    c: &Connector,
    url: &str,
    schema: Option<&str>,
) -> Result<Session, TenantError> {
    let conn_err = |e: sqlx::Error| {
        let mut t = super::classify(&e, Dialect::Postgres);
        t.message = format!(
            "cannot connect to {}: {}",
            redact_url(url),
            scrub_secrets(&t.message, [url])
        );
        t
    };
    let (conn, table) = match schema {
        Some(schema) => {
            validate_identifier(schema)
                .map_err(|m| TenantError::permanent("invalid_identifier", m))?;
            let pool = c.pg_pool(url).map_err(conn_err)?;
            let conn = pool.acquire().await.map_err(conn_err)?;
            (
                Conn::PgPooled(conn),
                format!(
                    "{}.{}",
                    quote_ident(Dialect::Postgres, schema),
                    "\"_sqlx_migrations\""
                ),
            )
        }
        None => {
            let opts = connect_options(url).map_err(conn_err)?;
            let conn = tokio::time::timeout(
                c.settings.connect_timeout,
                PgConnection::connect_with(&opts),
            )
            .await
            .map_err(|_| {
                TenantError::transient(
                    "connection",
                    format!("connecting to {} timed out", redact_url(url)),
                )
            })?
            .map_err(conn_err)?;
            (Conn::Pg(conn), "\"_sqlx_migrations\"".to_string())
        }
    };
    let mut s = Session {
        conn,
        dialect: Dialect::Postgres,
        table,
        schema: schema.map(str::to_string),
        locked: false,
        history_ready: false,
        url: Some(url.to_string()),
        lock_wait: c.settings.lock_timeout,
        lock_key: schema.unwrap_or("").to_string(),
    };
    let mut setup = String::new();
    if let Some(schema) = schema {
        setup.push_str(&format!(
            "SET search_path TO {};",
            quote_ident(Dialect::Postgres, schema)
        ));
    }
    setup.push_str(&format!(
        "SET lock_timeout = '{}';",
        pg_duration(c.settings.lock_timeout)
    ));
    if let Some(st) = c.settings.statement_timeout {
        setup.push_str(&format!("SET statement_timeout = '{}';", pg_duration(st)));
    }
    if let Err(e) = conn_mut(&mut s).execute(sqlx::AssertSqlSafe(setup)).await {
        let t = s.err(e);
        s.close().await;
        return Err(t);
    }
    Ok(s)
}

pub(crate) fn conn_mut(s: &mut Session) -> &mut PgConnection {
    match &mut s.conn {
        Conn::PgPooled(c) => c,
        Conn::Pg(c) => c,
        _ => unreachable!("postgres session without a postgres connection"),
    }
}

pub(crate) async fn lock(s: &mut Session) -> Result<(), TenantError> {
    let key = s.lock_key.clone();
    let r = sqlx::query("SELECT pg_advisory_lock(hashtextextended('fleetmig:' || current_database() || '/' || $1, 0))")
        .bind(key)
        .execute(conn_mut(s))
        .await;
    r.map(|_| ()).map_err(|e| {
        let mut t = s.err(e);
        if t.kind == "lock_timeout" {
            t.kind = "tenant_locked".into();
            t.message = format!(
                "another session holds this tenant's migration lock: {}",
                t.message
            );
        }
        t
    })
}

pub(crate) async fn history_exists(c: &mut PgConnection, table: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(c)
        .await
}

pub(crate) async fn apply(
    s: &mut Session,
    steps: &[Step<'_>],
) -> Result<Vec<AppliedStep>, TenantError> {
    s.ensure_history().await?;
    let table = s.table.clone();
    if let [step] = steps
        && step.script.no_tx
    {
        drop_invalid_indexes(s, step.script.sql.as_str()).await?;
        let m = sqlx_migration(step.migration, step.script, MigrationType::Simple);
        return match conn_mut(s).apply(&table, &m).await {
            Ok(d) => Ok(vec![AppliedStep {
                version: m.version,
                duration: d,
                already_applied: false,
            }]),
            Err(e) => {
                let t = s.migrate_err(e).at_version(m.version);
                // A transient failure (lost connection, lock timeout) leaves the
                // history clean: the next attempt drops the INVALID index left
                // behind and runs again. A permanent one is recorded as dirty.
                if !t.is_transient() {
                    let _ = s.mark_dirty(*step).await;
                }
                Err(t)
            }
        };
    }
    let result: Result<Vec<AppliedStep>, (sqlx::migrate::MigrateError, Option<i64>)> = async {
        let conn = conn_mut(s);
        let mut tx = conn.begin().await.map_err(|e| (e.into(), None))?;
        let mut out = Vec::with_capacity(steps.len());
        for step in steps {
            let m = sqlx_migration(step.migration, step.script, MigrationType::Simple);
            let d = tx
                .apply(&table, &m)
                .await
                .map_err(|e| (e, Some(m.version)))?;
            out.push(AppliedStep {
                version: m.version,
                duration: d,
                already_applied: false,
            });
        }
        tx.commit().await.map_err(|e| (e.into(), None))?;
        Ok(out)
    }
    .await;
    result.map_err(|(e, v)| {
        let t = s.migrate_err(e);
        match v {
            Some(v) => t.at_version(v),
            None => t,
        }
    })
}

/// Drops the INVALID indexes (left by an interrupted `CREATE INDEX
/// CONCURRENTLY`) in the tenant's schema whose names the migration mentions,
/// so that running it again does not fail on "already exists".
async fn drop_invalid_indexes(s: &mut Session, sql: &str) -> Result<(), TenantError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT i.indisvalid AND n.nspname = current_schema()",
    )
    .fetch_all(conn_mut(s))
    .await
    .map_err(|e| s.err(e))?;
    let lower = sql.to_ascii_lowercase();
    for (schema, index) in rows {
        if !lower.contains(&index.to_ascii_lowercase()) {
            continue;
        }
        tracing::warn!(schema = %schema, index = %index, "dropping INVALID index left by an interrupted build");
        let drop = format!(
            "DROP INDEX CONCURRENTLY IF EXISTS {}.{}",
            quote_ident(Dialect::Postgres, &schema),
            quote_ident(Dialect::Postgres, &index)
        );
        conn_mut(s)
            .execute(sqlx::AssertSqlSafe(drop))
            .await
            .map_err(|e| s.err(e))?;
    }
    Ok(())
}

pub(crate) async fn release_pooled(
    mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    lock_key: &str,
    locked: bool,
) {
    let mut reset = String::new();
    if locked {
        reset.push_str(&format!(
            "SELECT pg_advisory_unlock(hashtextextended('fleetmig:' || current_database() || '/' || {}, 0));",
            quote_literal(Dialect::Postgres, lock_key)
        ));
    }
    reset.push_str("RESET ALL;");
    if (&mut *conn)
        .execute(sqlx::AssertSqlSafe(reset))
        .await
        .is_err()
    {
        // Never hand a connection in an unknown state to the next tenant.
        conn.close_on_drop();
    }
}

async fn discovery_conn(url: &str) -> Result<PgConnection, String> {
    let opts = connect_options(url).map_err(|e| scrub_secrets(&e.to_string(), [url]))?;
    PgConnection::connect_with(&opts).await.map_err(|e| {
        format!(
            "cannot connect to {}: {}",
            redact_url(url),
            scrub_secrets(&e.to_string(), [url])
        )
    })
}

async fn names(url: &str, opts: &DiscoverOptions, by_pattern: &str) -> Result<Vec<String>, String> {
    let mut conn = discovery_conn(url).await?;
    let r = match &opts.query {
        Some(q) => sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(q.clone()))
            .fetch_all(&mut conn)
            .await
            .map_err(|e| {
                format!(
                    "--tenant-query failed: {}",
                    scrub_secrets(&e.to_string(), [url])
                )
            }),
        None => sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(by_pattern.to_string()))
            .bind(&opts.pattern)
            .fetch_all(&mut conn)
            .await
            .map_err(|e| scrub_secrets(&e.to_string(), [url])),
    };
    let _ = conn.close().await;
    r
}

/// Schemas of the database at `url` matching the pattern or returned by the query.
pub async fn list_schemas(url: &str, opts: &DiscoverOptions) -> Result<Vec<String>, String> {
    names(
        url,
        opts,
        "SELECT schema_name::text FROM information_schema.schemata WHERE schema_name LIKE $1 ORDER BY 1",
    )
    .await
}

/// Databases of the server at `url` matching the pattern or returned by the query.
pub async fn list_databases(url: &str, opts: &DiscoverOptions) -> Result<Vec<String>, String> {
    names(
        url,
        opts,
        "SELECT datname::text FROM pg_database WHERE datname LIKE $1 AND NOT datistemplate ORDER BY 1",
    )
    .await
}
