//! Loads the migration set from a folder in sqlx's file format and checks it
//! whole before anything runs. Checksums are sqlx's own (SHA-384 of the file
//! text, computed by `sqlx::migrate::Migration::new`), so `sqlx migrate info`
//! and an application's `sqlx::migrate!()` agree with fleetmig; they are
//! computed in parallel with rayon, which matters for sets of thousands of files.
//!
//! File names: `<VERSION>_<description>[.<dialect>][.up|.down].sql`, dialect one
//! of `sqlite`, `postgres`, `mysql`. A plain file serves every dialect that has
//! no variant of its own.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sqlx::SqlSafeStr;

use super::directive::{self, Directives};
use crate::error::Error;
use crate::tenant::Dialect;
use fleetmig_parse::name::{Kind, ParsedName, parse_name};

/// One SQL file of the set.
#[derive(Debug, Clone)]
pub struct Script {
    pub path: PathBuf,
    pub sql: String,
    /// sqlx's checksum of `sql` (SHA-384).
    pub checksum: Vec<u8>,
    /// First line is `-- no-transaction` (sqlx's rule).
    pub no_tx: bool,
    pub directives: Directives,
    /// The verification query run inside the migration's transaction after
    /// its statements (`verify=FILE`, or a `.verify.sql` beside it), and its file.
    pub verify: Option<(PathBuf, String)>,
}

/// Finds the verification query of the script at `path`: the `verify=`
/// directive's file (relative to the migration folder), or
/// `<VERSION>_<desc>[.<dialect>].verify.sql` beside it.
fn find_verify(
    path: &Path,
    directives: &Directives,
    dialect: Option<Dialect>,
) -> Result<Option<(PathBuf, String)>, Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let read = |p: PathBuf| -> Result<Option<(PathBuf, String)>, Error> {
        let text = std::fs::read_to_string(&p).map_err(|e| {
            Error::migration(path, format!("verification query {}: {e}", p.display()))
        })?;
        // one query: it runs as a subquery (`verify_query`), where no
        // statement can write
        let statements = super::split::split_for(&text, dialect.unwrap_or(Dialect::Postgres));
        if statements.len() != 1 {
            return Err(Error::migration(
                &p,
                format!(
                    "a verification query is one SELECT; this file holds {} statements",
                    statements.len()
                ),
            ));
        }
        Ok(Some((p, text)))
    };
    if let Some(f) = &directives.verify {
        return read(dir.join(f));
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let base = name.split('.').next().unwrap_or(name);
    let mut candidates = Vec::new();
    if let Some(d) = dialect {
        candidates.push(dir.join(format!("{base}.{}.verify.sql", d.as_str())));
    }
    candidates.push(dir.join(format!("{base}.verify.sql")));
    for c in candidates {
        if c.is_file() {
            return read(c);
        }
    }
    Ok(None)
}

/// The up (or down) scripts of one version, per dialect.
#[derive(Debug, Clone, Default)]
pub struct Variants {
    pub generic: Option<Script>,
    pub sqlite: Option<Script>,
    pub postgres: Option<Script>,
    pub mysql: Option<Script>,
}

impl Variants {
    /// The script for `dialect`: its own variant, else the plain file.
    pub fn get(&self, dialect: Dialect) -> Option<&Script> {
        self.slot_ref(Some(dialect))
            .as_ref()
            .or(self.generic.as_ref())
    }

    fn slot_ref(&self, dialect: Option<Dialect>) -> &Option<Script> {
        match dialect {
            None => &self.generic,
            Some(Dialect::Sqlite) => &self.sqlite,
            Some(Dialect::Postgres) => &self.postgres,
            Some(Dialect::Mysql) => &self.mysql,
        }
    }

    fn slot(&mut self, dialect: Option<Dialect>) -> &mut Option<Script> {
        match dialect {
            None => &mut self.generic,
            Some(Dialect::Sqlite) => &mut self.sqlite,
            Some(Dialect::Postgres) => &mut self.postgres,
            Some(Dialect::Mysql) => &mut self.mysql,
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Script> {
        [&self.generic, &self.sqlite, &self.postgres, &self.mysql]
            .into_iter()
            .flatten()
    }
}

/// One version of the set.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: i64,
    /// As sqlx writes it into `_sqlx_migrations.description` (underscores → spaces).
    pub description: String,
    pub up: Variants,
    /// Present when the migration is reversible (`.up.sql` + `.down.sql`).
    pub down: Option<Variants>,
}

impl Migration {
    /// A label for messages: `0003 (add plan)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.version, self.description)
    }
}

/// The whole set, sorted by version.
#[derive(Debug, Clone)]
pub struct MigrationSet {
    pub dir: PathBuf,
    pub migrations: Vec<Migration>,
    /// Hex digest over every (version, dialect, checksum): the identity of the
    /// set that a rollout freezes.
    pub checksum: String,
}

impl MigrationSet {
    pub fn head(&self) -> i64 {
        self.migrations.last().map(|m| m.version).unwrap_or(0)
    }

    /// `--to VERSION` must name a migration of the set: a version above head
    /// or between two versions would silently stop somewhere else.
    pub fn check_target(&self, target: i64) -> Result<(), Error> {
        if self.get(target).is_some() {
            return Ok(());
        }
        let below = self
            .migrations
            .iter()
            .rev()
            .find(|m| m.version < target)
            .map(|m| format!("; the nearest below is {}", m.version))
            .unwrap_or_default();
        let m = format!(
            "{} has no migration with version {target} (head is {}{below})",
            self.dir.display(),
            self.head()
        );
        Err(Error::flag_value("--to", target, m))
    }

    pub fn get(&self, version: i64) -> Option<&Migration> {
        self.migrations
            .binary_search_by_key(&version, |m| m.version)
            .ok()
            .map(|i| &self.migrations[i])
    }
}

/// Loads and validates the set in `dir`.
pub fn load(dir: &Path) -> Result<MigrationSet, Error> {
    let files = read_files(dir)?;
    // UTF-8 check, directives and sqlx checksums, in parallel.
    let scripts: Vec<(ParsedName, Script)> = files
        .into_par_iter()
        .map(|(path, parsed, bytes)| script(path, parsed, bytes))
        .collect::<Result<_, Error>>()?;
    let migrations = by_version(scripts)?
        .into_iter()
        .map(|(version, acc)| migration(version, acc))
        .collect::<Result<Vec<_>, Error>>()?;
    let checksum = set_checksum(&migrations);
    Ok(MigrationSet {
        dir: dir.to_path_buf(),
        migrations,
        checksum,
    })
}

/// The migration files of `dir` (by name; other files are not looked at),
/// read whole.
fn read_files(dir: &Path) -> Result<Vec<(PathBuf, ParsedName, Vec<u8>)>, Error> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::migration(dir, format!("cannot read the migration folder: {e}")))?;
    let mut files: Vec<(PathBuf, ParsedName, Vec<u8>)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::migration(dir, e.to_string()))?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(Error::migration(&path, "file name is not UTF-8"));
        };
        let Some(parsed) = parse_name(name).map_err(|m| Error::migration(&path, m))? else {
            continue;
        };
        let bytes = std::fs::read(&path).map_err(|e| Error::migration(&path, e.to_string()))?;
        files.push((path, parsed, bytes));
    }
    if files.is_empty() {
        return Err(Error::migration(
            dir,
            "no migrations found (expected files like 0001_create_users.sql); create one with `fleetmig new`",
        ));
    }
    Ok(files)
}

/// One file checked and parsed: UTF-8 without NUL, its directives (and
/// what they require of the SQL), its sqlx checksum, its verification.
fn script(
    path: PathBuf,
    parsed: ParsedName,
    bytes: Vec<u8>,
) -> Result<(ParsedName, Script), Error> {
    let sql = String::from_utf8(bytes).map_err(|e| {
        Error::migration(
            &path,
            format!("not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()),
        )
    })?;
    // a NUL ends a C string: SQLite's driver spun on it, PostgreSQL
    // took it for a lost connection, MariaDB left the tenant dirty
    if let Some(at) = sql.find('\0') {
        let line = sql[..at].matches('\n').count() + 1;
        return Err(Error::Migration {
            path: path.clone(),
            line: Some(line),
            message: "a NUL byte: no database runs SQL holding one".into(),
        });
    }
    let directives = directive::parse(&path, &sql)?;
    if directives.batch.is_some() && !sql.contains(":batch_size") {
        return Err(Error::migration(
            &path,
            "a `batch` migration must use :batch_size to limit the rows one run changes, e.g. \
             UPDATE t SET c = ... WHERE id IN (SELECT id FROM t WHERE c IS NULL LIMIT :batch_size)",
        ));
    }
    if directives.batch.is_some() {
        batch_statement(&path, &sql)?;
    }
    if directives.scope == directive::Scope::Tenant && !sql.contains(":tenant_id") {
        return Err(Error::migration(
            &path,
            "a `scope=tenant` migration runs once per tenant and must say which rows are \
             the tenant's with :tenant_id, e.g. UPDATE invoices SET ... WHERE org_id = :tenant_id",
        ));
    }
    let m = sqlx::migrate::Migration::new(
        parsed.version,
        Cow::Owned(parsed.description.clone()),
        sqlx::migrate::MigrationType::Simple,
        sqlx::AssertSqlSafe(sql.clone()).into_sql_str(),
        false,
    );
    let no_tx = sql.starts_with("-- no-transaction");
    let verify = if parsed.kind == Kind::Down {
        None
    } else {
        find_verify(&path, &directives, parsed.dialect)?
    };
    Ok((
        parsed,
        Script {
            path,
            checksum: m.checksum.into_owned(),
            sql,
            no_tx,
            directives,
            verify,
        },
    ))
}

/// The files of one version, gathered.
struct Acc {
    description: String,
    first_path: PathBuf,
    simple: Variants,
    up: Variants,
    down: Variants,
}

/// The scripts by version: one description per version, one file per
/// kind and dialect.
fn by_version(scripts: Vec<(ParsedName, Script)>) -> Result<BTreeMap<i64, Acc>, Error> {
    let mut by_version: BTreeMap<i64, Acc> = BTreeMap::new();
    for (parsed, script) in scripts {
        let acc = by_version.entry(parsed.version).or_insert_with(|| Acc {
            description: parsed.description.clone(),
            first_path: script.path.clone(),
            simple: Variants::default(),
            up: Variants::default(),
            down: Variants::default(),
        });
        if acc.description != parsed.description {
            return Err(Error::migration(
                &script.path,
                format!(
                    "duplicate version {}: {} has the same version; each version needs one description",
                    parsed.version,
                    acc.first_path.display()
                ),
            ));
        }
        let slot = match parsed.kind {
            Kind::Simple => acc.simple.slot(parsed.dialect),
            Kind::Up => acc.up.slot(parsed.dialect),
            Kind::Down => acc.down.slot(parsed.dialect),
        };
        if let Some(existing) = slot {
            return Err(Error::migration(
                &script.path,
                format!(
                    "duplicate version {}: {} is the same migration",
                    parsed.version,
                    existing.path.display()
                ),
            ));
        }
        *slot = Some(script);
    }
    Ok(by_version)
}

/// Version `version`'s files as one migration: plain, or a matching pair
/// of `.up.sql` and `.down.sql` for each dialect.
fn migration(version: i64, acc: Acc) -> Result<Migration, Error> {
    let reversible = acc.up.all().next().is_some() || acc.down.all().next().is_some();
    if reversible {
        if let Some(s) = acc.simple.all().next() {
            return Err(Error::migration(
                &s.path,
                format!("version {version} mixes a plain .sql with .up.sql/.down.sql files"),
            ));
        }
        for d in [
            None,
            Some(Dialect::Sqlite),
            Some(Dialect::Postgres),
            Some(Dialect::Mysql),
        ] {
            match (acc.up.slot_ref(d), acc.down.slot_ref(d)) {
                (Some(up), None) => {
                    return Err(Error::migration(
                        &up.path,
                        "this .up.sql has no matching .down.sql",
                    ));
                }
                (None, Some(down)) => {
                    return Err(Error::migration(
                        &down.path,
                        "this .down.sql has no matching .up.sql",
                    ));
                }
                _ => {}
            }
        }
        Ok(Migration {
            version,
            description: acc.description,
            up: acc.up,
            down: Some(acc.down),
        })
    } else {
        Ok(Migration {
            version,
            description: acc.description,
            up: acc.simple,
            down: None,
        })
    }
}

/// The set's checksum: of each version's up scripts' checksums, by dialect.
fn set_checksum(migrations: &[Migration]) -> String {
    let mut digest_input = String::new();
    for m in migrations {
        for (name, v) in [
            ("*", &m.up.generic),
            ("sqlite", &m.up.sqlite),
            ("postgres", &m.up.postgres),
            ("mysql", &m.up.mysql),
        ] {
            if let Some(s) = v {
                digest_input.push_str(&format!("{} {name} {}\n", m.version, hex(&s.checksum)));
            }
        }
    }
    let set_sum = sqlx::migrate::Migration::new(
        0,
        Cow::Borrowed("set"),
        sqlx::migrate::MigrationType::Simple,
        sqlx::AssertSqlSafe(digest_input).into_sql_str(),
        false,
    )
    .checksum;
    hex(&set_sum)[..32].to_string()
}

/// `bytes` in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// A `batch` migration is run again and again, each run in a transaction
/// that a savepoint can partly undo: it must be one data-changing statement
/// (UPDATE, DELETE, INSERT, REPLACE, or one of them behind WITH). DDL would
/// commit on its own on MySQL and break the at-most-`size`-rows promise.
fn batch_statement(path: &Path, sql: &str) -> Result<(), Error> {
    let statements = super::split::split_statements(sql);
    let first_word = |s: &str| {
        s.split(|c: char| !c.is_ascii_alphabetic())
            .next()
            .unwrap_or("")
            .to_ascii_uppercase()
    };
    match statements.as_slice() {
        [one]
            if ["UPDATE", "DELETE", "INSERT", "REPLACE", "WITH"]
                .contains(&first_word(&one.sql).as_str()) =>
        {
            Ok(())
        }
        [one] => Err(Error::migration(
            path,
            format!(
                "line {}: a `batch` migration must be one UPDATE, DELETE or INSERT statement \
                 (each run is a short transaction a savepoint can undo), not {}",
                one.line,
                first_word(&one.sql)
            ),
        )),
        _ => Err(Error::migration(
            path,
            format!(
                "a `batch` migration must be one statement; this one has {}",
                statements.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<MigrationSet, Error>) {
        let dir = tempfile::tempdir().unwrap();
        for (n, t) in files {
            std::fs::write(dir.path().join(n), t).unwrap();
        }
        let r = load(dir.path());
        (dir, r)
    }

    #[test]
    fn loads_variants_reversible_and_no_tx() {
        let (_d, s) = set(&[
            ("0001_a.sql", "CREATE TABLE a(x int);"),
            ("0002_b.up.sql", "CREATE TABLE b(x int);"),
            ("0002_b.down.sql", "DROP TABLE b;"),
            ("0003_idx.sql", "CREATE INDEX i ON a(x);"),
            (
                "0003_idx.postgres.sql",
                "-- no-transaction\nCREATE INDEX CONCURRENTLY i ON a(x);",
            ),
            ("README.md", "not a migration"),
        ]);
        let s = s.unwrap();
        assert_eq!(s.migrations.len(), 3);
        assert_eq!(s.head(), 3);
        let m3 = s.get(3).unwrap();
        assert!(m3.up.get(Dialect::Postgres).unwrap().no_tx);
        assert!(!m3.up.get(Dialect::Sqlite).unwrap().no_tx);
        assert!(s.get(2).unwrap().down.is_some());
        assert_eq!(s.get(1).unwrap().description, "a");
        // sqlx's checksum is SHA-384 of the text
        assert_eq!(
            s.get(1)
                .unwrap()
                .up
                .generic
                .as_ref()
                .unwrap()
                .checksum
                .len(),
            48
        );
    }

    #[test]
    fn broken_sets_name_the_file() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                vec![("0001_a.sql", "x"), ("0001_b.sql", "y")],
                "duplicate version",
            ),
            (vec![("0001_a.up.sql", "x")], "no matching .down.sql"),
            (vec![("0001_a.down.sql", "x")], "no matching .up.sql"),
            (vec![("abc.sql", "x")], "expected <VERSION>"),
            (vec![("01x_a.sql", "x")], "not a positive whole number"),
            (vec![("0001_a.oracle.sql", "x")], "unknown dialect"),
            (
                vec![("0001_a.sql", "-- fleetmig: nope=1\n")],
                "unknown fleetmig directive",
            ),
        ];
        for (files, needle) in cases {
            let (_d, r) = set(&files);
            let e = r.unwrap_err().to_string();
            assert!(e.contains(needle), "{e} lacks {needle}");
            assert!(e.contains(".sql"), "{e} does not name the file");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("0001_a.sql"), [0xff, 0xfe, 0x00]).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("0001_a.sql") && e.contains("UTF-8"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(
            load(empty.path())
                .unwrap_err()
                .to_string()
                .contains("no migrations")
        );
    }
}
