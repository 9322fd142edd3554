//! The PostgreSQL side of a move: a schema tenant, or a database tenant
//! (every schema of its database it owns: `catalog::schemas`). Reads in a
//! `REPEATABLE READ READ ONLY` transaction, dates, timestamps, decimals,
//! JSON and UUIDs as the server prints them (`DateStyle` ISO, `TimeZone`
//! UTC); writes with binary `COPY … FROM STDIN` (`binary.rs`).

mod admin;
mod binary;
mod catalog;
mod quiet;

use crate::error::FailureKind;
use sqlx::{Connection, Executor, PgConnection, Row};

use super::when::When;
use super::{
    Contents, CopyEnd, ForeignKey, Kind, MARK_TABLE, Mark, SAVED_TABLE, Sql, Table, Value, failed,
    find_orphan, orphan_sql, scan_rows,
};
use crate::dialect::{connect, quote_ident, quote_literal};
use crate::error::TenantError;
use crate::options::Settings;
use crate::tenant::Dialect;
pub use admin::{create, drop};

pub struct PgEnd {
    conn: PgConnection,
    /// The tenant's own schema (a database tenant's current schema).
    home: String,
    /// Every schema the tenant owns.
    schemas: Vec<String>,
    /// Rows held back for one COPY (its statement, its binary stream),
    /// written when they pass `COPY_BYTES` or the table ends: a COPY per
    /// page costs a round trip each (and sqlx's sockets do not set
    /// TCP_NODELAY).
    pending: Option<(String, Vec<u8>)>,
    /// How `quiet` turned triggers and foreign keys off, and on which
    /// tables (`quiet.rs`).
    quieted: Option<(quiet::Quiet, Vec<String>)>,
}

/// How much of a COPY stream is held back before it is sent.
const COPY_BYTES: usize = 8 << 20;

const SQL: Sql = Sql {
    quote: quote_ident,
    param: |n, c| format!("CAST(${} AS {})", n + 1, c.type_name),
    read: |c| {
        let q = quote_ident(&c.name);
        match c.kind {
            Some(Kind::Int) => format!("{q}::int8"),
            Some(Kind::Float) => format!("{q}::float8"),
            Some(
                Kind::Decimal
                | Kind::Text
                | Kind::Json
                | Kind::Uuid
                | Kind::Date
                | Kind::Timestamp
                | Kind::TimestampTz,
            ) => format!("{q}::text"),
            _ => q,
        }
    },
    max_params: 32_000,
    // explicit values for identity columns too
    overriding: " OVERRIDING SYSTEM VALUE",
};

fn decode(row: &sqlx::postgres::PgRow, i: usize, kind: Kind) -> Result<Value, sqlx::Error> {
    let text = |i| row.try_get::<Option<String>, _>(i);
    let when = |t: String| {
        When::parse(&t).ok_or_else(|| sqlx::Error::Decode(format!("not a date: {t}").into()))
    };
    Ok(match kind {
        Kind::Int => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
        Kind::Float => row.try_get::<Option<f64>, _>(i)?.map(Value::Float),
        Kind::Decimal => text(i)?.map(Value::Decimal),
        Kind::Text => text(i)?.map(Value::Text),
        Kind::Uuid => text(i)?.map(Value::Uuid),
        Kind::Json => text(i)?.map(Value::Json),
        Kind::Bool => row.try_get::<Option<bool>, _>(i)?.map(Value::Bool),
        Kind::Date => text(i)?.map(when).transpose()?.map(Value::Date),
        Kind::Timestamp => text(i)?.map(when).transpose()?.map(Value::Timestamp),
        Kind::TimestampTz => text(i)?.map(when).transpose()?.map(Value::TimestampTz),
        Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i)?.map(Value::Bytes),
    }
    .unwrap_or(Value::Null))
}

impl PgEnd {
    /// Opens the tenant at `url` (`schema`: a schema tenant; `None`: the
    /// whole database).
    pub async fn open(
        settings: &Settings,
        url: &str,
        schema: Option<&str>,
    ) -> Result<PgEnd, TenantError> {
        let opts = crate::dialect::postgres::connect_options(url)
            .map_err(|e| crate::dialect::connect_error(Dialect::Postgres, url, &e))?;
        let mut conn = connect(
            Dialect::Postgres,
            url,
            settings.connect_timeout,
            PgConnection::connect_with(&opts),
        )
        .await?;
        let what = |e| failed(Dialect::Postgres, "session settings", e);
        // dates and timestamps are read as text: in one spelling, in UTC
        conn.execute(
            "SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC'; SET extra_float_digits = 3",
        )
        .await
        .map_err(what)?;
        let home = match schema {
            Some(s) => s.to_string(),
            None => sqlx::query_scalar::<_, Option<String>>("SELECT current_schema()::text")
                .fetch_one(&mut conn)
                .await
                .map_err(what)?
                .ok_or_else(|| {
                    TenantError::permanent(
                        FailureKind::InvalidTenant,
                        "the database has no schema on its search_path (current_schema() is NULL)",
                    )
                })?,
        };
        let schemas = catalog::schemas(&mut conn, &home, schema.is_none()).await?;
        Ok(PgEnd {
            conn,
            home,
            schemas,
            pending: None,
            quieted: None,
        })
    }

    /// Sends the rows held back, in one COPY.
    async fn flush(&mut self, table: &str) -> Result<(), TenantError> {
        let Some((sql, mut data)) = self.pending.take() else {
            return Ok(());
        };
        data.extend_from_slice(binary::TRAILER);
        let what = |e| failed(Dialect::Postgres, &format!("writing {table}"), e);
        let mut copy = self.conn.copy_in_raw(&sql).await.map_err(what)?;
        if let Err(e) = copy.send(data).await {
            let _ = copy.abort("fleetmig: the copy failed").await;
            return Err(what(e));
        }
        copy.finish().await.map_err(what)?;
        Ok(())
    }

    /// `t`'s name with its schema, quoted.
    fn qualified(&self, t: &Table) -> String {
        format!(
            "{}.{}",
            quote_ident(t.schema.as_deref().unwrap_or(&self.home)),
            quote_ident(&t.name)
        )
    }

    fn mark_table(&self) -> String {
        format!("{}.{}", quote_ident(&self.home), quote_ident(MARK_TABLE))
    }

    fn saved_table(&self) -> String {
        format!("{}.{}", quote_ident(&self.home), quote_ident(SAVED_TABLE))
    }

    async fn run(&mut self, what: &str, sql: String) -> Result<(), TenantError> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut self.conn)
            .await
            .map_err(|e| failed(Dialect::Postgres, what, e))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl CopyEnd for PgEnd {
    async fn tables(&mut self) -> Result<Vec<Table>, TenantError> {
        catalog::tables(&mut self.conn, &self.home, &self.schemas).await
    }

    async fn snapshot(&mut self) -> Result<(), TenantError> {
        // the snapshot is taken at the first statement: now (several jobs'
        // snapshots are lined up while the source's writes are held)
        self.conn
            .execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1")
            .await
            .map_err(|e| failed(Dialect::Postgres, "starting the snapshot", e))?;
        Ok(())
    }

    async fn release(&mut self) -> Result<(), TenantError> {
        self.conn
            .execute("ROLLBACK")
            .await
            .map_err(|e| failed(Dialect::Postgres, "ending the snapshot", e))?;
        Ok(())
    }

    async fn scan(
        &mut self,
        t: &Table,
        batch: usize,
        to: &tokio::sync::mpsc::Sender<Vec<Vec<Value>>>,
    ) -> Result<u64, TenantError> {
        let sql = SQL.scan(&self.qualified(t), t);
        scan_rows(Dialect::Postgres, &mut self.conn, sql, t, batch, to, decode).await
    }

    async fn digest(&mut self, t: &Table) -> Result<Option<String>, TenantError> {
        // every column's text, as the record prints it; a 64-bit hash each
        let sql = format!(
            "SELECT count(*)::text || ':' || COALESCE(sum(hashtextextended(r::text, 0)::numeric), 0)::text \
             FROM {} r",
            self.qualified(t)
        );
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut self.conn)
            .await
            .map(Some)
            .map_err(|e| failed(Dialect::Postgres, &format!("digesting {}", t.label()), e))
    }

    async fn count(&mut self, t: &Table) -> Result<u64, TenantError> {
        let sql = format!("SELECT count(*) FROM {}", self.qualified(t));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| failed(Dialect::Postgres, &format!("counting {}", t.label()), e))?;
        Ok(n as u64)
    }

    async fn clear(&mut self, tables: &[&Table]) -> Result<(), TenantError> {
        if tables.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = tables.iter().map(|t| self.qualified(t)).collect();
        let sql = format!("TRUNCATE {}", names.join(", "));
        match self.conn.execute(sqlx::AssertSqlSafe(sql)).await {
            Ok(_) => Ok(()),
            // some of the tables only, referenced by others that keep their
            // rows: TRUNCATE refuses, DELETE (no trigger fires) does it
            Err(e) => {
                let e = failed(Dialect::Postgres, "emptying the target's tables", e);
                if e.code.as_deref() != Some("0A000") {
                    return Err(e);
                }
                let sql: String = names.iter().map(|n| format!("DELETE FROM {n};")).collect();
                self.run("emptying the target's tables", sql).await
            }
        }
    }

    /// Rows go out by `COPY … FROM STDIN` (text format), several pages to a
    /// statement: several times faster than multi-row INSERTs, and COPY
    /// keeps an identity column's given values.
    async fn insert(&mut self, t: &Table, rows: &[Vec<Value>]) -> Result<(), TenantError> {
        let cols: Vec<String> = t.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let sql = format!(
            "COPY {} ({}) FROM STDIN WITH (FORMAT binary)",
            self.qualified(t),
            cols.join(", ")
        );
        if self.pending.as_ref().is_some_and(|(s, _)| *s != sql) {
            self.flush(&t.label()).await?;
        }
        let data = &mut self
            .pending
            .get_or_insert_with(|| (sql, binary::HEADER.to_vec()))
            .1;
        for row in rows {
            binary::row(&t.columns, row, data).map_err(|e| TenantError {
                message: format!("table {}: {}", t.label(), e.message),
                ..e
            })?;
        }
        if data.len() >= COPY_BYTES {
            self.flush(&t.label()).await?;
        }
        Ok(())
    }

    async fn next_id(&mut self, t: &Table) -> Result<Option<i64>, TenantError> {
        let Some(c) = t.columns.iter().find(|c| c.serial) else {
            return Ok(None);
        };
        // pg_sequence_last_value is NULL for a sequence never used
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT pg_sequence_last_value(pg_get_serial_sequence($1, $2)::regclass) + 1",
        )
        .bind(self.qualified(t))
        .bind(&c.name)
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| {
            failed(
                Dialect::Postgres,
                &format!("reading {}'s sequence", t.label()),
                e,
            )
        })?;
        Ok(next)
    }

    async fn finish_table(&mut self, t: &Table, next: Option<i64>) -> Result<(), TenantError> {
        self.flush(&t.label()).await?;
        // fresh statistics for the bulk-loaded table: the foreign-key checks
        // of the tables copied after it (and the application) plan with them
        let sql = format!("ANALYZE {}", self.qualified(t));
        self.conn
            .execute(sqlx::AssertSqlSafe(sql))
            .await
            .map_err(|e| failed(Dialect::Postgres, &format!("analyzing {}", t.label()), e))?;
        for c in t.columns.iter().filter(|c| c.serial) {
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence({}, {}), GREATEST(COALESCE((SELECT max({}) FROM {}), 0) + 1, {}), false)",
                quote_literal(&self.qualified(t)),
                quote_literal(&c.name),
                quote_ident(&c.name),
                self.qualified(t),
                next.unwrap_or(1)
            );
            self.conn
                .execute(sqlx::AssertSqlSafe(sql))
                .await
                .map_err(|e| {
                    failed(
                        Dialect::Postgres,
                        &format!("setting {}'s sequence", t.label()),
                        e,
                    )
                })?;
        }
        Ok(())
    }

    async fn mark(&mut self) -> Result<Option<Mark>, TenantError> {
        let what = |e| failed(Dialect::Postgres, "reading the move's mark", e);
        let there: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2)",
        )
        .bind(&self.home)
        .bind(MARK_TABLE)
        .fetch_one(&mut self.conn)
        .await
        .map_err(what)?;
        if !there {
            return Ok(None);
        }
        let sql = format!("SELECT move_id, tenant, source FROM {}", self.mark_table());
        let row: Option<(String, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_optional(&mut self.conn)
            .await
            .map_err(what)?;
        Ok(row.map(|(move_id, tenant, source)| Mark {
            move_id,
            tenant,
            source,
        }))
    }

    async fn set_mark(&mut self, m: &Mark) -> Result<(), TenantError> {
        let t = self.mark_table();
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {t} (move_id text NOT NULL, tenant text NOT NULL, source text NOT NULL); \
             DELETE FROM {t}"
        );
        let what = |e| failed(Dialect::Postgres, "marking the target", e);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut self.conn)
            .await
            .map_err(what)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {t} VALUES ($1, $2, $3)"
        )))
        .bind(&m.move_id)
        .bind(&m.tenant)
        .bind(&m.source)
        .execute(&mut self.conn)
        .await
        .map_err(what)?;
        Ok(())
    }

    async fn unmark(&mut self) -> Result<(), TenantError> {
        let sql = format!("DROP TABLE IF EXISTS {}", self.mark_table());
        self.conn
            .execute(sqlx::AssertSqlSafe(sql))
            .await
            .map_err(|e| failed(Dialect::Postgres, "removing the move's mark", e))?;
        Ok(())
    }

    async fn contents(&mut self) -> Result<Contents, TenantError> {
        catalog::contents(&mut self.conn, &self.home, &self.schemas).await
    }

    async fn quiet(&mut self, tables: &[&Table]) -> Result<(), TenantError> {
        let names: Vec<String> = tables.iter().map(|t| self.qualified(t)).collect();
        let saved = self.saved_table();
        let mode = quiet::quiet(&mut self.conn, &saved, &names).await?;
        self.quieted = Some((mode, names));
        Ok(())
    }

    async fn quiet_session(&mut self) -> Result<(), TenantError> {
        match self
            .conn
            .execute("SET session_replication_role = replica")
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = failed(Dialect::Postgres, "turning the target's triggers off", e);
                // the owner's way was taken: the tables' triggers are off
                if e.code.as_deref() == Some("42501") {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn restore(&mut self) -> Result<(), TenantError> {
        self.flush("the last table").await?;
        let Some((mode, names)) = self.quieted.take() else {
            return Ok(());
        };
        let saved = self.saved_table();
        quiet::restore(&mut self.conn, &saved, &names, mode).await
    }

    async fn freeze(&mut self, tables: &[&Table]) -> Result<(), TenantError> {
        let names: Vec<String> = tables.iter().map(|t| self.qualified(t)).collect();
        self.run(
            "holding the source's writes",
            format!(
                "BEGIN; LOCK TABLE {} IN EXCLUSIVE MODE",
                if names.is_empty() {
                    self.mark_table()
                } else {
                    names.join(", ")
                }
            ),
        )
        .await
    }

    async fn unfreeze(&mut self) -> Result<(), TenantError> {
        self.run("letting the source's writes go on", "ROLLBACK".into())
            .await
    }

    async fn orphan(&mut self, t: &Table, fk: &ForeignKey) -> Result<Option<String>, TenantError> {
        self.flush(&t.label()).await?;
        let parent = Table {
            schema: fk.parent.0.clone(),
            name: fk.parent.1.clone(),
            columns: Vec::new(),
            key: Vec::new(),
            foreign_keys: Vec::new(),
        };
        let sql = orphan_sql(
            quote_ident,
            |c| format!("{c}::text"),
            &self.qualified(t),
            &self.qualified(&parent),
            t,
            fk,
        );
        find_orphan(Dialect::Postgres, &mut self.conn, sql, t, fk).await
    }

    async fn close(self: Box<Self>) {
        let _ = self.conn.close().await;
    }
}
