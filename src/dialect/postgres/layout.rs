//! How a PostgreSQL tenant's history table is created: sqlx's columns, types,
//! defaults and key, stored without a TOAST table (see `HistoryLayout`).

/// The name of the session-local template the history table is copied from
/// on PostgreSQL before 16 (see `HistoryLayout`).
pub(super) const TEMPLATE: &str = "fleetmig_history_layout";

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
pub(super) enum HistoryLayout {
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
    pub(super) fn pick(server_version_num: u32, pooled: bool, template_exists: bool) -> Self {
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
    pub(super) fn ddl(self, table: &str) -> String {
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
    pub(super) fn committed(&mut self) {
        if let HistoryLayout::Template { exists } = self {
            *exists = true;
        }
    }
}
