//! What a tenant-scoped step writes inside its transaction: its history
//! row, the confirming run of a short backfill batch, its verification
//! query, each with the tenant's id bound as a parameter.

use sqlx::{Any, Connection};

use super::super::Step;
use super::super::classify;
use super::super::history::{render_row, verdict, verify_failed};
use super::{bind_tenant, bound};
use crate::error::TenantError;
use crate::migration::Script;
use crate::tenant::Dialect;

/// Writes `tenant`'s history row of `step` (`insert` is `insert_sql`).
pub(super) async fn record<'e, E>(
    exec: E,
    insert: &str,
    tenant: &str,
    step: Step<'_>,
    execution_time: i64,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    sqlx::query(sqlx::AssertSqlSafe(insert))
        .bind(tenant)
        .bind(step.migration.version)
        .bind(step.migration.description.as_str())
        .bind(step.script.checksum.as_slice())
        .bind(execution_time)
        .bind(crate::state::now_ms())
        .execute(exec)
        .await
        .map(|_| ())
}

/// The confirming run of a batch that changed fewer rows than asked,
/// under a savepoint (see `Session::backfill_batch`): whether it found
/// nothing left (kept) or more to do (rolled back).
pub(super) async fn confirmed(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sql: &str,
    n: usize,
    tenant: &str,
) -> Result<bool, sqlx::Error> {
    let mut confirm = tx.begin().await?;
    let again = bound(sql, n, tenant)
        .execute(&mut *confirm)
        .await?
        .rows_affected();
    match again {
        0 => confirm.commit().await?,
        _ => confirm.rollback().await?,
    }
    Ok(again == 0)
}

/// Runs `script`'s verification (if any) in `tx` with the id bound.
pub(super) async fn verify(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    script: &Script,
    tenant: &str,
    dialect: Dialect,
    outcome: &str,
) -> Result<Option<TenantError>, TenantError> {
    let Some((file, sql)) = &script.verify else {
        return Ok(None);
    };
    let (sql, n) = bind_tenant(&crate::dialect::history::verify_query(sql), dialect);
    let rows = bound(&sql, n, tenant)
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| classify(&e, dialect))?;
    let rows: Vec<Vec<String>> = rows.iter().map(render_row).collect();
    Ok(verdict(&rows).map(|why| verify_failed(file, &why, outcome)))
}
