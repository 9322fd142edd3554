//! What fleetmig reads from PostgreSQL's catalogue: the preflight (sizes, old
//! transactions holding a touched table, free connections), the schema
//! fingerprint `fleetmig verify` compares, and the names discovery lists.

use crate::error::FailureKind;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::super::{PreflightLimits, preflight_summary, too_few_connections};
use super::connect_options;
use crate::error::TenantError;
use crate::tenant::{DiscoverOptions, scrub_secrets};

/// Why a preflight did not pass: the catalogue could not be read, or the
/// tenant must wait.
pub(super) enum Deferred {
    Db(sqlx::Error),
    Now(TenantError),
}

impl From<sqlx::Error> for Deferred {
    fn from(e: sqlx::Error) -> Self {
        Deferred::Db(e)
    }
}

/// No transaction older than the limit holds a lock on a table the
/// migrations touch, and the server has enough free connections.
pub(super) async fn preflight(
    c: &mut PgConnection,
    schema: &str,
    tables: &[String],
    limits: PreflightLimits,
) -> Result<Option<String>, Deferred> {
    let sizes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.relname::text, pg_total_relation_size(c.oid) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') \
         ORDER BY 2 DESC, 1",
    )
    .bind(schema)
    .fetch_all(&mut *c)
    .await?;
    let blockers: Vec<(i32, String, f64, String)> = sqlx::query_as(
        "SELECT a.pid, c.relname::text, EXTRACT(EPOCH FROM now() - a.xact_start)::float8, l.mode \
         FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE n.nspname = $1 AND c.relname = ANY($2) AND a.pid <> pg_backend_pid() \
         AND a.xact_start < now() - make_interval(secs => $3) ORDER BY 3 DESC",
    )
    .bind(schema)
    .bind(tables)
    .bind(limits.max_xact_age.as_secs_f64())
    .fetch_all(&mut *c)
    .await?;
    let free: i32 = sqlx::query_scalar(
        "SELECT current_setting('max_connections')::int - (SELECT count(*) FROM pg_stat_activity)::int",
    )
    .fetch_one(&mut *c)
    .await?;
    if let Some((pid, table, age, mode)) = blockers.first() {
        return Err(Deferred::Now(TenantError::transient(
            FailureKind::PreflightDeferred,
            format!(
                "table {table} is held ({mode}) by pid {pid} in a transaction open for {age:.0}s: \
                 DDL would queue behind it and every query behind the DDL; deferred"
            ),
        )));
    }
    if (free as i64) < limits.min_free_connections {
        return Err(Deferred::Now(too_few_connections(
            free as i64,
            limits.min_free_connections,
        )));
    }
    Ok(Some(preflight_summary(&sizes, free as i64)))
}

/// The schema's tables, columns, indexes and constraints as sorted lines,
/// with the schema's own name taken out of index and constraint definitions
/// so that tenants compare equal.
pub(super) async fn fingerprint(
    c: &mut PgConnection,
    schema: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let q = "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type \
         || CASE WHEN is_nullable = 'NO' THEN ' not null' ELSE '' END \
         || COALESCE(' default ' || column_default, '') \
         FROM information_schema.columns WHERE table_schema = $1 AND table_name <> '_sqlx_migrations' AND table_name NOT LIKE '\\_fleetmig\\_%' \
         UNION ALL SELECT 'index ' || indexname || ': ' || replace(indexdef, quote_ident($1) || '.', '') \
         FROM pg_indexes WHERE schemaname = $1 AND tablename <> '_sqlx_migrations' AND tablename NOT LIKE '\\_fleetmig\\_%' \
         UNION ALL SELECT 'constraint ' || c.relname || '.' || con.conname || ': ' \
         || replace(pg_get_constraintdef(con.oid), quote_ident($1) || '.', '') \
         FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname <> '_sqlx_migrations' AND c.relname NOT LIKE '\\_fleetmig\\_%'";
    let mut items: Vec<String> = sqlx::query_scalar(q).bind(schema).fetch_all(c).await?;
    for i in &mut items {
        *i = super::super::one_line(i);
    }
    items.sort();
    Ok(items)
}

/// The names the pattern matches, or the tenant query returns (run in a
/// read-only transaction, so a query that writes fails instead of writing).
async fn names(url: &str, opts: &DiscoverOptions, by_pattern: &str) -> Result<Vec<String>, String> {
    let conn_opts = connect_options(url).map_err(|e| scrub_secrets(&e.to_string(), [url]))?;
    let mut conn = super::super::connect(
        crate::tenant::Dialect::Postgres,
        url,
        opts.connect_timeout,
        PgConnection::connect_with(&conn_opts),
    )
    .await
    .map_err(|e| e.message)?;
    let scrub = |e: sqlx::Error| scrub_secrets(&e.to_string(), [url]);
    let r = match &opts.query {
        Some(q) => {
            async {
                let mut tx = conn.begin_with("BEGIN READ ONLY").await.map_err(scrub)?;
                let names = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(q.clone()))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| format!("--tenant-query failed: {}", scrub(e)));
                let _ = tx.rollback().await;
                names
            }
            .await
        }
        None => sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(by_pattern.to_string()))
            .bind(&opts.pattern)
            .fetch_all(&mut conn)
            .await
            .map_err(scrub),
    };
    let _ = conn.close().await;
    r
}

/// Schemas of the database at `url` matching the pattern or returned by the query.
pub async fn list_schemas(url: &str, opts: &DiscoverOptions) -> Result<Vec<String>, String> {
    names(
        url,
        opts,
        // never the system's schemas, fleetmig's scratch ones, or `public`
        // unless the pattern names it exactly
        "SELECT schema_name::text FROM information_schema.schemata \
         WHERE schema_name LIKE $1 ESCAPE E'\\\\' \
           AND schema_name <> 'information_schema' AND schema_name NOT LIKE 'pg\\_%' \
           AND schema_name NOT LIKE '\\_fleetmig\\_%' AND (schema_name <> 'public' OR $1 = 'public') \
         ORDER BY 1",
    )
    .await
}

/// Databases of the server at `url` matching the pattern or returned by the query.
pub async fn list_databases(url: &str, opts: &DiscoverOptions) -> Result<Vec<String>, String> {
    names(
        url,
        opts,
        // never a template, fleetmig's scratch databases, or `postgres`
        // unless the pattern names it exactly
        "SELECT datname::text FROM pg_database \
         WHERE datname LIKE $1 ESCAPE E'\\\\' AND NOT datistemplate \
           AND datname NOT LIKE '\\_fleetmig\\_%' AND (datname <> 'postgres' OR $1 = 'postgres') \
         ORDER BY 1",
    )
    .await
}
