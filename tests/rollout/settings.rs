//! A rollout's settings are frozen when it starts; a process that resumes
//! it (or joins it as a worker) with a setting on its command line uses that
//! setting for itself, on either store.

use crate::common::*;
use crate::on_both_stores;
use crate::shared::*;

/// The most tenants of `ids` whose runs overlap at one instant, from the
/// report's `started_at`/`finished_at` (RFC 3339, one format: sortable).
fn most_at_once(report: &std::path::Path, ids: &[String]) -> usize {
    let rows = csv_rows(report);
    let mut edges: Vec<(String, i32)> = Vec::new();
    for id in ids {
        let r = &rows[id.as_str()];
        edges.push((r["started_at"].clone(), 1));
        edges.push((r["finished_at"].clone(), -1));
    }
    // an end sorts before a start at the same instant
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

on_both_stores!(
/// Started at `--concurrency 1` and paused after the first wave, then
/// resumed with `--concurrency 4`: the first wave ran one tenant at a time,
/// the rest several at once.
async fn a_setting_on_the_resume_command_line_overrides_the_frozen_one(dir, store) {
    registry_fleet(dir, 12, 0);
    let m = migration_dir(&[(
        "0001_slow.sql",
        "CREATE TABLE n (x INTEGER);\n\
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) INSERT INTO n SELECT x FROM c;",
    )]);
    let m = m.path().to_str().unwrap();
    let out = run_in(
        dir,
        &rollout_args(m, &["--concurrency", "1", "--waves", "first=4,rest", "--pause-after", "first"]),
    );
    let s = summary(&report_dir(dir, &out));
    assert_eq!(s["status"], "paused", "{s}");
    let id = s["rollout_id"].as_str().unwrap().to_string();
    let out = run_in(
        dir,
        &["resume", &id, "--concurrency", "4", "--progress-every", "0", "--fleet", "registry:fleet.csv", "--migrations", m],
    );
    expect_exit(&out, 0);
    let report = report_dir(dir, &out);
    let rows = csv_rows(&report);
    let (first, rest): (Vec<String>, Vec<String>) = (0..12)
        .map(|i| format!("t{i:04}"))
        .partition(|t| rows[t.as_str()]["wave"] == "first");
    assert_eq!(first.len(), 4);
    assert_eq!(most_at_once(&report, &first), 1, "the frozen --concurrency 1");
    assert!(
        most_at_once(&report, &rest) > 1,
        "--concurrency 4 on the resume: {:?}",
        rest.iter().map(|t| (&rows[t.as_str()]["started_at"], &rows[t.as_str()]["finished_at"])).collect::<Vec<_>>()
    );
});
