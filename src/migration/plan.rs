//! The pure plan: a tenant's applied history × the local migration set → what
//! is pending, or why the tenant must not be touched (dirty history, an edited
//! migration, a migration that exists only on the tenant, no script for its
//! dialect). No I/O here, so every case is unit-tested.

use crate::error::FailureKind;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::MigrationSet;
use crate::error::TenantError;
use crate::tenant::Dialect;

/// One row of a tenant's `_sqlx_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i64,
    pub description: String,
    pub checksum: Vec<u8>,
    pub success: bool,
}

/// What one tenant needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantPlan {
    /// Highest applied version (0: none).
    pub current: i64,
    /// Versions to apply, in order.
    pub pending: Vec<i64>,
    /// The version the tenant will be at when `pending` is applied.
    pub target: i64,
}

/// Why a tenant cannot be planned. Each is permanent: retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    Dirty {
        version: i64,
        file: Option<PathBuf>,
    },
    ChecksumMismatch {
        version: i64,
        file: PathBuf,
    },
    MissingLocally {
        version: i64,
        description: String,
        dir: PathBuf,
    },
    NoVariant {
        version: i64,
        dialect: Dialect,
    },
}

impl PlanError {
    pub fn kind(&self) -> FailureKind {
        match self {
            PlanError::Dirty { .. } => FailureKind::Dirty,
            PlanError::ChecksumMismatch { .. } => FailureKind::ChecksumMismatch,
            PlanError::MissingLocally { .. } => FailureKind::MissingMigration,
            PlanError::NoVariant { .. } => FailureKind::NoVariant,
        }
    }

    pub fn version(&self) -> i64 {
        match self {
            PlanError::Dirty { version, .. }
            | PlanError::ChecksumMismatch { version, .. }
            | PlanError::MissingLocally { version, .. }
            | PlanError::NoVariant { version, .. } => *version,
        }
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Dirty { version, file } => write!(
                f,
                "history is dirty: migration {version}{} failed part-way on this tenant. Inspect the \
                 tenant, repair what the migration left behind, then delete its row \
                 (`DELETE FROM _sqlx_migrations WHERE version = {version}`) and run again",
                file.as_ref()
                    .map(|p| format!(" ({})", p.display()))
                    .unwrap_or_default()
            ),
            PlanError::ChecksumMismatch { version, file } => write!(
                f,
                "migration {version} was applied with a different checksum than {} has now: the file \
                 was edited after it was applied. Restore the applied text (see git history) and put \
                 the change in a new migration",
                file.display()
            ),
            PlanError::MissingLocally {
                version,
                description,
                dir,
            } => write!(
                f,
                "migration {version} ({description}) is applied on this tenant but is not in {}: the \
                 tenant is ahead of this migration set; run from the set that contains it",
                dir.display()
            ),
            PlanError::NoVariant { version, dialect } => write!(
                f,
                "migration {version} has no script for {dialect}: add a plain .sql or a \
                 .{dialect}.sql variant"
            ),
        }
    }
}

impl From<PlanError> for TenantError {
    fn from(e: PlanError) -> Self {
        TenantError::permanent(e.kind(), e.to_string()).at_version(e.version())
    }
}

/// Plans one tenant: pending versions up to `target` (head when `None`).
pub fn plan_tenant(
    applied: &[Applied],
    set: &MigrationSet,
    dialect: Dialect,
    target: Option<i64>,
) -> Result<TenantPlan, PlanError> {
    if let Some(bad) = applied.iter().find(|a| !a.success) {
        return Err(PlanError::Dirty {
            version: bad.version,
            file: set
                .get(bad.version)
                .and_then(|m| m.up.get(dialect))
                .map(|s| s.path.clone()),
        });
    }
    for a in applied {
        match set.get(a.version) {
            None => {
                return Err(PlanError::MissingLocally {
                    version: a.version,
                    description: a.description.clone(),
                    dir: set.dir.clone(),
                });
            }
            Some(m) => {
                let Some(script) = m.up.get(dialect) else {
                    return Err(PlanError::NoVariant {
                        version: m.version,
                        dialect,
                    });
                };
                if script.checksum != a.checksum {
                    return Err(PlanError::ChecksumMismatch {
                        version: a.version,
                        file: script.path.clone(),
                    });
                }
            }
        }
    }
    let current = applied.iter().map(|a| a.version).max().unwrap_or(0);
    let limit = target.unwrap_or(i64::MAX);
    let mut pending = Vec::new();
    for m in &set.migrations {
        if m.version > limit || applied.iter().any(|a| a.version == m.version) {
            continue;
        }
        if m.up.get(dialect).is_none() {
            return Err(PlanError::NoVariant {
                version: m.version,
                dialect,
            });
        }
        pending.push(m.version);
    }
    let target = pending.last().copied().unwrap_or(current).max(current);
    Ok(TenantPlan {
        current,
        pending,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::load;

    fn demo() -> (tempfile::TempDir, MigrationSet) {
        let dir = tempfile::tempdir().unwrap();
        for (n, t) in [
            ("0001_a.sql", "CREATE TABLE a(x int);"),
            ("0002_b.sql", "CREATE TABLE b(x int);"),
            ("0003_c.sql", "CREATE TABLE c(x int);"),
            ("0004_d.postgres.sql", "CREATE TABLE d(x int);"),
        ] {
            std::fs::write(dir.path().join(n), t).unwrap();
        }
        let set = load(dir.path()).unwrap();
        (dir, set)
    }

    fn applied(set: &MigrationSet, v: i64) -> Applied {
        let m = set.get(v).unwrap();
        Applied {
            version: v,
            description: m.description.clone(),
            checksum: m.up.get(Dialect::Postgres).unwrap().checksum.clone(),
            success: true,
        }
    }

    #[test]
    fn fresh_tenant_gets_everything() {
        let (_d, set) = demo();
        let p = plan_tenant(&[], &set, Dialect::Postgres, None).unwrap();
        assert_eq!(p.pending, vec![1, 2, 3, 4]);
        assert_eq!((p.current, p.target), (0, 4));
    }

    #[test]
    fn up_to_date_and_targets() {
        let (_d, set) = demo();
        let all: Vec<_> = (1..=4).map(|v| applied(&set, v)).collect();
        let p = plan_tenant(&all, &set, Dialect::Postgres, None).unwrap();
        assert!(p.pending.is_empty());
        assert_eq!(p.target, 4);
        let p = plan_tenant(&all[..1], &set, Dialect::Postgres, Some(2)).unwrap();
        assert_eq!(p.pending, vec![2]);
        // a target below the current version applies nothing and reverts nothing
        let p = plan_tenant(&all[..3], &set, Dialect::Postgres, Some(1)).unwrap();
        assert_eq!((p.pending.len(), p.current, p.target), (0, 3, 3));
    }

    #[test]
    fn gap_is_filled_in_order() {
        let (_d, set) = demo();
        let h = vec![applied(&set, 1), applied(&set, 3)];
        let p = plan_tenant(&h, &set, Dialect::Postgres, None).unwrap();
        assert_eq!(p.pending, vec![2, 4]);
    }

    #[test]
    fn dirty_mismatch_missing_and_variant() {
        let (_d, set) = demo();
        let mut dirty = applied(&set, 1);
        dirty.success = false;
        let e = plan_tenant(&[dirty], &set, Dialect::Postgres, None).unwrap_err();
        assert_eq!(e.kind(), FailureKind::Dirty);
        assert!(e.to_string().contains("0001_a.sql"));

        let mut edited = applied(&set, 2);
        edited.checksum[0] ^= 1;
        let e =
            plan_tenant(&[applied(&set, 1), edited], &set, Dialect::Postgres, None).unwrap_err();
        assert_eq!(
            e,
            PlanError::ChecksumMismatch {
                version: 2,
                file: set
                    .get(2)
                    .unwrap()
                    .up
                    .get(Dialect::Postgres)
                    .unwrap()
                    .path
                    .clone()
            }
        );

        let ghost = Applied {
            version: 99,
            description: "ghost".into(),
            checksum: vec![],
            success: true,
        };
        let e = plan_tenant(&[ghost], &set, Dialect::Postgres, None).unwrap_err();
        assert_eq!(e.kind(), FailureKind::MissingMigration);

        let e = plan_tenant(&[], &set, Dialect::Sqlite, None).unwrap_err();
        assert_eq!(
            e,
            PlanError::NoVariant {
                version: 4,
                dialect: Dialect::Sqlite
            }
        );
        // ...but a target below the variant-less version is fine
        assert_eq!(
            plan_tenant(&[], &set, Dialect::Sqlite, Some(3))
                .unwrap()
                .pending,
            vec![1, 2, 3]
        );
        let te: TenantError = e.into();
        assert_eq!((te.kind, te.version), (FailureKind::NoVariant, Some(4)));
    }
}
