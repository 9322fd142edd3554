//! A PostgreSQL target while it is filled: nothing fires and nothing is
//! maintained row by row. Triggers and foreign keys: the session's
//! replication role `replica` where the role may set it, else the owner's
//! way (`DISABLE TRIGGER USER`, the foreign keys dropped). Secondary indexes
//! (neither the primary key nor one a constraint stands on) are dropped and
//! built again from their definitions after the load, which is faster than
//! keeping them up to date through it. Whatever is dropped is saved in the
//! target first (`SAVED_TABLE`), so that a killed move's next run puts it
//! back; after, every saved index is checked to be there as it was.

use crate::error::FailureKind;
use sqlx::{Executor, PgConnection};

use super::super::failed;
use crate::dialect::quote_ident;
use crate::error::TenantError;
use crate::tenant::Dialect;

/// How triggers and foreign keys were turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Quiet {
    Replica,
    Owner,
}

async fn run(conn: &mut PgConnection, what: &str, sql: String) -> Result<(), TenantError> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await
        .map_err(|e| failed(Dialect::Postgres, what, e))?;
    Ok(())
}

/// The indexes of `tables` a load may do without, as (regclass text).
const SECONDARY: &str = "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
     WHERE i.indrelid = ANY($1::regclass[]) AND NOT i.indisprimary \
     AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)";

/// Turns `tables` (quoted, qualified names) quiet; `saved` is the table
/// that keeps what was dropped.
pub(super) async fn quiet(
    conn: &mut PgConnection,
    saved: &str,
    tables: &[String],
) -> Result<Quiet, TenantError> {
    let what = "turning the target's triggers, foreign keys and indexes off";
    let mode = match conn.execute("SET session_replication_role = replica").await {
        Ok(_) => Quiet::Replica,
        Err(e) => {
            let e = failed(Dialect::Postgres, what, e);
            if e.code.as_deref() != Some("42501") {
                return Err(e);
            }
            Quiet::Owner
        }
    };
    run(
        conn,
        what,
        format!(
            "CREATE TABLE IF NOT EXISTS {saved} (kind text NOT NULL, tbl text NOT NULL, name text NOT NULL, def text NOT NULL)"
        ),
    )
    .await?;
    let mut keep = format!(
        "INSERT INTO {saved} SELECT 'index', i.indrelid::regclass::text, i.indexrelid::regclass::text, \
         pg_get_indexdef(i.indexrelid) {SECONDARY} \
         AND NOT EXISTS (SELECT 1 FROM {saved} s WHERE s.kind = 'index' AND s.name = i.indexrelid::regclass::text)"
    );
    let mut drop = format!("SELECT 'DROP INDEX ' || i.indexrelid::regclass::text {SECONDARY}");
    if mode == Quiet::Owner {
        keep += &format!(
            "; INSERT INTO {saved} SELECT 'constraint', k.conrelid::regclass::text, k.conname, \
             pg_get_constraintdef(k.oid) FROM pg_constraint k \
             WHERE k.contype = 'f' AND k.conrelid = ANY($1::regclass[]) \
             AND NOT EXISTS (SELECT 1 FROM {saved} s WHERE s.kind = 'constraint' \
               AND s.tbl = k.conrelid::regclass::text AND s.name = k.conname)"
        );
        drop += " UNION ALL SELECT 'ALTER TABLE ' || k.conrelid::regclass::text || ' DROP CONSTRAINT ' \
             || quote_ident(k.conname) FROM pg_constraint k \
             WHERE k.contype = 'f' AND k.conrelid = ANY($1::regclass[])";
    }
    for statement in keep.split("; ") {
        sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
            .bind(tables)
            .execute(&mut *conn)
            .await
            .map_err(|e| failed(Dialect::Postgres, what, e))?;
    }
    let drops: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(drop))
        .bind(tables)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| failed(Dialect::Postgres, what, e))?;
    let mut sql: String = drops.iter().map(|d| format!("{d};")).collect();
    if mode == Quiet::Owner {
        for t in tables {
            sql += &format!("ALTER TABLE {t} DISABLE TRIGGER USER;");
        }
    }
    if !sql.is_empty() {
        run(conn, what, sql).await?;
    }
    Ok(mode)
}

/// Puts back what `quiet` (this run's or a killed one's) turned off: the
/// triggers, the indexes (then checked to be as they were), the foreign
/// keys.
pub(super) async fn restore(
    conn: &mut PgConnection,
    saved: &str,
    tables: &[String],
    mode: Quiet,
) -> Result<(), TenantError> {
    let what = "putting the target's triggers, indexes and foreign keys back";
    let kept: Vec<(String, String, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT kind, tbl, name, def FROM {saved} ORDER BY kind DESC, tbl, name"
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| failed(Dialect::Postgres, what, e))?;
    let mut sql = String::from("SET maintenance_work_mem = '256MB';");
    if mode == Quiet::Owner {
        for t in tables {
            sql += &format!("ALTER TABLE {t} ENABLE TRIGGER USER;");
        }
    }
    // indexes ('index' sorts after 'constraint': DESC puts them first)
    for (kind, tbl, name, def) in &kept {
        match kind.as_str() {
            "index" => sql += &format!("{def};"),
            _ => {
                sql += &format!(
                    "ALTER TABLE {tbl} ADD CONSTRAINT {} {def};",
                    quote_ident(name)
                )
            }
        }
    }
    sql += "RESET maintenance_work_mem;";
    run(conn, what, sql).await?;
    // the catalog as it was: every index by its definition
    for (kind, _, name, def) in kept.iter().filter(|k| k.0 == "index") {
        let now: Option<String> = sqlx::query_scalar("SELECT pg_get_indexdef($1::regclass)")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| failed(Dialect::Postgres, what, e))?;
        if now.as_deref() != Some(def) {
            return Err(TenantError::permanent(
                FailureKind::SchemaMismatch,
                format!("the {kind} {name} was not built again as it was ({def})"),
            ));
        }
    }
    let mut sql = format!("DROP TABLE {saved};");
    if mode == Quiet::Replica {
        sql += "SET session_replication_role = DEFAULT;";
    }
    run(conn, what, sql).await
}
