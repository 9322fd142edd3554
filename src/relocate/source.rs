//! What a move checks of its source before it touches anything: a clean
//! history of this set's versions, and tables whose every column it can
//! carry, each with a primary key.

use super::refused;
use crate::dialect::copy::{CopyEnd, Table};
use crate::dialect::{Session, Step};
use crate::error::Error;
use crate::migration::{Applied, MigrationSet};
use crate::tenant::Tenant;

/// The source's history and version: refused when dirty, when it skipped a
/// version of the set below its own, or applied one the set lacks.
pub(super) async fn source_version(
    set: &MigrationSet,
    tenant: &Tenant,
    session: &mut dyn Session,
) -> Result<(Vec<Applied>, i64), Error> {
    let usage = |m: String| refused(tenant, m);
    let history = session.history().await.map_err(|e| usage(e.message))?;
    if let Some(h) = history.iter().find(|h| !h.success) {
        return Err(usage(format!(
            "its history has version {} not applied cleanly (dirty): fix the source first",
            h.version
        )));
    }
    // a migration an interrupted attempt left part-applied has no history
    // row yet (or, on MySQL, an unfinished one holding its progress, which
    // `history` keeps back): the copy would carry half of it
    let dialect = session.dialect();
    let pending: Vec<Step<'_>> = set
        .migrations
        .iter()
        .filter(|m| !history.iter().any(|h| h.version == m.version))
        .filter_map(|migration| {
            let script = migration.up.get(dialect)?;
            Some(Step { migration, script })
        })
        .collect();
    if let Some(v) = session
        .interrupted(&pending)
        .await
        .map_err(|e| usage(e.message))?
    {
        return Err(usage(format!(
            "an interrupted attempt left migration {v} part-applied: \
             finish it with `fleetmig sync` first"
        )));
    }
    let version = history.iter().map(|h| h.version).max().unwrap_or(0);
    // the target gets every migration up to `version`: so must the source have
    if let Some(m) = set
        .migrations
        .iter()
        .filter(|m| m.version < version)
        .find(|m| !history.iter().any(|h| h.version == m.version))
    {
        return Err(usage(format!(
            "it skipped version {} below its version {version}: the target would not be the same",
            m.version
        )));
    }
    if let Some(h) = history.iter().find(|h| set.get(h.version).is_none()) {
        return Err(usage(format!(
            "it applied version {} that the migration set does not have",
            h.version
        )));
    }
    Ok((history, version))
}

/// The source's tables, refused when a column's type cannot be carried or
/// a table has no primary key.
pub(super) async fn carried(
    tenant: &Tenant,
    source: &mut dyn CopyEnd,
) -> Result<Vec<Table>, Error> {
    let usage = |m: String| refused(tenant, m);
    let tables = source.tables().await.map_err(|e| usage(e.message))?;
    let mut problems = Vec::new();
    for t in &tables {
        for c in t.columns.iter().filter(|c| c.kind.is_none()) {
            problems.push(format!(
                "column {}.{} has type {}, which fleetmig cannot carry",
                t.name, c.name, c.type_name
            ));
        }
        if t.key.is_empty() {
            problems.push(format!(
                "table {} has no primary key (a move names a row by its key)",
                t.name
            ));
        }
    }
    if !problems.is_empty() {
        return Err(usage(format!("nothing was moved: {}", problems.join("; "))));
    }
    Ok(tables)
}
