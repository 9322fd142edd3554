//! Helpers shared by the modules of the rollout tests: the arguments of a
//! rollout of the registry fleet.

pub fn rollout_args<'a>(m: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "rollout",
        "--fleet",
        "registry:fleet.csv",
        "--progress-every",
        "0",
        "--migrations",
        m,
    ];
    v.extend_from_slice(extra);
    v
}
