//! A move's report: `move.json` (everything, with a format version) and
//! `summary.md` (rows per table, time, checksums) in `reports/<move id>/`.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::state::moves::MoveReport;

/// Writes the report of move `r` under `reports` (and says where in it);
/// returns its folder.
pub fn write_move(reports: &Path, r: &mut MoveReport) -> Result<PathBuf, Error> {
    let dir = reports.join(&r.id);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    r.report_dir = Some(dir.display().to_string());
    let json = serde_json::to_string_pretty(r).expect("a move report serialises");
    super::write_atomic(&dir.join("move.json"), &json)?;
    let mut md = format!(
        "# fleetmig move {}\n\ntenant **{}**: {} → {}\n\nstatus **{}**, version {}, {} rows in {} tables, {:.1} s{}\n",
        r.id,
        r.tenant,
        r.source,
        r.target,
        r.status.as_str(),
        r.version,
        r.rows,
        r.tables.len(),
        r.duration_ms as f64 / 1000.0,
        match (&r.restarted_from, r.created) {
            (Some(from), _) => format!(
                " (the target, marked by this tenant's unfinished move {from}, was emptied and filled again)"
            ),
            (None, crate::dialect::copy::Created::Nothing) => {
                " (into an existing, empty target)".to_string()
            }
            (None, c) => format!(" (the target {} was created by this move)", created_word(c)),
        }
    );
    if r.target_removed {
        md += "\nthe target this move created was removed again\n";
    }
    if let Some(e) = &r.error {
        md += &format!("\n**error:** {e}\n");
    }
    md += "\n| table | rows | checksum (rows:sum) | ms |\n|---|---:|---|---:|\n";
    for t in &r.tables {
        md += &format!(
            "| {} | {} | `{}` | {} |\n",
            t.table, t.rows, t.checksum, t.ms
        );
    }
    if let Some(b) = &r.registry_backup {
        md += &format!("\nregistry row switched; the old registry is kept as `{b}`\n");
    }
    if r.source_dropped {
        md += "\nthe source was dropped after the verified copy\n";
    }
    super::write_atomic(&dir.join("summary.md"), &md)?;
    Ok(dir)
}

fn created_word(c: crate::dialect::copy::Created) -> &'static str {
    use crate::dialect::copy::Created;
    match c {
        Created::Nothing => "",
        Created::File => "file",
        Created::Schema => "schema",
        Created::Database => "database",
    }
}
