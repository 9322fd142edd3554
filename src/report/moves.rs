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
    md += "\n| table | rows | bytes | checksum (rows:sum) | ms |\n|---|---:|---:|---|---:|\n";
    for t in &r.tables {
        md += &format!(
            "| {} | {} | {} | `{}` | {} |\n",
            t.table, t.rows, t.bytes, t.checksum, t.ms
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

/// A move rollout's `moves.csv` in its report folder `dir`: one row per
/// tenant from the last move report under `dir/moves/` that names it
/// (rows, tables, time, whether it was verified, what went wrong); the
/// totals for the summary (tenants moved and verified, rows).
pub fn rollout_moves(dir: &Path) -> Result<(usize, u64), Error> {
    let folder = dir.join("moves");
    let mut last: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    let mut names: Vec<PathBuf> = match std::fs::read_dir(&folder) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(&folder, e)),
    };
    // move ids sort by time: the last one of a tenant wins
    names.sort();
    for m in names {
        let path = m.join("move.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
        if let Some(t) = v["tenant"].as_str() {
            last.insert(t.to_string(), v);
        }
    }
    let path = dir.join("moves.csv");
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = [
        "tenant",
        "move_id",
        "status",
        "verified",
        "source",
        "target",
        "version",
        "tables",
        "rows",
        "bytes",
        "duration_ms",
        "error",
    ];
    let csv_err = |e: csv::Error| Error::io(&path, std::io::Error::other(e));
    w.write_record(header).map_err(csv_err)?;
    let (mut verified, mut rows) = (0, 0);
    for (tenant, v) in &last {
        let done = v["status"] == "done";
        verified += usize::from(done);
        rows += v["rows"].as_u64().unwrap_or(0);
        let text = |k: &str| match &v[k] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        let tables = v["tables"].as_array().map_or(&[][..], Vec::as_slice);
        let bytes: u64 = tables.iter().filter_map(|t| t["bytes"].as_u64()).sum();
        let tables = tables.len().to_string();
        w.write_record([
            tenant.as_str(),
            &text("id"),
            &text("status"),
            if done { "yes" } else { "no" },
            &text("source"),
            &text("target"),
            &text("version"),
            &tables,
            &text("rows"),
            &bytes.to_string(),
            &text("duration_ms"),
            &text("error"),
        ])
        .map_err(csv_err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::io(&path, std::io::Error::other(e.to_string())))?;
    super::write_atomic(&path, &String::from_utf8_lossy(&bytes))?;
    Ok((verified, rows))
}
