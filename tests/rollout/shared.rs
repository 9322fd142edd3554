//! Helpers shared by the modules of the rollout tests: the arguments of a
//! rollout, or a sync, of the registry fleet.

pub fn rollout_args<'a>(m: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    command_args("rollout", m, extra)
}

pub fn sync_args<'a>(m: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    command_args("sync", m, extra)
}

fn command_args<'a>(command: &'a str, m: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        command,
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
