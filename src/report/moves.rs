//! A move's report: `move.json` (everything, with a format version) and
//! `summary.md` (rows per table, time, checksums) in `reports/<move id>/`.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::relocate::MoveReport;

/// Writes the report of move `r` under `reports`; returns its folder.
pub fn write_move(reports: &Path, r: &MoveReport) -> Result<PathBuf, Error> {
    let dir = reports.join(&r.id);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let json = serde_json::to_string_pretty(r).expect("a move report serialises");
    super::write_atomic(&dir.join("move.json"), &json)?;
    let mut md = format!(
        "# fleetmig move {}\n\ntenant **{}**: {} → {}\n\nstatus **{}**, version {}, {} rows in {} tables, {:.1} s{}\n",
        r.id,
        r.tenant,
        r.source,
        r.target,
        r.status,
        r.version,
        r.rows,
        r.tables.len(),
        r.duration_ms as f64 / 1000.0,
        if r.restarted {
            " (an interrupted move's target was emptied and filled again)"
        } else {
            ""
        }
    );
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
