//! The connections of schema tenants: one pool per database URL for the
//! whole command, and the read-ahead of many schemas' histories a hundred
//! per round trip through it.

use dashmap::DashMap;
use sqlx::postgres::PgConnection;

use super::connect_options;
use crate::dialect::history;
use crate::dialect::{quote_ident, quote_literal};
use crate::migration::Applied;
use crate::options::Settings;
use crate::tenant::validate_identifier;

/// The pools of one command, one per database URL (schema tenants share them).
#[derive(Default)]
pub(crate) struct Pools {
    pools: DashMap<String, sqlx::PgPool>,
}

impl Pools {
    pub(super) fn get(&self, url: &str, settings: &Settings) -> Result<sqlx::PgPool, sqlx::Error> {
        if let Some(p) = self.pools.get(url) {
            return Ok(p.clone());
        }
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(settings.pool_size.max(1))
            .acquire_timeout(settings.connect_timeout)
            // No maintenance task (no idle timeout, no lifetime): sqlx 0.9's
            // can read a transiently wrapped idle count and spin for ever on
            // a runtime thread (a hung `sync` seen in CI). Connections live
            // as long as the command; the pool is bounded by its size.
            .idle_timeout(None)
            .max_lifetime(None)
            // No ping before each tenant: a dead connection fails its attempt
            // with a transient error and the retry gets a fresh one.
            .test_before_acquire(false)
            .connect_lazy_with(connect_options(url)?);
        Ok(self.pools.entry(url.to_string()).or_insert(pool).clone())
    }

    pub(crate) async fn close(&self) {
        let pools: Vec<_> = self.pools.iter().map(|p| p.value().clone()).collect();
        for p in pools {
            p.close().await;
        }
    }
}

/// Reads the histories of the schema tenants among `tenants` a hundred
/// schemas per round trip (which of them have a history table, then every
/// such table in one `UNION ALL`), through the database's pool: (index in
/// `tenants`, history). A tenant it cannot read is left out (a session reads
/// it). Read-only, no lock.
pub(crate) async fn peek_schemas(
    pools: &Pools,
    settings: &Settings,
    fanout: &crate::fanout::Fanout,
    tenants: &[crate::tenant::Tenant],
) -> Vec<(usize, Vec<Applied>)> {
    use std::collections::BTreeMap;
    let mut by_url: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
    for (i, t) in tenants.iter().enumerate() {
        if let crate::tenant::Locator::Postgres {
            url,
            schema: Some(schema),
        } = &t.locator
            && validate_identifier(schema).is_ok()
        {
            by_url.entry(url).or_default().push((i, schema));
        }
    }
    let mut out = Vec::new();
    for (url, schemas) in by_url {
        let _slot = fanout.slot(&tenants[schemas[0].0]).await;
        let Ok(pool) = pools.get(url, settings) else {
            continue;
        };
        let Ok(mut conn) = pool.acquire().await else {
            continue;
        };
        for chunk in schemas.chunks(100) {
            if let Ok(found) = peek_chunk(&mut conn, chunk).await {
                out.extend(found);
            }
        }
        conn.return_to_pool().await;
    }
    out
}

async fn peek_chunk(
    conn: &mut PgConnection,
    chunk: &[(usize, &str)],
) -> Result<Vec<(usize, Vec<Applied>)>, sqlx::Error> {
    let names: Vec<&str> = chunk.iter().map(|(_, s)| *s).collect();
    let with_table: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname = '_sqlx_migrations' AND c.relkind IN ('r', 'p') AND n.nspname = ANY($1)",
    )
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    let mut histories: std::collections::HashMap<&str, Vec<history::HistoryRow>> =
        chunk.iter().map(|(_, s)| (*s, Vec::new())).collect();
    if !with_table.is_empty() {
        let union: Vec<String> = with_table
            .iter()
            .map(|s| {
                format!(
                    "SELECT {}::text, version, description, success, checksum FROM {}.\"_sqlx_migrations\"",
                    quote_literal(s),
                    quote_ident(s)
                )
            })
            .collect();
        let sql = format!("{} ORDER BY 1, 2", union.join(" UNION ALL "));
        let rows: Vec<(String, i64, String, bool, Vec<u8>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut *conn)
                .await?;
        for (schema, version, description, success, checksum) in rows {
            if let Some(h) = histories.get_mut(schema.as_str()) {
                h.push((version, description, success, checksum));
            }
        }
    }
    Ok(chunk
        .iter()
        .map(|(i, s)| {
            (
                *i,
                history::applied(histories.remove(s).unwrap_or_default()),
            )
        })
        .collect())
}
