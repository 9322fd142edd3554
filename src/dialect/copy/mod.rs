//! Copying a tenant's rows from one database to another (`fleetmig move`):
//! what each database does for it, one type per database (`postgres`,
//! `mysql`, `sqlite`) behind one trait, `CopyEnd`: list the tenant's tables
//! with their columns mapped to the kinds fleetmig can carry (`value`), hold
//! a consistent snapshot while reading, read a table as one stream,
//! empty tables, insert a batch, and set sequences past the copied keys.
//! Values are always bound, never pasted; identifiers are quoted.

pub mod convert;
pub mod jsonb;
mod mysql;
pub mod place;
mod postgres;
mod sqlite;
pub mod value;
pub mod when;

use crate::error::FailureKind;
use crate::error::TenantError;
use crate::options::Settings;
use crate::tenant::Locator;
pub use convert::{Rules, convert};
pub use place::{Place, place};
pub use value::{Checksum, Kind, Spec, Value};
pub use when::When;

/// The table in which a move marks the target it fills (its id, the
/// tenant, the source's place), from before the first row until the move
/// is done. Like the histories, it is fleetmig's own: never copied, never
/// part of a schema's fingerprint.
pub const MARK_TABLE: &str = "_fleetmig_move";

/// Where `CopyEnd::quiet` keeps what it dropped (triggers, constraints)
/// until `restore` puts it back.
pub const SAVED_TABLE: &str = "_fleetmig_move_saved";

/// A move's mark on its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub move_id: String,
    pub tenant: String,
    /// The source's `Place::key`.
    pub source: String,
}

/// What a place holds besides fleetmig's own tables.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    /// Every object (`table orders`, `view totals`, `function f`, …),
    /// sorted; names relative to the tenant (a database tenant's other
    /// schemas qualified).
    pub objects: Vec<String>,
    /// The tables that hold at least one row.
    pub filled: Vec<String>,
}

/// What `create` made: what a move that fails removes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Created {
    /// It was there already.
    Nothing,
    File,
    Schema,
    Database,
}

/// A column of a tenant table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Column {
    pub name: String,
    /// The type as the database spells it (`numeric(10,2)`, `varchar(40)`).
    pub type_name: String,
    /// What fleetmig carries it as; `None`: a type it cannot carry.
    pub kind: Option<Kind>,
    /// Filled by a sequence or identity (set past the copied keys).
    pub serial: bool,
    /// What the column can hold.
    pub spec: Spec,
}

/// A foreign key of a table: its columns and the columns of the table
/// they reference (`(schema, name)`, as `Table::schema`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    pub parent: (Option<String>, String),
    pub parent_columns: Vec<String>,
}

/// A tenant table: its schema (`None`: the tenant's own; a PostgreSQL
/// database tenant's other schemas by name), its columns (generated ones
/// left out), its key (the primary key's columns, in key order, as indexes
/// into `columns`), and its foreign keys.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Table {
    pub schema: Option<String>,
    pub name: String,
    pub columns: Vec<Column>,
    pub key: Vec<usize>,
    pub foreign_keys: Vec<ForeignKey>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// `name`, or `schema.name` outside the tenant's own schema.
    pub fn label(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.clone(),
        }
    }

    /// Whether this is the table `(schema, name)`.
    pub fn is(&self, schema: &Option<String>, name: &str) -> bool {
        self.schema == *schema && self.name == name
    }
}

/// One side of a move: the source read in a snapshot, or the target written.
#[async_trait::async_trait]
pub trait CopyEnd: Send {
    /// The tenant's tables, sorted by name, without the histories (sqlx's
    /// and fleetmig's own).
    async fn tables(&mut self) -> Result<Vec<Table>, TenantError>;

    /// Starts a read-only transaction that sees one consistent snapshot.
    async fn snapshot(&mut self) -> Result<(), TenantError>;

    /// Ends the snapshot.
    async fn release(&mut self) -> Result<(), TenantError>;

    /// Every row of `t` (in the snapshot when one is held), read as one
    /// stream and sent to `to` `batch` rows at a time; how many were read.
    /// A closed `to` ends the read early.
    async fn scan(
        &mut self,
        t: &Table,
        batch: usize,
        to: &tokio::sync::mpsc::Sender<Vec<Vec<Value>>>,
    ) -> Result<u64, TenantError>;

    /// Rows of `t` (`count(*)`, in the snapshot when one is held): the
    /// check that the stream read every row.
    async fn count(&mut self, t: &Table) -> Result<u64, TenantError>;

    /// A digest of `t`'s rows that the server computes (its row count and a
    /// sum of a hash of each row), to tell whether the rows changed between
    /// two moments without reading them out; `None` where the server has
    /// no such function (SQLite: its rows are read instead).
    async fn digest(&mut self, t: &Table) -> Result<Option<String>, TenantError>;

    /// Whether `digest` speaks of one table (a change elsewhere leaves it
    /// as it was); SQLite's is of the whole file: when it changed, the
    /// table's rows are read to tell.
    fn digest_is_per_table(&self) -> bool {
        true
    }

    /// Deletes every row of `tables`, in this order (children first).
    async fn clear(&mut self, tables: &[&Table]) -> Result<(), TenantError>;

    /// Inserts `rows` (values in `t`'s column order, of `t`'s kinds); an
    /// end may hold them back to write them in bigger statements, until
    /// `finish_table`.
    async fn insert(&mut self, t: &Table, rows: &[Vec<Value>]) -> Result<(), TenantError>;

    /// The next value `t`'s counter (sequence, identity, AUTO_INCREMENT,
    /// AUTOINCREMENT) would give, when it has one: a move carries it, so
    /// that the ids of rows deleted before the move are not given again.
    async fn next_id(&mut self, t: &Table) -> Result<Option<i64>, TenantError>;

    /// Ends the copy of `t`: writes what `insert` held back, sets its
    /// counter past its largest key and at least to `next` (the source's).
    async fn finish_table(&mut self, t: &Table, next: Option<i64>) -> Result<(), TenantError>;

    /// The mark of a move on this place, if there is one.
    async fn mark(&mut self) -> Result<Option<Mark>, TenantError>;

    /// Marks this place as move `m`'s (replacing an earlier mark).
    async fn set_mark(&mut self, m: &Mark) -> Result<(), TenantError>;

    /// Removes the mark (the move is done).
    async fn unmark(&mut self) -> Result<(), TenantError>;

    /// What the place holds besides fleetmig's own tables.
    async fn contents(&mut self) -> Result<Contents, TenantError>;

    /// Turns off the target's triggers and foreign-key checks for the copy
    /// of `tables` (nothing fires, rows land in any order). What had to be
    /// dropped to do so is kept in `SAVED_TABLE` first, so that the next
    /// run of a killed move puts it back.
    async fn quiet(&mut self, tables: &[&Table]) -> Result<(), TenantError>;

    /// Puts back what `quiet` turned off.
    async fn restore(&mut self) -> Result<(), TenantError>;

    /// A further session on a target another session made `quiet`: what is
    /// the session's own (PostgreSQL's replication role) set here too.
    async fn quiet_session(&mut self) -> Result<(), TenantError> {
        Ok(())
    }

    /// Holds writes to `tables` (readers go on) until `unfreeze` or close:
    /// PostgreSQL `LOCK … IN EXCLUSIVE MODE`, MySQL `LOCK TABLES … READ`,
    /// SQLite `BEGIN IMMEDIATE`.
    async fn freeze(&mut self, tables: &[&Table]) -> Result<(), TenantError>;

    /// Lets writes go on.
    async fn unfreeze(&mut self) -> Result<(), TenantError>;

    /// The first row of `t` whose foreign key `fk` finds no parent row, as
    /// `column=value, …` (its key and the key's columns).
    async fn orphan(&mut self, t: &Table, fk: &ForeignKey) -> Result<Option<String>, TenantError>;

    async fn close(self: Box<Self>);
}

/// Creates the place `locator` names when it does not exist: a file, a
/// schema, a database (with a schema target's database). Never `IF NOT
/// EXISTS`: what it says it created did not exist before.
pub async fn create(settings: &Settings, locator: &Locator) -> Result<Created, TenantError> {
    match locator {
        Locator::Sqlite { path } => sqlite::create_file(path),
        Locator::Postgres { url, schema } => {
            postgres::create(settings, url, schema.as_deref()).await
        }
        Locator::Mysql { url } => mysql::create(settings, url).await,
        Locator::Row { .. } => Err(row_refused()),
    }
}

/// Removes what `create` made at `locator` (a move that failed, a scratch
/// target).
pub async fn remove(
    settings: &Settings,
    locator: &Locator,
    created: Created,
) -> Result<(), TenantError> {
    match (created, locator) {
        (Created::Nothing, _) => Ok(()),
        (Created::Schema, Locator::Postgres { url, schema }) => {
            postgres::drop(settings, url, schema.as_deref(), true).await
        }
        (_, Locator::Postgres { url, .. }) => postgres::drop(settings, url, None, true).await,
        _ => drop_tenant(settings, locator).await,
    }
}

fn row_refused() -> TenantError {
    TenantError::permanent(
        FailureKind::Unsupported,
        "a row tenant cannot be moved: it shares its tables with other tenants".to_string(),
    )
}

/// Opens the copy side of `locator`, which exists.
pub async fn open(settings: &Settings, locator: &Locator) -> Result<Box<dyn CopyEnd>, TenantError> {
    Ok(match locator {
        Locator::Sqlite { path } => Box::new(sqlite::SqliteEnd::open(settings, path).await?),
        Locator::Postgres { url, schema } => {
            Box::new(postgres::PgEnd::open(settings, url, schema.as_deref()).await?)
        }
        Locator::Mysql { url } => Box::new(mysql::MySqlEnd::open(settings, url).await?),
        Locator::Row { .. } => return Err(row_refused()),
    })
}

/// Removes the tenant at `locator` (the source of a verified move, with
/// `--drop-source`): the file, the schema or the database. The caller holds
/// no session on it.
pub async fn drop_tenant(settings: &Settings, locator: &Locator) -> Result<(), TenantError> {
    match locator {
        Locator::Sqlite { path } => sqlite::drop_file(path),
        Locator::Postgres { url, schema } => {
            postgres::drop(settings, url, schema.as_deref(), false).await
        }
        Locator::Mysql { url } => mysql::drop(settings, url).await,
        Locator::Row { .. } => Err(TenantError::permanent(
            FailureKind::Unsupported,
            "a row tenant cannot be dropped".to_string(),
        )),
    }
}

/// Tables put together from catalog rows that come table by table, columns
/// in order: the same for every database.
#[derive(Default)]
struct Catalog {
    tables: Vec<Table>,
    /// (position in the primary key, index among the columns)
    keys: Vec<Vec<(i64, usize)>>,
}

impl Catalog {
    /// Column `c` of `table` (in `schema`), at `key_position` in its
    /// primary key (0: not in it). History tables are left out.
    fn column(&mut self, schema: Option<String>, table: String, c: Column, key_position: i64) {
        if is_history(&table) {
            return;
        }
        if self.tables.last().is_none_or(|l| !l.is(&schema, &table)) {
            self.tables.push(Table {
                schema,
                name: table,
                columns: Vec::new(),
                key: Vec::new(),
                foreign_keys: Vec::new(),
            });
            self.keys.push(Vec::new());
        }
        let t = self.tables.last_mut().expect("pushed");
        if key_position > 0 {
            self.keys
                .last_mut()
                .expect("pushed")
                .push((key_position, t.columns.len()));
        }
        t.columns.push(c);
    }

    /// The tables, with their foreign keys (`(table, key)`).
    fn finish(mut self, fks: Vec<((Option<String>, String), ForeignKey)>) -> Vec<Table> {
        for (t, mut k) in self.tables.iter_mut().zip(self.keys) {
            k.sort();
            t.key = k.into_iter().map(|(_, i)| i).collect();
        }
        for ((schema, from), fk) in fks {
            if let Some(t) = self.tables.iter_mut().find(|t| t.is(&schema, &from)) {
                t.foreign_keys.push(fk);
            }
        }
        self.tables
    }
}

/// Reads `sql` (every row of `t`) as a stream, each row decoded cell by
/// cell (`decode(row, index, kind)`), and sends it on in batches.
async fn scan_rows<'c, DB, E>(
    dialect: crate::tenant::Dialect,
    conn: E,
    sql: String,
    t: &Table,
    batch: usize,
    to: &tokio::sync::mpsc::Sender<Vec<Vec<Value>>>,
    decode: impl Fn(&DB::Row, usize, Kind) -> Result<Value, sqlx::Error>,
) -> Result<u64, TenantError>
where
    DB: sqlx::Database + sqlx::database::HasStatementCache,
    E: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    use futures_util::TryStreamExt;
    let what = |e| failed(dialect, &format!("reading {}", t.label()), e);
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .persistent(false)
        .fetch(conn);
    let mut buf = Vec::with_capacity(batch);
    let mut n = 0u64;
    while let Some(r) = rows.try_next().await.map_err(what)? {
        let row = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| decode(&r, i, c.kind.unwrap_or(Kind::Text)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(what)?;
        buf.push(row);
        if buf.len() == batch {
            n += batch as u64;
            let full = std::mem::replace(&mut buf, Vec::with_capacity(batch));
            if to.send(full).await.is_err() {
                return Ok(n);
            }
        }
    }
    n += buf.len() as u64;
    if !buf.is_empty() {
        let _ = to.send(buf).await;
    }
    Ok(n)
}

/// The tables fleetmig keeps to itself (histories), never copied.
fn is_history(name: &str) -> bool {
    name == "_sqlx_migrations" || name.starts_with("_fleetmig_")
}

/// How one database spells the SQL a copy needs.
struct Sql {
    quote: fn(&str) -> String,
    /// The `n`th (0-based) parameter of a statement, for column `c`.
    param: fn(usize, &Column) -> String,
    /// The expression that reads column `c`.
    read: fn(&Column) -> String,
    /// The most parameters one statement may bind.
    max_params: usize,
    /// Said between an INSERT's columns and its VALUES.
    overriding: &'static str,
}

impl Sql {
    /// Every row of `t`, as one statement (no order: the checksums do not
    /// need one, and a scan in the table's own order is the cheapest).
    fn scan(&self, qualified: &str, t: &Table) -> String {
        let cols: Vec<String> = t.columns.iter().map(|c| (self.read)(c)).collect();
        format!("SELECT {} FROM {qualified}", cols.join(", "))
    }

    fn insert(&self, qualified: &str, t: &Table, rows: usize) -> String {
        let cols: Vec<String> = t.columns.iter().map(|c| (self.quote)(&c.name)).collect();
        let n = t.columns.len();
        let tuples: Vec<String> = (0..rows)
            .map(|r| {
                let ps: Vec<String> = t
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (self.param)(r * n + i, c))
                    .collect();
                format!("({})", ps.join(", "))
            })
            .collect();
        format!(
            "INSERT INTO {qualified} ({}){} VALUES {}",
            cols.join(", "),
            self.overriding,
            tuples.join(", ")
        )
    }

    /// How many rows one INSERT of `t` may carry.
    fn rows_per_insert(&self, t: &Table) -> usize {
        (self.max_params / t.columns.len().max(1)).clamp(1, 1000)
    }
}

/// The query that finds the first row of `t` (at `qualified`) whose
/// foreign key `fk` has no parent row (at `parent`): all of the key's
/// columns set (MATCH SIMPLE) and no parent with those values; it selects
/// the row's primary key and the foreign key's columns, as text (`text`).
fn orphan_sql(
    quote: fn(&str) -> String,
    text: fn(&str) -> String,
    qualified: &str,
    parent: &str,
    t: &Table,
    fk: &ForeignKey,
) -> String {
    let select: Vec<String> = orphan_columns(t, fk)
        .iter()
        .map(|c| text(&format!("c.{}", quote(c))))
        .collect();
    let set: Vec<String> = fk
        .columns
        .iter()
        .map(|c| format!("c.{} IS NOT NULL", quote(c)))
        .collect();
    let joined: Vec<String> = fk
        .columns
        .iter()
        .zip(&fk.parent_columns)
        .map(|(c, p)| format!("p.{} = c.{}", quote(p), quote(c)))
        .collect();
    format!(
        "SELECT {} FROM {qualified} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE {}) LIMIT 1",
        select.join(", "),
        set.join(" AND "),
        joined.join(" AND ")
    )
}

/// The columns `orphan_sql` selects: `t`'s primary key, then the foreign
/// key's columns not in it.
fn orphan_columns<'t>(t: &'t Table, fk: &'t ForeignKey) -> Vec<&'t str> {
    let mut names: Vec<&str> = t.key.iter().map(|&i| t.columns[i].name.as_str()).collect();
    for c in &fk.columns {
        if !names.contains(&c.as_str()) {
            names.push(c);
        }
    }
    names
}

/// Runs `orphan_sql`'s query (`sql`) on `conn`: the orphan row it finds,
/// as `column=value, …`, or `None`.
async fn find_orphan<'c, DB, E>(
    dialect: crate::tenant::Dialect,
    conn: E,
    sql: String,
    t: &Table,
    fk: &ForeignKey,
) -> Result<Option<String>, TenantError>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'r> Option<String>: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    use sqlx::Row;
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_optional(conn)
        .await
        .map_err(|e| failed(dialect, &format!("checking {}", fk.name), e))?;
    Ok(row.map(|r| {
        orphan_columns(t, fk)
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let v: Option<String> = r.try_get(i).ok().flatten();
                format!("{n}={}", v.unwrap_or_else(|| "NULL".into()))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }))
}

/// Binds a `Value` to a query (every backend binds the same Rust types);
/// dates and timestamps as text in PostgreSQL's spelling (`$pg`: ` BC`,
/// `+00`) or MySQL's.
macro_rules! bind_value {
    ($q:expr, $v:expr, $pg:expr) => {{
        use $crate::dialect::copy::Value as V;
        let q = $q;
        match $v {
            V::Null => q.bind(None::<String>),
            V::Int(i) => q.bind(*i),
            V::Float(f) => q.bind(*f),
            V::Decimal(s) | V::Text(s) | V::Uuid(s) | V::Json(s) => q.bind(s.clone()),
            V::Bool(b) => q.bind(*b),
            w @ (V::Date(_) | V::Timestamp(_) | V::TimestampTz(_)) => {
                q.bind($crate::dialect::copy::when_param(w, $pg))
            }
            V::Bytes(b) => q.bind(b.clone()),
        }
    }};
}
pub(crate) use bind_value;

/// A date or timestamp as a parameter's text.
pub(crate) fn when_param(v: &Value, pg: bool) -> String {
    let (w, time, zone) = match v {
        Value::Date(w) => (w, false, false),
        Value::Timestamp(w) => (w, true, false),
        Value::TimestampTz(w) => (w, true, true),
        _ => return String::new(),
    };
    let mut s = String::new();
    if pg {
        w.write_pg(&mut s, time, zone);
    } else {
        w.write(&mut s, time, false);
    }
    s
}

/// A failure of a copy statement, classified and scrubbed.
pub(crate) fn failed(dialect: crate::tenant::Dialect, what: &str, e: sqlx::Error) -> TenantError {
    let mut t = super::classify(&e, dialect);
    t.message = format!("{what}: {}", t.message);
    t
}
