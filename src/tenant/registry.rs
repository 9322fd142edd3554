//! The registry fleet: a CSV file `id,url,schema,tags`, one tenant a row, for
//! fleets spread over many servers. Relative SQLite paths are resolved against
//! the registry's own folder, so a checked-in registry works from any cwd.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{Dialect, Locator, Tenant, TenantId, parse_tags, redact_url, validate_identifier};
use crate::error::Error;

/// Reads a registry file. Every problem names the file and the line.
pub fn read_registry(path: &Path) -> Result<Vec<Tenant>, Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::Discovery {
        fleet: format!("registry:{}", path.display()),
        message: e.to_string(),
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let bad = |line: u64, message: String| Error::Registry {
        path: path.to_path_buf(),
        line,
        message,
    };
    let rows = fleetmig_parse::registry::rows(file).map_err(|e| bad(e.line, e.message))?;
    let mut tenants = Vec::with_capacity(rows.len());
    let mut seen = HashSet::new();
    for row in rows {
        let line = row.line;
        let id = TenantId::new(&row.id).map_err(|m| bad(line, m))?;
        if !seen.insert(id.clone()) {
            return Err(bad(line, format!("tenant id {id} appears twice")));
        }
        let schema = row.schema.filter(|s| !s.is_empty());
        let locator = locator_from(&row.url, schema, &base).map_err(|m| bad(line, m))?;
        let tags = parse_tags(row.tags.as_deref().unwrap_or("")).map_err(|m| bad(line, m))?;
        tenants.push(Tenant { id, locator, tags });
    }
    Ok(tenants)
}

pub(crate) fn locator_from(
    url: &str,
    schema: Option<String>,
    base: &Path,
) -> Result<Locator, String> {
    match Dialect::from_url(url) {
        Some(Dialect::Sqlite) => {
            if schema.is_some() {
                return Err("the schema column must be empty for a SQLite tenant".into());
            }
            Ok(Locator::Sqlite {
                path: sqlite_path(url, base),
            })
        }
        Some(Dialect::Postgres) => {
            super::check_server_url(url)?;
            if let Some(s) = &schema {
                validate_identifier(s)?;
            }
            Ok(Locator::Postgres {
                url: url.to_string(),
                schema,
            })
        }
        Some(Dialect::Mysql) => {
            super::check_server_url(url)?;
            if schema.is_some() {
                return Err("the schema column must be empty for a MySQL tenant: the URL names its database".into());
            }
            Ok(Locator::Mysql {
                url: url.to_string(),
            })
        }
        None => Err(format!(
            "url {} is not sqlite:, postgres: or mysql:",
            redact_url(url)
        )),
    }
}

/// `sqlite://rel/a.db`, `sqlite:rel/a.db` or `sqlite:///abs/a.db` → a path,
/// relative ones joined to `base`.
pub(crate) fn sqlite_path(url: &str, base: &Path) -> PathBuf {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let rest = rest.split('?').next().unwrap_or(rest);
    let p = PathBuf::from(rest);
    if p.is_absolute() { p } else { base.join(p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fleet.csv");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn reads_rows_and_resolves_paths() {
        let (dir, p) = write(
            "id,url,schema,tags\nacme,sqlite://demo/acme.db,,canary;tier=pro\n\
             beta,postgres://u:pw@h/db,tenant_beta,\n",
        );
        let t = read_registry(&p).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0].locator,
            Locator::Sqlite {
                path: dir.path().join("demo/acme.db")
            }
        );
        assert!(t[0].has_tag("canary"));
        assert_eq!(t[1].locator.dialect(), Dialect::Postgres);
    }

    #[test]
    fn bad_rows_name_their_line() {
        let (_d, p) = write("id,url,schema,tags\nok,sqlite://a.db,,\nbad id,sqlite://b.db,,\n");
        let e = read_registry(&p).unwrap_err().to_string();
        assert!(e.contains("fleet.csv:3:"), "{e}");
        let (_d, p) = write("id,url,schema,tags\na,sqlite://a.db,,\na,sqlite://b.db,,\n");
        assert!(read_registry(&p).unwrap_err().to_string().contains(":3:"));
        let (_d, p) = write("id,url,schema,tags\na,postgres://h/db,\"x;drop\",\n");
        assert!(read_registry(&p).unwrap_err().to_string().contains(":2:"));
        let (_d, p) = write("id,url,schema,tags\na,ftp://u:hunter2@h/x,,\n");
        let e = read_registry(&p).unwrap_err().to_string();
        assert!(e.contains(":2:") && !e.contains("hunter2"), "{e}");
    }
}
