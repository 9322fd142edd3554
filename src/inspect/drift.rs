//! Drift, for `fleetmig verify` (not a migration's verification query,
//! which `dialect/` runs inside its transaction): for every tenant, the
//! applied checksums against the files (an edited or missing migration), and
//! the tenant's actual schema against the other tenants at the same version.
//! Tenants whose schema differs from the majority at their version are
//! drifted, with the difference spelled out: the hand-fixed tenant that no
//! history table shows.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::dialect::{Access, Connector};
use crate::fanout::Fanout;
use crate::migration::{MigrationSet, plan_tenant};
use crate::tenant::Tenant;

/// How one tenant compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftState {
    /// Its schema is the majority's at its version.
    Ok,
    /// Its schema differs from the majority's at its version.
    Drifted,
    /// Its history disagrees with the files (an edited or unknown migration).
    Edited,
    /// It could not be read.
    Error,
}

impl DriftState {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftState::Ok => "ok",
            DriftState::Drifted => "drifted",
            DriftState::Edited => "edited",
            DriftState::Error => "error",
        }
    }
}

/// What `verify` found about one tenant.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    pub tenant: String,
    pub version: Option<i64>,
    pub state: DriftState,
    /// Schema lines the majority at this version has and this tenant lacks.
    pub missing: Vec<String>,
    /// Schema lines this tenant has and the majority does not.
    pub extra: Vec<String>,
    pub message: Option<String>,
    /// How many tenants share the majority schema at this version.
    pub majority_of: usize,
}

/// What was read from one tenant.
pub struct Read {
    pub tenant: String,
    /// Its database system: schemas are compared within one system only
    /// (a SQLite tenant's fingerprint is not a MySQL one's).
    pub kind: &'static str,
    pub version: Option<i64>,
    /// Why its history disagrees with the files, if it does.
    pub history_error: Option<String>,
    /// Its schema lines, or why they could not be read.
    pub items: Result<Vec<String>, String>,
}

async fn read_one(c: &Connector, set: &MigrationSet, t: &Tenant) -> Read {
    let id = t.id.to_string();
    let kind = t.locator.dialect().as_str();
    let mut s = match c.open(t, Access::Read).await {
        Ok(s) => s,
        Err(e) => {
            return Read {
                tenant: id,
                kind,
                version: None,
                history_error: None,
                items: Err(e.to_string()),
            };
        }
    };
    let history = s.history().await;
    let items = s.fingerprint().await.map_err(|e| e.to_string());
    let dialect = s.dialect();
    s.close().await;
    match history {
        Ok(h) => {
            let version = Some(
                h.iter()
                    .filter(|a| a.success)
                    .map(|a| a.version)
                    .max()
                    .unwrap_or(0),
            );
            let history_error = plan_tenant(&h, set, dialect, None)
                .err()
                .map(|e| e.to_string());
            Read {
                tenant: id,
                kind,
                version,
                history_error,
                items,
            }
        }
        Err(e) => Read {
            tenant: id,
            kind,
            version: None,
            history_error: None,
            items: Err(e.to_string()),
        },
    }
}

/// Compares fingerprints (pure): per database system and version, the most
/// common schema is the reference; every other tenant gets what it lacks
/// and what it adds.
pub fn compare(reads: Vec<Read>) -> Vec<Verdict> {
    type Key = (&'static str, Option<i64>);
    let mut by_version: BTreeMap<Key, Vec<&Vec<String>>> = BTreeMap::new();
    for r in &reads {
        if let Ok(items) = &r.items {
            by_version
                .entry((r.kind, r.version))
                .or_default()
                .push(items);
        }
    }
    let majority: BTreeMap<Key, (&Vec<String>, usize)> = by_version
        .iter()
        .map(|(v, list)| {
            let mut counts: BTreeMap<&Vec<String>, usize> = BTreeMap::new();
            for l in list {
                *counts.entry(*l).or_default() += 1;
            }
            let best = counts
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .expect("non-empty");
            (*v, best)
        })
        .collect();
    let mut out: Vec<Verdict> = reads
        .iter()
        .map(
            |Read {
                 tenant,
                 kind,
                 version,
                 history_error,
                 items,
             }| {
                let mut v = Verdict {
                    tenant: tenant.clone(),
                    version: *version,
                    state: DriftState::Ok,
                    missing: Vec::new(),
                    extra: Vec::new(),
                    message: history_error.clone(),
                    majority_of: 0,
                };
                match items {
                    Err(e) => {
                        v.state = DriftState::Error;
                        v.message = Some(e.clone());
                    }
                    Ok(items) => {
                        let (reference, n) = majority[&(*kind, *version)];
                        v.majority_of = n;
                        let mine: BTreeSet<&String> = items.iter().collect();
                        let theirs: BTreeSet<&String> = reference.iter().collect();
                        v.missing = theirs.difference(&mine).map(|s| s.to_string()).collect();
                        v.extra = mine.difference(&theirs).map(|s| s.to_string()).collect();
                        if !v.missing.is_empty() || !v.extra.is_empty() {
                            v.state = DriftState::Drifted;
                        }
                        if history_error.is_some() {
                            v.state = DriftState::Edited;
                        }
                    }
                }
                v
            },
        )
        .collect();
    out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    out
}

/// Reads every tenant (within the fan-out's limits) and compares them.
pub async fn verify(
    connector: &Connector,
    fanout: &Fanout,
    set: &MigrationSet,
    tenants: &[Tenant],
) -> Vec<Verdict> {
    let reads: Vec<Read> = fanout
        .run(
            tenants.iter().collect(),
            |t| t,
            |t| read_one(connector, set, t),
        )
        .await;
    compare(reads)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(t: &str, version: i64, err: Option<&str>, v: &[&str]) -> Read {
        Read {
            tenant: t.into(),
            kind: "sqlite",
            version: Some(version),
            history_error: err.map(str::to_string),
            items: Ok(v.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn the_odd_tenant_out_is_drifted_with_the_difference() {
        let base = [
            "table a: CREATE TABLE a (x int)",
            "index a_x: CREATE INDEX a_x ON a (x)",
        ];
        let v = compare(vec![
            read("t1", 2, None, &base),
            read("t2", 2, None, &base),
            read(
                "t3",
                2,
                None,
                &[base[0], "index hotfix: CREATE INDEX hotfix ON a (x)"],
            ),
            read("t4", 1, None, &[base[0]]),
            read(
                "t5",
                2,
                Some("migration 2 was applied with a different checksum"),
                &base,
            ),
        ]);
        assert_eq!(v[0].state, DriftState::Ok);
        assert_eq!(v[0].majority_of, 3);
        assert_eq!(v[2].state, DriftState::Drifted);
        assert_eq!(v[2].missing, vec![base[1].to_string()]);
        assert_eq!(
            v[2].extra,
            vec!["index hotfix: CREATE INDEX hotfix ON a (x)".to_string()]
        );
        assert_eq!(
            v[3].state,
            DriftState::Ok,
            "alone at its version: nothing to compare with"
        );
        assert_eq!(v[4].state, DriftState::Edited);
    }

    #[test]
    fn tenants_of_two_systems_are_not_compared_with_each_other() {
        let mut mysql = read("m1", 1, None, &["column t.x int"]);
        mysql.kind = "mysql";
        let v = compare(vec![
            read("s1", 1, None, &["table t: CREATE TABLE t (x)"]),
            read("s2", 1, None, &["table t: CREATE TABLE t (x)"]),
            mysql,
        ]);
        assert!(
            v.iter().all(|v| v.state == DriftState::Ok),
            "{:?}",
            v.iter().map(|v| &v.state).collect::<Vec<_>>()
        );
    }
}
