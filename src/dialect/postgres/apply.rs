//! Applying migrations on a PostgreSQL tenant in as few round trips as the
//! decisions allow: a transaction group as one simple-query batch with its
//! history rows, a group with verification queries statement by statement, a
//! `-- no-transaction` migration on the locked session (INVALID leftovers of
//! an interrupted `CREATE INDEX CONCURRENTLY` dropped first), and a backfill
//! batch in three round trips. On a fleet, round trips are the cost.

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor};

use super::super::history::{self, COLUMNS};
use super::super::{AppliedStep, BatchOutcome, Step, quote_ident, quote_literal};
use super::{PgSession, batch};
use crate::error::TenantError;
use crate::migration::split::split_statements;

/// The history rows of `rows` (each a step and its `execution_time` as SQL,
/// in nanoseconds) in one statement of literals, returning a
/// `fleetmig:done:<version>:<nanos>` marker per row. Literals, because a
/// simple-query batch carries no bind parameters.
fn insert_rows(table: &str, rows: &[(Step<'_>, String)]) -> String {
    let values: Vec<String> = rows
        .iter()
        .map(|(step, execution_time)| {
            format!(
                "({}, {}, TRUE, decode('{}', 'hex'), {execution_time})",
                step.migration.version,
                quote_literal(&step.migration.description),
                crate::migration::hex(&step.script.checksum),
            )
        })
        .collect();
    format!(
        "INSERT INTO {table} {COLUMNS} VALUES {} \
         RETURNING 'fleetmig:done:' || version || ':' || execution_time;\n",
        values.join(",\n")
    )
}

/// The character position (1-based) a PostgreSQL error points at in the
/// text that was sent, when it points into that text.
fn error_position(e: &sqlx::Error) -> Option<usize> {
    let db = e.as_database_error()?;
    match db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?
        .position()?
    {
        sqlx::postgres::PgErrorPosition::Original(p) => Some(p),
        sqlx::postgres::PgErrorPosition::Internal { .. } => None,
    }
}

/// Where in its file a script's text sent from character `start` (0-based,
/// in the text sent) fails, when the error points there: the 1-based line of
/// the script's file.
fn line_in(script: &str, start: usize, position: usize) -> Option<usize> {
    let at = position.checked_sub(1)?.checked_sub(start)?;
    let mut chars = script.char_indices();
    let byte = match chars.nth(at) {
        Some((b, _)) => b,
        None if at == script.chars().count() => script.len(),
        None => return None,
    };
    Some(script[..byte].matches('\n').count() + 1)
}

/// Pins `t` (the error of `e`) to the file and line of the script it points
/// into: `scripts` are (where the script's text starts in the sent text, in
/// characters; its step).
fn pin(mut t: TenantError, e: &sqlx::Error, scripts: &[(usize, Step<'_>)]) -> TenantError {
    let Some(position) = error_position(e) else {
        return t;
    };
    for (start, step) in scripts.iter().rev() {
        if position > *start {
            if let Some(line) = line_in(&step.script.sql, *start, position) {
                t.version = Some(step.migration.version);
                t.message = format!("{} (at {}:{line})", t.message, step.script.path.display());
            }
            break;
        }
    }
    t
}

/// Runs a simple-query batch; the rows its statements changed.
async fn run(c: &mut sqlx::PgConnection, sql: String) -> Result<u64, sqlx::Error> {
    Ok(sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(c)
        .await?
        .rows_affected())
}

impl PgSession {
    /// A `-- no-transaction` migration (`CREATE INDEX CONCURRENTLY`): the
    /// INVALID leftovers of an interrupted build dropped first, the script on
    /// the locked session outside any transaction, then its history row (one
    /// statement with the measured time; sqlx writes the row, then updates it).
    pub(super) async fn apply_no_tx(
        &mut self,
        step: Step<'_>,
    ) -> Result<Vec<AppliedStep>, TenantError> {
        let v = step.migration.version;
        let t0 = Instant::now();
        // Statement by statement: a script of several statements sent at
        // once would run as one implicit transaction, where `CREATE INDEX
        // CONCURRENTLY` cannot run.
        let statements = split_statements(&step.script.sql);
        let (own, back) = self.step_timeouts(step, false);
        if !own.is_empty() {
            sqlx::raw_sql(sqlx::AssertSqlSafe(own))
                .execute(self.conn())
                .await
                .map_err(|e| self.err(e).at_version(v))?;
        }
        let ran = self.run_no_tx(step, &statements).await;
        if !back.is_empty() {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(back))
                .execute(self.conn())
                .await;
        }
        ran?;
        let took = t0.elapsed();
        // the history row and the end of the statements' records in one
        // transaction: a kill between them cannot leave statements marked
        // ended for a version a revert may take back
        let row = insert_rows(&self.table.name, &[(step, took.as_nanos().to_string())]);
        let forget = self.forget_statements_sql(v);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "BEGIN; {row}; {forget}; COMMIT;"
        )))
        .execute(self.conn())
        .await
        .map_err(|e| self.err(&e).at_version(v))?;
        // (the table itself stays for the session's next no-transaction
        // migration: `close` drops it when empty)
        Ok(vec![AppliedStep {
            version: v,
            duration: took,
            already_applied: false,
        }])
    }

    /// The statements of a no-transaction migration, one by one (see
    /// `apply_no_tx`), each recorded as it starts and ends (unless the
    /// catalogue records them: concurrent indexes only); those an earlier
    /// attempt ended are skipped, the one it left running decided
    /// (`resume.rs`).
    async fn run_no_tx(
        &mut self,
        step: Step<'_>,
        statements: &[crate::migration::split::Statement],
    ) -> Result<(), TenantError> {
        use crate::dialect::resume::{Earlier, hash};
        let v = step.migration.version;
        let hashes: Vec<String> = statements.iter().map(|st| hash(&st.sql)).collect();
        // concurrent indexes only: the catalogue is the record (resume.rs)
        let record = super::resume::judged_indexes(&step.script.sql).is_none();
        // A fresh tenant has nothing an interrupted attempt could have left.
        let earlier = if self.fresh || !record {
            vec![Earlier::None; statements.len()]
        } else {
            self.earlier(v, &hashes).await?
        };
        // no record of an earlier attempt (a version of fleetmig that kept
        // none): an INVALID index the migration builds was left by one
        if !self.fresh && record && earlier.iter().all(|e| *e == Earlier::None) {
            self.drop_invalid_indexes(&step.script.sql).await?;
        }
        for (i, st) in statements.iter().enumerate() {
            // a concurrent index with no record, on a tenant an attempt may
            // have reached before (not fresh): whether it was built is
            // asked of the database, as for one left running (the chaos
            // soak met such indexes, VALID, their records gone)
            let unrecorded_index = earlier[i] == Earlier::None
                && !self.fresh
                && (!record || super::resume::concurrent_index(&st.sql).is_some());
            let earlier_i = if unrecorded_index {
                Earlier::Running
            } else {
                earlier[i]
            };
            match earlier_i {
                Earlier::Ended => continue,
                Earlier::None => {}
                Earlier::Running => {
                    if self.settle_running(step, statements, i).await? {
                        if record {
                            self.record_statement(v, i, &hashes[i], true).await?;
                        }
                        continue;
                    }
                }
            }
            if record {
                self.record_statement(v, i, &hashes[i], false).await?;
            }
            if let Err(e) = self
                .conn()
                .execute(sqlx::AssertSqlSafe(st.sql.clone()))
                .await
            {
                return Err(self.statement_failed(step, statements, i, &e).await);
            }
            if record {
                self.record_statement(v, i, &hashes[i], true).await?;
            }
        }
        Ok(())
    }

    /// Statement `i`, which an earlier attempt left running: whether it
    /// took effect (skipped: `true`) or is to run again
    /// (`false`, after dropping the INVALID index it left); a tenant whose
    /// statement nobody can judge is left dirty, naming it.
    async fn settle_running(
        &mut self,
        step: Step<'_>,
        statements: &[crate::migration::split::Statement],
        i: usize,
    ) -> Result<bool, TenantError> {
        use crate::dialect::resume::InFlight;
        let (v, st) = (step.migration.version, &statements[i]);
        match self.in_flight(&st.sql).await? {
            InFlight::Done => {
                tracing::info!(
                    version = v,
                    statement = i + 1,
                    "an interrupted attempt's statement had taken effect"
                );
                Ok(true)
            }
            InFlight::Again { drop: Some(index) } => {
                tracing::warn!(version = v, index = %index, "dropping the INVALID index an interrupted attempt left");
                let sql = format!("DROP INDEX CONCURRENTLY IF EXISTS {index}");
                self.conn()
                    .execute(sqlx::AssertSqlSafe(sql))
                    .await
                    .map_err(|e| self.err(e).at_version(v))?;
                Ok(false)
            }
            InFlight::Again { drop: None } => Ok(false),
            InFlight::Unknown(why) => {
                let t = crate::dialect::resume::unjudged(step, statements, i, &why);
                let table = self.table.clone();
                let _ = table.insert(self.conn(), step, false, -1).await;
                self.forget_statements(v).await;
                Err(t)
            }
        }
    }

    /// A statement of a no-transaction migration that failed: where, and
    /// what it leaves. A transient failure (lost connection, lock timeout)
    /// leaves the history clean: the next attempt resumes at this statement
    /// (recorded as running, so it is decided first). A permanent one after
    /// some statements took effect is recorded as dirty; when it was the
    /// first, nothing was applied and the tenant stays clean.
    async fn statement_failed(
        &mut self,
        step: Step<'_>,
        statements: &[crate::migration::split::Statement],
        i: usize,
        e: &sqlx::Error,
    ) -> TenantError {
        let v = step.migration.version;
        let st = &statements[i];
        let mut t = self.err(e).at_version(v);
        if let Some(at) = error_position(e).and_then(|p| line_in(&st.sql, 0, p)) {
            let line = st.line + at - 1;
            t.message = format!("{} (at {}:{line})", t.message, step.script.path.display());
        } else {
            t.message = format!(
                "{} (statement {} of {}, at {}:{})",
                t.message,
                i + 1,
                statements.len(),
                step.script.path.display(),
                st.line
            );
        }
        // the server answered with an error: nothing of this statement took
        // effect (a lost connection leaves it running, to decide), except a
        // `CREATE INDEX CONCURRENTLY`, which leaves its INVALID index behind
        // when it fails (a lock timeout while it waits for the database's
        // transactions): it stays running, so the next attempt drops that
        // index and builds it again (found by scripts/chaos.sh)
        let concurrent = crate::migration::parse::concurrent_indexes(&st.sql)
            .is_none_or(|names| !names.is_empty());
        if matches!(e, sqlx::Error::Database(_)) && !concurrent {
            self.forget_statement(v, i).await;
        }
        if !t.is_transient() && i > 0 {
            t.message.push_str(&format!(
                "; statements 1..{i} were applied outside a transaction, so the tenant is dirty: \
                 finish or undo the migration by hand, then delete its row from _sqlx_migrations"
            ));
            let table = self.table.clone();
            let _ = table.insert(self.conn(), step, false, -1).await;
            self.forget_statements(v).await;
        }
        t
    }

    /// Applies a group of transactional migrations in one transaction sent
    /// as one simple-query batch: the scripts, each after a marker row that
    /// pins a failure to its migration, then one INSERT of every history row
    /// (each migration's time measured by the server, from per-script start
    /// times kept in transaction-local settings). One round trip per group
    /// instead of five per migration.
    pub(super) async fn apply_batch(
        &mut self,
        steps: &[Step<'_>],
    ) -> Result<Vec<AppliedStep>, TenantError> {
        let start = |i: usize| format!("current_setting('fleetmig.t{i}')::timestamptz");
        let mut sql = String::from("BEGIN;\n");
        let mut rows = Vec::new();
        // where each script starts in the text sent, in characters
        let mut starts = Vec::new();
        let mut sent_chars = sql.chars().count();
        for (i, step) in steps.iter().enumerate() {
            let v = step.migration.version;
            let marker = format!(
                "SELECT 'fleetmig:start:{v}', set_config('fleetmig.t{i}', clock_timestamp()::text, true);\n"
            );
            let (own, back) = self.step_timeouts(*step, true);
            let marker = marker + &own;
            sent_chars += marker.chars().count();
            sql.push_str(&marker);
            starts.push((sent_chars, *step));
            sent_chars += step.script.sql.chars().count() + 3 + back.chars().count();
            sql.push_str(&step.script.sql);
            // a script may end in a comment or without a semicolon
            sql.push_str("\n;\n");
            sql.push_str(&back);
            let end = if i + 1 < steps.len() {
                start(i + 1)
            } else {
                "clock_timestamp()".to_string()
            };
            rows.push((
                *step,
                format!(
                    "(extract(epoch FROM {end} - {}) * 1000000000)::bigint",
                    start(i)
                ),
            ));
        }
        // a failure from here on is the history write's, not the last script's
        sql.push_str("SELECT 'fleetmig:start:history';\n");
        sql.push_str(&insert_rows(&self.table.name, &rows));
        sql.push_str("COMMIT;");
        let (markers, err) = batch(self.conn(), sql).await;
        if let Some(e) = err {
            let current = markers
                .iter()
                .rev()
                .find_map(|m| m.strip_prefix("fleetmig:start:"))
                .and_then(|v| v.parse::<i64>().ok());
            let mut t = self.err(&e);
            if let Some(v) = current {
                t = t.at_version(v);
            }
            let t = pin(t, &e, &starts);
            // The batch stopped inside our transaction: end it.
            self.end_failed_transaction().await;
            return Err(t);
        }
        Ok(markers
            .iter()
            .filter_map(|m| m.strip_prefix("fleetmig:done:"))
            .filter_map(|rest| {
                let (v, nanos) = rest.split_once(':')?;
                Some(AppliedStep {
                    version: v.parse().ok()?,
                    duration: Duration::from_nanos(nanos.parse::<i64>().ok()?.max(0) as u64),
                    already_applied: false,
                })
            })
            .collect())
    }

    /// A group with verification queries: the same transaction, statement by
    /// statement, so that each verification's rows can be read before the
    /// history row is written; a failed verification rolls the group back.
    pub(super) async fn apply_verified(
        &mut self,
        steps: &[Step<'_>],
    ) -> Result<Vec<AppliedStep>, TenantError> {
        let table = self.table.clone();
        let url = self.url.clone();
        let timeouts: Vec<(String, String)> =
            steps.iter().map(|s| self.step_timeouts(*s, true)).collect();
        let err =
            |e: &sqlx::Error| super::tenant_error(e, crate::tenant::Dialect::Postgres, Some(&url));
        let result: Result<Vec<AppliedStep>, (TenantError, Option<i64>)> = async {
            let mut tx = self.conn().begin().await.map_err(|e| (err(&e), None))?;
            let mut out = Vec::new();
            for (i, step) in steps.iter().enumerate() {
                let v = step.migration.version;
                let at = |e: sqlx::Error| (err(&e), Some(v));
                let t0 = Instant::now();
                let (own, back) = timeouts[i].clone();
                if !own.is_empty() {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(own))
                        .execute(&mut *tx)
                        .await
                        .map_err(at)?;
                }
                sqlx::raw_sql(sqlx::AssertSqlSafe(step.script.sql.clone()))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| (pin(err(&e), &e, &[(0, *step)]), Some(v)))?;
                if !back.is_empty() {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(back))
                        .execute(&mut *tx)
                        .await
                        .map_err(at)?;
                }
                if let Some(failed) = history::verify(&mut *tx, step.script, history::ROLLED_BACK)
                    .await
                    .map_err(at)?
                {
                    return Err((failed, Some(v)));
                }
                let took = t0.elapsed();
                table
                    .insert(&mut *tx, *step, true, took.as_nanos() as i64)
                    .await
                    .map_err(at)?;
                out.push(AppliedStep {
                    version: v,
                    duration: took,
                    already_applied: false,
                });
            }
            tx.commit().await.map_err(|e| (err(&e), None))?;
            Ok(out)
        }
        .await;
        result.map_err(|(t, v)| match v {
            Some(v) => t.at_version(v),
            None => t,
        })
    }

    /// One transaction of a batched backfill (see `Session::backfill_batch`):
    /// `BEGIN` and the batch together, the confirming run with its savepoint,
    /// then the end of the transaction with the history row. A short
    /// transaction is also a short wait for every `CREATE INDEX CONCURRENTLY`
    /// elsewhere in the database, which waits for the transactions running
    /// when it starts.
    pub(super) async fn backfill(
        &mut self,
        step: Step<'_>,
        size: u64,
        started: Instant,
    ) -> Result<BatchOutcome, TenantError> {
        let sql = step.script.sql.replace(":batch_size", &size.to_string());
        let sql = sql.trim_end().trim_end_matches(';');
        let table = self.table.name.clone();
        let (own, _) = self.step_timeouts(step, true);
        let t0 = Instant::now();
        // Ok(Err(_)): the verification failed, the transaction is still open
        let result: Result<Result<(u64, u64, bool), TenantError>, sqlx::Error> = async {
            let changed = run(self.conn(), format!("BEGIN;\n{own}{sql};")).await?;
            let mut statements = 1;
            let mut done = changed == 0;
            let mut end = String::new();
            if !done && changed < size {
                statements += 1;
                let again =
                    run(self.conn(), format!("SAVEPOINT fleetmig_confirm;\n{sql};")).await?;
                done = again == 0;
                end.push_str(if done {
                    "RELEASE SAVEPOINT fleetmig_confirm;\n"
                } else {
                    "ROLLBACK TO SAVEPOINT fleetmig_confirm;\n"
                });
            }
            if done && step.script.verify.is_some() {
                // the verification, before the history row
                if !end.is_empty() {
                    run(self.conn(), std::mem::take(&mut end)).await?;
                }
                if let Some(failed) =
                    history::verify(self.conn(), step.script, history::BACKFILL_UNRECORDED).await?
                {
                    return Ok(Err(failed));
                }
            }
            if done {
                end.push_str(&insert_rows(
                    &table,
                    &[(step, started.elapsed().as_nanos().to_string())],
                ));
            }
            end.push_str("COMMIT;");
            run(self.conn(), end).await?;
            Ok(Ok((changed, statements, done)))
        }
        .await;
        let held = t0.elapsed();
        let t = match result {
            Ok(Ok((changed, statements, done))) => {
                return Ok(BatchOutcome {
                    changed,
                    statements,
                    held,
                    done,
                });
            }
            Ok(Err(verify_failed)) => verify_failed,
            Err(e) => self.err(e),
        };
        self.end_failed_transaction().await;
        Err(t)
    }

    /// Drops the INVALID indexes (left by an interrupted `CREATE INDEX
    /// CONCURRENTLY`) that the migration builds, so that running it again does
    /// not fail on "already exists". The names are resolved with the tenant's
    /// `search_path` through `to_regclass`, index lookups only: the cost does
    /// not grow with the number of schemas in the database.
    async fn drop_invalid_indexes(&mut self, sql: &str) -> Result<(), TenantError> {
        let rows: Vec<(String, String)> = match crate::migration::parse::concurrent_indexes(sql) {
            Some(names) if names.is_empty() => return Ok(()),
            Some(names) => sqlx::query_as(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_index i ON i.indexrelid = c.oid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = ANY (SELECT to_regclass(name) FROM unnest($1::text[]) AS name) \
                 AND NOT i.indisvalid",
            )
            .bind(&names)
            .fetch_all(self.conn())
            .await
            .map_err(|e| self.err(e))?,
            // A statement the parser cannot read: every INVALID index of the
            // schema whose name the script mentions.
            None => {
                let lower = sql.to_lowercase();
                let all: Vec<(String, String)> = sqlx::query_as(
                    "SELECT n.nspname::text, c.relname::text FROM pg_index i \
                     JOIN pg_class c ON c.oid = i.indexrelid \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE NOT i.indisvalid AND n.nspname = current_schema()",
                )
                .fetch_all(self.conn())
                .await
                .map_err(|e| self.err(e))?;
                all.into_iter()
                    .filter(|(_, index)| lower.contains(&index.to_lowercase()))
                    .collect()
            }
        };
        for (schema, index) in rows {
            tracing::warn!(schema = %schema, index = %index, "dropping INVALID index left by an interrupted build");
            let drop = format!(
                "DROP INDEX CONCURRENTLY IF EXISTS {}.{}",
                quote_ident(&schema),
                quote_ident(&index)
            );
            self.conn()
                .execute(sqlx::AssertSqlSafe(drop))
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}
