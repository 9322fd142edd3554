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
//! - `IF [NOT] EXISTS` (as parsed), `CREATE OR REPLACE`, `SET`, `USE`: again;
//! - anything else cannot be told: the tenant is dirty, and the message
//!   names the file, the statement and what to check.
//!
//! A resumed attempt runs again the skipped `SET` and `USE` statements (the
//! session is new). A file whose statements a resume cannot stand between
//! (`LOCK TABLES`, its own transactions, `SET autocommit`, user variables,
//! `LAST_INSERT_ID()`, temporary tables) runs as before, without records:
//! its history row written dirty first, so a kill leaves it dirty.

use crate::error::FailureKind;
use sqlparser::ast::{AlterTableOperation, ObjectName, ObjectType, Statement as Ast};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use sqlx::Executor;

use super::MySqlSession;
use crate::dialect::resume::{Earlier, InFlight};
use crate::error::TenantError;

/// Whether `sql` only changes rows (and so can commit with its record).
pub(super) fn rows_only(sql: &str) -> bool {
    matches!(
        Parser::parse_sql(&MySqlDialect {}, sql).as_deref(),
        Ok([Ast::Insert(_) | Ast::Update(_) | Ast::Delete(_)])
    )
}

/// The words of `sql` in capitals, a conditional comment's body read as
/// code (`/*!40101 SET NAMES utf8 */`).
fn words(sql: &str) -> Vec<String> {
    let body = sql
        .trim()
        .strip_prefix("/*!")
        .or_else(|| sql.trim().strip_prefix("/*M!"))
        .map(|b| {
            b.trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_end_matches("*/")
        })
        .unwrap_or(sql);
    body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_uppercase())
        .collect()
}

/// A statement that sets what the session is (`SET` of system variables,
/// `SET NAMES`, `USE`): a resumed attempt, on a new session, runs it again.
pub(super) fn session(sql: &str) -> bool {
    matches!(words(sql).first().map(String::as_str), Some("SET" | "USE"))
}

/// Why statements of this file cannot be resumed one by one, if they
/// cannot: a lock or a transaction of its own spans statements, or state
/// a new session would not have (user variables, LAST_INSERT_ID(),
/// temporary tables).
pub(super) fn unresumable(statements: &[crate::migration::split::Statement]) -> Option<String> {
    for st in statements {
        let w = words(&st.sql);
        let first = w.first().map(String::as_str).unwrap_or("");
        let why = match first {
            "LOCK" | "UNLOCK" => Some("LOCK TABLES"),
            "START" | "BEGIN" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "XA" => {
                Some("a transaction of its own")
            }
            "FLUSH" if w.iter().any(|x| x == "LOCK") => Some("FLUSH … WITH READ LOCK"),
            "SET" if w.iter().any(|x| x == "AUTOCOMMIT") => Some("SET autocommit"),
            "CREATE" if w.get(1).is_some_and(|x| x == "TEMPORARY") => Some("a temporary table"),
            _ => None,
        };
        let why = why.or_else(|| {
            let b = st.sql.as_bytes();
            let user_var = (0..b.len()).any(|i| {
                b[i] == b'@'
                    && (i == 0 || b[i - 1] != b'@')
                    && b.get(i + 1).is_some_and(|c| *c != b'@')
            });
            (user_var || st.sql.to_ascii_uppercase().contains("LAST_INSERT_ID"))
                .then_some("session variables")
        });
        if let Some(why) = why {
            return Some(format!("{why} (line {})", st.line));
        }
    }
    None
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
    /// The tenant's table of statements, qualified with its database (a
    /// `USE` in a migration does not send the records elsewhere).
    fn statements_table(&self) -> String {
        format!(
            "{}.`_fleetmig_statements`",
            super::quote_ident(&self.database)
        )
    }

    /// The version an interrupted attempt left part-applied, if any.
    pub(super) async fn interrupted_version(&mut self) -> Result<Option<i64>, TenantError> {
        if !self.has_statements_table().await? {
            return Ok(None);
        }
        let t = self.statements_table();
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT MIN(version) FROM {t}")))
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| self.err(e))
    }

    async fn has_statements_table(&mut self) -> Result<bool, TenantError> {
        if let Some(known) = self.statements_known {
            return Ok(known);
        }
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = ? AND table_name = '_fleetmig_statements'",
        )
        .bind(&self.database)
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| self.err(e))?;
        self.statements_known = Some(n > 0);
        Ok(n > 0)
    }

    /// What earlier attempts did with the statements of version `v`
    /// (hashes in `hashes`); an error when the file changed since.
    pub(super) async fn earlier(
        &mut self,
        v: i64,
        hashes: &[String],
    ) -> Result<Vec<Earlier>, TenantError> {
        if !self.has_statements_table().await? {
            return Ok(vec![Earlier::None; hashes.len()]);
        }
        let t = self.statements_table();
        let rows: Vec<(i32, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT statement, sql_hash, CAST(finished_at IS NOT NULL AS SIGNED) FROM {t} \
             WHERE version = ?"
        )))
        .bind(v)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| self.err(e))?;
        crate::dialect::resume::earlier_from(
            v,
            hashes,
            rows.into_iter().map(|(n, h, e)| (n, h, e == 1)),
        )
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
        let t = self.statements_table();
        let sql = if ended {
            format!(
                "UPDATE {t} SET finished_at = NOW(6) \
                 WHERE version = ? AND statement = ? AND sql_hash = ?"
            )
        } else {
            format!(
                "INSERT INTO {t} (version, statement, sql_hash) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE started_at = NOW(6), finished_at = NULL"
            )
        };
        let done = self.bind_statement(&sql, v, i, hash).await;
        if ended && matches!(done, Ok(n) if n != 1) {
            return Err(TenantError::permanent(
                FailureKind::StatementRecord,
                format!(
                    "migration {v}: statement {} ran but its record in _fleetmig_statements was gone",
                    i + 1
                ),
            )
            .at_version(v));
        }
        if let Err(e) = done {
            // ER_NO_SUCH_TABLE: the tenant's first statement recorded
            let missing = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42S02");
            if !missing {
                return Err(self.err(e).at_version(v));
            }
            let create = format!(
                "CREATE TABLE IF NOT EXISTS {t} (version BIGINT NOT NULL, statement INT NOT NULL, \
                 sql_hash VARCHAR(32) NOT NULL, started_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
                 finished_at DATETIME(6) NULL, PRIMARY KEY (version, statement)) ENGINE=InnoDB"
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(&mut self.conn)
                .await
                .map_err(|e| self.err(e).at_version(v))?;
            self.statements_known = Some(true);
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
    ) -> Result<u64, sqlx::Error> {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(v)
            .bind(i as i32)
            .bind(hash)
            .execute(&mut self.conn)
            .await
            .map(|r| r.rows_affected())
    }

    /// Forgets the statements of version `v` (its history row is written,
    /// clean or dirty, or it was reverted or skipped), and the table when
    /// nothing else is in it.
    pub(super) async fn forget_statements(&mut self, v: i64) {
        let t = self.statements_table();
        let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {t} WHERE version = ?"
        )))
        .bind(v)
        .execute(&mut self.conn)
        .await;
        if deleted.is_ok() {
            self.drop_statements_if_empty().await;
        }
    }

    /// Drops the table of statements when nothing is in it.
    pub(super) async fn drop_statements_if_empty(&mut self) {
        let t = self.statements_table();
        let left: Result<i64, _> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {t}")))
                .fetch_one(&mut self.conn)
                .await;
        if left.is_ok_and(|n| n == 0) {
            let dropped = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {t}")))
                .execute(&mut self.conn)
                .await;
            if dropped.is_ok() {
                self.statements_known = Some(false);
            }
        }
    }

    /// Writes version `v`'s history row and forgets its statements in one
    /// transaction: a kill between them cannot leave statements marked
    /// ended for a version a revert may take back. The table stays for the
    /// session's next migration; `close` drops it when empty.
    pub(super) async fn record_applied(
        &mut self,
        step: crate::dialect::Step<'_>,
        nanos: i64,
    ) -> Result<(), TenantError> {
        let v = step.migration.version;
        let t = self.statements_table();
        self.conn
            .execute("START TRANSACTION")
            .await
            .map_err(|e| self.err(e).at_version(v))?;
        let table = self.table.clone();
        if let Err(e) = table.insert(&mut self.conn, step, true, nanos).await {
            let _ = self.conn.execute("ROLLBACK").await;
            return Err(self.err(e).at_version(v));
        }
        // (no table: nothing was recorded; the row goes in all the same)
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {t} WHERE version = ?"
        )))
        .bind(v)
        .execute(&mut self.conn)
        .await;
        self.conn
            .execute("COMMIT")
            .await
            .map_err(|e| self.err(e).at_version(v))?;
        Ok(())
    }

    /// Forgets statement `i` of version `v` (the server refused it: nothing
    /// of it took effect).
    pub(super) async fn forget_statement(&mut self, v: i64, i: usize) {
        let t = self.statements_table();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {t} WHERE version = ? AND statement = ?"
        )))
        .bind(v)
        .bind(i as i32)
        .execute(&mut self.conn)
        .await;
    }

    /// Whether the tenant's database has a table that does not roll back
    /// (MyISAM, Aria, MEMORY …): a row change there may have taken effect
    /// though its transaction did not commit.
    async fn non_transactional_tables(&mut self) -> Result<bool, TenantError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables t \
             JOIN information_schema.engines e ON e.engine = t.engine \
             WHERE t.table_schema = ? AND t.table_type = 'BASE TABLE' AND e.transactions <> 'YES'",
        )
        .bind(&self.database)
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| self.err(e))?;
        Ok(n > 0)
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
             WHERE table_schema = ? AND table_name = ?{what}"
        );
        let db = db.unwrap_or_else(|| self.database.clone());
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
        let again = || InFlight::Again { drop: None };
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
        if session(sql) {
            return Ok(again());
        }
        let parsed = Parser::parse_sql(&MySqlDialect {}, sql).ok();
        Ok(match parsed.as_deref() {
            // committed with its record, or not at all (InnoDB)
            Some([Ast::Insert(_) | Ast::Update(_) | Ast::Delete(_)]) => {
                match self.non_transactional_tables().await? {
                    false => again(),
                    true => unknown(),
                }
            }
            Some([Ast::CreateTable(ct)]) if ct.if_not_exists || ct.or_replace => again(),
            Some([Ast::CreateTable(ct)]) => decided(self.has(&ct.name, None, None).await?, true),
            Some([Ast::CreateIndex(ci)]) if ci.if_not_exists => again(),
            Some([Ast::CreateIndex(ci)]) => match ci.name.as_ref().and_then(parts) {
                Some((_, i)) => decided(self.has(&ci.table_name, None, Some(&i)).await?, true),
                None => unknown(),
            },
            Some(
                [
                    Ast::Drop {
                        object_type: ObjectType::Table,
                        if_exists: true,
                        ..
                    },
                ],
            ) => again(),
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
                    AlterTableOperation::AddColumn {
                        if_not_exists: true,
                        ..
                    } => again(),
                    AlterTableOperation::AddColumn { column_def, .. } => decided(
                        self.has(&at.name, Some(&column_def.name.value), None)
                            .await?,
                        true,
                    ),
                    AlterTableOperation::DropColumn {
                        if_exists: true, ..
                    } => again(),
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
