//! Folding: a finished rollout's plain up-to-date tenants cost the store a
//! count and a shared list of ids instead of a row each, while `status`,
//! `report`, `history`, `retry` and `prune` read them as before; a tenant
//! that changed, failed or was asked about keeps its row.

use crate::common::*;
use crate::on_both_stores;
use crate::shared::{count, rollout_args, synced};
use sqlx::{Connection, Executor};

on_both_stores!(
/// Three syncs of 12 tenants: the first applies (rows kept), then one
/// tenant breaks and the next two find 11 at head (folded, one list for
/// both nights) and the broken one failed (its row kept); every reader
/// sees 12 tenants;
/// a retry of a folded tenant brings its row back; a prune takes the
/// folds and the list no rollout names any more.
async fn up_to_date_tenants_are_folded_and_read_back_whole(dir, store) {
    registry_fleet(dir, 12, 0);
    let m = demo_migrations();
    let m = m.to_str().unwrap();
    let first = synced(dir, m, &[], 0);
    // t0011 is no database any more: it fails every night from now on
    std::fs::write(registry_tenant(dir, "t0011"), vec![b'x'; 4096]).unwrap();
    let ids: Vec<String> = (0..2).map(|_| synced(dir, m, &[], 1)).collect();
    let rows = |id: &str| format!("fleetmig_tenant_runs WHERE rollout_id = '{id}'");
    assert_eq!(count(store, &rows(&first), &[]).await, 12, "the first sync applied: its rows stay");
    for id in &ids {
        let failed = format!("{} AND tenant = 't0011' AND status = 'failed'", rows(id));
        assert_eq!(count(store, &rows(id), &[]).await, 1, "{id}: every tenant at head is folded");
        assert_eq!(count(store, &failed, &[]).await, 1, "{id}: the failed tenant keeps its row");
        let folded = store
            .text("SELECT CAST(tenants AS TEXT) FROM fleetmig_folds WHERE rollout_id = $1", &[id])
            .await;
        assert_eq!(folded, "11");
        assert_eq!(count(store, "fleetmig_tenants WHERE rollout_id = $1", &[id]).await, 12);
    }
    assert_eq!(count(store, "fleetmig_id_lists", &[]).await, 1, "the same fleet twice is one list");

    // status, report and history read the folded tenants back
    let out = run_in(dir, &["status", "--rollout", &ids[0], "--all"]);
    expect_exit(&out, 1);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("t00")).collect();
    assert_eq!(lines.len(), 12, "{text}");
    assert_eq!(lines.iter().filter(|l| l.contains("succeeded")).count(), 11, "{text}");
    let out = run_in(dir, &["report", &ids[0], "--fleet", "registry:fleet.csv"]);
    expect_exit(&out, 0);
    let csv = csv_rows(&report_dir(dir, &out));
    assert_eq!(csv.len(), 12);
    for (t, row) in csv.iter().filter(|(t, _)| *t != "t0011") {
        assert_eq!(row["status"], "succeeded", "{t}");
        assert_eq!(row["from_version"], row["to_version"], "{t}");
        assert_eq!(row["applied_versions"], "", "{t}");
    }
    let out = run_in(dir, &["history", "--json"]);
    expect_exit(&out, 0);
    let h: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let r = h.as_array().unwrap().iter().find(|r| r["rollout"]["id"] == ids[0].as_str()).unwrap();
    assert_eq!((r["tenants"].as_u64(), r["succeeded"].as_u64()), (Some(12), Some(11)), "{r}");

    // a retry of a folded tenant: its row comes back, marked, and stays
    let out = run_in(dir, &["retry", "--rollout", &ids[0], "--tenant", "t0003", "--migrations", m]);
    expect_exit(&out, 0);
    let row = store
        .text(
            "SELECT status || ' ' || CAST(attempts AS TEXT) || ' ' || claimed_by FROM fleetmig_tenant_runs \
             WHERE rollout_id = $1 AND tenant = $2",
            &[&ids[0], "t0003"],
        )
        .await;
    assert_eq!(row, "succeeded 2 asked:retry");
    let folded = store
        .text("SELECT CAST(tenants AS TEXT) FROM fleetmig_folds WHERE rollout_id = $1", &[&ids[0]])
        .await;
    assert_eq!(folded, "10");
    assert_eq!(count(store, "fleetmig_tenants WHERE rollout_id = $1", &[&ids[0]]).await, 12);
    assert_eq!(
        count(store, "fleetmig_tenants WHERE rollout_id = $1 AND tenant = $2", &[&ids[0], "t0003"]).await,
        1,
        "a tenant is a row or folded, never both"
    );
    assert_eq!(count(store, "fleetmig_id_lists", &[]).await, 2);
    // a tenant that is still a row is marked too: no fold takes it while a
    // retry runs it
    let out = run_in(dir, &["retry", "--rollout", &ids[1], "--tenant", "t0011", "--migrations", m]);
    expect_exit(&out, 1);
    let marked = "fleetmig_tenant_runs WHERE rollout_id = $1 AND tenant = 't0011' AND claimed_by = 'asked:retry'";
    assert_eq!(count(store, marked, &[&ids[1]]).await, 1);
    let out = run_in(dir, &["retry", "--rollout", &ids[0], "--tenant", "nobody", "--migrations", m]);
    expect_exit(&out, 2);
    assert!(stderr(&out).contains("--tenant nobody: not a tenant of rollout"), "{}", stderr(&out));

    // pruned: the folds go, and the lists nobody names
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let out = run_in(dir, &["prune", "--keep", "1", "--lease", "1s"]);
    expect_exit(&out, 0);
    assert!(stdout(&out).starts_with("pruned 2 rollout(s): 24 tenant row(s)"), "{}", stdout(&out));
    assert_eq!(count(store, "fleetmig_folds", &[]).await, 1);
    assert_eq!(count(store, "fleetmig_id_lists", &[]).await, 1);
    assert_eq!(count(store, "fleetmig_tenants", &[]).await, 12);
});

on_both_stores!(
/// A tenant at head when a rollout is planned is folded from the start
/// (`rollout::prefold`), not written as a row to be folded at the end: a
/// rollout halted after its first wave (not finished, so no end-of-rollout
/// fold has run) holds no row for the first wave's tenants at head, a row
/// for its pending tenant and for every tenant of the later wave (read when
/// their wave runs). The gate query fails on a folded tenant: its failure
/// is recorded on its row, brought back. The resume finishes the rest.
async fn tenants_at_head_when_planned_are_folded_from_the_start(dir, store) {
    registry_fleet(dir, 8, 0);
    let m = demo_migrations();
    let m = m.to_str().unwrap();
    // every tenant at head but t0000 (wave one) and t0007 (wave two)
    let mut some = Vec::new();
    for i in 1..7 {
        some.extend(["--tenant".to_string(), format!("t{i:04}")]);
    }
    let some: Vec<&str> = some.iter().map(String::as_str).collect();
    synced(dir, m, &some, 0);
    // the gate query fails on t0002 alone (at head, so folded)
    let mut c = sqlite(&registry_tenant(dir, "t0002")).await;
    c.execute("CREATE TABLE flag (x INTEGER)").await.unwrap();
    c.close().await.unwrap();
    std::fs::write(
        dir.join("gate.sql"),
        "SELECT count(*) = 0 FROM sqlite_master WHERE name = 'flag'",
    )
    .unwrap();
    let waves = ["--waves", "first=ids:t0000+t0001+t0002+t0003,rest", "--gate-sql", "gate.sql"];
    let out = run_in(dir, &rollout_args(m, &waves));
    expect_exit(&out, 1);
    let report = report_dir(dir, &out);
    let id = report.file_name().unwrap().to_str().unwrap().to_string();
    let s = summary(&report);
    assert_eq!(s["status"], "halted", "{s}");
    let rows = |more: &str| format!("fleetmig_tenant_runs WHERE rollout_id = $1{more}");
    let wave = |w: i64, ids: &str| {
        let ids = ids.split(',').map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        (rows(&format!(" AND wave = {w}")), rows(&format!(" AND wave = {w} AND tenant IN ({ids})")))
    };
    // wave one: t0000 ran (a row), t0001 and t0003 are folded, t0002 is
    // folded and brought back for its gate failure
    let (all, these) = wave(0, "t0000,t0002");
    assert_eq!((count(store, &all, &[&id]).await, count(store, &these, &[&id]).await), (2, 2));
    let (all, these) = wave(1, "t0004,t0005,t0006,t0007");
    assert_eq!((count(store, &all, &[&id]).await, count(store, &these, &[&id]).await), (4, 4));
    let folded = store
        .text("SELECT CAST(tenants AS TEXT) FROM fleetmig_folds WHERE rollout_id = $1 AND wave = 0", &[&id])
        .await;
    assert_eq!(folded, "2");
    assert_eq!(count(store, &rows(" AND gate_error IS NOT NULL"), &[&id]).await, 1);
    assert_eq!(count(store, "fleetmig_tenants WHERE rollout_id = $1", &[&id]).await, 8);
    let csv = csv_rows(&report);
    assert_eq!(csv.len(), 8);
    assert!(csv["t0002"]["gate_error"].contains("gate query returned 1 row"), "{:?}", csv["t0002"]);
    assert_eq!(csv["t0001"]["status"], "succeeded");
    assert_eq!(csv["t0000"]["applied_versions"].split(';').count(), 8, "{:?}", csv["t0000"]);

    // the gate passed by hand: the rest runs, and at the end the plain
    // tenants at head are folded as before
    let out = run_in(dir, &["resume", &id, "--override-gate", "--migrations", m]);
    expect_exit(&out, 1); // a gate error stays in the report
    assert_eq!(summary(&report_dir(dir, &out))["status"], "completed");
    let csv = csv_rows(&report_dir(dir, &out));
    assert_eq!(csv.len(), 8);
    assert!(csv.values().all(|r| r["status"] == "succeeded"), "{csv:?}");
    assert_eq!(csv["t0007"]["applied_versions"].split(';').count(), 8, "{:?}", csv["t0007"]);
    assert_eq!(count(store, &rows(""), &[&id]).await, 3, "t0000, t0007 applied; t0002 failed its gate");
});
