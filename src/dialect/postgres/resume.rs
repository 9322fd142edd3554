//! A `-- no-transaction` migration resumed statement by statement. Each
//! statement commits on its own (that is what the directive is for), so an
//! attempt that stops in the middle (a kill, a lost connection) leaves some
//! of them done. Every statement is recorded in the tenant as it starts and
//! as it ends (`_fleetmig_statements`: fleetmig's own table, like the
//! histories never copied and never part of a fingerprint — not extra rows
//! of `_sqlx_migrations`, which sqlx reads); the next attempt skips the
//! statements that ended, and decides from the database what became of the
//! one that was running:
//! - `CREATE INDEX CONCURRENTLY`: an index that is there and VALID was
//!   built (done); an INVALID one is dropped and built again; none: again;
//! - a statement that can run twice (`IF [NOT] EXISTS`, `VACUUM`,
//!   `ANALYZE`, `REINDEX`): again;
//! - anything else cannot be told: the tenant is dirty, and the message
//!   names the file, the statement and what to check.
//!
//! The rows of a version go once its history row is written.
//!
//! A file every statement of which is a named `CREATE INDEX CONCURRENTLY`
//! (the usual `.postgres.sql` variant) records nothing: the catalogue is its
//! record. On a tenant an attempt may have reached, each index is judged as
//! above before its statement runs; `interrupted_version` finds a stopped
//! build by its INVALID index. The table of statements, made and dropped
//! for every tenant, cost a quarter of a schema fleet's time (four commits
//! and two catalogue changes a tenant, measured against psql).

use sqlparser::ast::Statement as Ast;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::PgSession;
use crate::dialect::memo::Memo;
use crate::dialect::resume::{Earlier, InFlight};
use crate::dialect::{Step, quote_ident};
use crate::error::TenantError;
use crate::migration::split::split_statements;

/// The index `sql` builds when it is one `CREATE INDEX CONCURRENTLY` with a
/// name: a statement whose outcome the catalogue tells (`in_flight`). The
/// index goes into its table's schema, so a table named with its schema
/// gives the index that schema (looked up by the search path, the index
/// of a table elsewhere would never be found, and a build that finished
/// would run again).
/// Parsed once per statement text per process (`memo.rs`).
pub(super) fn concurrent_index(sql: &str) -> Option<String> {
    static PARSED: Memo<Option<String>> = Memo::new(4096);
    PARSED.get(sql, || parse_concurrent_index(sql))
}

fn parse_concurrent_index(sql: &str) -> Option<String> {
    let parsed = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Ast::CreateIndex(ci)] = parsed.as_slice() else {
        return None;
    };
    let name = ci.name.as_ref().filter(|_| ci.concurrently)?;
    match (name.0.as_slice(), ci.table_name.0.as_slice()) {
        ([index], [_]) => Some(index.to_string()),
        ([index], [schema, _]) => Some(format!("{schema}.{index}")),
        _ => None,
    }
}

/// The indexes of a no-transaction script every statement of which is a
/// named `CREATE INDEX CONCURRENTLY`: the catalogue is its record (an index
/// there and VALID was built; INVALID, a build stopped; none, not started),
/// so its statements are recorded nowhere else. `None` for any other script.
/// Worked out once per script per process (`memo.rs`).
pub(super) fn judged_indexes(sql: &str) -> Option<Vec<String>> {
    static JUDGED: Memo<Option<Vec<String>>> = Memo::new(1024);
    JUDGED.get(sql, || {
        let statements = split_statements(sql);
        if statements.is_empty() {
            return None;
        }
        statements
            .iter()
            .map(|st| concurrent_index(&st.sql))
            .collect()
    })
}

impl PgSession {
    /// The tenant's table of statements, qualified like its history.
    fn statements_table(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.\"_fleetmig_statements\"", quote_ident(s)),
            None => "\"_fleetmig_statements\"".to_string(),
        }
    }

    /// What earlier attempts did with the statements of version `v`
    /// (hashes in `hashes`); an error when the file changed since.
    pub(in crate::dialect) async fn earlier(
        &mut self,
        v: i64,
        hashes: &[String],
    ) -> Result<Vec<Earlier>, TenantError> {
        let t = self.statements_table();
        let there: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&t)
            .fetch_one(self.conn())
            .await
            .map_err(|e| self.err(e))?;
        if !there {
            return Ok(vec![Earlier::None; hashes.len()]);
        }
        self.statements_made = true;
        let rows: Vec<(i32, String, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT statement, sql_hash, finished_at IS NOT NULL FROM {t} WHERE version = $1"
        )))
        .bind(v)
        .fetch_all(self.conn())
        .await
        .map_err(|e| self.err(e))?;
        crate::dialect::resume::earlier_from(v, hashes, rows)
    }

    /// Records statement `i` of version `v` as started (or, `ended`, as
    /// ended), creating the table on first use.
    pub(in crate::dialect) async fn record_statement(
        &mut self,
        v: i64,
        i: usize,
        hash: &str,
        ended: bool,
    ) -> Result<(), TenantError> {
        let t = self.statements_table();
        let sql = if ended {
            format!(
                "UPDATE {t} SET finished_at = now() WHERE version = $1 AND statement = $2 AND sql_hash = $3"
            )
        } else {
            format!(
                "INSERT INTO {t} (version, statement, sql_hash) VALUES ($1, $2, $3) \
                 ON CONFLICT (version, statement) DO UPDATE SET started_at = now(), finished_at = NULL"
            )
        };
        let first = self.bind_statement(&sql, v, i, hash).await;
        if let Err(e) = first {
            // the first statement of the tenant's first no-transaction
            // migration: the table is made, then the row
            if e.as_database_error().and_then(|d| d.code()).as_deref() != Some("42P01") {
                return Err(self.err(e).at_version(v));
            }
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE IF NOT EXISTS {t} (version bigint NOT NULL, statement int NOT NULL, \
                 sql_hash text NOT NULL, started_at timestamptz NOT NULL DEFAULT now(), \
                 finished_at timestamptz, PRIMARY KEY (version, statement))"
            )))
            .execute(self.conn())
            .await
            .map_err(|e| self.err(e).at_version(v))?;
            self.statements_made = true;
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
            .execute(self.conn())
            .await
            .map(|_| ())
    }

    /// The statement that deletes version `v`'s records, when the table is
    /// there (to run inside a transaction).
    pub(in crate::dialect) fn forget_statements_sql(&self, v: i64) -> String {
        let t = self.statements_table();
        format!(
            "DO $$BEGIN IF to_regclass('{}') IS NOT NULL THEN DELETE FROM {t} WHERE version = {v}; \
             END IF; END$$",
            t.replace('\'', "''")
        )
    }

    /// The version an interrupted attempt left part-applied, if any: the
    /// lowest recorded in `_fleetmig_statements`, or else the lowest of
    /// `pending` whose statements the catalogue judges (recorded nowhere
    /// else) with one of its indexes there INVALID: a build that stopped.
    pub(in crate::dialect) async fn interrupted_version(
        &mut self,
        pending: &[Step<'_>],
    ) -> Result<Option<i64>, TenantError> {
        let t = self.statements_table();
        let there: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&t)
            .fetch_one(self.conn())
            .await
            .map_err(|e| self.err(e))?;
        if there {
            self.statements_made = true;
            let recorded: Option<i64> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT min(version) FROM {t}")))
                    .fetch_one(self.conn())
                    .await
                    .map_err(|e| self.err(e))?;
            if recorded.is_some() {
                return Ok(recorded);
            }
        }
        let (mut versions, mut names) = (Vec::new(), Vec::new());
        for step in pending.iter().filter(|s| s.script.no_tx) {
            if let Some(indexes) = judged_indexes(&step.script.sql) {
                for name in indexes {
                    versions.push(step.migration.version);
                    names.push(name);
                }
            }
        }
        if names.is_empty() {
            return Ok(None);
        }
        self.use_schema().await?;
        sqlx::query_scalar(
            "SELECT min(v) FROM unnest($1::bigint[], $2::text[]) AS p (v, name) \
             JOIN pg_index i ON i.indexrelid = to_regclass(p.name) WHERE NOT i.indisvalid",
        )
        .bind(&versions)
        .bind(&names)
        .fetch_one(self.conn())
        .await
        .map_err(|e| self.err(e))
    }

    /// The statement that drops the table when nothing is in it (sent as
    /// the session closes: a tenant keeps nothing of this between runs).
    pub(in crate::dialect) fn drop_statements_if_empty_sql(&self) -> String {
        let t = self.statements_table();
        format!(
            "DO $$BEGIN IF to_regclass('{}') IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {t}) \
             THEN DROP TABLE {t}; END IF; END$$;",
            t.replace('\'', "''")
        )
    }

    /// Forgets the statements of version `v` (it was left dirty, reverted
    /// or skipped), and the table when nothing else is in it.
    pub(in crate::dialect) async fn forget_statements(&mut self, v: i64) {
        let t = self.statements_table();
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DO $$BEGIN IF to_regclass('{}') IS NOT NULL THEN DELETE FROM {t} WHERE version = {v}; \
             IF NOT EXISTS (SELECT 1 FROM {t}) THEN DROP TABLE {t}; END IF; END IF; END$$",
            t.replace('\'', "''")
        )))
        .execute(self.conn())
        .await;
    }

    /// Forgets statement `i` of version `v` (it failed: nothing of it took
    /// effect).
    pub(in crate::dialect) async fn forget_statement(&mut self, v: i64, i: usize) {
        let t = self.statements_table();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {t} WHERE version = $1 AND statement = $2"
        )))
        .bind(v)
        .bind(i as i32)
        .execute(self.conn())
        .await;
    }

    /// What became of `sql`, running when an attempt stopped.
    pub(in crate::dialect) async fn in_flight(
        &mut self,
        sql: &str,
    ) -> Result<InFlight, TenantError> {
        if let Some(name) = concurrent_index(sql) {
            let valid: Option<bool> = sqlx::query_scalar(
                "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
            )
            .bind(&name)
            .fetch_optional(self.conn())
            .await
            .map_err(|e| self.err(e))?;
            return Ok(match valid {
                Some(true) => InFlight::Done,
                Some(false) => InFlight::Again { drop: Some(name) },
                None => InFlight::Again { drop: None },
            });
        }
        let upper = sql.to_ascii_uppercase();
        let first = upper.split_whitespace().next().unwrap_or("");
        if upper.contains("IF NOT EXISTS")
            || upper.contains("IF EXISTS")
            || matches!(first, "VACUUM" | "ANALYZE" | "ANALYSE" | "REINDEX")
        {
            return Ok(InFlight::Again { drop: None });
        }
        Ok(InFlight::Unknown(
            "it was running when the attempt stopped and fleetmig cannot tell from the database \
             whether it took effect"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_concurrent_index_is_named_in_its_tables_schema() {
        let of = |sql: &str| concurrent_index(sql);
        assert_eq!(
            of("CREATE INDEX CONCURRENTLY i ON t (x)").as_deref(),
            Some("i")
        );
        assert_eq!(
            of("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON other.t (x)").as_deref(),
            Some("other.i")
        );
        assert_eq!(
            of("CREATE INDEX CONCURRENTLY \"I x\" ON \"S\".t (x)").as_deref(),
            Some("\"S\".\"I x\"")
        );
        // not judged: no name, not concurrent, a database-qualified table,
        // two statements
        assert_eq!(of("CREATE INDEX CONCURRENTLY ON t (x)"), None);
        assert_eq!(of("CREATE INDEX i ON t (x)"), None);
        assert_eq!(of("CREATE INDEX CONCURRENTLY i ON d.s.t (x)"), None);
        assert_eq!(of("CREATE INDEX CONCURRENTLY i ON t (x); SELECT 1"), None);
        assert_eq!(
            judged_indexes(
                "CREATE INDEX CONCURRENTLY a ON t (x);\nCREATE INDEX CONCURRENTLY b ON s.t (y);\n"
            ),
            Some(vec!["a".to_string(), "s.b".to_string()])
        );
        assert_eq!(
            judged_indexes("CREATE INDEX CONCURRENTLY a ON t (x);\nVACUUM t;\n"),
            None
        );
    }
}
