//! What every database does the same way, written once: the history row in
//! sqlx's `_sqlx_migrations` layout, a migration's verification query and its
//! verdict, rendering result rows as text, and the batched-backfill
//! transaction of the databases that send it statement by statement (SQLite,
//! MySQL; PostgreSQL sends it in fewer round trips, see `postgres`). Generic
//! over sqlx's `Database`, so each session type calls it on its own
//! connection.

use crate::error::FailureKind;
use std::path::Path;
use std::time::Instant;

use sqlx::{ColumnIndex, Connection, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::{BatchOutcome, Step};
use crate::error::TenantError;
use crate::migration::{Applied, Script};

/// The columns fleetmig writes, in sqlx's layout.
pub(crate) const COLUMNS: &str = "(version, description, success, checksum, execution_time)";

/// How a database numbers its bind parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Params {
    /// `$1, $2, ...` (PostgreSQL).
    Dollar,
    /// `?` (SQLite, MySQL).
    Question,
}

/// The tenant's history table as it is written in SQL (quoted, and
/// schema-qualified for PostgreSQL schema tenants).
#[derive(Debug, Clone)]
pub(crate) struct HistoryTable {
    pub name: String,
    pub params: Params,
}

impl HistoryTable {
    pub fn new(name: impl Into<String>, params: Params) -> Self {
        HistoryTable {
            name: name.into(),
            params,
        }
    }

    fn p(&self, n: usize) -> String {
        match self.params {
            Params::Dollar => format!("${n}"),
            Params::Question => "?".to_string(),
        }
    }

    /// `INSERT` of one row with `success` as given and version, description,
    /// checksum and execution time bound in that order.
    pub fn insert_sql(&self, success: bool) -> String {
        format!(
            "INSERT INTO {} {COLUMNS} VALUES ({}, {}, {}, {}, {})",
            self.name,
            self.p(1),
            self.p(2),
            if success { "TRUE" } else { "FALSE" },
            self.p(3),
            self.p(4)
        )
    }

    /// The history, oldest first.
    pub fn select_sql(&self) -> String {
        format!(
            "SELECT version, description, success, checksum FROM {} ORDER BY version",
            self.name
        )
    }

    /// Writes the history row of `step`: clean with its execution time in
    /// nanoseconds, or dirty (`success = false`, time -1) as sqlx marks a
    /// migration that failed part-way.
    pub async fn insert<'e, DB, E>(
        &self,
        exec: E,
        step: Step<'_>,
        success: bool,
        execution_time: i64,
    ) -> Result<(), sqlx::Error>
    where
        DB: Database,
        E: Executor<'e, Database = DB>,
        DB::Arguments: IntoArguments<DB>,
        for<'q> i64: Encode<'q, DB> + Type<DB>,
        for<'q> &'q str: Encode<'q, DB> + Type<DB>,
        for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    {
        sqlx::query::<DB>(sqlx::AssertSqlSafe(self.insert_sql(success)))
            .bind(step.migration.version)
            .bind(step.migration.description.as_str())
            .bind(step.script.checksum.as_slice())
            .bind(execution_time)
            .execute(exec)
            .await
            .map(|_| ())
    }
}

/// A history row as read: version, description, success, checksum.
pub(crate) type HistoryRow = (i64, String, bool, Vec<u8>);

/// Turns history rows into `Applied`.
pub(crate) fn applied(rows: Vec<HistoryRow>) -> Vec<Applied> {
    rows.into_iter()
        .map(|(version, description, success, checksum)| Applied {
            version,
            description,
            checksum,
            success,
        })
        .collect()
}

/// What a failed verification leaves behind on a database whose DDL rolls
/// back with the transaction.
pub(crate) const ROLLED_BACK: &str = "the migration was rolled back on this tenant";
/// ... and on MySQL, whose DDL committed on its own.
pub(crate) const LEFT_DIRTY: &str =
    "MySQL cannot roll DDL back: the tenant is left dirty, fix it by hand";
/// What a failed verification of a batched backfill leaves behind.
pub(crate) const BACKFILL_UNRECORDED: &str = "the backfill's last transaction was rolled back and its earlier \
     batches stay committed; the migration is not recorded on this tenant and runs (and is verified) again next time";

/// Runs `script`'s verification query (if it has one) on `exec`: `Ok(None)`
/// when it passes, `Ok(Some(error))` naming the file and the rows that broke
/// it, with `outcome` saying what happened to the migration.
pub(crate) async fn verify<'e, DB, E>(
    exec: E,
    script: &Script,
    outcome: &str,
) -> Result<Option<TenantError>, sqlx::Error>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> i32: Decode<'r, DB> + Type<DB>,
    for<'r> i16: Decode<'r, DB> + Type<DB>,
    for<'r> f64: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
{
    let Some((file, sql)) = &script.verify else {
        return Ok(None);
    };
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(verify_query(sql)))
        .fetch_all(exec)
        .await?;
    let rows: Vec<Vec<String>> = rows.iter().map(render_row).collect();
    Ok(verdict(&rows).map(|why| verify_failed(file, &why, outcome)))
}

/// A verification query as it runs: inside `SELECT * FROM (…)`, where no
/// database lets a statement write (an UPDATE there is a syntax error, a
/// data-modifying WITH is refused): a verification that writes fails the
/// migration instead of committing with it.
pub(crate) fn verify_query(sql: &str) -> String {
    format!(
        "SELECT * FROM ({}\n) AS fleetmig_verify",
        sql.trim().trim_end_matches(';').trim_end()
    )
}

/// The error of a failed verification query.
pub(crate) fn verify_failed(file: &Path, why: &str, outcome: &str) -> TenantError {
    TenantError::permanent(
        FailureKind::VerifyQueryFailed,
        format!(
            "verification {} failed: it returned {why}; {outcome}",
            file.display()
        ),
    )
}

/// A check query passes when it returns no rows, or one row holding a single
/// true; otherwise the offending rows, as text (at most 5 shown).
pub(crate) fn verdict(rows: &[Vec<String>]) -> Option<String> {
    let single_true =
        rows.len() == 1 && rows[0].len() == 1 && matches!(rows[0][0].as_str(), "true" | "1" | "t");
    if rows.is_empty() || single_true {
        return None;
    }
    let shown: Vec<String> = rows
        .iter()
        .take(5)
        .map(|r| format!("({})", r.join(", ")))
        .collect();
    Some(format!(
        "{} row(s): {}{}",
        rows.len(),
        shown.join(", "),
        if rows.len() > 5 { " ..." } else { "" }
    ))
}

/// Runs a check query and judges its rows (see `verdict`).
pub(crate) async fn check<'e, DB, E>(exec: E, sql: &str) -> Result<Option<String>, sqlx::Error>
where
    DB: Database,
    E: Executor<'e, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> i32: Decode<'r, DB> + Type<DB>,
    for<'r> i16: Decode<'r, DB> + Type<DB>,
    for<'r> f64: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
{
    let sql = sql.trim().trim_end_matches(';').to_string();
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .fetch_all(exec)
        .await?;
    let rows: Vec<Vec<String>> = rows.iter().map(render_row).collect();
    Ok(verdict(&rows))
}

/// Renders a result row as text cells, whatever the column types.
pub(crate) fn render_row<R>(row: &R) -> Vec<String>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i16: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text<T: ToString>(v: Option<T>) -> String {
        v.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into())
    }
    (0..row.len())
        .map(|i| {
            if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                text(v)
            } else if let Ok(v) = row.try_get::<Option<i32>, _>(i) {
                text(v)
            } else if let Ok(v) = row.try_get::<Option<i16>, _>(i) {
                text(v)
            } else if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
                text(v)
            } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                text(v)
            } else if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
                text(v)
            } else {
                "?".into()
            }
        })
        .collect()
}

/// The rows a statement changed, for the databases `backfill_batch` serves
/// (sqlx has no trait for it).
pub(crate) trait RowsAffected {
    fn rows(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::mysql::MySqlQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

/// Why a backfill transaction failed: the database, or its verification.
pub(crate) enum BatchFail {
    Db(sqlx::Error),
    Verify(TenantError),
}

impl From<sqlx::Error> for BatchFail {
    fn from(e: sqlx::Error) -> Self {
        BatchFail::Db(e)
    }
}

/// How a finished backfill's history row is written.
pub(crate) enum RowWrite {
    /// The history table's `insert_sql(true)`, its values bound.
    Bound(String),
    /// A statement with its values written in, made from the execution
    /// time (MySQL: a tenant's new connection would first prepare a bound
    /// one, a round trip of its own).
    Text(Box<dyn FnOnce(i64) -> String + Send>),
}

/// One transaction of a batched backfill, statement by statement (SQLite
/// and MySQL; see `Session::backfill_batch` for the confirming run). `begin`
/// is the statement that opens the transaction (`BEGIN IMMEDIATE` takes
/// SQLite's write lock up front), `row` how its history row is written.
pub(crate) async fn backfill_batch<C>(
    conn: &mut C,
    begin: &'static str,
    row: RowWrite,
    step: Step<'_>,
    size: u64,
    started: Instant,
) -> Result<BatchOutcome, BatchFail>
where
    C: Connection,
    <C::Database as Database>::QueryResult: RowsAffected,
    for<'e> &'e mut <C::Database as Database>::Connection: Executor<'e, Database = C::Database>,
    <C::Database as Database>::Arguments: IntoArguments<C::Database>,
    for<'q> i64: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> &'q str: Encode<'q, C::Database> + Type<C::Database>,
    for<'q> &'q [u8]: Encode<'q, C::Database> + Type<C::Database>,
    usize: ColumnIndex<<C::Database as Database>::Row>,
    for<'r> i64: Decode<'r, C::Database>,
    for<'r> i32: Decode<'r, C::Database> + Type<C::Database>,
    for<'r> i16: Decode<'r, C::Database> + Type<C::Database>,
    for<'r> f64: Decode<'r, C::Database> + Type<C::Database>,
    for<'r> String: Decode<'r, C::Database> + Type<C::Database>,
    for<'r> bool: Decode<'r, C::Database> + Type<C::Database>,
{
    let sql = step.script.sql.replace(":batch_size", &size.to_string());
    let run = || sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()));
    let t0 = Instant::now();
    let mut tx = conn
        .begin_with(sqlx::AssertSqlSafe(begin.to_string()))
        .await?;
    let changed = run().execute(&mut *tx).await?.rows();
    let mut statements = 1;
    let mut done = changed == 0;
    if !done && changed < size {
        statements += 1;
        let mut confirm = tx.begin().await?;
        if run().execute(&mut *confirm).await?.rows() == 0 {
            confirm.commit().await?;
            done = true;
        } else {
            confirm.rollback().await?;
        }
    }
    if done {
        // the verification, before the history row: on failure the
        // transaction is dropped (rolled back) unrecorded
        if let Some(failed) = verify(&mut *tx, step.script, BACKFILL_UNRECORDED).await? {
            return Err(BatchFail::Verify(failed));
        }
        // the row bound here rather than through `HistoryTable::insert`: a
        // borrowed table across this await is not provably `Send`
        let time = started.elapsed().as_nanos() as i64;
        match row {
            RowWrite::Bound(insert_sql) => {
                sqlx::query::<C::Database>(sqlx::AssertSqlSafe(insert_sql))
                    .bind(step.migration.version)
                    .bind(step.migration.description.as_str())
                    .bind(step.script.checksum.as_slice())
                    .bind(time)
                    .execute(&mut *tx)
                    .await?;
            }
            RowWrite::Text(sql) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql(time)))
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(BatchOutcome {
        changed,
        statements,
        held: t0.elapsed(),
        done,
    })
}
