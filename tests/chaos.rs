//! The short form of `scripts/chaos.sh` (the soak anyone can run): four
//! workers, each its own Unix user, on one rollout of 80 PostgreSQL schema
//! tenants in two waves with a gate, while random workers are SIGKILLed,
//! SIGSTOPped past their lease or cut from PostgreSQL by an iptables
//! owner-match rule, and the PostgreSQL server is restarted once. The script
//! checks the outcome itself (every tenant at head, each version once and
//! successful, the transactional migration ran once, every index VALID,
//! each gate evaluated once, the report counting every tenant once, no
//! worker left running) and exits 1 when one fails. Named `server_restart`
//! so that it runs alone (nextest.toml).

use std::process::Command;

#[test]
fn chaos_soak_with_a_server_restart_keeps_every_invariant() {
    let out = Command::new("scripts/chaos.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("FLEETMIG_BIN", assert_cmd::cargo::cargo_bin("fleetmig"))
        .env("TENANTS", "80")
        .env("DURATION", "24")
        // ends (and says why) well inside the harness's timeout
        .env("END_WAIT", "120")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{said}");
    // the faults happened: a soak without them proves nothing
    let line = said
        .lines()
        .find(|l| l.starts_with("chaos: tenants="))
        .unwrap_or_else(|| panic!("no summary line: {said}"));
    let field = |k: &str| -> u32 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {line}"))
    };
    assert_eq!(field("restarts"), 1, "{said}");
    assert!(
        field("kills") + field("stalls") + field("cuts") >= 4,
        "{said}"
    );
    assert_eq!(field("failed"), 0, "{said}");
}
