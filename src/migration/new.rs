//! `fleetmig new`: a new migration file (or an up/down pair) with the next
//! version. Versions continue the set's numbering when it counts 1, 2, 3...;
//! otherwise (or for an empty folder) they are a UTC timestamp, as sqlx's.
//! Two `new` at once never take the same version: the folder is locked
//! (`flock`) while the version is chosen and the files are written, and a
//! timestamp already taken moves on to the next free one.

use std::path::{Path, PathBuf};

use crate::error::Error;
use fleetmig_parse::name::parse_name;

/// The description as a file-name slug: lower-case letters and digits, `_`
/// between words.
fn slug(description: &str) -> Result<String, Error> {
    let slug: String = description
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let slug = slug.trim_matches('_').to_string();
    if slug.is_empty() {
        return Err(Error::usage(
            crate::error::About::Command("new"),
            format!("description {description:?} has no letters or digits"),
        ));
    }
    Ok(slug)
}

/// The next version for the files in `dir`.
fn next_version(dir: &Path) -> Result<String, Error> {
    let mut max: i64 = 0;
    let mut width = 4;
    let mut any = false;
    for entry in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Ok(Some(p)) = parse_name(&name) {
            any = true;
            if p.version > max {
                max = p.version;
                width = name.split('_').next().map(str::len).unwrap_or(4);
            }
        }
    }
    if any && max < 100_000_000 {
        return Ok(format!("{:0width$}", max + 1, width = width));
    }
    let now: i64 = chrono::Utc::now()
        .format("%Y%m%d%H%M%S")
        .to_string()
        .parse()
        .expect("a timestamp is a number");
    Ok(now.max(max + 1).to_string())
}

/// Creates the migration and returns the paths written.
pub fn new_migration(
    dir: &Path,
    description: &str,
    reversible: bool,
    no_tx: bool,
) -> Result<Vec<PathBuf>, Error> {
    let slug = slug(description)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let folder = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
    folder.lock().map_err(|e| Error::io(dir, e))?;
    let version = next_version(dir)?;
    let header = if no_tx { "-- no-transaction\n" } else { "" };
    let names: Vec<(String, &str)> = if reversible {
        vec![
            (
                format!("{version}_{slug}.up.sql"),
                "-- Add the up migration here.\n",
            ),
            (
                format!("{version}_{slug}.down.sql"),
                "-- Undo the up migration here.\n",
            ),
        ]
    } else {
        vec![(
            format!("{version}_{slug}.sql"),
            "-- Add the migration here.\n",
        )]
    };
    let mut written = Vec::new();
    for (name, body) in names {
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        std::io::Write::write_all(&mut f, format!("{header}{body}").as_bytes())
            .map_err(|e| Error::io(&path, e))?;
        written.push(path);
    }
    // the lock goes with `folder`
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_continues_numbering() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("0001_a.sql"), "x").unwrap();
        let w = new_migration(d.path(), "Add users!", true, true).unwrap();
        assert!(w[0].ends_with("0002_add_users.up.sql"), "{w:?}");
        assert!(
            std::fs::read_to_string(&w[1])
                .unwrap()
                .starts_with("-- no-transaction")
        );
        assert!(crate::migration::load(d.path()).is_ok());
    }

    #[test]
    fn many_at_once_never_share_a_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("20260101000000_first.sql"), "SELECT 1;").unwrap();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let d = dir.path().to_path_buf();
                std::thread::spawn(move || new_migration(&d, &format!("step {i}"), false, false))
            })
            .collect();
        let mut versions: Vec<String> = handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap()[0].clone())
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                name.split('_').next().unwrap().to_string()
            })
            .collect();
        versions.sort();
        versions.dedup();
        assert_eq!(versions.len(), 8, "{versions:?}");
        assert!(crate::migration::load(dir.path()).is_ok());
    }
}
