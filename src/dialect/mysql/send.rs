//! Sending a MySQL migration's statement with what its end writes into
//! the migration's history row (`resume.rs`), in as few round trips as the
//! exactly-once rules allow: a statement that can be judged goes with its
//! progress write in one multi-statement round trip (a row change in one
//! transaction with it, and the `COMMIT` in the same round trip behind a
//! check, run by the server, that the write moved the row), the same
//! statements in the same order as one by one. The progress write is sent as
//! text: each tenant has a connection of its own, which would prepare it
//! first, a round trip of its own. (Sending the unfinished row with the
//! first statement, and the lock with the read of fleetmig's tables,
//! measured slower in an A/B of builds, and were taken back.)

use std::time::Instant;

use sqlx::Executor;

use super::apply::row_gone;
use super::resume::Progress;
use super::{MySqlSession, bytes_literal, error_number, literal};
use crate::dialect::Step;
use crate::dialect::history::COLUMNS;
use crate::error::TenantError;

/// Fails (error 1231: `time_zone` cannot be NULL) unless the statement
/// before it changed exactly one row, else sets `time_zone` to what it is:
/// in a row change's batch, the end's write must have moved the history row
/// before the `COMMIT` after it runs. (A subquery of two rows did the same
/// but made the server build a temporary table for the UNION each time.)
const MOVED_ONE_ROW: &str =
    "SET SESSION time_zone = IF(ROW_COUNT() = 1, @@session.time_zone, NULL)";

/// One statement as `run_one` sends it: `rows`: a row change, in one
/// transaction with its end; `single`: it ends in one result (it can be
/// judged), so it goes in one round trip with its end.
pub(super) struct One<'a> {
    pub sql: &'a str,
    pub rows: bool,
    pub single: bool,
}

/// What a statement's end writes into its migration's history row.
pub(super) enum After {
    /// The progress of an unfinished migration.
    Progress(Progress),
    /// The migration finished; it started at this instant.
    Finished(Instant),
}

impl MySqlSession {
    /// `step`'s history row as text, its values written in (`literal`),
    /// `success` as given, up to its execution time: what follows is the
    /// time and `)`. As prepared, a tenant's new connection would prepare it
    /// first, a round trip of its own.
    pub(super) fn row_up_to_time(&self, step: Step<'_>, success: bool) -> String {
        format!(
            "INSERT INTO {} {COLUMNS} VALUES ({}, {}, {}, {}, ",
            self.table.name,
            step.migration.version,
            literal(&step.migration.description),
            if success { "TRUE" } else { "FALSE" },
            bytes_literal(&step.script.checksum),
        )
    }

    /// Writes `step`'s history row, `success` as given with `time` its
    /// execution time (or progress, `resume.rs`), sent as text.
    pub(super) async fn insert_row(
        &mut self,
        step: Step<'_>,
        success: bool,
        time: i64,
    ) -> Result<(), sqlx::Error> {
        let sql = format!("{}{time})", self.row_up_to_time(step, success));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut self.conn)
            .await
            .map(|_| ())
    }

    /// The write that moves version `v`'s history row on: its progress, or
    /// finished. Integers only, so it is sent as text: a new connection per
    /// tenant would prepare it first, a round trip of its own.
    pub(super) fn after_sql(&self, v: i64, after: After) -> String {
        let (set, time) = match after {
            After::Progress(p) => ("", p.encode()),
            After::Finished(t0) => ("success = TRUE, ", t0.elapsed().as_nanos() as i64),
        };
        format!(
            "UPDATE {} SET {set}execution_time = {time} WHERE version = {v} AND success = FALSE",
            self.table.name
        )
    }

    /// Moves version `v`'s history row on: its progress, or finished.
    pub(super) async fn write_after(&mut self, v: i64, after: After) -> Result<(), TenantError> {
        let r = sqlx::raw_sql(sqlx::AssertSqlSafe(self.after_sql(v, after)))
            .execute(&mut self.conn)
            .await
            .map_err(|e| self.err(e).at_version(v))?;
        if r.rows_affected() != 1 {
            return Err(row_gone(v));
        }
        Ok(())
    }

    /// Runs one statement and writes what its end says (`then`): in one
    /// transaction when it only changes rows (so a row change still marked
    /// started never committed), else one after the other (DDL commits
    /// itself; `in_flight` decides a kill between them). The inner error
    /// is the statement's own. A statement of one result (`single`: any
    /// that can be judged) goes with its end in one multi-statement round
    /// trip, the same statements in the same order; a row change's COMMIT
    /// goes in it too, behind `MOVED_ONE_ROW`.
    pub(super) async fn run_one(
        &mut self,
        v: i64,
        one: One<'_>,
        then: After,
    ) -> Result<Result<(), sqlx::Error>, TenantError> {
        let One { sql, rows, single } = one;
        if !single {
            return self.run_apart(v, sql, then).await;
        }
        // each statement ends in one result: how many came before an error
        // says whose it is
        let own = usize::from(rows);
        let batch = match rows {
            // the server checks that the end moved the row before the
            // COMMIT: a multi-statement stops at its first error
            true => format!(
                "START TRANSACTION;\n{sql}\n;\n{};\n{MOVED_ONE_ROW};\nCOMMIT",
                self.after_sql(v, then)
            ),
            false => format!("{sql}\n;\n{}", self.after_sql(v, then)),
        };
        let (done, err) = self.results(batch).await;
        let whole = match rows {
            // the end moved the row (were the check not to fail on some
            // server, a vanished row is still told, though committed)
            true => done.len() == 5 && done[2] == 1,
            false => done.last() == Some(&1),
        };
        if err.is_none() && whole {
            return Ok(Ok(()));
        }
        if rows {
            let _ = self.conn.execute("ROLLBACK").await;
        }
        match err {
            Some(e) if done.len() == own => Ok(Err(e)),
            // the check after the end: it moved no row
            Some(e) if rows && done.len() == 3 && error_number(&e) == Some(1231) => {
                Err(row_gone(v))
            }
            Some(e) => Err(self.err(e).at_version(v)),
            None => Err(row_gone(v)),
        }
    }

    /// `run_one` for a statement that cannot be judged (it may end in
    /// several results: a `CALL`), so never a row change in a transaction
    /// with its end: it, then its end, each a round trip of its own.
    async fn run_apart(
        &mut self,
        v: i64,
        sql: &str,
        then: After,
    ) -> Result<Result<(), sqlx::Error>, TenantError> {
        if let Err(e) = self
            .conn
            .execute(sqlx::AssertSqlSafe(sql.to_string()))
            .await
        {
            return Ok(Err(e));
        }
        self.write_after(v, then).await?;
        Ok(Ok(()))
    }

    /// Runs a multi-statement batch: the rows each statement changed, up to
    /// the first error.
    async fn results(&mut self, sql: String) -> (Vec<u64>, Option<sqlx::Error>) {
        use futures_util::StreamExt;
        let mut done = Vec::new();
        let mut stream = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).fetch_many(&mut self.conn);
        while let Some(item) = stream.next().await {
            match item {
                Ok(sqlx::Either::Left(r)) => done.push(r.rows_affected()),
                Ok(sqlx::Either::Right(_)) => {}
                Err(e) => return (done, Some(e)),
            }
        }
        (done, None)
    }
}
