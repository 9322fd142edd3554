//! The SQLite side of a move: one file. Column kinds follow SQLite's own
//! affinity rules on the declared type (with `BOOL`, `DATE`, `TIMESTAMP`,
//! `JSON` and `UUID` recognised); cells are read by their storage class and
//! coerced to the kind of the column they land in. A read transaction is the
//! snapshot (WAL: a snapshot; rollback journal: writers wait for it).

use crate::error::FailureKind;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Executor};

use super::{
    Catalog, Column, Contents, CopyEnd, Created, ForeignKey, MARK_TABLE, Mark, SAVED_TABLE, Table,
    Value, bind_value, failed, find_orphan, orphan_sql,
};
use crate::dialect::quote_ident;
use crate::error::TenantError;
use crate::options::Settings;
use crate::tenant::Dialect;

mod types;

use types::{SQL, kind, spec, stored};

pub struct SqliteEnd {
    /// Catalog reads and every write.
    conn: SqliteConnection,
    /// The rows' reads (the snapshot, scans, counts, `data_version`):
    /// rusqlite on blocking threads, several times faster than a row at a
    /// time through sqlx's worker; read-only.
    reader: Arc<Mutex<rusqlite::Connection>>,
}

/// Runs `f` on the reader, on a blocking thread.
async fn read<T: Send + 'static>(
    reader: &Arc<Mutex<rusqlite::Connection>>,
    what: String,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
) -> Result<T, TenantError> {
    let reader = reader.clone();
    let r = tokio::task::spawn_blocking(move || {
        let c = reader.lock().unwrap_or_else(|p| p.into_inner());
        f(&c)
    })
    .await
    .map_err(|e| TenantError::permanent(FailureKind::Io, format!("{what}: {e}")))?;
    r.map_err(|e| {
        let busy = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        let m = format!(
            "{what}: {}",
            crate::dialect::classify::one_line(&e.to_string())
        );
        if busy {
            TenantError::transient(FailureKind::Busy, m)
        } else {
            TenantError::permanent(FailureKind::SqlError, m)
        }
    })
}

impl SqliteEnd {
    pub async fn open(settings: &Settings, path: &Path) -> Result<SqliteEnd, TenantError> {
        if !path.exists() {
            return Err(TenantError::permanent(
                FailureKind::CannotOpen,
                format!("tenant file {} does not exist", path.display()),
            ));
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(false)
            .busy_timeout(settings.lock_timeout)
            .disable_statement_logging();
        let conn = SqliteConnection::connect_with(&opts).await.map_err(|e| {
            failed(
                Dialect::Sqlite,
                &format!("cannot open {}", path.display()),
                e,
            )
        })?;
        let reader = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| c.busy_timeout(settings.lock_timeout).map(|_| c))
        .map_err(|e| {
            TenantError::permanent(
                FailureKind::CannotOpen,
                format!("cannot open {}: {e}", path.display()),
            )
        })?;
        Ok(SqliteEnd {
            conn,
            reader: Arc::new(Mutex::new(reader)),
        })
    }
}

/// Creates the file at `path` (and its folder) unless it exists.
pub fn create_file(path: &Path) -> Result<Created, TenantError> {
    let io = |what: &Path, e: std::io::Error| {
        TenantError::permanent(
            FailureKind::CannotOpen,
            format!("cannot create {}: {e}", what.display()),
        )
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => Ok(Created::File),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Created::Nothing),
        Err(e) => Err(io(path, e)),
    }
}

/// Removes a SQLite tenant's file (and its WAL files).
pub fn drop_file(path: &Path) -> Result<(), TenantError> {
    std::fs::remove_file(path).map_err(|e| {
        TenantError::permanent(
            FailureKind::Io,
            format!("cannot remove {}: {e}", path.display()),
        )
    })?;
    for ext in ["-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

#[async_trait::async_trait]
impl CopyEnd for SqliteEnd {
    async fn tables(&mut self) -> Result<Vec<Table>, TenantError> {
        // one query for every column and one for every foreign key
        let cols: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT m.name, c.name, c.type, c.pk, c.hidden FROM sqlite_master m, pragma_table_xinfo(m.name) c \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY m.name, c.cid",
        )
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| failed(Dialect::Sqlite, "reading the catalog", e))?;
        let mut catalog = Catalog::default();
        for (table, name, declared, pk, hidden) in cols {
            if hidden != 0 {
                continue; // generated
            }
            let column = Column {
                name,
                kind: Some(kind(&declared)),
                spec: spec(&declared),
                type_name: declared,
                // INTEGER PRIMARY KEY and AUTOINCREMENT follow the largest
                // rowid by themselves
                serial: false,
            };
            catalog.column(None, table, column, pk);
        }
        // (table, key id, parent, column, parent column or NULL: the
        // parent's primary key, in order)
        let cols: Vec<(String, i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT m.name, f.id, f.\"table\", f.\"from\", f.\"to\" \
             FROM sqlite_master m, pragma_foreign_key_list(m.name) f \
             WHERE m.type = 'table' ORDER BY m.name, f.id, f.seq",
        )
        .fetch_all(&mut self.conn)
        .await
        .map_err(|e| failed(Dialect::Sqlite, "reading foreign keys", e))?;
        let mut fks: Vec<((Option<String>, String), ForeignKey, i64)> = Vec::new();
        for (table, id, parent, column, to) in cols {
            let fk = match fks.last_mut() {
                Some(((_, t), fk, i)) if *t == table && *i == id => fk,
                _ => {
                    fks.push((
                        (None, table.clone()),
                        ForeignKey {
                            name: format!("{table}_fk{id}"),
                            columns: Vec::new(),
                            parent: (None, parent.clone()),
                            parent_columns: Vec::new(),
                        },
                        id,
                    ));
                    &mut fks.last_mut().expect("pushed").1
                }
            };
            let to = match to {
                Some(to) => to,
                None => {
                    let pk: Vec<String> = sqlx::query_scalar(
                        "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk",
                    )
                    .bind(&parent)
                    .fetch_all(&mut self.conn)
                    .await
                    .map_err(|e| failed(Dialect::Sqlite, "reading foreign keys", e))?;
                    pk.get(fk.columns.len()).cloned().unwrap_or_default()
                }
            };
            fk.columns.push(column);
            fk.parent_columns.push(to);
        }
        Ok(catalog.finish(fks.into_iter().map(|(t, fk, _)| (t, fk)).collect()))
    }

    async fn snapshot(&mut self) -> Result<(), TenantError> {
        // a read transaction, its snapshot taken at its first read
        read(&self.reader, "starting the snapshot".into(), |c| {
            c.execute_batch("BEGIN")?;
            c.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        })
        .await
    }

    async fn release(&mut self) -> Result<(), TenantError> {
        read(&self.reader, "ending the snapshot".into(), |c| {
            c.execute_batch("ROLLBACK")
        })
        .await
    }

    async fn scan(
        &mut self,
        t: &Table,
        batch: usize,
        to: &tokio::sync::mpsc::Sender<Vec<Vec<Value>>>,
    ) -> Result<u64, TenantError> {
        let sql = SQL.scan(&quote_ident(&t.name), t);
        let to = to.clone();
        read(&self.reader, format!("reading {}", t.label()), move |c| {
            let mut st = c.prepare(&sql)?;
            let width = st.column_count();
            let mut rows = st.query([])?;
            let mut buf = Vec::with_capacity(batch);
            let mut n = 0u64;
            while let Some(r) = rows.next()? {
                let row = (0..width)
                    .map(|i| stored(r.get_ref(i)?))
                    .collect::<Result<Vec<_>, _>>()?;
                buf.push(row);
                if buf.len() == batch {
                    n += batch as u64;
                    let full = std::mem::replace(&mut buf, Vec::with_capacity(batch));
                    if to.blocking_send(full).is_err() {
                        return Ok(n);
                    }
                }
            }
            n += buf.len() as u64;
            if !buf.is_empty() {
                let _ = to.blocking_send(buf);
            }
            Ok(n)
        })
        .await
    }

    /// SQLite's `data_version`: it changes when another connection commits
    /// to the file; the same number says nothing was written since.
    async fn digest(&mut self, _t: &Table) -> Result<Option<String>, TenantError> {
        read(&self.reader, "reading data_version".into(), |c| {
            c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
        })
        .await
        .map(|v| Some(format!("data_version {v}")))
    }

    fn digest_is_per_table(&self) -> bool {
        false
    }

    async fn count(&mut self, t: &Table) -> Result<u64, TenantError> {
        let sql = format!("SELECT count(*) FROM {}", quote_ident(&t.name));
        read(&self.reader, format!("counting {}", t.label()), move |c| {
            c.query_row(&sql, [], |r| r.get::<_, i64>(0))
        })
        .await
        .map(|n| n as u64)
    }

    async fn clear(&mut self, tables: &[&Table]) -> Result<(), TenantError> {
        for t in tables {
            let sql = format!("DELETE FROM {}", quote_ident(&t.name));
            self.conn
                .execute(sqlx::AssertSqlSafe(sql))
                .await
                .map_err(|e| failed(Dialect::Sqlite, "emptying the target's tables", e))?;
        }
        Ok(())
    }

    async fn insert(&mut self, t: &Table, rows: &[Vec<Value>]) -> Result<(), TenantError> {
        let mut tx = self
            .conn
            .begin()
            .await
            .map_err(|e| failed(Dialect::Sqlite, &format!("writing {}", t.name), e))?;
        for chunk in rows.chunks(SQL.rows_per_insert(t)) {
            let sql = SQL.insert(&quote_ident(&t.name), t, chunk.len());
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for v in chunk.iter().flatten() {
                q = bind_value!(q, v, false);
            }
            q.execute(&mut *tx)
                .await
                .map_err(|e| failed(Dialect::Sqlite, &format!("writing {}", t.name), e))?;
        }
        tx.commit()
            .await
            .map_err(|e| failed(Dialect::Sqlite, &format!("writing {}", t.name), e))
    }

    async fn next_id(&mut self, t: &Table) -> Result<Option<i64>, TenantError> {
        // only an AUTOINCREMENT table keeps a counter; a plain rowid table
        // gives the largest rowid + 1, as it always does
        let has: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'",
        )
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| failed(Dialect::Sqlite, "reading the catalog", e))?;
        if has == 0 {
            return Ok(None);
        }
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT seq + 1 FROM sqlite_sequence WHERE name = ?")
                .bind(&t.name)
                .fetch_optional(&mut self.conn)
                .await
                .map_err(|e| {
                    failed(Dialect::Sqlite, &format!("reading {}'s counter", t.name), e)
                })?;
        Ok(seq)
    }

    async fn finish_table(&mut self, t: &Table, next: Option<i64>) -> Result<(), TenantError> {
        // INTEGER PRIMARY KEY and AUTOINCREMENT follow the largest rowid by
        // themselves; an AUTOINCREMENT table also keeps the source's counter
        let Some(next) = next else { return Ok(()) };
        let has: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'")
                .fetch_one(&mut self.conn)
                .await
                .map_err(|e| failed(Dialect::Sqlite, "reading the catalog", e))?;
        if has == 0 {
            return Ok(());
        }
        let what = |e| failed(Dialect::Sqlite, &format!("setting {}'s counter", t.name), e);
        let n = sqlx::query("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?")
            .bind(next - 1)
            .bind(&t.name)
            .execute(&mut self.conn)
            .await
            .map_err(what)?;
        if n.rows_affected() == 0 {
            sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)")
                .bind(&t.name)
                .bind(next - 1)
                .execute(&mut self.conn)
                .await
                .map_err(what)?;
        }
        Ok(())
    }

    async fn mark(&mut self) -> Result<Option<Mark>, TenantError> {
        let what = |e| failed(Dialect::Sqlite, "reading the move's mark", e);
        let there: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name = ?")
            .bind(MARK_TABLE)
            .fetch_one(&mut self.conn)
            .await
            .map_err(what)?;
        if there == 0 {
            return Ok(None);
        }
        let sql = format!(
            "SELECT move_id, tenant, source FROM {}",
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
        let what = |e| failed(Dialect::Sqlite, "marking the target", e);
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {t} (move_id TEXT NOT NULL, tenant TEXT NOT NULL, source TEXT NOT NULL); \
             DELETE FROM {t}"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut self.conn)
            .await
            .map_err(what)?;
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
            .map_err(|e| failed(Dialect::Sqlite, "removing the move's mark", e))?;
        Ok(())
    }

    async fn contents(&mut self) -> Result<Contents, TenantError> {
        let what = |e| failed(Dialect::Sqlite, "reading what the target holds", e);
        let objects: Vec<(String, String)> = sqlx::query_as(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             AND tbl_name <> '_sqlx_migrations' AND tbl_name NOT LIKE '\\_fleetmig\\_%' ESCAPE '\\'",
        )
        .fetch_all(&mut self.conn)
        .await
        .map_err(what)?;
        let mut contents = Contents::default();
        for (kind, name) in objects {
            if kind == "table" {
                let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", quote_ident(&name));
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

    /// Foreign keys are off on this connection; triggers, which SQLite
    /// cannot turn off, are saved and dropped, unless a killed run saved
    /// them already.
    async fn quiet(&mut self, _tables: &[&Table]) -> Result<(), TenantError> {
        let saved = quote_ident(SAVED_TABLE);
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {saved} (seq INTEGER NOT NULL, name TEXT NOT NULL, def TEXT NOT NULL); \
             INSERT INTO {saved} SELECT rowid, name, sql FROM sqlite_master WHERE type = 'trigger' \
               AND NOT EXISTS (SELECT 1 FROM {saved} s WHERE s.name = sqlite_master.name);"
        );
        let what = |e| failed(Dialect::Sqlite, "turning the target's triggers off", e);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut self.conn)
            .await
            .map_err(what)?;
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'trigger'")
                .fetch_all(&mut self.conn)
                .await
                .map_err(what)?;
        for n in names {
            self.conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP TRIGGER {}",
                    quote_ident(&n)
                )))
                .await
                .map_err(what)?;
        }
        Ok(())
    }

    async fn restore(&mut self) -> Result<(), TenantError> {
        let saved = quote_ident(SAVED_TABLE);
        let what = |e| failed(Dialect::Sqlite, "putting the target's triggers back", e);
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

    async fn freeze(&mut self, _tables: &[&Table]) -> Result<(), TenantError> {
        self.conn
            .execute("BEGIN IMMEDIATE")
            .await
            .map_err(|e| failed(Dialect::Sqlite, "holding the source's writes", e))?;
        Ok(())
    }

    async fn unfreeze(&mut self) -> Result<(), TenantError> {
        self.conn
            .execute("ROLLBACK")
            .await
            .map_err(|e| failed(Dialect::Sqlite, "letting the source's writes go on", e))?;
        Ok(())
    }

    async fn orphan(&mut self, t: &Table, fk: &ForeignKey) -> Result<Option<String>, TenantError> {
        let sql = orphan_sql(
            quote_ident,
            |c| format!("CAST({c} AS TEXT)"),
            &quote_ident(&t.name),
            &quote_ident(&fk.parent.1),
            t,
            fk,
        );
        find_orphan(Dialect::Sqlite, &mut self.conn, sql, t, fk).await
    }

    async fn close(self: Box<Self>) {
        let _ = self.conn.close().await;
    }
}
