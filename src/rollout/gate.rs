//! A wave's gate: `evaluate` is the pure verdict (tenants not started, the
//! failure count and rate, the gate query's failures), unit-tested without a
//! database; `check_sql` runs the gate query on every succeeded tenant of the
//! wave, within the command's fan-out limits.

use std::collections::BTreeMap;

use crate::dialect::{Access, Connector};
use crate::fanout::Fanout;
use crate::options::Gates;
use crate::state::WaveTally;
use crate::tenant::Tenant;

/// What a wave's gate decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Passed,
    /// `--max-failures` stopped tenants from starting: the rollout halts,
    /// whatever `--override-gate` says.
    NotStarted(String),
    /// The gate failed, and why.
    Failed(String),
}

/// Checks the count gates: `Err(why)` when the wave must halt the rollout.
pub fn check_failures(g: &Gates, tenants: usize, failed: usize) -> Result<(), String> {
    if let Some(m) = g.max_failures
        && failed > m
    {
        return Err(format!(
            "max_failures: {failed} tenant(s) failed, at most {m} allowed"
        ));
    }
    if let Some(r) = g.max_failure_rate
        && tenants > 0
        && (failed as f64 / tenants as f64) > r
    {
        return Err(format!(
            "max_failure_rate: {failed}/{tenants} = {:.1}% failed, at most {:.1}% allowed",
            100.0 * failed as f64 / tenants as f64,
            100.0 * r
        ));
    }
    Ok(())
}

/// The gate of a wave whose tenants stand as `tally`, with the gate query's
/// failures `sql` (tenant → why) and the `--max-failures` of the run.
pub fn evaluate(
    tally: &WaveTally,
    gates: &Gates,
    max_failures: Option<usize>,
    sql: &BTreeMap<String, String>,
) -> Verdict {
    if tally.not_started > 0 {
        return Verdict::NotStarted(format!(
            "--max-failures {} reached: {} tenant(s) not started",
            max_failures.unwrap_or(0),
            tally.not_started
        ));
    }
    let mut why = Vec::new();
    if let Err(e) = check_failures(gates, tally.tenants, tally.failed) {
        why.push(format!("{e} ({})", tally.failed_examples.join(", ")));
    }
    if !sql.is_empty() {
        why.push(format!(
            "gate_sql failed on {} tenant(s): {}",
            sql.len(),
            sql.keys()
                .take(10)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if why.is_empty() {
        Verdict::Passed
    } else {
        Verdict::Failed(why.join("; "))
    }
}

/// Runs the gate query on `tenants` (the wave's succeeded ones): tenant →
/// why it failed.
pub async fn check_sql(
    connector: &Connector,
    fanout: &Fanout,
    sql: &str,
    tenants: Vec<&Tenant>,
) -> BTreeMap<String, String> {
    let results = fanout
        .run(
            tenants,
            |t| t,
            |t| async move {
                let r = match connector.open(t, Access::Read).await {
                    Ok(mut s) => {
                        let r = s.check(sql).await;
                        s.close().await;
                        r
                    }
                    Err(e) => Err(e),
                };
                (t.id.to_string(), r)
            },
        )
        .await;
    results
        .into_iter()
        .filter_map(|(id, r)| match r {
            Ok(None) => None,
            Ok(Some(rows)) => Some((id, format!("gate query returned {rows}"))),
            Err(e) => Some((id, format!("gate query failed: {e}"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(tenants: usize, failed: usize, not_started: usize) -> WaveTally {
        WaveTally {
            tenants,
            succeeded: tenants - failed - not_started,
            failed,
            not_started,
            failed_examples: (0..failed.min(10)).map(|i| format!("t{i}")).collect(),
        }
    }

    #[test]
    fn count_gates() {
        let g = Gates {
            max_failures: Some(1),
            max_failure_rate: Some(0.1),
        };
        assert!(check_failures(&g, 100, 1).is_ok());
        assert!(
            check_failures(&g, 100, 2)
                .unwrap_err()
                .contains("max_failures")
        );
        let g = Gates {
            max_failures: None,
            max_failure_rate: Some(0.1),
        };
        assert!(check_failures(&g, 20, 2).is_ok());
        assert!(
            check_failures(&g, 20, 3)
                .unwrap_err()
                .contains("max_failure_rate")
        );
        assert!(check_failures(&Gates::default(), 5, 5).is_ok());
    }

    #[test]
    fn a_wave_passes_only_when_every_gate_does() {
        let none = BTreeMap::new();
        let zero = Gates {
            max_failures: Some(0),
            max_failure_rate: None,
        };
        assert_eq!(
            evaluate(&tally(10, 0, 0), &zero, None, &none),
            Verdict::Passed
        );
        match evaluate(&tally(10, 2, 0), &zero, None, &none) {
            Verdict::Failed(why) => {
                assert!(why.contains("max_failures: 2"), "{why}");
                assert!(why.contains("(t0, t1)"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let sql: BTreeMap<String, String> = [("t7".to_string(), "1 row(s)".to_string())].into();
        match evaluate(&tally(10, 0, 0), &Gates::default(), None, &sql) {
            Verdict::Failed(why) => assert_eq!(why, "gate_sql failed on 1 tenant(s): t7"),
            other => panic!("{other:?}"),
        }
        match evaluate(&tally(10, 1, 0), &zero, None, &sql) {
            Verdict::Failed(why) => assert!(why.contains("; gate_sql"), "{why}"),
            other => panic!("{other:?}"),
        }
        match evaluate(&tally(10, 3, 4), &Gates::default(), Some(3), &none) {
            Verdict::NotStarted(why) => {
                assert_eq!(why, "--max-failures 3 reached: 4 tenant(s) not started")
            }
            other => panic!("{other:?}"),
        }
    }
}
