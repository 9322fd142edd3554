//! The MySQL/MariaDB side of a move: a database tenant. Reads in a
//! `REPEATABLE READ` transaction started `WITH CONSISTENT SNAPSHOT`; writes
//! with foreign-key checks off for the session (rows land table by table).

use crate::error::FailureKind;
use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};

use super::{
    Catalog, Column, Contents, CopyEnd, ForeignKey, MARK_TABLE, Mark, SAVED_TABLE, Table, Value,
    bind_value, failed, find_orphan, orphan_sql, scan_rows,
};
use crate::dialect::connect;
use crate::dialect::mysql::quote_ident;
use crate::error::TenantError;
use crate::options::Settings;
use crate::tenant::Dialect;

mod admin;
mod types;

pub use admin::{create, drop};

use types::{SQL, column_kind, decode};

pub struct MySqlEnd {
    conn: MySqlConnection,
    database: String,
    /// MariaDB keeps JSON as text; MySQL re-encodes it.
    mariadb: bool,
}

fn options(url: &str) -> Result<MySqlConnectOptions, TenantError> {
    MySqlConnectOptions::from_str(url)
        .map(|o| o.disable_statement_logging())
        .map_err(|e| crate::dialect::connect_error(Dialect::Mysql, url, &e))
}

impl MySqlEnd {
    /// MariaDB's JSON columns, which it reports as `longtext` with a
    /// `json_valid` CHECK: (table, column).
    async fn mariadb_json_columns(&mut self) -> Result<Vec<(String, String)>, TenantError> {
        if !self.mariadb {
            return Ok(Vec::new());
        }
        let checks: Vec<(String, String)> = sqlx::query_as(
            "SELECT CAST(TABLE_NAME AS CHAR), CAST(CHECK_CLAUSE AS CHAR) \
             FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ?",
        )
        .bind(&self.database)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| failed(Dialect::Mysql, "reading the catalog's checks", e))?;
        Ok(checks
            .into_iter()
            .filter_map(|(t, clause)| {
                let column = clause
                    .strip_prefix("json_valid(`")?
                    .strip_suffix("`)")?
                    .replace("``", "`");
                Some((t, column))
            })
            .collect())
    }

    pub async fn open(settings: &Settings, url: &str) -> Result<MySqlEnd, TenantError> {
        let opts = options(url)?;
        let database = database_of(url, &opts)?;
        let mut conn = connect(
            Dialect::Mysql,
            url,
            settings.connect_timeout,
            MySqlConnection::connect_with(&opts),
        )
        .await?;
        let what = |e| failed(Dialect::Mysql, "session settings", e);
        // UTC for TIMESTAMP columns; strict, so that the server refuses
        // rather than cuts; zero dates allowed (they are carried as they
        // are); an explicit 0 in an AUTO_INCREMENT column kept as 0
        conn.execute(
            "SET SESSION foreign_key_checks = 0, time_zone = '+00:00', \
             sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO'",
        )
        .await
        .map_err(what)?;
        let version: String = sqlx::query_scalar("SELECT CAST(VERSION() AS CHAR)")
            .fetch_one(&mut conn)
            .await
            .map_err(what)?;
        Ok(MySqlEnd {
            conn,
            database,
            mariadb: version.to_ascii_lowercase().contains("mariadb"),
        })
    }
}

fn database_of(url: &str, opts: &MySqlConnectOptions) -> Result<String, TenantError> {
    match opts.get_database() {
        Some(d) if !d.is_empty() => Ok(d.to_string()),
        _ => Err(TenantError::permanent(
            FailureKind::InvalidTenant,
            format!("{} names no database", crate::tenant::redact_url(url)),
        )),
    }
}

#[async_trait::async_trait]
impl CopyEnd for MySqlEnd {
    async fn tables(&mut self) -> Result<Vec<Table>, TenantError> {
        let rows = sqlx::query(
            "SELECT CAST(c.TABLE_NAME AS CHAR) AS t, CAST(c.COLUMN_NAME AS CHAR) AS c, \
             CAST(c.DATA_TYPE AS CHAR) AS dt, CAST(c.COLUMN_TYPE AS CHAR) AS ct, \
             CAST(c.EXTRA AS CHAR) AS extra, \
             CAST(COALESCE(k.ORDINAL_POSITION, 0) AS SIGNED) AS keypos \
             FROM information_schema.COLUMNS c \
             JOIN information_schema.TABLES tb ON tb.TABLE_SCHEMA = c.TABLE_SCHEMA AND tb.TABLE_NAME = c.TABLE_NAME AND tb.TABLE_TYPE = 'BASE TABLE' \
             LEFT JOIN information_schema.KEY_COLUMN_USAGE k ON k.TABLE_SCHEMA = c.TABLE_SCHEMA \
               AND k.TABLE_NAME = c.TABLE_NAME AND k.COLUMN_NAME = c.COLUMN_NAME AND k.CONSTRAINT_NAME = 'PRIMARY' \
             WHERE c.TABLE_SCHEMA = ? ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
        )
        .bind(&self.database)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| failed(Dialect::Mysql, "reading the catalog", e))?;
        let json = self.mariadb_json_columns().await?;
        let mut catalog = Catalog::default();
        for r in &rows {
            let extra: String = r.try_get("extra").unwrap_or_default();
            let extra = extra.to_ascii_lowercase();
            if extra.contains("generated") {
                continue;
            }
            let table: String = r.try_get("t").unwrap_or_default();
            let name: String = r.try_get("c").unwrap_or_default();
            let mut dt: String = r.try_get("dt").unwrap_or_default();
            if json.contains(&(table.clone(), name.clone())) {
                dt = "json".into();
            }
            let ct: String = r.try_get("ct").unwrap_or_default();
            let (kind, spec) = column_kind(
                &dt.to_ascii_lowercase(),
                &ct.to_ascii_lowercase(),
                self.mariadb,
            );
            let column = Column {
                name,
                kind,
                type_name: ct,
                serial: extra.contains("auto_increment"),
                spec,
            };
            catalog.column(None, table, column, r.try_get("keypos").unwrap_or(0));
        }
        let cols: Vec<(String, String, String, String, String)> = sqlx::query_as(
            "SELECT CAST(CONSTRAINT_NAME AS CHAR), CAST(TABLE_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR), \
             CAST(REFERENCED_TABLE_NAME AS CHAR), CAST(REFERENCED_COLUMN_NAME AS CHAR) \
             FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND REFERENCED_TABLE_NAME IS NOT NULL \
             ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION",
        )
        .bind(&self.database)
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| failed(Dialect::Mysql, "reading foreign keys", e))?;
        let mut fks: Vec<((Option<String>, String), ForeignKey)> = Vec::new();
        for (name, table, column, parent, parent_column) in cols {
            match fks.last_mut() {
                Some(((_, t), fk)) if *t == table && fk.name == name => {
                    fk.columns.push(column);
                    fk.parent_columns.push(parent_column);
                }
                _ => fks.push((
                    (None, table),
                    ForeignKey {
                        name,
                        columns: vec![column],
                        parent: (None, parent),
                        parent_columns: vec![parent_column],
                    },
                )),
            }
        }
        Ok(catalog.finish(fks))
    }

    async fn snapshot(&mut self) -> Result<(), TenantError> {
        self.conn
            .execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(|e| failed(Dialect::Mysql, "starting the snapshot", e))?;
        self.conn
            .execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await
            .map_err(|e| failed(Dialect::Mysql, "starting the snapshot", e))?;
        Ok(())
    }

    async fn release(&mut self) -> Result<(), TenantError> {
        self.conn
            .execute("ROLLBACK")
            .await
            .map_err(|e| failed(Dialect::Mysql, "ending the snapshot", e))?;
        Ok(())
    }

    async fn scan(
        &mut self,
        t: &Table,
        batch: usize,
        to: &tokio::sync::mpsc::Sender<Vec<Vec<Value>>>,
    ) -> Result<u64, TenantError> {
        let sql = SQL.scan(&quote_ident(&t.name), t);
        scan_rows(Dialect::Mysql, &mut self.conn, sql, t, batch, to, decode).await
    }

    async fn digest(&mut self, t: &Table) -> Result<Option<String>, TenantError> {
        // each row's cells quoted (QUOTE gives NULL apart from 'NULL': no
        // two rows spell alike), 64 bits of hash a row (the CRC-32 of the
        // cells in order and in reverse), summed; CRC-32 is what MariaDB
        // computes fastest (MD5 took four times as long)
        let mut cells: Vec<String> = t
            .columns
            .iter()
            .map(|c| format!("QUOTE({})", quote_ident(&c.name)))
            .collect();
        let forward = cells.join(", ");
        cells.reverse();
        let backward = cells.join(", ");
        let sql = format!(
            "SELECT CAST(CONCAT(COUNT(*), ':', COALESCE(SUM(CRC32(CONCAT_WS(',', {forward})) * 4294967296 \
             + CRC32(CONCAT_WS(',', {backward}))), 0)) AS CHAR) FROM {}",
            quote_ident(&t.name)
        );
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut self.conn)
            .await
            .map(Some)
            .map_err(|e| failed(Dialect::Mysql, &format!("digesting {}", t.label()), e))
    }

    async fn count(&mut self, t: &Table) -> Result<u64, TenantError> {
        let sql = format!(
            "SELECT CAST(COUNT(*) AS SIGNED) FROM {}",
            quote_ident(&t.name)
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut self.conn)
            .await
            .map_err(|e| failed(Dialect::Mysql, &format!("counting {}", t.name), e))?;
        Ok(n as u64)
    }

    async fn clear(&mut self, tables: &[&Table]) -> Result<(), TenantError> {
        for t in tables {
            let sql = format!("DELETE FROM {}", quote_ident(&t.name));
            self.conn
                .execute(sqlx::AssertSqlSafe(sql))
                .await
                .map_err(|e| failed(Dialect::Mysql, "emptying the target's tables", e))?;
        }
        Ok(())
    }

    async fn insert(&mut self, t: &Table, rows: &[Vec<Value>]) -> Result<(), TenantError> {
        for chunk in rows.chunks(SQL.rows_per_insert(t)) {
            let sql = SQL.insert(&quote_ident(&t.name), t, chunk.len());
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for v in chunk.iter().flatten() {
                q = bind_value!(q, v, false);
            }
            q.execute(&mut self.conn)
                .await
                .map_err(|e| failed(Dialect::Mysql, &format!("writing {}", t.name), e))?;
        }
        Ok(())
    }

    async fn next_id(&mut self, t: &Table) -> Result<Option<i64>, TenantError> {
        if !t.columns.iter().any(|c| c.serial) {
            return Ok(None);
        }
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(AUTO_INCREMENT AS SIGNED) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        )
        .bind(&self.database)
        .bind(&t.name)
        .fetch_optional(&mut self.conn)
        .await
        .map_err(|e| failed(Dialect::Mysql, &format!("reading {}'s counter", t.name), e))?
        .flatten();
        Ok(next)
    }

    async fn finish_table(&mut self, t: &Table, next: Option<i64>) -> Result<(), TenantError> {
        // past the largest key, and at least where the source's counter was
        if let Some(c) = t.columns.iter().find(|c| c.serial) {
            let sql = format!(
                "SELECT CAST(GREATEST(COALESCE(MAX({}), 0) + 1, {}) AS SIGNED) FROM {}",
                quote_ident(&c.name),
                next.unwrap_or(1),
                quote_ident(&t.name)
            );
            let next: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut self.conn)
                .await
                .map_err(|e| failed(Dialect::Mysql, &format!("reading {}", t.name), e))?;
            let sql = format!(
                "ALTER TABLE {} AUTO_INCREMENT = {next}",
                quote_ident(&t.name)
            );
            self.conn
                .execute(sqlx::AssertSqlSafe(sql))
                .await
                .map_err(|e| failed(Dialect::Mysql, &format!("setting {}'s counter", t.name), e))?;
        }
        Ok(())
    }

    async fn mark(&mut self) -> Result<Option<Mark>, TenantError> {
        let what = |e| failed(Dialect::Mysql, "reading the move's mark", e);
        let there: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        )
        .bind(&self.database)
        .bind(MARK_TABLE)
        .fetch_one(&mut self.conn)
        .await
        .map_err(what)?;
        if there == 0 {
            return Ok(None);
        }
        let sql = format!(
            "SELECT CAST(move_id AS CHAR), CAST(tenant AS CHAR), CAST(source AS CHAR) FROM {}",
            quote_ident(MARK_TABLE)
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
        let t = quote_ident(MARK_TABLE);
        let what = |e| failed(Dialect::Mysql, "marking the target", e);
        for sql in [
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (move_id VARCHAR(64) NOT NULL, tenant VARCHAR(255) NOT NULL, \
                 source TEXT NOT NULL) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            ),
            format!("DELETE FROM {t}"),
        ] {
            self.conn
                .execute(sqlx::AssertSqlSafe(sql))
                .await
                .map_err(what)?;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {t} VALUES (?, ?, ?)"
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
        let sql = format!("DROP TABLE IF EXISTS {}", quote_ident(MARK_TABLE));
        self.conn
            .execute(sqlx::AssertSqlSafe(sql))
            .await
            .map_err(|e| failed(Dialect::Mysql, "removing the move's mark", e))?;
        Ok(())
    }

    async fn contents(&mut self) -> Result<Contents, TenantError> {
        let what = |e| failed(Dialect::Mysql, "reading what the target holds", e);
        let objects: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT CAST(IF(TABLE_TYPE = 'VIEW', 'view', 'table') AS CHAR), CAST(TABLE_NAME AS CHAR), \
               CAST(TABLE_TYPE = 'BASE TABLE' AS SIGNED) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME <> '_sqlx_migrations' AND TABLE_NAME NOT LIKE '\\_fleetmig\\_%' \
             UNION ALL SELECT CAST(LOWER(ROUTINE_TYPE) AS CHAR), CAST(ROUTINE_NAME AS CHAR), 0 \
             FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? \
             UNION ALL SELECT 'trigger', CAST(TRIGGER_NAME AS CHAR), 0 FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA = ? \
             UNION ALL SELECT 'event', CAST(EVENT_NAME AS CHAR), 0 FROM information_schema.EVENTS \
             WHERE EVENT_SCHEMA = ?",
        )
        .bind(&self.database)
        .bind(&self.database)
        .bind(&self.database)
        .bind(&self.database)
        .fetch_all(&mut self.conn)
        .await
        .map_err(what)?;
        let mut contents = Contents::default();
        for (kind, name, table) in objects {
            if table != 0 {
                let sql = format!(
                    "SELECT CAST(EXISTS (SELECT 1 FROM {}) AS SIGNED)",
                    quote_ident(&name)
                );
                let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut self.conn)
                    .await
                    .map_err(what)?;
                if rows != 0 {
                    contents.filled.push(name.clone());
                }
            }
            contents.objects.push(format!("{kind} {name}"));
        }
        contents.objects.sort();
        contents.filled.sort();
        Ok(contents)
    }

    /// Foreign-key checks are off for the session already; triggers,
    /// which MySQL cannot turn off, are saved and dropped (in their order
    /// of action), unless a killed run saved them already.
    async fn quiet(&mut self, _tables: &[&Table]) -> Result<(), TenantError> {
        let saved = quote_ident(SAVED_TABLE);
        let what = |e| failed(Dialect::Mysql, "turning the target's triggers off", e);
        self.conn
            .execute(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE IF NOT EXISTS {saved} (seq INT NOT NULL, name VARCHAR(64) NOT NULL, \
                 def LONGTEXT NOT NULL) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )))
            .await
            .map_err(what)?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(TRIGGER_NAME AS CHAR) FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA = ? ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER",
        )
        .bind(&self.database)
        .fetch_all(&mut self.conn)
        .await
        .map_err(what)?;
        for (seq, name) in names.iter().enumerate() {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SHOW CREATE TRIGGER {}",
                quote_ident(name)
            )))
            .fetch_one(&mut self.conn)
            .await
            .map_err(what)?;
            let def: String = row
                .try_get::<String, _>("SQL Original Statement")
                .or_else(|_| {
                    row.try_get::<Vec<u8>, _>("SQL Original Statement")
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                })
                .map_err(what)?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {saved} VALUES (?, ?, ?)"
            )))
            .bind(seq as i64)
            .bind(name)
            .bind(&def)
            .execute(&mut self.conn)
            .await
            .map_err(what)?;
            self.conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP TRIGGER {}",
                    quote_ident(name)
                )))
                .await
                .map_err(what)?;
        }
        Ok(())
    }

    async fn restore(&mut self) -> Result<(), TenantError> {
        let saved = quote_ident(SAVED_TABLE);
        let what = |e| failed(Dialect::Mysql, "putting the target's triggers back", e);
        let defs: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT def FROM {saved} ORDER BY seq"
        )))
        .fetch_all(&mut self.conn)
        .await
        .map_err(what)?;
        for def in defs {
            sqlx::raw_sql(sqlx::AssertSqlSafe(def))
                .execute(&mut self.conn)
                .await
                .map_err(what)?;
        }
        self.conn
            .execute(sqlx::AssertSqlSafe(format!("DROP TABLE {saved}")))
            .await
            .map_err(what)?;
        Ok(())
    }

    async fn freeze(&mut self, tables: &[&Table]) -> Result<(), TenantError> {
        if tables.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = tables
            .iter()
            .map(|t| format!("{} READ", quote_ident(&t.name)))
            .collect();
        self.conn
            .execute(sqlx::AssertSqlSafe(format!(
                "LOCK TABLES {}",
                names.join(", ")
            )))
            .await
            .map_err(|e| failed(Dialect::Mysql, "holding the source's writes", e))?;
        Ok(())
    }

    async fn unfreeze(&mut self) -> Result<(), TenantError> {
        self.conn
            .execute("UNLOCK TABLES")
            .await
            .map_err(|e| failed(Dialect::Mysql, "letting the source's writes go on", e))?;
        Ok(())
    }

    async fn orphan(&mut self, t: &Table, fk: &ForeignKey) -> Result<Option<String>, TenantError> {
        let sql = orphan_sql(
            quote_ident,
            |c| format!("CAST({c} AS CHAR)"),
            &quote_ident(&t.name),
            &quote_ident(&fk.parent.1),
            t,
            fk,
        );
        find_orphan(Dialect::Mysql, &mut self.conn, sql, t, fk).await
    }

    async fn close(self: Box<Self>) {
        let _ = self.conn.close().await;
    }
}
