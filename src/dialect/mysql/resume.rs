//! A MySQL migration resumed statement by statement. MySQL commits each
//! DDL statement on its own, so an attempt that stops in the middle (a
//! kill, a lost connection) leaves some statements of a file done. The
//! migration's history row says how far it got: it is written unfinished
//! before the first statement (as sqlx does on MySQL) and its
//! `execution_time` holds the progress while `success` is false —
//! `-2 - 2·n` when statements `0..n` ended and statement `n` has not
//! started, `-3 - 2·n` when statement `n` may have started (`Progress`);
//! sqlx's own `-1` stays "dirty, a person decides". Each statement's end
//! and the next one's start are one write (a row change commits with it, in
//! its transaction), so a file of one statement that can be judged (below)
//! costs what sqlx's bookkeeping costs: a row before and its update after.
//! (When the history table does not roll back — created by hand as MyISAM
//! — a row change's end is written after it commits, and a kill between
//! them leaves the tenant dirty.) The next attempt
//! skips what ended and decides from the database what became of the
//! statement that may have started (`Judge`):
//! - `INSERT`, `UPDATE`, `DELETE`: they commit with the progress that
//!   follows them, so one still marked started did not commit: again
//!   (unless the tenant has tables that do not roll back: nobody can tell);
//! - `CREATE TABLE` / `CREATE INDEX` / `ALTER TABLE … ADD COLUMN`: the table,
//!   index or column is there (done) or not (again); `DROP TABLE` and
//!   `ALTER TABLE … DROP COLUMN` the other way round (MySQL's DDL is atomic,
//!   and the server finishes a statement whose client died before it lets
//!   go of the tenant's lock, so what is there is final);
//! - `IF [NOT] EXISTS` (as parsed), `CREATE OR REPLACE`, `SET`, `USE`: again;
//! - anything else cannot be told: it is marked started only just before
//!   it starts (a write of its own), and a kill while it ran leaves the
//!   tenant dirty, the message naming the file, the statement and what to
//!   check.
//!
//! A resumed attempt runs again the skipped `SET` and `USE` statements (the
//! session is new). A file whose statements a resume cannot stand between
//! (`LOCK TABLES`, its own transactions, `SET autocommit`, user variables,
//! `LAST_INSERT_ID()`, temporary tables) runs as sqlx runs it: its history
//! row written dirty (`-1`) first, so a kill leaves it dirty.
//!
//! Earlier fleetmig versions recorded each statement in a table of the
//! tenant's, `_fleetmig_statements`; a tenant one of them left part-way is
//! carried over to the history row when it is next run (`legacy_progress`).

use sqlparser::ast::{AlterTableOperation, ObjectName, ObjectType, Statement as Ast};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use sqlx::Executor;

use super::MySqlSession;
use crate::dialect::resume::{Earlier, InFlight};
use crate::error::TenantError;

/// How far an unfinished migration got, as its history row's
/// `execution_time` says while `success` is false.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Progress {
    /// Statements `0..next` ended.
    pub next: usize,
    /// Statement `next` may have started.
    pub started: bool,
}

impl Progress {
    pub fn encode(self) -> i64 {
        -2 - 2 * self.next as i64 - self.started as i64
    }

    /// The progress an `execution_time` of an unfinished row holds; None
    /// for sqlx's dirty `-1` (or anything else).
    pub fn decode(execution_time: i64) -> Option<Progress> {
        if execution_time > -2 {
            return None;
        }
        let k = -2 - execution_time;
        Some(Progress {
            next: usize::try_from(k / 2).ok()?,
            started: k % 2 == 1,
        })
    }
}

/// What a statement that may have been running when an attempt stopped
/// became, and how that is found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Judge {
    /// Running it again is right whatever became of it.
    Again,
    /// A row change: it committed with the progress after it, or not at all
    /// (when every table of the tenant rolls back).
    Rows,
    /// Done when `column` / `index` / the table (both None) of
    /// `[database.]table` is there (`there_when_done`) or is not.
    Exists {
        database: Option<String>,
        table: String,
        column: Option<String>,
        index: Option<String>,
        there_when_done: bool,
    },
    /// Nobody can tell from the database.
    Unknown,
}

impl Judge {
    /// How a kill while `sql` ran is judged (a file's statements are
    /// judged once per process: `apply::planned`).
    pub fn of(sql: &str) -> Judge {
        if session(sql) {
            return Judge::Again;
        }
        let exists = |name: &ObjectName, column: Option<&str>, index: Option<&str>, done| {
            parts(name).map_or(Judge::Unknown, |(database, table)| Judge::Exists {
                database,
                table,
                column: column.map(str::to_string),
                index: index.map(str::to_string),
                there_when_done: done,
            })
        };
        let parsed = Parser::parse_sql(&MySqlDialect {}, sql).ok();
        match parsed.as_deref() {
            Some([Ast::Insert(_) | Ast::Update(_) | Ast::Delete(_)]) => Judge::Rows,
            Some([Ast::CreateTable(ct)]) if ct.if_not_exists || ct.or_replace => Judge::Again,
            Some([Ast::CreateTable(ct)]) => exists(&ct.name, None, None, true),
            Some([Ast::CreateIndex(ci)]) if ci.if_not_exists => Judge::Again,
            Some([Ast::CreateIndex(ci)]) => match ci.name.as_ref().and_then(parts) {
                Some((_, i)) => exists(&ci.table_name, None, Some(&i), true),
                None => Judge::Unknown,
            },
            Some(
                [
                    Ast::Drop {
                        object_type: ObjectType::Table,
                        if_exists: true,
                        ..
                    },
                ],
            ) => Judge::Again,
            Some(
                [
                    Ast::Drop {
                        object_type: ObjectType::Table,
                        names,
                        ..
                    },
                ],
            ) if names.len() == 1 => exists(&names[0], None, None, false),
            Some([Ast::AlterTable(at)]) if changes(&at.operations).len() == 1 => {
                match changes(&at.operations)[0] {
                    AlterTableOperation::AddColumn {
                        if_not_exists: true,
                        ..
                    } => Judge::Again,
                    AlterTableOperation::AddColumn { column_def, .. } => {
                        exists(&at.name, Some(&column_def.name.value), None, true)
                    }
                    AlterTableOperation::DropColumn {
                        if_exists: true, ..
                    } => Judge::Again,
                    AlterTableOperation::DropColumn { column_names, .. }
                        if column_names.len() == 1 =>
                    {
                        exists(&at.name, Some(&column_names[0].value), None, false)
                    }
                    _ => Judge::Unknown,
                }
            }
            _ => Judge::Unknown,
        }
    }
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

/// A statement that switches the session's database (`USE`, also inside a
/// conditional comment).
pub(super) fn switches_database(sql: &str) -> bool {
    words(sql).first().is_some_and(|w| w == "USE")
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
    /// The table of statements earlier fleetmig versions kept in the
    /// tenant, qualified with its database.
    fn statements_table(&self) -> String {
        format!(
            "{}.`_fleetmig_statements`",
            super::quote_ident(&self.database)
        )
    }

    /// The lowest version an earlier fleetmig left part-applied in
    /// `_fleetmig_statements`, when the table is there.
    pub(super) async fn legacy_interrupted(&mut self) -> Result<Option<i64>, TenantError> {
        if !self.has_statements_table().await? {
            return Ok(None);
        }
        let t = self.statements_table();
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT MIN(version) FROM {t}")))
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| self.err(e))
    }

    /// Whether an earlier fleetmig recorded statements of version `v` in
    /// `_fleetmig_statements` (it left `v` part-applied).
    pub(super) async fn legacy_recorded(&mut self, v: i64) -> Result<bool, TenantError> {
        if !self.has_statements_table().await? {
            return Ok(false);
        }
        let t = self.statements_table();
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {t} WHERE version = ?"
        )))
        .bind(v)
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| self.err(e))?;
        Ok(n > 0)
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

    /// How far an earlier fleetmig got with `step` by the statements it
    /// recorded in `_fleetmig_statements` (None: nothing of it), carried
    /// over to the migration's history row in one transaction with the
    /// records' removal; an error when the file changed since.
    pub(super) async fn legacy_progress(
        &mut self,
        step: crate::dialect::Step<'_>,
        statements: &[crate::migration::split::Statement],
    ) -> Result<Option<Progress>, TenantError> {
        if !self.has_statements_table().await? {
            return Ok(None);
        }
        let v = step.migration.version;
        let hashes: Vec<String> = statements
            .iter()
            .map(|st| crate::dialect::resume::hash(&st.sql))
            .collect();
        let t = self.statements_table();
        let rows: Vec<(i32, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT statement, sql_hash, CAST(finished_at IS NOT NULL AS SIGNED) FROM {t} \
             WHERE version = ?"
        )))
        .bind(v)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| self.err(e))?;
        let earlier = crate::dialect::resume::earlier_from(
            v,
            &hashes,
            rows.into_iter().map(|(n, h, e)| (n, h, e == 1)),
        )?;
        if earlier.iter().all(|e| *e == Earlier::None) {
            return Ok(None);
        }
        let next = earlier
            .iter()
            .position(|e| *e != Earlier::Ended)
            .unwrap_or(earlier.len());
        let p = Progress {
            next,
            started: earlier.get(next) == Some(&Earlier::Running),
        };
        let table = self.table.clone();
        let carried = async {
            self.conn.execute("START TRANSACTION").await?;
            table
                .insert(&mut self.conn, step, false, p.encode())
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {t} WHERE version = ?"
            )))
            .bind(v)
            .execute(&mut self.conn)
            .await?;
            self.conn.execute("COMMIT").await.map(|_| ())
        }
        .await;
        if let Err(e) = carried {
            let _ = self.conn.execute("ROLLBACK").await;
            return Err(self.err(e).at_version(v));
        }
        self.drop_statements_if_empty().await;
        Ok(Some(p))
    }

    /// Forgets what an earlier fleetmig recorded of version `v` (it was
    /// reverted or skipped), and the table when nothing else is in it.
    pub(super) async fn forget_statements(&mut self, v: i64) {
        if self.statements_known != Some(true) {
            return;
        }
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

    /// Whether the tenant's database has a table that does not roll back
    /// (MyISAM, Aria, MEMORY …): a row change there may have taken effect
    /// though its transaction did not commit.
    pub(super) async fn non_transactional_tables(&mut self) -> Result<bool, TenantError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables t \
             JOIN information_schema.engines e ON e.engine = t.engine \
             WHERE t.table_schema IN (?, DATABASE()) AND t.table_type = 'BASE TABLE' \
             AND e.transactions <> 'YES'",
        )
        .bind(&self.database)
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Whether table `table` of `database` (the tenant's when None) is
    /// there, or its column `column`, or its index `index`.
    async fn has(
        &mut self,
        database: Option<&str>,
        table: &str,
        column: Option<&str>,
        index: Option<&str>,
    ) -> Result<bool, TenantError> {
        // the name is bound, not quoted into the text (MySQL reads a
        // backslash in a string literal as an escape)
        let (from, what, name) = match (column, index) {
            (Some(c), _) => ("columns", " AND column_name = ?", Some(c)),
            (_, Some(i)) => ("statistics", " AND index_name = ?", Some(i)),
            _ => ("tables", "", None),
        };
        // unqualified: the database the session is in (a replayed `USE`)
        let sql = format!(
            "SELECT COUNT(*) FROM information_schema.{from} \
             WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?{what}"
        );
        let db = database.map(str::to_string);
        let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(db)
            .bind(table);
        if let Some(name) = name {
            q = q.bind(name);
        }
        let n: i64 = q.fetch_one(&mut self.conn).await.map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// What became of `sql`, which may have been running when an attempt
    /// stopped.
    pub(super) async fn in_flight(&mut self, sql: &str) -> Result<InFlight, TenantError> {
        let unknown = || {
            InFlight::Unknown(
                "it was running when the attempt stopped and fleetmig cannot tell from the \
                 database whether it took effect"
                    .into(),
            )
        };
        Ok(match Judge::of(sql) {
            Judge::Again => InFlight::Again { drop: None },
            // committed with its progress, or not at all (InnoDB)
            Judge::Rows => match self.non_transactional_tables().await? {
                false => InFlight::Again { drop: None },
                true => unknown(),
            },
            Judge::Exists {
                database,
                table,
                column,
                index,
                there_when_done,
            } => {
                let there = self
                    .has(
                        database.as_deref(),
                        &table,
                        column.as_deref(),
                        index.as_deref(),
                    )
                    .await?;
                match there == there_when_done {
                    true => InFlight::Done,
                    false => InFlight::Again { drop: None },
                }
            }
            Judge::Unknown => unknown(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_read_back_as_written_and_never_as_sqlx_dirty() {
        for next in 0..50 {
            for started in [false, true] {
                let p = Progress { next, started };
                assert!(p.encode() <= -2, "{p:?}");
                assert_eq!(Progress::decode(p.encode()), Some(p));
            }
        }
        assert_eq!(Progress::decode(-1), None, "sqlx's dirty");
        assert_eq!(Progress::decode(0), None);
        assert_eq!(Progress::decode(123_456), None, "a finished time");
    }

    #[test]
    fn statements_are_judged_from_the_database_where_it_can_tell() {
        assert_eq!(Judge::of("SET NAMES utf8mb4"), Judge::Again);
        assert_eq!(Judge::of("INSERT INTO t VALUES (1)"), Judge::Rows);
        assert_eq!(
            Judge::of("CREATE TABLE IF NOT EXISTS t (x INT)"),
            Judge::Again
        );
        assert_eq!(
            Judge::of("ALTER TABLE d.t ADD COLUMN c INT"),
            Judge::Exists {
                database: Some("d".into()),
                table: "t".into(),
                column: Some("c".into()),
                index: None,
                there_when_done: true
            }
        );
        assert_eq!(
            Judge::of("CREATE INDEX i ON t (x)"),
            Judge::Exists {
                database: None,
                table: "t".into(),
                column: None,
                index: Some("i".into()),
                there_when_done: true
            }
        );
        assert!(matches!(
            Judge::of("DROP TABLE t"),
            Judge::Exists {
                there_when_done: false,
                ..
            }
        ));
        assert_eq!(Judge::of("DO SLEEP(1)"), Judge::Unknown);
        assert_eq!(
            Judge::of("ALTER TABLE t ADD COLUMN a INT, ADD COLUMN b INT"),
            Judge::Unknown
        );
        assert_eq!(Judge::of("ALTER TABLE t MODIFY x BIGINT"), Judge::Unknown);
    }
}
