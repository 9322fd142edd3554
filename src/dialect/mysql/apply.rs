//! Applying a MySQL migration statement by statement, its progress kept in
//! its own history row (`resume.rs`): the row is written unfinished before
//! the first statement, each statement's end moves it on (a row change in
//! one transaction with it), and the last statement's end finishes it
//! when there is no verification to run; a failure after a statement took
//! effect leaves the tenant dirty. Files a resume cannot stand between run
//! whole, dirty-first, as sqlx does. How each statement is sent with its
//! progress write is `send.rs`.

use std::sync::Arc;
use std::time::Instant;

use sqlx::Executor;

use super::history;
use super::resume::{Judge, Progress};
use super::send::{After, One};
use super::{MySqlSession, resume};
use crate::dialect::memo::Memo;
use crate::dialect::resume::InFlight;
use crate::dialect::{AppliedStep, Step};
use crate::error::{ErrorClass, FailureKind, TenantError};
use crate::migration::split::{Statement, split_for};
use crate::tenant::Dialect;

/// A migration's history row written unfinished by an earlier attempt
/// that got as far as `progress`, as `history` read it.
#[derive(Debug, Clone)]
pub(super) struct Unfinished {
    pub version: i64,
    pub checksum: Vec<u8>,
    pub progress: Progress,
}

/// What a file's text says, worked out once per process (`memo.rs`):
/// every tenant of a fleet runs the same files.
#[derive(Clone)]
struct Planned {
    statements: Arc<[Statement]>,
    /// Why its statements cannot be resumed one by one, if so.
    whole: Option<String>,
    /// How a kill in each statement is judged.
    judges: Arc<[Judge]>,
}

fn planned(sql: &str) -> Planned {
    static PLANS: Memo<Planned> = Memo::new(1024);
    PLANS.get(sql, || {
        let statements = split_for(sql, Dialect::Mysql);
        let whole = resume::unresumable(&statements);
        let judges = statements.iter().map(|st| Judge::of(&st.sql)).collect();
        Planned {
            statements: statements.into(),
            whole,
            judges,
        }
    })
}

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

    /// Applies one migration statement by statement, its progress in its
    /// history row (`resume.rs`), so that an attempt after an interruption
    /// resumes after the last statement that completed. A permanent failure
    /// after a statement took effect marks the row dirty, which is the
    /// truth. A file a resume cannot stand between (`resume::unresumable`)
    /// runs without progress, its history row written dirty first and made
    /// clean at the end.
    pub(super) async fn apply_one(&mut self, step: Step<'_>) -> Result<AppliedStep, TenantError> {
        self.ensure_history().await?;
        let v = step.migration.version;
        let Planned {
            statements,
            whole,
            judges,
        } = planned(&step.script.sql);
        if let Some(why) = &whole {
            tracing::debug!(version = v, "statements not resumable one by one: {why}");
        }
        if let Some(u) = self.unfinished.iter().find(|u| u.version < v) {
            // planned in order, it would have been resumed before this one:
            // its file is gone, or it is held
            return Err(TenantError::permanent(
                FailureKind::Dirty,
                format!(
                    "migration {} was interrupted part-way on this tenant and is not being \
                     finished (its file is missing or it is held): {v} cannot run on top of it. \
                     Restore its file and sync, or finish it by hand and delete its row from \
                     _sqlx_migrations",
                    u.version
                ),
            )
            .at_version(v));
        }
        let earlier = self.resume_point(step, &statements).await?;
        let (own, back) = self.step_timeouts(step);
        if !own.is_empty() {
            self.conn
                .execute(sqlx::AssertSqlSafe(own))
                .await
                .map_err(|e| self.err(e).at_version(v))?;
        }
        let t0 = Instant::now();
        let ran = match (&whole, earlier) {
            (Some(_), None) => self.run_unrecorded(step, &statements).await,
            _ => {
                self.run_statements(step, &statements, &judges, earlier, t0)
                    .await
            }
        };
        if !back.is_empty() {
            let _ = self.conn.execute(sqlx::AssertSqlSafe(back)).await;
        }
        self.use_own_database(&statements).await?;
        let finished = ran?;
        if !finished {
            if let Some(failed) = history::verify(&mut self.conn, step.script, history::LEFT_DIRTY)
                .await
                .map_err(|e| self.err(e).at_version(v))?
            {
                self.left_dirty(step).await;
                return Err(failed.at_version(v));
            }
            self.write_after(v, After::Finished(t0)).await?;
        }
        if self.conn.in_transaction()
            && let Some(e) = self.left_open(step).await
        {
            return Err(e);
        }
        Ok(AppliedStep {
            version: v,
            duration: t0.elapsed(),
            already_applied: false,
        })
    }

    /// How far an earlier attempt got with `step`: its unfinished history
    /// row as `history` read it (an error when the file changed since), or
    /// the statements an earlier fleetmig recorded, carried over.
    async fn resume_point(
        &mut self,
        step: Step<'_>,
        statements: &[Statement],
    ) -> Result<Option<Progress>, TenantError> {
        let v = step.migration.version;
        match self.unfinished.iter().position(|u| u.version == v) {
            Some(i) => {
                let u = &self.unfinished[i];
                if u.checksum != step.script.checksum {
                    return Err(changed_since(step, u.progress));
                }
                Ok(Some(self.unfinished.remove(i).progress))
            }
            None => self.legacy_progress(step, statements).await,
        }
    }

    /// After statements that may have switched database (`USE`), back to
    /// the tenant's own: nothing after them (the next migration, a backfill,
    /// a revert) runs elsewhere.
    pub(super) async fn use_own_database(
        &mut self,
        statements: &[Statement],
    ) -> Result<(), TenantError> {
        let used = statements
            .iter()
            .any(|st| resume::switches_database(&st.sql));
        if used && !self.database.is_empty() {
            let back = format!("USE {}", super::quote_ident(&self.database));
            self.conn
                .execute(sqlx::AssertSqlSafe(back))
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// A batched backfill is never left unfinished with progress: a row of
    /// its version that is means its file changed since.
    pub(super) fn check_not_unfinished(&self, step: Step<'_>) -> Result<(), TenantError> {
        match self
            .unfinished
            .iter()
            .find(|u| u.version == step.migration.version)
        {
            Some(u) => Err(changed_since(step, u.progress)),
            None => Ok(()),
        }
    }

    /// `step` left a transaction open (`autocommit = 0`, a `START
    /// TRANSACTION` without its end, `completion_type = CHAIN`): what ran
    /// in it, its finished history row perhaps among it, would be rolled
    /// back when the session ends, silently. It is rolled back now and the
    /// row read: finished (the transaction held nothing of fleetmig's, as
    /// after a chained `COMMIT`), the migration stands applied (`None`);
    /// else the tenant is left dirty, its failure saying why.
    async fn left_open(&mut self, step: Step<'_>) -> Option<TenantError> {
        let v = step.migration.version;
        self.failed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self
            .conn
            .execute("ROLLBACK; SET SESSION autocommit = 1")
            .await;
        let read = format!(
            "SELECT success FROM {} WHERE version = {v}",
            self.table.name
        );
        let finished = sqlx::raw_sql(sqlx::AssertSqlSafe(read))
            .fetch_optional(&mut self.conn)
            .await
            .ok()
            .flatten()
            .and_then(|r| sqlx::Row::try_get::<bool, _>(&r, 0).ok());
        if finished == Some(true) {
            return None;
        }
        self.left_dirty(step).await;
        Some(
            TenantError::permanent(
                FailureKind::Dirty,
                format!(
                    "migration {v} left a transaction open (autocommit = 0, or START \
                     TRANSACTION without COMMIT), which held its finished history row: it was \
                     rolled back, with whatever of the migration's own work was still in it \
                     (what the migration committed, and DDL, which commits on its own, \
                     stays); the tenant is dirty: look at what the migration did, end its \
                     transaction in the file, then delete the row from _sqlx_migrations and \
                     run again"
                ),
            )
            .at_version(v),
        )
    }

    /// Leaves version `step` dirty: its history row says so (sqlx's `-1`,
    /// written now unless the row is there).
    async fn left_dirty(&mut self, step: Step<'_>) {
        let v = step.migration.version;
        let marked = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET execution_time = -1 WHERE version = ? AND success = FALSE",
            self.table.name
        )))
        .bind(v)
        .execute(&mut self.conn)
        .await;
        if marked.is_ok_and(|r| r.rows_affected() == 0) {
            let _ = self.insert_row(step, false, -1).await;
        }
    }

    /// The statements of one migration, in order, from where an earlier
    /// attempt got (`earlier`; None: a first attempt, whose history row is
    /// written now). Before a statement runs, the row says it may have
    /// started; its end says the next may have (when a kill in it can be
    /// judged from the database; else the next one's start is a write of
    /// its own, just before it). True when the last statement's end
    /// finished the row (no verification to run).
    async fn run_statements(
        &mut self,
        step: Step<'_>,
        statements: &[Statement],
        judges: &[Judge],
        earlier: Option<Progress>,
        t0: Instant,
    ) -> Result<bool, TenantError> {
        let v = step.migration.version;
        let n = statements.len();
        // the progress when statement `i` is next: marked started at once
        // when a kill in it can be judged
        let next = |i: usize| Progress {
            next: i,
            started: judges.get(i).is_some_and(|j| *j != Judge::Unknown),
        };
        let (from, mut stored) = match earlier {
            Some(p) => (self.resume_at(step, statements, p).await?, p),
            None => {
                self.insert_row(step, false, next(0).encode())
                    .await
                    .map_err(|e| self.err(e).at_version(v))?;
                (0, next(0))
            }
        };
        let verify = step.script.verify.is_some();
        // a row change commits with its progress when the history rolls
        // back; else its end is written after it, and a kill between them
        // leaves it to be judged, where `in_flight` finds the history among
        // the tables that do not roll back: not to be told
        let in_tx = judges.contains(&Judge::Rows) && self.history_rolls_back().await?;
        for i in from..n {
            let start = Progress {
                next: i,
                started: true,
            };
            if stored != start {
                self.write_after(v, After::Progress(start)).await?;
            }
            let then = match i + 1 == n && !verify {
                true => After::Finished(t0),
                false => After::Progress(next(i + 1)),
            };
            let rows = judges[i] == Judge::Rows && in_tx;
            let single = judges[i] != Judge::Unknown;
            let sent = One {
                sql: &statements[i].sql,
                rows,
                single,
            };
            if let Err(e) = self.run_one(v, sent, then).await? {
                return Err(self.statement_failed(step, statements, i, true, e).await);
            }
            stored = next(i + 1);
        }
        Ok(from < n && !verify)
    }

    /// Where a resumed attempt starts: the session set up again as the
    /// statements that ended left it (`SET`, `USE`), and the statement an
    /// earlier attempt may have started judged from the database (done:
    /// the one after it; not: it again; nobody can tell: the tenant dirty).
    async fn resume_at(
        &mut self,
        step: Step<'_>,
        statements: &[Statement],
        p: Progress,
    ) -> Result<usize, TenantError> {
        let v = step.migration.version;
        let n = statements.len();
        for st in statements[..p.next.min(n)].iter() {
            if resume::session(&st.sql) {
                self.conn
                    .execute(sqlx::AssertSqlSafe(st.sql.clone()))
                    .await
                    .map_err(|e| self.err(e).at_version(v))?;
            }
        }
        if !p.started || p.next >= n {
            return Ok(p.next);
        }
        match self.in_flight(&statements[p.next].sql).await? {
            InFlight::Done => {
                tracing::info!(
                    version = v,
                    statement = p.next + 1,
                    "an interrupted attempt's statement had taken effect"
                );
                Ok(p.next + 1)
            }
            InFlight::Again { .. } => {
                tracing::info!(
                    version = v,
                    statement = p.next + 1,
                    "an interrupted attempt's statement had not taken effect: running it again"
                );
                Ok(p.next)
            }
            InFlight::Unknown(why) => {
                let t = crate::dialect::resume::unjudged(step, statements, p.next, &why);
                self.left_dirty(step).await;
                Err(t)
            }
        }
    }

    /// Statement `i` failed: where, and what it leaves. A refusal by the
    /// server that cannot have left anything behind puts the row back to
    /// before the statement (`refused`); one that may have left something
    /// keeps "may have started" for the next attempt to judge, or leaves
    /// the tenant dirty when it is for good. A transient failure leaves the
    /// history resumable; a permanent one after a statement took effect
    /// leaves the tenant dirty. `progress`: the row keeps progress (not a
    /// file run whole).
    async fn statement_failed(
        &mut self,
        step: Step<'_>,
        statements: &[Statement],
        i: usize,
        progress: bool,
        e: sqlx::Error,
    ) -> TenantError {
        let answered = matches!(e, sqlx::Error::Database(_));
        let mut t = self.err(e).at_version(step.migration.version);
        let at = format!(
            "statement {} of {}, at {}:{}",
            i + 1,
            statements.len(),
            step.script.path.display(),
            statements[i].line
        );
        if answered && progress && !self.refused(step, &statements[i].sql, i, &mut t).await {
            // refused part-way: it may have taken effect in part
            let next = match t.is_transient() {
                true => "the next attempt judges it from the database",
                false => {
                    self.left_dirty(step).await;
                    "the tenant is dirty: look at what it did, then delete the row from \
                     _sqlx_migrations and run again"
                }
            };
            t.message.push_str(&format!(
                " ({at}: refused part-way it may have changed rows of a table that does not \
                 roll back, or some of the objects it names; {next})"
            ));
            return t;
        }
        if t.is_transient() || i == 0 {
            t.message = format!("{} ({at})", t.message);
            return t;
        }
        let last = &statements[i - 1];
        t.class = ErrorClass::Permanent;
        t.message = format!(
            "{} — statement {} of {} (line {}) failed after statements 1..{} were committed \
             (MySQL DDL is not transactional), so the tenant is dirty. The last statement that ran \
             (line {}): `{}`. Finish or undo the migration by hand, then delete its row from \
             _sqlx_migrations and run again",
            t.message,
            i + 1,
            statements.len(),
            statements[i].line,
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

    /// Statement `i` (`sql`), refused by the server with `t`: when nothing
    /// of it can have taken effect (it did not parse, or it is one atomic
    /// change: InnoDB rows, a DDL of one object), the row goes back to
    /// before it (or goes, when nothing ran before it) and true; else the
    /// row is left as it is and false.
    async fn refused(&mut self, step: Step<'_>, sql: &str, i: usize, t: &mut TenantError) -> bool {
        if t.kind != FailureKind::Syntax && !self.refusal_left_nothing(sql).await {
            return false;
        }
        let v = step.migration.version;
        let written = match i {
            0 => self.forget_row(v).await,
            _ => {
                let back = Progress {
                    next: i,
                    started: false,
                };
                self.write_after(v, After::Progress(back)).await
            }
        };
        if written.is_err() {
            t.message.push_str(
                " (its history row still says the statement may have started: the next \
                 attempt judges it from the database)",
            );
        }
        true
    }

    /// Whether a statement the server refused cannot have left anything
    /// behind: a row change when every table it may touch rolls back, a
    /// DDL of one object (atomic), a statement simply run again.
    async fn refusal_left_nothing(&mut self, sql: &str) -> bool {
        match Judge::of(sql) {
            Judge::Unknown => false,
            Judge::Rows => matches!(self.non_transactional_tables().await, Ok(false)),
            Judge::Again | Judge::Exists { .. } => true,
        }
    }

    /// Removes version `v`'s unfinished history row (nothing of it ran).
    async fn forget_row(&mut self, v: i64) -> Result<(), TenantError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {} WHERE version = ? AND success = FALSE",
            self.table.name
        )))
        .bind(v)
        .execute(&mut self.conn)
        .await
        .map(|_| ())
        .map_err(|e| self.err(e).at_version(v))
    }

    /// The statements of a file a resume cannot stand between, as sqlx runs
    /// them: the history row written dirty first; a failure of the first
    /// leaves nothing behind (the row goes), any later one the tenant
    /// dirty. Never finishes the row itself.
    async fn run_unrecorded(
        &mut self,
        step: Step<'_>,
        statements: &[Statement],
    ) -> Result<bool, TenantError> {
        let v = step.migration.version;
        self.insert_row(step, false, -1)
            .await
            .map_err(|e| self.err(e).at_version(v))?;
        for (i, st) in statements.iter().enumerate() {
            let Err(e) = self.conn.execute(sqlx::AssertSqlSafe(st.sql.clone())).await else {
                continue;
            };
            if i == 0 {
                let mut t = self.err(e).at_version(v);
                if self.forget_row(v).await.is_err() {
                    t.message.push_str(
                        " (the history row of this migration could not be removed: the tenant is marked dirty)",
                    );
                }
                return Err(t);
            }
            return Err(self.statement_failed(step, statements, i, false, e).await);
        }
        Ok(false)
    }
}

/// The error of a migration whose history row is unfinished with progress
/// under a file that changed since.
fn changed_since(step: Step<'_>, p: Progress) -> TenantError {
    let v = step.migration.version;
    TenantError::permanent(
        FailureKind::StatementRecord,
        format!(
            "migration {v} was interrupted after statement {} and {} has changed since: \
             fleetmig cannot tell which statements of the new file ran. Put the file back as \
             it was, or finish the migration by hand and delete its row from _sqlx_migrations",
            p.next,
            step.script.path.display()
        ),
    )
    .at_version(v)
}

/// The error of a migration whose unfinished history row went away while
/// it ran.
pub(super) fn row_gone(v: i64) -> TenantError {
    TenantError::permanent(
        FailureKind::StatementRecord,
        format!(
            "migration {v}: its unfinished row in _sqlx_migrations was gone while it ran \
             (someone else changed the history): look at the tenant before running again"
        ),
    )
    .at_version(v)
}
