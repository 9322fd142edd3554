//! PostgreSQL tenants: a schema in a shared database (pooled connections,
//! `search_path` set to that schema only) or a whole database (a connection of
//! its own). The tenant lock is a session advisory lock keyed on
//! `hashtextextended('fleetmig:<database>/<schema>')`, not sqlx's lock (keyed
//! on the database alone, which would queue every schema of a database behind
//! one another). Pooled connections are reset before they go back to the pool.
//! The history table has sqlx's columns and key but no TOAST table
//! (`HistoryLayout`); a transaction group, a backfill batch and a
//! no-transaction migration each write their history rows themselves, in the
//! same round trips as the work.

use std::str::FromStr;
use std::time::Duration;

use futures_util::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};

use super::{AppliedStep, Conn, Connector, Fail, Session, Step, quote_ident, quote_literal};
use crate::error::TenantError;
use crate::tenant::{Dialect, DiscoverOptions, redact_url, scrub_secrets, validate_identifier};

pub(crate) fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?
        .application_name("fleetmig")
        .disable_statement_logging())
}

fn pg_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

pub(crate) async fn open(
    c: &Connector,
    url: &str,
    schema: Option<&str>,
) -> Result<Session, TenantError> {
    let conn_err = |e: sqlx::Error| {
        let mut t = super::classify(&e, Dialect::Postgres);
        t.message = format!(
            "cannot connect to {}: {}",
            redact_url(url),
            scrub_secrets(&t.message, [url])
        );
        t
    };
    let (conn, table) = match schema {
        Some(schema) => {
            validate_identifier(schema)
                .map_err(|m| TenantError::permanent("invalid_identifier", m))?;
            let pool = c.pg_pool(url).map_err(conn_err)?;
            let conn = pool.acquire().await.map_err(conn_err)?;
            (
                Conn::PgPooled(conn),
                format!(
                    "{}.{}",
                    quote_ident(Dialect::Postgres, schema),
                    "\"_sqlx_migrations\""
                ),
            )
        }
        None => {
            let opts = connect_options(url).map_err(conn_err)?;
            let conn = tokio::time::timeout(
                c.settings.connect_timeout,
                PgConnection::connect_with(&opts),
            )
            .await
            .map_err(|_| {
                TenantError::transient(
                    "connection",
                    format!("connecting to {} timed out", redact_url(url)),
                )
            })?
            .map_err(conn_err)?;
            (Conn::Pg(conn), "\"_sqlx_migrations\"".to_string())
        }
    };
    let mut s = Session {
        conn,
        dialect: Dialect::Postgres,
        table,
        schema: schema.map(str::to_string),
        locked: false,
        history_ready: false,
        fresh: false,
        url: Some(url.to_string()),
        lock_wait: c.settings.lock_timeout,
        exists_hint: None,
        setup: String::new(),
        broken: false,
        pg_history: Default::default(),
        lock_key: schema.unwrap_or("").to_string(),
    };
    // Session settings are sent with the lock, in one round trip (see `lock`).
    s.setup = setup_sql(c, schema);
    Ok(s)
}

fn setup_sql(c: &Connector, schema: Option<&str>) -> String {
    // fleetmig writes history rows with SQL literals: backslashes are plain
    let mut setup = String::from("SET standard_conforming_strings = on;\n");
    if let Some(schema) = schema {
        setup.push_str(&format!(
            "SET search_path TO {};\n",
            quote_ident(Dialect::Postgres, schema)
        ));
    }
    setup.push_str(&format!(
        "SET lock_timeout = '{}';\n",
        pg_duration(c.settings.lock_timeout)
    ));
    if let Some(st) = c.settings.statement_timeout {
        setup.push_str(&format!("SET statement_timeout = '{}';\n", pg_duration(st)));
    }
    setup
}

/// Runs a simple-query batch (one round trip) and collects the `fleetmig:`
/// markers its rows carry, up to the first error.
async fn batch(conn: &mut PgConnection, sql: String) -> (Vec<String>, Option<sqlx::Error>) {
    let mut markers = Vec::new();
    let mut stream = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).fetch_many(conn);
    while let Some(item) = stream.next().await {
        match item {
            Ok(sqlx::Either::Right(row)) => {
                if let Ok(text) = row.try_get::<String, _>(0)
                    && text.starts_with("fleetmig:")
                {
                    markers.push(text);
                }
            }
            Ok(sqlx::Either::Left(_)) => {}
            Err(e) => return (markers, Some(e)),
        }
    }
    (markers, None)
}

pub(crate) fn conn_mut(s: &mut Session) -> &mut PgConnection {
    match &mut s.conn {
        Conn::PgPooled(c) => c,
        Conn::Pg(c) => c,
        _ => unreachable!("postgres session without a postgres connection"),
    }
}

/// Session settings, the tenant's advisory lock and whether the history table
/// exists, in one round trip.
pub(crate) async fn lock(s: &mut Session) -> Result<(), TenantError> {
    let sql = format!(
        "{}SELECT pg_advisory_lock(hashtextextended('fleetmig:' || current_database() || '/' || {}, 0));\n\
         SELECT 'fleetmig:exists:' || (to_regclass({}) IS NOT NULL)::text;\n\
         SELECT 'fleetmig:layout:' || current_setting('server_version_num') || ':' || \
         (to_regclass('pg_temp.{TEMPLATE}') IS NOT NULL)::text || ':' || \
         has_database_privilege(current_database(), 'TEMPORARY')::text;",
        s.setup,
        quote_literal(Dialect::Postgres, &s.lock_key),
        quote_literal(Dialect::Postgres, &s.table),
    );
    let (markers, err) = batch(conn_mut(s), sql).await;
    if let Some(e) = err {
        let mut t = s.err(e);
        if t.kind == "lock_timeout" {
            t.kind = "tenant_locked".into();
            t.message = format!(
                "another session holds this tenant's migration lock: {}",
                t.message
            );
        }
        return Err(t);
    }
    s.exists_hint = markers
        .iter()
        .find_map(|m| m.strip_prefix("fleetmig:exists:"))
        .map(|v| v == "true");
    if let Some((version, template)) = markers
        .iter()
        .find_map(|m| m.strip_prefix("fleetmig:layout:"))
        .and_then(|m| m.split_once(':'))
    {
        let (exists, may_create) = template.split_once(':').unwrap_or((template, "false"));
        // Schema tenants share pooled connections; a role without TEMPORARY
        // on the database cannot create the template.
        let pooled = matches!(s.conn, Conn::PgPooled(_)) && may_create == "true";
        s.pg_history = HistoryLayout::pick(version.parse().unwrap_or(0), pooled, exists == "true");
    }
    Ok(())
}

pub(crate) async fn history_exists(c: &mut PgConnection, table: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(c)
        .await
}

pub(crate) async fn apply(
    s: &mut Session,
    steps: &[Step<'_>],
) -> Result<Vec<AppliedStep>, TenantError> {
    // The history table is created in a transaction of its own, not inside
    // the group's: every `CREATE INDEX CONCURRENTLY` in the database waits
    // for the transactions running when it starts, so on a fleet of schemas
    // a shorter group transaction is less waiting for every other tenant
    // (measured by benches/server_fleet.rs). An empty history table left by
    // a failed group is version 0, as before (sqlx does the same).
    s.ensure_history().await?;
    if let [step] = steps
        && step.script.no_tx
    {
        return apply_no_tx(s, *step).await;
    }
    apply_batch(s, steps).await
}

/// The name of the session-local template the history table is copied from
/// on PostgreSQL before 16 (see `HistoryLayout`).
const TEMPLATE: &str = "fleetmig_history_layout";

/// sqlx's history table columns, as `Migrate::ensure_migrations_table`
/// creates them; `plain` adds `STORAGE PLAIN` to the two variable-length
/// columns (PostgreSQL 16 and later).
fn history_columns(plain: bool) -> String {
    let storage = if plain { " STORAGE PLAIN" } else { "" };
    format!(
        "(\n    version BIGINT PRIMARY KEY,\n    description TEXT{storage} NOT NULL,\n    \
         installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),\n    success BOOLEAN NOT NULL,\n    \
         checksum BYTEA{storage} NOT NULL,\n    execution_time BIGINT NOT NULL\n)"
    )
}

/// How the history table is created. Its columns, types, defaults and key
/// are sqlx's, so `sqlx migrate info` and sqlx's `Migrator` read and extend
/// it as their own. What differs is physical: `description` and `checksum`
/// are stored `PLAIN` (a file name and a 48-byte checksum never need
/// out-of-line storage), so PostgreSQL creates no TOAST table and TOAST index
/// for it. On a fleet of fresh schemas that is two of the four relations
/// bookkeeping adds per tenant, and one of the two index builds PostgreSQL 15
/// fsyncs: it is most of the cost of the history over the raw SQL (measured by
/// `benches/server_fleet.rs`).
///
/// PostgreSQL 16 takes `STORAGE PLAIN` in `CREATE TABLE`. Before 16 a pooled
/// session (schema tenants) creates a temporary template once per
/// connection and copies it with `LIKE ... INCLUDING ALL`; a connection of
/// its own per tenant (database tenants) would pay for the template each
/// time, so it uses sqlx's DDL unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum HistoryLayout {
    /// sqlx's DDL as it is.
    #[default]
    Sqlx,
    /// PostgreSQL 16 and later: `STORAGE PLAIN` in the column definitions.
    StorageClause,
    /// Before 16, pooled: copy `pg_temp.fleetmig_history_layout`, creating
    /// it first unless it exists.
    Template { exists: bool },
}

impl HistoryLayout {
    fn pick(server_version_num: u32, pooled: bool, template_exists: bool) -> Self {
        if server_version_num >= 160000 {
            HistoryLayout::StorageClause
        } else if pooled && server_version_num > 0 {
            HistoryLayout::Template {
                exists: template_exists,
            }
        } else {
            HistoryLayout::Sqlx
        }
    }

    /// The DDL that creates `table` if it is missing.
    fn ddl(self, table: &str) -> String {
        match self {
            HistoryLayout::Sqlx => {
                format!(
                    "CREATE TABLE IF NOT EXISTS {table} {};\n",
                    history_columns(false)
                )
            }
            HistoryLayout::StorageClause => {
                format!(
                    "CREATE TABLE IF NOT EXISTS {table} {};\n",
                    history_columns(true)
                )
            }
            HistoryLayout::Template { exists } => {
                let mut sql = String::new();
                if !exists {
                    sql.push_str(&format!(
                        "CREATE TEMPORARY TABLE IF NOT EXISTS {TEMPLATE} {};\n\
                         ALTER TABLE pg_temp.{TEMPLATE} ALTER COLUMN description SET STORAGE PLAIN, \
                         ALTER COLUMN checksum SET STORAGE PLAIN;\n",
                        history_columns(false)
                    ));
                }
                sql.push_str(&format!(
                    "CREATE TABLE IF NOT EXISTS {table} (LIKE pg_temp.{TEMPLATE} INCLUDING ALL);\n"
                ));
                sql
            }
        }
    }

    /// The DDL committed: the template, if any, now exists in this session.
    fn committed(&mut self) {
        if let HistoryLayout::Template { exists } = self {
            *exists = true;
        }
    }
}

/// Creates the history table if it is missing, in its own transaction.
pub(crate) async fn ensure_history(s: &mut Session) -> Result<(), TenantError> {
    let sql = format!("BEGIN;\n{}COMMIT;", s.pg_history.ddl(&s.table));
    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(conn_mut(s))
        .await
    {
        let t = s.err(e);
        end_failed_transaction(s).await;
        return Err(t);
    }
    s.pg_history.committed();
    s.history_ready = true;
    Ok(())
}

/// The history rows of `rows` (each a step and its `execution_time` as SQL,
/// in nanoseconds) in sqlx's layout, in one statement, returning a
/// `fleetmig:done:<version>:<nanos>` marker per row.
fn history_insert_rows(table: &str, rows: &[(Step<'_>, String)]) -> String {
    let values: Vec<String> = rows
        .iter()
        .map(|(step, execution_time)| {
            format!(
                "({}, {}, TRUE, decode('{}', 'hex'), {execution_time})",
                step.migration.version,
                quote_literal(Dialect::Postgres, &step.migration.description),
                crate::migration::hex(&step.script.checksum),
            )
        })
        .collect();
    format!(
        "INSERT INTO {table} (version, description, success, checksum, execution_time) VALUES \
         {} RETURNING 'fleetmig:done:' || version || ':' || execution_time;\n",
        values.join(",\n")
    )
}

/// The history row of one step (see `history_insert_rows`).
fn history_insert(table: &str, step: Step<'_>, execution_time: &str) -> String {
    history_insert_rows(table, &[(step, execution_time.to_string())])
}

/// A `-- no-transaction` migration (`CREATE INDEX CONCURRENTLY`): the INVALID
/// leftovers of an interrupted build dropped first, the script on the locked
/// session outside any transaction, then its history row (one statement,
/// with the measured time; sqlx writes the row and then updates the time).
async fn apply_no_tx(s: &mut Session, step: Step<'_>) -> Result<Vec<AppliedStep>, TenantError> {
    // A fresh tenant has nothing an interrupted build could have left.
    if !s.fresh {
        drop_invalid_indexes(s, &step.script.sql).await?;
    }
    let v = step.migration.version;
    let t0 = std::time::Instant::now();
    let ran = conn_mut(s)
        .execute(sqlx::AssertSqlSafe(step.script.sql.clone()))
        .await;
    if let Err(e) = ran {
        let t = s.err(e).at_version(v);
        // A transient failure (lost connection, lock timeout) leaves the
        // history clean: the next attempt drops the INVALID index left
        // behind and runs again. A permanent one is recorded as dirty.
        if !t.is_transient() {
            let _ = s.mark_dirty(step).await;
        }
        return Err(t);
    }
    let took = t0.elapsed();
    let table = s.table.clone();
    let row = history_insert(&table, step, &took.as_nanos().to_string());
    sqlx::raw_sql(sqlx::AssertSqlSafe(row))
        .execute(conn_mut(s))
        .await
        .map_err(|e| s.err(e).at_version(v))?;
    Ok(vec![AppliedStep {
        version: v,
        duration: took,
        already_applied: false,
    }])
}

/// Ends a transaction a failed batch left open. If even that fails, the
/// connection is closed instead of reused (see `Session::close`).
async fn end_failed_transaction(s: &mut Session) {
    if sqlx::raw_sql("ROLLBACK")
        .execute(conn_mut(s))
        .await
        .is_err()
    {
        s.broken = true;
    }
}

/// Runs a simple-query batch; the rows its statements changed.
async fn run(c: &mut PgConnection, sql: String) -> Result<u64, sqlx::Error> {
    Ok(sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(c)
        .await?
        .rows_affected())
}

/// One transaction of a batched backfill (see `Session::backfill_batch`),
/// in as few round trips as the decisions allow: `BEGIN` and the batch
/// together, the confirming run with its savepoint, then the end of the
/// transaction with the history row. A short transaction is also a short
/// wait for every `CREATE INDEX CONCURRENTLY` elsewhere in the database,
/// which waits for the transactions running when it starts.
pub(crate) async fn backfill_batch(
    s: &mut Session,
    m: &crate::migration::Migration,
    script: &crate::migration::Script,
    size: u64,
    started: std::time::Instant,
) -> Result<super::BatchOutcome, TenantError> {
    let sql = script.sql.replace(":batch_size", &size.to_string());
    let sql = sql.trim_end().trim_end_matches(';');
    let table = s.table.clone();
    let step = Step {
        migration: m,
        script,
    };
    let t0 = std::time::Instant::now();
    // Ok(Err(_)): the verification failed, the transaction is still open
    let result: Result<Result<(u64, u64, bool), TenantError>, sqlx::Error> = async {
        let changed = run(conn_mut(s), format!("BEGIN;\n{sql};")).await?;
        let mut statements = 1;
        let mut done = changed == 0;
        let mut end = String::new();
        if !done && changed < size {
            statements += 1;
            let again = run(conn_mut(s), format!("SAVEPOINT fleetmig_confirm;\n{sql};")).await?;
            done = again == 0;
            end.push_str(if done {
                "RELEASE SAVEPOINT fleetmig_confirm;\n"
            } else {
                "ROLLBACK TO SAVEPOINT fleetmig_confirm;\n"
            });
        }
        if done && let Some((file, vsql)) = &script.verify {
            // the verification, before the history row
            if !end.is_empty() {
                run(conn_mut(s), std::mem::take(&mut end)).await?;
            }
            let rows: Vec<Vec<String>> = sqlx::raw_sql(sqlx::AssertSqlSafe(vsql.clone()))
                .fetch_all(conn_mut(s))
                .await?
                .iter()
                .map(super::render_row)
                .collect();
            if let Some(why) = super::verdict(&rows) {
                return Ok(Err(super::verify_failed_with(
                    file,
                    &why,
                    super::BACKFILL_UNRECORDED,
                )));
            }
        }
        if done {
            end.push_str(&history_insert(
                &table,
                step,
                &started.elapsed().as_nanos().to_string(),
            ));
        }
        end.push_str("COMMIT;");
        run(conn_mut(s), end).await?;
        Ok(Ok((changed, statements, done)))
    }
    .await;
    let held = t0.elapsed();
    let t = match result {
        Ok(Ok((changed, statements, done))) => {
            return Ok(super::BatchOutcome {
                changed,
                statements,
                held,
                done,
            });
        }
        Ok(Err(verify_failed)) => verify_failed,
        Err(e) => s.err(e),
    };
    end_failed_transaction(s).await;
    Err(t)
}

/// Applies a group of transactional migrations in one transaction sent as one
/// simple-query batch: the scripts, each followed by its history row in sqlx's
/// layout (execution time measured by the server), with a marker row before
/// each script so that a failure is pinned to its migration. One round trip
/// per group instead of five per migration: on a fleet, round trips are the
/// cost.
async fn apply_batch(s: &mut Session, steps: &[Step<'_>]) -> Result<Vec<AppliedStep>, TenantError> {
    if steps.iter().any(|st| st.script.verify.is_some()) {
        return apply_verified(s, steps).await;
    }
    let table = s.table.clone();
    // Each script's start time goes into a transaction-local setting; one
    // INSERT at the end writes every history row, each migration's time
    // measured by the server up to the next one's start.
    let start = |i: usize| format!("current_setting('fleetmig.t{i}')::timestamptz");
    let mut sql = String::from("BEGIN;\n");
    let mut rows = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let v = step.migration.version;
        sql.push_str(&format!(
            "SELECT 'fleetmig:start:{v}', set_config('fleetmig.t{i}', clock_timestamp()::text, true);\n"
        ));
        sql.push_str(&step.script.sql);
        // a script may end in a comment or without a semicolon
        sql.push_str("\n;\n");
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
    sql.push_str(&history_insert_rows(&table, &rows));
    sql.push_str("COMMIT;");
    let (markers, err) = batch(conn_mut(s), sql).await;
    if let Some(e) = err {
        let current = markers
            .iter()
            .rev()
            .find_map(|m| m.strip_prefix("fleetmig:start:"))
            .and_then(|v| v.parse::<i64>().ok());
        let mut t = s.err(e);
        if let Some(v) = current {
            t = t.at_version(v);
        }
        // The batch stopped inside our transaction: end it.
        end_failed_transaction(s).await;
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
async fn apply_verified(
    s: &mut Session,
    steps: &[Step<'_>],
) -> Result<Vec<AppliedStep>, TenantError> {
    let table = s.table.clone();
    let result: Result<Vec<AppliedStep>, (Fail, Option<i64>)> = async {
        let conn = conn_mut(s);
        let mut tx = conn.begin().await.map_err(|e| (Fail::Db(e.into()), None))?;
        let mut out = Vec::new();
        for step in steps {
            let v = step.migration.version;
            let t0 = std::time::Instant::now();
            sqlx::raw_sql(sqlx::AssertSqlSafe(step.script.sql.clone()))
                .execute(&mut *tx)
                .await
                .map_err(|e| (Fail::Db(e.into()), Some(v)))?;
            if let Some((file, vsql)) = &step.script.verify {
                let rows: Vec<Vec<String>> = sqlx::raw_sql(sqlx::AssertSqlSafe(vsql.clone()))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| (Fail::Db(e.into()), Some(v)))?
                    .iter()
                    .map(super::render_row)
                    .collect();
                if let Some(why) = super::verdict(&rows) {
                    return Err((Fail::Verify(super::verify_failed(file, &why, true)), Some(v)));
                }
            }
            let took = t0.elapsed();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} (version, description, success, checksum, execution_time) VALUES ($1, $2, TRUE, $3, $4)"
            )))
            .bind(v)
            .bind(step.migration.description.as_str())
            .bind(step.script.checksum.as_slice())
            .bind(took.as_nanos() as i64)
            .execute(&mut *tx)
            .await
            .map_err(|e| (Fail::Db(e.into()), Some(v)))?;
            out.push(AppliedStep {
                version: v,
                duration: took,
                already_applied: false,
            });
        }
        tx.commit().await.map_err(|e| (Fail::Db(e.into()), None))?;
        Ok(out)
    }
    .await;
    result.map_err(|(f, v)| s.fail(f, v))
}

/// Drops the INVALID indexes (left by an interrupted `CREATE INDEX
/// CONCURRENTLY`) that the migration builds, so that running it again does
/// not fail on "already exists". The names are resolved with the tenant's
/// `search_path` through `to_regclass`, index lookups only: the cost does not
/// grow with the number of schemas in the database.
async fn drop_invalid_indexes(s: &mut Session, sql: &str) -> Result<(), TenantError> {
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
        .fetch_all(conn_mut(s))
        .await
        .map_err(|e| s.err(e))?,
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
            .fetch_all(conn_mut(s))
            .await
            .map_err(|e| s.err(e))?;
            all.into_iter()
                .filter(|(_, index)| lower.contains(&index.to_lowercase()))
                .collect()
        }
    };
    for (schema, index) in rows {
        tracing::warn!(schema = %schema, index = %index, "dropping INVALID index left by an interrupted build");
        let drop = format!(
            "DROP INDEX CONCURRENTLY IF EXISTS {}.{}",
            quote_ident(Dialect::Postgres, &schema),
            quote_ident(Dialect::Postgres, &index)
        );
        conn_mut(s)
            .execute(sqlx::AssertSqlSafe(drop))
            .await
            .map_err(|e| s.err(e))?;
    }
    Ok(())
}

pub(crate) async fn release_pooled(
    mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    lock_key: &str,
    locked: bool,
) {
    let mut reset = String::new();
    if locked {
        reset.push_str(&format!(
            "SELECT pg_advisory_unlock(hashtextextended('fleetmig:' || current_database() || '/' || {}, 0));",
            quote_literal(Dialect::Postgres, lock_key)
        ));
    }
    reset.push_str("RESET ALL;");
    if (&mut *conn)
        .execute(sqlx::AssertSqlSafe(reset))
        .await
        .is_err()
    {
        // Never hand a connection in an unknown state to the next tenant.
        conn.close_on_drop();
    }
}

async fn discovery_conn(url: &str) -> Result<PgConnection, String> {
    let opts = connect_options(url).map_err(|e| scrub_secrets(&e.to_string(), [url]))?;
    PgConnection::connect_with(&opts).await.map_err(|e| {
        format!(
            "cannot connect to {}: {}",
            redact_url(url),
            scrub_secrets(&e.to_string(), [url])
        )
    })
}

async fn names(url: &str, opts: &DiscoverOptions, by_pattern: &str) -> Result<Vec<String>, String> {
    let mut conn = discovery_conn(url).await?;
    let r = match &opts.query {
        Some(q) => sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(q.clone()))
            .fetch_all(&mut conn)
            .await
            .map_err(|e| {
                format!(
                    "--tenant-query failed: {}",
                    scrub_secrets(&e.to_string(), [url])
                )
            }),
        None => sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(by_pattern.to_string()))
            .bind(&opts.pattern)
            .fetch_all(&mut conn)
            .await
            .map_err(|e| scrub_secrets(&e.to_string(), [url])),
    };
    let _ = conn.close().await;
    r
}

/// Schemas of the database at `url` matching the pattern or returned by the query.
pub async fn list_schemas(url: &str, opts: &DiscoverOptions) -> Result<Vec<String>, String> {
    names(
        url,
        opts,
        "SELECT schema_name::text FROM information_schema.schemata WHERE schema_name LIKE $1 ORDER BY 1",
    )
    .await
}

/// Databases of the server at `url` matching the pattern or returned by the query.
pub async fn list_databases(url: &str, opts: &DiscoverOptions) -> Result<Vec<String>, String> {
    names(
        url,
        opts,
        "SELECT datname::text FROM pg_database WHERE datname LIKE $1 AND NOT datistemplate ORDER BY 1",
    )
    .await
}
