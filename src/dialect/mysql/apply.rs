//! Applying a MySQL migration statement by statement: each statement
//! recorded as it starts and ends (`resume.rs`), the history row written
//! when every statement ran, a failure after a statement took effect
//! leaving the tenant dirty; files a resume cannot stand between run whole,
//! dirty-first, as sqlx does.

use std::time::Instant;

use sqlx::Executor;

use super::history;
use super::{MySqlSession, resume};
use crate::dialect::{AppliedStep, Step};
use crate::error::{ErrorClass, TenantError};
use crate::migration::split::split_for;
use crate::tenant::Dialect;

impl MySqlSession {
    /// The statements that give `step` the timeouts its directives set, and
    /// those that put the session's back (empty when it sets none).
    fn step_timeouts(&self, step: Step<'_>) -> (String, String) {
        let d = &step.script.directives;
        let (mut before, mut after) = (Vec::new(), Vec::new());
        if let Some(t) = d.lock_timeout {
            let (own, back) = (t.as_secs().max(1), self.lock_wait.as_secs().max(1));
            before.push(format!(
                "lock_wait_timeout = {own}, innodb_lock_wait_timeout = {own}"
            ));
            after.push(format!(
                "lock_wait_timeout = {back}, innodb_lock_wait_timeout = {back}"
            ));
        }
        if let Some(t) = d.statement_timeout {
            before.push(format!("max_statement_time = {}", t.as_secs_f64()));
            after.push(format!("max_statement_time = {}", self.statement_secs));
        }
        let set = |v: Vec<String>| match v.is_empty() {
            true => String::new(),
            false => format!("SET SESSION {}", v.join(", ")),
        };
        (set(before), set(after))
    }

    /// Applies one migration statement by statement, each recorded in the
    /// tenant as it starts and ends (`resume.rs`), so that an attempt after
    /// an interruption resumes after the last statement that completed. The
    /// history row is written once every statement ran (and the
    /// verification passed); a permanent failure after a statement took
    /// effect writes it dirty, which is the truth. A file a resume cannot
    /// stand between (`resume::unresumable`) runs without records, its
    /// history row written dirty first and made clean at the end.
    pub(super) async fn apply_one(&mut self, step: Step<'_>) -> Result<AppliedStep, TenantError> {
        self.ensure_history().await?;
        let v = step.migration.version;
        let statements = split_for(&step.script.sql, Dialect::Mysql);
        let whole = resume::unresumable(&statements);
        if let Some(why) = &whole {
            tracing::debug!(version = v, "statements not resumable one by one: {why}");
        }
        let (own, back) = self.step_timeouts(step);
        if !own.is_empty() {
            self.conn
                .execute(sqlx::AssertSqlSafe(own))
                .await
                .map_err(|e| self.err(e).at_version(v))?;
        }
        let table = self.table.clone();
        if whole.is_some()
            && let Err(e) = table.insert(&mut self.conn, step, false, -1).await
        {
            if !back.is_empty() {
                let _ = self.conn.execute(sqlx::AssertSqlSafe(back)).await;
            }
            return Err(self.err(e).at_version(v));
        }
        let t0 = Instant::now();
        let ran = self
            .run_statements(step, &statements, whole.is_none())
            .await;
        if !back.is_empty() {
            let _ = self.conn.execute(sqlx::AssertSqlSafe(back)).await;
        }
        ran?;
        let duration = t0.elapsed();
        if let Some(failed) = history::verify(&mut self.conn, step.script, history::LEFT_DIRTY)
            .await
            .map_err(|e| self.err(e).at_version(v))?
        {
            self.left_dirty(step).await;
            return Err(failed.at_version(v));
        }
        let nanos = duration.as_nanos() as i64;
        if whole.is_some() {
            sqlx::query(
                "UPDATE `_sqlx_migrations` SET success = TRUE, execution_time = ? WHERE version = ?",
            )
            .bind(nanos)
            .bind(v)
            .execute(&mut self.conn)
            .await
            .map_err(|e| self.err(e).at_version(v))?;
        } else {
            self.record_applied(step, nanos).await?;
        }
        Ok(AppliedStep {
            version: v,
            duration,
            already_applied: false,
        })
    }

    /// Leaves version `step` dirty: its history row says so (written now
    /// unless it is there), and its statements' records go (a person
    /// decides from here; a run after the row is deleted starts afresh).
    async fn left_dirty(&mut self, step: Step<'_>) {
        let v = step.migration.version;
        let there: Result<i64, _> =
            sqlx::query_scalar("SELECT COUNT(*) FROM `_sqlx_migrations` WHERE version = ?")
                .bind(v)
                .fetch_one(&mut self.conn)
                .await;
        if there.is_ok_and(|n| n == 0) {
            let table = self.table.clone();
            let _ = table.insert(&mut self.conn, step, false, -1).await;
        }
        self.forget_statements(v).await;
    }

    /// The statements of one migration, in order, each recorded as it
    /// starts and ends; those an earlier attempt ended are skipped, the one
    /// it left running decided (`resume.rs`). A statement that only changes
    /// rows commits with its "ended" record.
    async fn run_statements(
        &mut self,
        step: Step<'_>,
        statements: &[crate::migration::split::Statement],
        records: bool,
    ) -> Result<(), TenantError> {
        use crate::dialect::resume::{Earlier, InFlight, hash};
        let v = step.migration.version;
        if !records {
            return self.run_unrecorded(step, statements).await;
        }
        let hashes: Vec<String> = statements.iter().map(|st| hash(&st.sql)).collect();
        let earlier = self.earlier(v, &hashes).await?;
        for (i, st) in statements.iter().enumerate() {
            match earlier[i] {
                // the session is new: what set it up is set again
                Earlier::Ended if resume::session(&st.sql) => {
                    self.conn
                        .execute(sqlx::AssertSqlSafe(st.sql.clone()))
                        .await
                        .map_err(|e| self.err(e).at_version(v))?;
                    continue;
                }
                Earlier::Ended => continue,
                Earlier::None => {}
                Earlier::Running => match self.in_flight(&st.sql).await? {
                    InFlight::Done => {
                        tracing::info!(
                            version = v,
                            statement = i + 1,
                            "an interrupted attempt's statement had taken effect"
                        );
                        self.record_statement(v, i, &hashes[i], true).await?;
                        continue;
                    }
                    InFlight::Again { .. } => {
                        tracing::info!(
                            version = v,
                            statement = i + 1,
                            "an interrupted attempt's statement had not taken effect: running it again"
                        );
                    }
                    InFlight::Unknown(why) => {
                        let t = crate::dialect::resume::unjudged(step, statements, i, &why);
                        self.left_dirty(step).await;
                        return Err(t);
                    }
                },
            }
            self.record_statement(v, i, &hashes[i], false).await?;
            if let Err(e) = self.run_one(v, i, &hashes[i], &st.sql).await? {
                let done_before = i > 0 || earlier.contains(&Earlier::Ended);
                return Err(self
                    .statement_failed(step, statements, i, done_before, e)
                    .await);
            }
        }
        Ok(())
    }

    /// Runs statement `i` and records it ended: in one transaction when it
    /// only changes rows (so a row change marked running never committed),
    /// else one after the other (DDL commits itself; `in_flight` decides a
    /// kill between them). The inner error is the statement's own.
    async fn run_one(
        &mut self,
        v: i64,
        i: usize,
        hash: &str,
        sql: &str,
    ) -> Result<Result<(), sqlx::Error>, TenantError> {
        let rows = resume::rows_only(sql);
        if rows {
            self.conn
                .execute("START TRANSACTION")
                .await
                .map_err(|e| self.err(e).at_version(v))?;
        }
        if let Err(e) = self
            .conn
            .execute(sqlx::AssertSqlSafe(sql.to_string()))
            .await
        {
            if rows {
                let _ = self.conn.execute("ROLLBACK").await;
            }
            return Ok(Err(e));
        }
        if let Err(e) = self.record_statement(v, i, hash, true).await {
            if rows {
                let _ = self.conn.execute("ROLLBACK").await;
            }
            return Err(e);
        }
        if rows {
            self.conn
                .execute("COMMIT")
                .await
                .map_err(|e| self.err(e).at_version(v))?;
        }
        Ok(Ok(()))
    }

    /// Statement `i` failed: where, and what it leaves. The server's refusal
    /// means nothing of it took effect (its record goes); a transient
    /// failure leaves the history clean, and the next attempt resumes at
    /// this statement. A permanent one after a statement took effect (in
    /// this attempt or an earlier one) leaves the tenant dirty.
    async fn statement_failed(
        &mut self,
        step: Step<'_>,
        statements: &[crate::migration::split::Statement],
        i: usize,
        done_before: bool,
        e: sqlx::Error,
    ) -> TenantError {
        let v = step.migration.version;
        let answered = matches!(e, sqlx::Error::Database(_));
        let mut t = self.err(e).at_version(v);
        if answered {
            self.forget_statement(v, i).await;
        }
        let st = &statements[i];
        if t.is_transient() || !done_before {
            t.message = format!(
                "{} (statement {} of {}, at {}:{})",
                t.message,
                i + 1,
                statements.len(),
                step.script.path.display(),
                st.line
            );
            return t;
        }
        let last = &statements[i.saturating_sub(1)];
        t.class = ErrorClass::Permanent;
        t.message = format!(
            "{} — statement {} of {} (line {}) failed after statements 1..{} were committed \
             (MySQL DDL is not transactional), so the tenant is dirty. The last statement that ran \
             (line {}): `{}`. Finish or undo the migration by hand, then delete its row from \
             _sqlx_migrations and run again",
            t.message,
            i + 1,
            statements.len(),
            st.line,
            i,
            last.line,
            crate::dialect::one_line(&last.sql)
                .chars()
                .take(200)
                .collect::<String>()
        );
        self.left_dirty(step).await;
        t
    }

    /// The statements of a file a resume cannot stand between, as sqlx runs
    /// them: the history row is already written dirty; a failure of the
    /// first leaves nothing behind (the row goes), any later one the tenant
    /// dirty.
    async fn run_unrecorded(
        &mut self,
        step: Step<'_>,
        statements: &[crate::migration::split::Statement],
    ) -> Result<(), TenantError> {
        let v = step.migration.version;
        for (i, st) in statements.iter().enumerate() {
            let Err(e) = self.conn.execute(sqlx::AssertSqlSafe(st.sql.clone())).await else {
                continue;
            };
            if i == 0 {
                let mut t = self.err(e).at_version(v);
                let cleaned = sqlx::query(
                    "DELETE FROM `_sqlx_migrations` WHERE version = ? AND success = FALSE",
                )
                .bind(v)
                .execute(&mut self.conn)
                .await;
                if cleaned.is_err() {
                    t.message.push_str(
                        " (the history row of this migration could not be removed: the tenant is marked dirty)",
                    );
                }
                return Err(t);
            }
            return Err(self.statement_failed(step, statements, i, true, e).await);
        }
        Ok(())
    }
}
