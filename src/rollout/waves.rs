//! Wave plans: which tenants go in which wave. A wave selects by tag, by id
//! list, by count or by percent of the tenants not yet placed; the order within
//! what is left is a stable shuffle seeded by the rollout id (FNV-1a of seed
//! and tenant id), so a 5% wave is a fair sample and the same rollout always
//! picks the same tenants. Pure: unit-tested without any database.

use crate::error::Error;
use crate::tenant::Tenant;

pub use fleetmig_parse::waves::{Selector, WaveSpec};

/// Parses `canary=tag:canary,5%,25%,100%` (see `fleetmig_parse::waves`).
pub fn parse_waves(spec: &str) -> Result<Vec<WaveSpec>, Error> {
    fleetmig_parse::waves::parse(spec).map_err(|m| Error::flag("--waves", m))
}

/// FNV-1a 64 over seed and id: the stable shuffle key.
fn shuffle_key(seed: &str, id: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in seed.bytes().chain([0u8]).chain(id.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// A planned wave: its name, selector and tenant ids in run order.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedWave {
    pub name: String,
    pub selector: String,
    pub tenants: Vec<String>,
}

/// Places every tenant in exactly one wave. Tenants that no wave takes are an
/// error (end the spec with `100%` or `rest`); an `ids:` entry that names no
/// tenant of the fleet is an error too.
pub fn plan_waves(
    specs: &[WaveSpec],
    tenants: &[Tenant],
    seed: &str,
) -> Result<Vec<PlannedWave>, Error> {
    let mut remaining: Vec<&Tenant> = tenants.iter().collect();
    remaining.sort_by_key(|t| (shuffle_key(seed, t.id.as_str()), t.id.clone()));
    let mut out = Vec::new();
    for spec in specs {
        let take = take(spec, &remaining, tenants)
            .map_err(|m| Error::flag("--waves", format!("wave {}: {m}", spec.name)))?;
        let taken: std::collections::HashSet<&str> = take.iter().map(|t| t.id.as_str()).collect();
        remaining.retain(|t| !taken.contains(t.id.as_str()));
        out.push(PlannedWave {
            name: spec.name.clone(),
            selector: spec.selector.to_string(),
            tenants: take.iter().map(|t| t.id.to_string()).collect(),
        });
    }
    if !remaining.is_empty() {
        let m = format!(
            "leaves {} tenant(s) in no wave (e.g. {}): end the waves with 100% or rest",
            remaining.len(),
            remaining[0].id
        );
        return Err(Error::flag("--waves", m));
    }
    // a wave that takes nobody is a mistyped tag or id, or a spec whose
    // earlier waves took everyone: a gate over nothing proves nothing
    if !tenants.is_empty()
        && let Some(empty) = out.iter().find(|w| w.tenants.is_empty())
    {
        let m = format!(
            "wave {} ({}) takes no tenant of the fleet",
            empty.name, empty.selector
        );
        return Err(Error::flag("--waves", m));
    }
    Ok(out)
}

/// The tenants of `remaining` (in its order) that wave `spec` takes; an id
/// not in the fleet is refused (the caller names its flag).
fn take<'t>(
    spec: &WaveSpec,
    remaining: &[&'t Tenant],
    tenants: &[Tenant],
) -> Result<Vec<&'t Tenant>, String> {
    Ok(match &spec.selector {
        Selector::Tag { key, value } => remaining
            .iter()
            .copied()
            .filter(|t| {
                t.tags
                    .get(key)
                    .is_some_and(|v| value.as_ref().is_none_or(|want| want == v))
            })
            .collect(),
        Selector::Ids(ids) => {
            let known: std::collections::HashSet<&str> =
                tenants.iter().map(|t| t.id.as_str()).collect();
            for id in ids {
                if !known.contains(id.as_str()) {
                    return Err(format!("no tenant {id:?} in the fleet"));
                }
            }
            remaining
                .iter()
                .copied()
                .filter(|t| ids.iter().any(|i| i == t.id.as_str()))
                .collect()
        }
        Selector::Count(n) => remaining.iter().copied().take(*n).collect(),
        Selector::Percent(p) => {
            let n = ((remaining.len() as f64) * p / 100.0).ceil() as usize;
            remaining.iter().copied().take(n).collect()
        }
        Selector::Rest => remaining.to_vec(),
    })
}

/// The tenants of `tenants` one selector (`tag:K[=V]`, `ids:a+b`, `N`,
/// `N%`) takes, in the stable order `seed` shuffles them into.
pub fn select(selector: &str, tenants: &[Tenant], seed: &str) -> Result<Vec<Tenant>, Error> {
    let refuse = |m: String| Error::flag_value("--select", selector, m);
    let specs = fleetmig_parse::waves::parse(selector).map_err(refuse)?;
    let [spec] = specs.as_slice() else {
        return Err(refuse("one selector (tag:K[=V], ids:a+b, N, N%)".into()));
    };
    let mut remaining: Vec<&Tenant> = tenants.iter().collect();
    remaining.sort_by_key(|t| (shuffle_key(seed, t.id.as_str()), t.id.clone()));
    Ok(take(spec, &remaining, tenants)
        .map_err(refuse)?
        .into_iter()
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::{Locator, TenantId, parse_tags};

    fn fleet(n: usize) -> Vec<Tenant> {
        (0..n)
            .map(|i| Tenant {
                id: TenantId::new(&format!("t{i:03}")).unwrap(),
                locator: Locator::Sqlite {
                    path: format!("t{i}.db").into(),
                },
                tags: parse_tags(if i < 2 {
                    "canary;tier=pro"
                } else if i % 3 == 0 {
                    "tier=pro"
                } else {
                    "tier=free"
                })
                .unwrap(),
            })
            .collect()
    }

    #[test]
    fn parses_specs() {
        let w = parse_waves("canary=tag:canary,5%,25%,100%").unwrap();
        assert_eq!(w.len(), 4);
        assert_eq!(w[0].name, "canary");
        assert_eq!(w[1].selector, Selector::Percent(5.0));
        assert_eq!(w[3].selector, Selector::Rest);
        assert_eq!(w[2].name, "wave3");
        let w = parse_waves("tag:tier=pro,ids:a+b,10,rest").unwrap();
        assert_eq!(
            w[0].selector,
            Selector::Tag {
                key: "tier".into(),
                value: Some("pro".into())
            }
        );
        assert_eq!(w[1].selector, Selector::Ids(vec!["a".into(), "b".into()]));
        assert_eq!(w[2].selector, Selector::Count(10));
        for bad in [
            "",
            "5%,,",
            "0%",
            "101%",
            "x=0",
            "tag:",
            "ids:",
            "banana",
            "a=5%,a=rest",
            "100%,10%",
            "rest,canary=tag:canary",
            "=10%,rest",
        ] {
            assert!(parse_waves(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn every_tenant_in_exactly_one_wave_and_stable() {
        let t = fleet(100);
        let specs = parse_waves("canary=tag:canary,5%,25%,100%").unwrap();
        let a = plan_waves(&specs, &t, "r1").unwrap();
        assert_eq!(a[0].tenants, vec!["t000", "t001"]);
        assert_eq!(a[1].tenants.len(), 5); // ceil(5% of 98)
        assert_eq!(a[2].tenants.len(), 24); // ceil(25% of 93)
        assert_eq!(a[3].tenants.len(), 69);
        let mut all: Vec<String> = a.iter().flat_map(|w| w.tenants.clone()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 100);
        assert_eq!(
            a,
            plan_waves(&specs, &t, "r1").unwrap(),
            "same seed, same plan"
        );
        assert_ne!(
            a[1].tenants,
            plan_waves(&specs, &t, "r2").unwrap()[1].tenants,
            "another rollout, another sample"
        );
    }

    #[test]
    fn unplaced_tenants_and_unknown_ids_are_errors() {
        let t = fleet(10);
        assert!(plan_waves(&parse_waves("tag:canary,50%").unwrap(), &t, "s").is_err());
        assert!(plan_waves(&parse_waves("ids:nope,rest").unwrap(), &t, "s").is_err());
        let e = plan_waves(&parse_waves("beta=tag:beta,rest").unwrap(), &t, "s").unwrap_err();
        assert!(
            e.to_string()
                .contains("wave beta (tag:beta) takes no tenant"),
            "{e}"
        );
        let p = plan_waves(&parse_waves("ids:t005+t007,rest").unwrap(), &t, "s").unwrap();
        assert_eq!(p[0].tenants.len(), 2);
        assert_eq!(p[1].tenants.len(), 8);
    }
}
