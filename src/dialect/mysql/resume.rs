//! A MySQL migration resumed statement by statement. MySQL commits each
//! DDL statement on its own, so an attempt that stops in the middle (a
//! kill, a lost connection) leaves some statements of a file done. As for
//! PostgreSQL's no-transaction files (`dialect/resume.rs`), each statement
//! is recorded in the tenant's `_fleetmig_statements` as it starts and as it
//! ends, and the next attempt skips what ended and decides from the
//! database what became of the statement in flight:
//! - `INSERT`, `UPDATE`, `DELETE`, `REPLACE`: they run in a transaction
//!   with their "ended" record, so one still marked running did not commit:
//!   again;
//! - `CREATE TABLE` / `CREATE INDEX` / `ALTER TABLE … ADD COLUMN`: the table,
//!   index or column is there (done) or not (again); `DROP TABLE` and
//!   `ALTER TABLE … DROP COLUMN` the other way round (MySQL's DDL is atomic,
//!   and the server finishes a statement whose client died before it lets
//!   go of the tenant's lock, so what is there is final);
//! - `IF [NOT] EXISTS` statements: again;
//! - anything else cannot be told: the tenant is dirty, and the message
//!   names the file, the statement and what to check.

use sqlparser::ast::{AlterTableOperation, ObjectName, ObjectType, Statement as Ast};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::MySqlSession;
use crate::dialect::resume::{Earlier, InFlight};
use crate::error::TenantError;

const TABLE: &str = "`_fleetmig_statements`";

/// Whether `sql` only changes rows (and so can commit with its record).
pub(super) fn rows_only(sql: &str) -> bool {
    matches!(
        Parser::parse_sql(&MySqlDialect {}, sql).as_deref(),
        Ok([Ast::Insert(_) | Ast::Update(_) | Ast::Delete(_)])
    )
}

/// The operations of an ALTER TABLE that change the table (`ALGORITHM=`
/// and `LOCK=` only say how).
fn changes(ops: &[AlterTableOperation]) -> Vec<&AlterTableOperation> {
    ops.iter()
        .filter(|o| {
            !matches!(
                o,
                AlterTableOperation::Algorithm { .. } | AlterTableOperation::Lock { .. }
            )
        })
        .collect()
}

/// `[database.]name` as (database or None for the tenant's, name).
fn parts(name: &ObjectName) -> Option<(Option<String>, String)> {
    let ids: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(|i| i.value.clone()))
        .collect::<Option<_>>()?;
    match ids.as_slice() {
        [t] => Some((None, t.clone())),
        [d, t] => Some((Some(d.clone()), t.clone())),
        _ => None,
    }
}

impl MySqlSession {
    /// What earlier attempts did with the statements of version `v`
    /// (hashes in `hashes`); an error when the file changed since.
    pub(super) async fn earlier(
        &mut self,
        v: i64,
        hashes: &[String],
    ) -> Result<Vec<Earlier>, TenantError> {
        let mut out = vec![Earlier::None; hashes.len()];
        let there: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = '_fleetmig_statements'",
        )
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| self.err(e))?;
        if there == 0 {
            return Ok(out);
        }
        let rows: Vec<(i32, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT statement, sql_hash, CAST(finished_at IS NOT NULL AS SIGNED) FROM {TABLE} \
             WHERE version = ?"
        )))
        .bind(v)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| self.err(e))?;
        for (n, h, ended) in rows {
            let i = n as usize;
            if hashes.get(i) != Some(&h) {
                return Err(TenantError::permanent(
                    "checksum_mismatch",
                    format!(
                        "migration {v}: statement {} changed since an interrupted attempt ran part of \
                         it; put the file back as it was, or finish the migration by hand and delete \
                         its rows from _fleetmig_statements",
                        i + 1
                    ),
                )
                .at_version(v));
            }
            out[i] = if ended == 1 {
                Earlier::Ended
            } else {
                Earlier::Running
            };
        }
        Ok(out)
    }

    /// Records statement `i` of version `v` as started (or, `ended`, as
    /// ended), creating the table on first use.
    pub(super) async fn record_statement(
        &mut self,
        v: i64,
        i: usize,
        hash: &str,
        ended: bool,
    ) -> Result<(), TenantError> {
        let sql = if ended {
            format!(
                "UPDATE {TABLE} SET finished_at = NOW(6) \
                 WHERE version = ? AND statement = ? AND sql_hash = ?"
            )
        } else {
            format!(
                "INSERT INTO {TABLE} (version, statement, sql_hash) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE started_at = NOW(6), finished_at = NULL"
            )
        };
        if let Err(e) = self.bind_statement(&sql, v, i, hash).await {
            // ER_NO_SUCH_TABLE: the tenant's first statement recorded
            let missing = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42S02");
            if !missing {
                return Err(self.err(e).at_version(v));
            }
            let create = format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (version BIGINT NOT NULL, statement INT NOT NULL, \
                 sql_hash VARCHAR(32) NOT NULL, started_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
                 finished_at DATETIME(6) NULL, PRIMARY KEY (version, statement)) ENGINE=InnoDB"
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(&mut self.conn)
                .await
                .map_err(|e| self.err(e).at_version(v))?;
            self.bind_statement(&sql, v, i, hash)
                .await
                .map_err(|e| self.err(e).at_version(v))?;
        }
        Ok(())
    }

    async fn bind_statement(
        &mut self,
        sql: &str,
        v: i64,
        i: usize,
        hash: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(v)
            .bind(i as i32)
            .bind(hash)
            .execute(&mut self.conn)
            .await
            .map(|_| ())
    }

    /// Forgets the statements of version `v` (its history row is written),
    /// and the table when nothing else is in it.
    pub(super) async fn forget_statements(&mut self, v: i64) {
        let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {TABLE} WHERE version = ?"
        )))
        .bind(v)
        .execute(&mut self.conn)
        .await;
        if deleted.is_err() {
            return; // no table: nothing was recorded
        }
        let left: Result<i64, _> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {TABLE}")))
                .fetch_one(&mut self.conn)
                .await;
        if left.is_ok_and(|n| n == 0) {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {TABLE}")))
                .execute(&mut self.conn)
                .await;
        }
    }

    /// Forgets statement `i` of version `v` (the server refused it: nothing
    /// of it took effect).
    pub(super) async fn forget_statement(&mut self, v: i64, i: usize) {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {TABLE} WHERE version = ? AND statement = ?"
        )))
        .bind(v)
        .bind(i as i32)
        .execute(&mut self.conn)
        .await;
    }

    /// Whether table `name` (of the tenant's database unless qualified)
    /// has column `column` (any column when None).
    async fn has(
        &mut self,
        name: &ObjectName,
        column: Option<&str>,
        index: Option<&str>,
    ) -> Result<Option<bool>, TenantError> {
        let Some((db, table)) = parts(name) else {
            return Ok(None);
        };
        let (from, what) = match (column, index) {
            (Some(c), _) => (
                "columns",
                format!(" AND column_name = '{}'", c.replace('\'', "''")),
            ),
            (_, Some(i)) => (
                "statistics",
                format!(" AND index_name = '{}'", i.replace('\'', "''")),
            ),
            _ => ("tables", String::new()),
        };
        let sql = format!(
            "SELECT COUNT(*) FROM information_schema.{from} \
             WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?{what}"
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(db)
            .bind(table)
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(Some(n > 0))
    }

    /// What became of `sql`, running when an attempt stopped.
    pub(super) async fn in_flight(&mut self, sql: &str) -> Result<InFlight, TenantError> {
        let again = InFlight::Again { drop: None };
        let upper = sql.to_ascii_uppercase();
        if rows_only(sql) || upper.contains("IF NOT EXISTS") || upper.contains("IF EXISTS") {
            return Ok(again);
        }
        let unknown = || {
            InFlight::Unknown(
                "it was running when the attempt stopped and fleetmig cannot tell from the \
                 database whether it took effect"
                    .into(),
            )
        };
        let decided = |there: Option<bool>, done_when_there: bool| match there {
            Some(t) if t == done_when_there => InFlight::Done,
            Some(_) => InFlight::Again { drop: None },
            None => unknown(),
        };
        let parsed = Parser::parse_sql(&MySqlDialect {}, sql).ok();
        Ok(match parsed.as_deref() {
            Some([Ast::CreateTable(ct)]) => decided(self.has(&ct.name, None, None).await?, true),
            Some([Ast::CreateIndex(ci)]) => match &ci.name {
                Some(n) => {
                    let index = parts(n).map(|(_, i)| i);
                    match index {
                        Some(i) => decided(self.has(&ci.table_name, None, Some(&i)).await?, true),
                        None => unknown(),
                    }
                }
                None => unknown(),
            },
            Some(
                [
                    Ast::Drop {
                        object_type: ObjectType::Table,
                        names,
                        ..
                    },
                ],
            ) if names.len() == 1 => decided(self.has(&names[0], None, None).await?, false),
            Some([Ast::AlterTable(at)]) if changes(&at.operations).len() == 1 => {
                match changes(&at.operations)[0] {
                    AlterTableOperation::AddColumn { column_def, .. } => decided(
                        self.has(&at.name, Some(&column_def.name.value), None)
                            .await?,
                        true,
                    ),
                    AlterTableOperation::DropColumn { column_names, .. }
                        if column_names.len() == 1 =>
                    {
                        decided(
                            self.has(&at.name, Some(&column_names[0].value), None)
                                .await?,
                            false,
                        )
                    }
                    _ => unknown(),
                }
            }
            _ => unknown(),
        })
    }
}
