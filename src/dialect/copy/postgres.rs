//! The PostgreSQL side of a move: a schema tenant, or a database tenant
//! (its tables in `public`). Reads in a `REPEATABLE READ READ ONLY`
//! transaction; writes bind every value under a cast to the column's type.

use sqlx::{Connection, Executor, PgConnection, Row};

use super::{
    Catalog, Column, Contents, CopyEnd, Created, Kind, MARK_TABLE, Mark, Sql, Table, Value,
    bind_value, decode_page, failed,
};
use crate::dialect::{connect, quote_ident, quote_literal};
use crate::error::TenantError;
use crate::options::Settings;
use crate::tenant::Dialect;

pub struct PgEnd {
    conn: PgConnection,
    schema: String,
    /// Rows held back for one COPY (its statement, its text), written when
    /// they pass `COPY_BYTES` or the table ends: a COPY per page costs a
    /// round trip each (and sqlx's sockets do not set TCP_NODELAY).
    pending: Option<(String, String)>,
}

/// How much COPY text is held back before it is sent.
const COPY_BYTES: usize = 8 << 20;

fn kind(typname: &str) -> Option<Kind> {
    Some(match typname {
        "int2" | "int4" | "int8" => Kind::Int,
        "float4" | "float8" => Kind::Float,
        "numeric" => Kind::Decimal,
        "text" | "varchar" | "bpchar" | "name" | "citext" => Kind::Text,
        "bool" => Kind::Bool,
        "date" => Kind::Date,
        "timestamp" => Kind::Timestamp,
        "timestamptz" => Kind::TimestampTz,
        "json" | "jsonb" => Kind::Json,
        "bytea" => Kind::Bytes,
        "uuid" => Kind::Uuid,
        _ => return None,
    })
}

const SQL: Sql = Sql {
    quote: quote_ident,
    param: |n, c| format!("CAST(${} AS {})", n + 1, c.type_name),
    read: |c| {
        let q = quote_ident(&c.name);
        match c.kind {
            Some(Kind::Int) => format!("{q}::int8"),
            Some(Kind::Float) => format!("{q}::float8"),
            Some(Kind::Decimal | Kind::Text | Kind::Json | Kind::Uuid) => format!("{q}::text"),
            _ => q,
        }
    },
    max_params: 32_000,
    // explicit values for identity columns too
    overriding: " OVERRIDING SYSTEM VALUE",
};

fn decode(row: &sqlx::postgres::PgRow, i: usize, kind: Kind) -> Result<Value, sqlx::Error> {
    Ok(match kind {
        Kind::Int => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
        Kind::Float => row.try_get::<Option<f64>, _>(i)?.map(Value::Float),
        Kind::Decimal => row.try_get::<Option<String>, _>(i)?.map(Value::Decimal),
        Kind::Text => row.try_get::<Option<String>, _>(i)?.map(Value::Text),
        Kind::Uuid => row.try_get::<Option<String>, _>(i)?.map(Value::Uuid),
        Kind::Json => match row.try_get::<Option<String>, _>(i)? {
            Some(s) => Some(Value::Json(
                serde_json::from_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            )),
            None => None,
        },
        Kind::Bool => row.try_get::<Option<bool>, _>(i)?.map(Value::Bool),
        Kind::Date => row
            .try_get::<Option<chrono::NaiveDate>, _>(i)?
            .map(Value::Date),
        Kind::Timestamp => row
            .try_get::<Option<chrono::NaiveDateTime>, _>(i)?
            .map(Value::Timestamp),
        Kind::TimestampTz => row
            .try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(i)?
            .map(Value::TimestampTz),
        Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i)?.map(Value::Bytes),
    }
    .unwrap_or(Value::Null))
}

/// `v` in COPY's text format.
fn copy_text(v: &Value, out: &mut String) {
    use std::fmt::Write;
    let escaped = |s: &str, out: &mut String| {
        for ch in s.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    };
    match v {
        Value::Null => out.push_str("\\N"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) if f.is_nan() => out.push_str("NaN"),
        Value::Float(f) if f.is_infinite() => {
            out.push_str(if *f > 0.0 { "Infinity" } else { "-Infinity" })
        }
        Value::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        Value::Bytes(b) => {
            out.push_str("\\\\x");
            out.push_str(&crate::migration::hex(b));
        }
        Value::Date(d) => {
            let _ = super::value::write_date(d, out);
        }
        Value::Timestamp(t) => {
            let _ = super::value::write_timestamp(t, out);
        }
        Value::TimestampTz(t) => {
            let _ = super::value::write_timestamp(&t.naive_utc(), out);
            out.push_str("+00");
        }
        Value::Json(j) => escaped(&j.to_string(), out),
        Value::Decimal(s) | Value::Text(s) | Value::Uuid(s) => escaped(s, out),
    }
}

impl PgEnd {
    pub async fn open(
        settings: &Settings,
        url: &str,
        schema: Option<&str>,
    ) -> Result<PgEnd, TenantError> {
        let opts = crate::dialect::postgres::connect_options(url)
            .map_err(|e| crate::dialect::connect_error(Dialect::Postgres, url, &e))?;
        let conn = connect(
            Dialect::Postgres,
            url,
            settings.connect_timeout,
            PgConnection::connect_with(&opts),
        )
        .await?;
        let mut end = PgEnd {
            conn,
            schema: String::new(),
            pending: None,
        };
        end.schema = match schema {
            Some(s) => s.to_string(),
            None => sqlx::query_scalar::<_, Option<String>>("SELECT current_schema()::text")
                .fetch_one(&mut end.conn)
                .await
                .map_err(|e| failed(Dialect::Postgres, "current_schema", e))?
                .ok_or_else(|| {
                    TenantError::permanent(
                        "invalid_tenant",
                        "the database has no schema on its search_path (current_schema() is NULL)",
                    )
                })?,
        };
        Ok(end)
    }

    /// Sends the rows held back, in one COPY.
    async fn flush(&mut self, table: &str) -> Result<(), TenantError> {
        let Some((sql, data)) = self.pending.take() else {
            return Ok(());
        };
        let what = |e| failed(Dialect::Postgres, &format!("writing {table}"), e);
        let mut copy = self.conn.copy_in_raw(&sql).await.map_err(what)?;
        if let Err(e) = copy.send(data.into_bytes()).await {
            let _ = copy.abort("fleetmig: the copy failed").await;
            return Err(what(e));
        }
        copy.finish().await.map_err(what)?;
        Ok(())
    }

    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(table))
    }
}

/// Creates the database `url` names (and `schema` in it) where missing;
/// says what it created.
pub async fn create(
    settings: &Settings,
    url: &str,
    schema: Option<&str>,
) -> Result<Created, TenantError> {
    let opts = crate::dialect::postgres::connect_options(url)
        .map_err(|e| crate::dialect::connect_error(Dialect::Postgres, url, &e))?;
    let open = || {
        connect(
            Dialect::Postgres,
            url,
            settings.connect_timeout,
            PgConnection::connect_with(&opts),
        )
    };
    let mut created = Created::Nothing;
    let mut conn = match open().await {
        Ok(c) => c,
        Err(e) if e.code.as_deref() == Some("3D000") => {
            let name = opts
                .get_database()
                .unwrap_or_else(|| opts.get_username())
                .to_string();
            let sql = format!("CREATE DATABASE {}", quote_ident(&name));
            match admin(settings, url, &opts, &sql).await {
                Ok(()) => created = Created::Database,
                // created by another meanwhile: it is not ours
                Err(e) if e.code.as_deref() == Some("42P04") => {}
                Err(e) => return Err(e),
            }
            open().await?
        }
        Err(e) => return Err(e),
    };
    if let Some(s) = schema {
        let sql = format!("CREATE SCHEMA {}", quote_ident(s));
        match conn.execute(sqlx::AssertSqlSafe(sql)).await {
            Ok(_) if created == Created::Nothing => created = Created::Schema,
            Ok(_) => {}
            Err(e) => {
                let e = failed(Dialect::Postgres, &format!("creating schema {s}"), e);
                if e.code.as_deref() != Some("42P06") {
                    let _ = conn.close().await;
                    return Err(e);
                }
            }
        }
    }
    let _ = conn.close().await;
    Ok(created)
}

/// Runs `sql` through the server's `postgres` database.
async fn admin(
    settings: &Settings,
    url: &str,
    opts: &sqlx::postgres::PgConnectOptions,
    sql: &str,
) -> Result<(), TenantError> {
    let mut c = connect(
        Dialect::Postgres,
        url,
        settings.connect_timeout,
        PgConnection::connect_with(&opts.clone().database("postgres")),
    )
    .await?;
    let r = c.execute(sqlx::AssertSqlSafe(sql.to_string())).await;
    let _ = c.close().await;
    r.map(|_| ()).map_err(|e| failed(Dialect::Postgres, sql, e))
}

/// Drops a schema tenant (`DROP SCHEMA … CASCADE`) or a database tenant;
/// `force`: a database fleetmig created, whoever is connected to it.
pub async fn drop(
    settings: &Settings,
    url: &str,
    schema: Option<&str>,
    force: bool,
) -> Result<(), TenantError> {
    let opts = crate::dialect::postgres::connect_options(url)
        .map_err(|e| crate::dialect::connect_error(Dialect::Postgres, url, &e))?;
    match schema {
        Some(s) => {
            let mut c = connect(
                Dialect::Postgres,
                url,
                settings.connect_timeout,
                PgConnection::connect_with(&opts),
            )
            .await?;
            let sql = format!("DROP SCHEMA {} CASCADE", quote_ident(s));
            let r = c.execute(sqlx::AssertSqlSafe(sql)).await;
            let _ = c.close().await;
            r.map(|_| ())
                .map_err(|e| failed(Dialect::Postgres, &format!("dropping schema {s}"), e))
        }
        None => {
            let name = opts
                .get_database()
                .unwrap_or_else(|| opts.get_username())
                .to_string();
            let sql = format!(
                "DROP DATABASE {}{}",
                quote_ident(&name),
                if force { " WITH (FORCE)" } else { "" }
            );
            admin(settings, url, &opts, &sql).await
        }
    }
}

#[async_trait::async_trait]
impl CopyEnd for PgEnd {
    async fn tables(&mut self) -> Result<Vec<Table>, TenantError> {
        let rows = sqlx::query(
            "SELECT c.relname::text AS t, a.attname::text AS c, format_type(a.atttypid, a.atttypmod) AS ty, \
             ty.typname::text AS typname, \
             (a.attidentity <> '' OR pg_get_serial_sequence(quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname) IS NOT NULL) AS serial, \
             COALESCE(array_position(string_to_array(i.indkey::text, ' ')::int2[], a.attnum), 0) AS keypos \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             JOIN pg_type ty ON ty.oid = a.atttypid \
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
             ORDER BY c.relname, a.attnum",
        )
        .bind(&self.schema)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| failed(Dialect::Postgres, "reading the catalog", e))?;
        let mut catalog = Catalog::default();
        for r in &rows {
            let typname: String = r.get("typname");
            let pos: i32 = r.get("keypos");
            let column = Column {
                name: r.get("c"),
                type_name: r.get("ty"),
                kind: kind(&typname),
                serial: r.get("serial"),
            };
            catalog.column(r.get("t"), column, pos as i64);
        }
        let refs: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.relname::text, r.relname::text FROM pg_constraint k \
             JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class r ON r.oid = k.confrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE k.contype = 'f' AND n.nspname = $1",
        )
        .bind(&self.schema)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| failed(Dialect::Postgres, "reading foreign keys", e))?;
        Ok(catalog.finish(refs))
    }

    async fn snapshot(&mut self) -> Result<(), TenantError> {
        self.conn
            .execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
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

    async fn page(
        &mut self,
        t: &Table,
        after: Option<&[Value]>,
        limit: usize,
    ) -> Result<Vec<Vec<Value>>, TenantError> {
        let sql = SQL.page(&self.qualified(&t.name), t, after.is_some(), limit);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for v in after.unwrap_or_default() {
            q = bind_value!(q, v);
        }
        let rows = q
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| failed(Dialect::Postgres, &format!("reading {}", t.name), e))?;
        decode_page(Dialect::Postgres, t, &rows, decode)
    }

    async fn count(&mut self, t: &Table) -> Result<u64, TenantError> {
        let sql = format!("SELECT count(*) FROM {}", self.qualified(&t.name));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| failed(Dialect::Postgres, &format!("counting {}", t.name), e))?;
        Ok(n as u64)
    }

    async fn clear(&mut self, tables: &[&Table]) -> Result<(), TenantError> {
        if tables.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = tables.iter().map(|t| self.qualified(&t.name)).collect();
        let sql = format!("TRUNCATE {}", names.join(", "));
        self.conn
            .execute(sqlx::AssertSqlSafe(sql))
            .await
            .map_err(|e| failed(Dialect::Postgres, "emptying the target's tables", e))?;
        Ok(())
    }

    /// Rows go out by `COPY … FROM STDIN` (text format), several pages to a
    /// statement: several times faster than multi-row INSERTs, and COPY
    /// keeps an identity column's given values.
    async fn insert(&mut self, t: &Table, rows: &[Vec<Value>]) -> Result<(), TenantError> {
        let cols: Vec<String> = t.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let sql = format!(
            "COPY {} ({}) FROM STDIN",
            self.qualified(&t.name),
            cols.join(", ")
        );
        if self.pending.as_ref().is_some_and(|(s, _)| *s != sql) {
            self.flush(&t.name).await?;
        }
        let data = &mut self.pending.get_or_insert_with(|| (sql, String::new())).1;
        for row in rows {
            for (i, v) in row.iter().enumerate() {
                if i > 0 {
                    data.push('\t');
                }
                copy_text(v, data);
            }
            data.push('\n');
        }
        if data.len() >= COPY_BYTES {
            self.flush(&t.name).await?;
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
        .bind(self.qualified(&t.name))
        .bind(&c.name)
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| {
            failed(
                Dialect::Postgres,
                &format!("reading {}'s sequence", t.name),
                e,
            )
        })?;
        Ok(next)
    }

    async fn finish_table(&mut self, t: &Table, next: Option<i64>) -> Result<(), TenantError> {
        self.flush(&t.name).await?;
        // fresh statistics for the bulk-loaded table: the foreign-key checks
        // of the tables copied after it (and the application) plan with them
        let sql = format!("ANALYZE {}", self.qualified(&t.name));
        self.conn
            .execute(sqlx::AssertSqlSafe(sql))
            .await
            .map_err(|e| failed(Dialect::Postgres, &format!("analyzing {}", t.name), e))?;
        for c in t.columns.iter().filter(|c| c.serial) {
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence({}, {}), GREATEST(COALESCE((SELECT max({}) FROM {}), 0) + 1, {}), false)",
                quote_literal(&self.qualified(&t.name)),
                quote_literal(&c.name),
                quote_ident(&c.name),
                self.qualified(&t.name),
                next.unwrap_or(1)
            );
            self.conn
                .execute(sqlx::AssertSqlSafe(sql))
                .await
                .map_err(|e| {
                    failed(
                        Dialect::Postgres,
                        &format!("setting {}'s sequence", t.name),
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
        .bind(&self.schema)
        .bind(MARK_TABLE)
        .fetch_one(&mut self.conn)
        .await
        .map_err(what)?;
        if !there {
            return Ok(None);
        }
        let sql = format!(
            "SELECT move_id, tenant, source FROM {}",
            self.qualified(MARK_TABLE)
        );
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
        let t = self.qualified(MARK_TABLE);
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
        let sql = format!("DROP TABLE IF EXISTS {}", self.qualified(MARK_TABLE));
        self.conn
            .execute(sqlx::AssertSqlSafe(sql))
            .await
            .map_err(|e| failed(Dialect::Postgres, "removing the move's mark", e))?;
        Ok(())
    }

    async fn contents(&mut self) -> Result<Contents, TenantError> {
        let what = |e| failed(Dialect::Postgres, "reading what the target holds", e);
        // relations, functions and stand-alone types of the schema, but
        // fleetmig's own tables and what extensions brought
        let objects: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view' \
               WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' \
               WHEN 'i' THEN 'index' ELSE 'relation' END, c.relname::text, c.relkind IN ('r', 'p') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'i') \
               AND c.relname <> '_sqlx_migrations' AND c.relname NOT LIKE '\\_fleetmig\\_%' \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') \
               AND NOT EXISTS (SELECT 1 FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid \
                 WHERE x.indexrelid = c.oid AND (t.relname = '_sqlx_migrations' OR t.relname LIKE '\\_fleetmig\\_%')) \
             UNION ALL SELECT 'function', p.proname::text, false FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') \
             UNION ALL SELECT 'type', t.typname::text, false FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
             WHERE n.nspname = $1 AND t.typtype IN ('e', 'd', 'r', 'm') \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')",
        )
        .bind(&self.schema)
        .fetch_all(&mut self.conn)
        .await
        .map_err(what)?;
        let mut contents = Contents::default();
        for (kind, name, table) in objects {
            if table {
                let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", self.qualified(&name));
                let rows: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut self.conn)
                    .await
                    .map_err(what)?;
                if rows {
                    contents.filled.push(name.clone());
                }
            }
            contents.objects.push(format!("{kind} {name}"));
        }
        contents.objects.sort();
        contents.filled.sort();
        Ok(contents)
    }

    async fn close(self: Box<Self>) {
        let _ = self.conn.close().await;
    }
}
