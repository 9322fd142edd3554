//! The nightly fast path of a row fleet: the histories of many tenants of
//! one shared database read in two queries (the database's own history
//! once, then the tenant rows of a chunk of tenants), without a session or
//! a lock. Read-only; it only finds the tenants with nothing to do — any
//! other goes through a session, which reads its history again under the
//! tenant's lock.

use std::collections::HashMap;

use sqlx::Row;

use super::sql::{DATABASE_HISTORY, Pools, TABLE, any_url, applied, exists_sql, tenant_history};
use crate::dialect::Access;
use crate::migration::Applied;
use crate::options::Settings;
use crate::tenant::{Dialect, Locator, Tenant};

/// A row tenant to read: its index among the tenants, its id.
type Wanted<'a> = (usize, &'a str);

/// (index in `tenants`, history) of the row tenants among `tenants` whose
/// histories could be read; the others are left out.
pub(crate) async fn peek(
    pools: &Pools,
    settings: &Settings,
    fanout: &crate::fanout::Fanout,
    tenants: &[Tenant],
) -> Vec<(usize, Vec<Applied>)> {
    // the row tenants, by their database
    let mut by_db: HashMap<String, (Locator, Vec<Wanted>)> = HashMap::new();
    for (i, t) in tenants.iter().enumerate() {
        if let Locator::Row { db, tenant_id } = &t.locator {
            by_db
                .entry(db.redacted())
                .or_insert_with(|| ((**db).clone(), Vec::new()))
                .1
                .push((i, tenant_id.as_str()));
        }
    }
    let mut out = Vec::new();
    for (db, ids) in by_db.into_values() {
        let _slot = fanout.slot(&tenants[ids[0].0]).await;
        match read(pools, settings, &db, &ids).await {
            Ok(found) => out.extend(found),
            Err(e) => tracing::debug!("row tenants of {db}: no read-ahead ({e})"),
        }
    }
    out
}

async fn read(
    pools: &Pools,
    settings: &Settings,
    db: &Locator,
    ids: &[Wanted<'_>],
) -> Result<Vec<(usize, Vec<Applied>)>, sqlx::Error> {
    let dialect = db.dialect();
    let url = any_url(db, Access::Write).map_err(|e| sqlx::Error::Protocol(e.message))?;
    let pool = pools.get(&url, dialect, settings);
    let mut conn = tokio::time::timeout(settings.connect_timeout, pool.acquire())
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let exists = |name: &'static str| {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(exists_sql(dialect))).bind(name)
    };
    let mut shared = Vec::new();
    if exists("_sqlx_migrations").fetch_one(&mut *conn).await? > 0 {
        let rows = sqlx::query(DATABASE_HISTORY).fetch_all(&mut *conn).await?;
        shared = rows.iter().map(applied).collect::<Result<Vec<_>, _>>()?;
        if let Some(h) = shared.iter().find(|h| !h.success) {
            // dirty, or (MySQL) a database-wide migration unfinished with
            // its progress: only a session under the lock can tell
            return Err(sqlx::Error::Protocol(format!(
                "version {} of the database's own history is not finished",
                h.version
            )));
        }
    }
    let mut own: HashMap<String, Vec<Applied>> = HashMap::new();
    if exists(TABLE).fetch_one(&mut *conn).await? > 0 {
        let params: Vec<String> = (1..=ids.len())
            .map(|n| match dialect {
                Dialect::Postgres => format!("${n}"),
                _ => "?".to_string(),
            })
            .collect();
        let sql = tenant_history(&format!("tenant_id IN ({})", params.join(", ")));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (_, id) in ids {
            q = q.bind(*id);
        }
        for r in q.fetch_all(&mut *conn).await? {
            own.entry(r.try_get(4)?).or_default().push(applied(&r)?);
        }
    }
    Ok(ids
        .iter()
        .map(|(i, id)| {
            let mut h = shared.clone();
            h.extend(own.remove(*id).unwrap_or_default());
            h.sort_by_key(|a| a.version);
            (*i, h)
        })
        .collect())
}
