//! What the move tests share: `fleetmig move` of the registry fleet's t1,
//! and a registry whose t1 is at a URL, synced with a set.

use std::path::Path;
use std::process::Output;

use super::*;

pub fn mv(dir: &Path, set: &Path, extra: &[&str]) -> Output {
    let mut a = vec![
        "move",
        "--fleet",
        "registry:fleet.csv",
        "--tenant",
        "t1",
        "--state",
        "state.db",
        "--migrations",
        set.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    run_in(dir, &a)
}

pub fn fleet(dir: &Path, url: &str, set: &Path) {
    std::fs::write(
        dir.join("fleet.csv"),
        format!("id,url,schema,tags\nt1,{url},,\n"),
    )
    .unwrap();
    let out = sync_fleet(
        dir,
        "registry:fleet.csv",
        set,
        &["--state", "state.db", "--create-missing"],
    );
    expect_exit(&out, 0);
}
