//! Switching a registry fleet's row to a moved tenant's new location: the
//! file is rewritten whole into a temporary file beside it and renamed over
//! it (readers see the old file or the new one, never half of one), after the
//! old one was copied to `<file>.<move id>.bak`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::tenant::TenantId;

/// Points `tenant`'s row of registry `path` at `url` (and `schema`); returns
/// where the old file was kept.
pub fn relocate(
    path: &Path,
    tenant: &TenantId,
    url: &str,
    schema: Option<&str>,
    move_id: &str,
) -> Result<PathBuf, Error> {
    let bad = |line: u64, message: String| Error::Registry {
        path: path.to_path_buf(),
        line,
        message,
    };
    // one switch at a time: a lock file beside the registry (the registry
    // itself is replaced by a rename, so a lock on it would not hold)
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .from_reader(text.as_slice());
    let headers = reader.headers().map_err(|e| bad(1, e.to_string()))?.clone();
    let headers: Vec<String> = headers.iter().map(|h| h.trim().to_string()).collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (Some(id_col), Some(url_col)) = (col("id"), col("url")) else {
        return Err(bad(1, "the header has no `id` or `url` column".into()));
    };
    let schema_col = col("schema");
    if schema.is_some() && schema_col.is_none() {
        return Err(bad(
            1,
            "the header has no `schema` column for the new location's schema".into(),
        ));
    }
    // only the tenant's record is rewritten: every other byte (comments,
    // quoting, spacing) stays as the operator wrote it
    let mut record = csv::StringRecord::new();
    let mut span = None;
    loop {
        let more = reader
            .read_record(&mut record)
            .map_err(|e| bad(e.position().map_or(0, |p| p.line()), e.to_string()))?;
        if !more {
            break;
        }
        if record.get(id_col).map(str::trim) == Some(tenant.as_str()) {
            // the reader's position of a record is where it began reading
            // it: comment and blank lines above it are not the record's
            let start = record_start(&text, record.position().map_or(0, |p| p.byte()) as usize);
            let mut end = reader.position().byte() as usize;
            // the reader may stop between a line's `\r` and its `\n`
            if end > 0 && text.get(end - 1) == Some(&b'\r') && text.get(end) == Some(&b'\n') {
                end += 1;
            }
            span = Some((start, end, record.clone()));
            break;
        }
    }
    let Some((start, end, found)) = span else {
        return Err(bad(0, format!("no row for tenant {tenant}")));
    };
    let row = render(
        &found,
        (url_col, url),
        schema_col.map(|c| (c, schema)),
        &text[start..end.min(text.len())],
    )
    .map_err(|e| bad(0, e))?;
    let mut bytes = text[..start].to_vec();
    bytes.extend_from_slice(&row);
    bytes.extend_from_slice(&text[end.min(text.len())..]);
    replace(path, &bytes, move_id)
}

/// Replaces `path` with `bytes`: the old file copied to
/// `<path>.<move_id>.bak` first (returned), the new one written beside it
/// with no wider permissions (it holds credentials), synced, and renamed
/// over it.
fn replace(path: &Path, bytes: &[u8], move_id: &str) -> Result<PathBuf, Error> {
    let backup = PathBuf::from(format!("{}.{move_id}.bak", path.display()));
    std::fs::copy(path, &backup).map_err(|e| Error::io(&backup, e))?;
    let tmp = PathBuf::from(format!("{}.{move_id}.tmp", path.display()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mode = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .permissions();
    f.set_permissions(mode).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    Ok(backup)
}

/// The tenant's record `found` with its url (and schema) columns set, as
/// one CSV line that ends as `old` did.
fn render(
    found: &csv::StringRecord,
    url_col: (usize, &str),
    schema_col: Option<(usize, Option<&str>)>,
    old: &[u8],
) -> Result<Vec<u8>, String> {
    let mut fields: Vec<String> = found.iter().map(str::to_string).collect();
    fields[url_col.0] = url_col.1.to_string();
    if let Some((s, schema)) = schema_col {
        while fields.len() <= s {
            fields.push(String::new());
        }
        fields[s] = schema.unwrap_or_default().to_string();
    }
    let mut row = csv::WriterBuilder::new().from_writer(Vec::new());
    row.write_record(&fields).map_err(|e| e.to_string())?;
    let mut row = row.into_inner().map_err(|e| e.to_string())?;
    // the line ends as it did
    if old.ends_with(b"\r\n") {
        row.pop();
        row.extend_from_slice(b"\r\n");
    } else if !old.ends_with(b"\n") {
        row.pop();
    }
    Ok(row)
}

/// The first byte at or after `from` that starts a line which is neither
/// blank nor a `#` comment.
fn record_start(text: &[u8], from: usize) -> usize {
    let mut at = from;
    while at < text.len() {
        let end = text[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| at + i + 1);
        let line = text[at..end].trim_ascii();
        if !line.is_empty() && !line.starts_with(b"#") {
            break;
        }
        at = end;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_moved_row_changes_and_the_old_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.csv");
        std::fs::write(
            &path,
            "# the fleet\nid,url,schema,tags\nacme,sqlite:acme.db,,tier=pro\n# beta next\nbeta,sqlite:beta.db,,\n",
        )
        .unwrap();
        let id = TenantId::new("acme").unwrap();
        let backup = relocate(&path, &id, "postgres://db/app", Some("tenant_acme"), "m1").unwrap();
        let now = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            now,
            "# the fleet\nid,url,schema,tags\nacme,postgres://db/app,tenant_acme,tier=pro\n# beta next\nbeta,sqlite:beta.db,,\n"
        );
        assert!(
            std::fs::read_to_string(backup)
                .unwrap()
                .contains("acme,sqlite:acme.db")
        );
        let none = TenantId::new("gone").unwrap();
        assert!(relocate(&path, &none, "x", None, "m2").is_err());
        // a registry only its owner reads stays so
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        relocate(&path, &id, "postgres://db2/app", None, "m3").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn comments_and_blank_lines_above_the_row_stay_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.csv");
        let text = "id,url,schema,tags\r\nalpha,sqlite:a.db,,\r\n\r\n# acme: our biggest customer\r\n# moved in 2026\r\nacme,sqlite:acme.db,,tier=pro\r\n# the end\r\n";
        std::fs::write(&path, text).unwrap();
        let id = TenantId::new("acme").unwrap();
        relocate(&path, &id, "postgres://db/app", Some("t_acme"), "m1").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text.replace(
                "acme,sqlite:acme.db,,tier=pro",
                "acme,postgres://db/app,t_acme,tier=pro"
            )
        );
        // a last row without a line end keeps none
        std::fs::write(&path, "id,url,schema,tags\n# last\nacme,sqlite:acme.db,,").unwrap();
        relocate(&path, &id, "sqlite:b.db", None, "m2").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "id,url,schema,tags\n# last\nacme,sqlite:b.db,,"
        );
    }
}
