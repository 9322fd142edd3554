//! Switching a registry fleet's row to a moved tenant's new location (the
//! row itself is rewritten by `fleetmig_parse::registry::rewrite`, beside
//! the parser of the same format): the file is rewritten whole into a temporary file beside it and renamed over
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
    let bytes =
        fleetmig_parse::registry::rewrite(&text, tenant.as_str(), url, schema).map_err(|e| {
            Error::Registry {
                path: path.to_path_buf(),
                line: e.line,
                message: e.message,
            }
        })?;
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
