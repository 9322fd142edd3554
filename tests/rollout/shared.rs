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

/// How many rows `FROM sql` holds in the store (binds `$1`, … in both).
pub async fn count(store: &crate::common::stores::Store, sql: &str, binds: &[&str]) -> i64 {
    let sql = format!("SELECT CAST(count(*) AS TEXT) FROM {sql}");
    store.text(&sql, binds).await.parse().unwrap()
}

/// A sync of the registry fleet in `dir` that exits `code`: its rollout id.
pub fn synced(dir: &std::path::Path, m: &str, extra: &[&str], code: i32) -> String {
    use crate::common::*;
    let out = run_in(dir, &sync_args(m, extra));
    expect_exit(&out, code);
    let report = report_dir(dir, &out);
    report.file_name().unwrap().to_str().unwrap().to_string()
}
