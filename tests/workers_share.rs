//! Several workers share a rollout fairly: a claim takes the batch it asks
//! for and no more, a worker's batches grow only to its share of what is
//! left, and `--per-server` holds for the whole rollout however many
//! workers there are.

mod common;

use std::time::{Duration, Instant};

use common::workers::*;
use common::*;

/// Claims are fair: a sync (concurrency 2) and a worker that joins it
/// (concurrency 2) on 200 schemas that each take about 50 ms: each runs
/// between a third and two thirds of them. (A claim used to take every
/// tenant of the wave: `IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)` was
/// planned as a semi-join that ran the LIMIT again for each row.)
#[tokio::test(flavor = "multi_thread")]
async fn two_workers_share_a_wave_fairly() {
    let s = Setup::new("fair", 200, 0.025).await;
    let mut c = s.db.conn().await;
    let m = s.m.path().to_str().unwrap().to_string();
    let first = s.start(&[
        "sync",
        "--fleet",
        &s.fleet,
        "--migrations",
        &m,
        "--concurrency",
        "2",
    ]);
    let id = s.rollout_id(&mut c).await;
    let second = s.worker(&id, &["--migrations", &m, "--concurrency", "2"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (a, _) = wait_until(first, deadline);
    let (b, _) = wait_until(second, deadline);
    assert_eq!(a.status.code(), Some(0), "{}", said(&a));
    assert!(b.status.code() == Some(0), "{}", said(&b));
    ran_once(&mut c).await;
    let per: Vec<(String, i64)> = sqlx::query_as(
        "SELECT worker, count(*) FROM fleetmig_tenant_runs WHERE rollout_id = $1 GROUP BY worker ORDER BY 1",
    )
    .bind(&id)
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(per.len(), 2, "both ran tenants: {per:?}");
    assert_eq!(per.iter().map(|p| p.1).sum::<i64>(), 200);
    for (w, n) in &per {
        assert!((67..=133).contains(n), "worker {w} ran {n} of 200: {per:?}");
    }
    s.db.drop_now().await;
}

/// The case the claim was found by: a rollout at concurrency 1 on 20
/// schemas and a worker at concurrency 3 that joins it; the first claim
/// takes 2 tenants (its batch), not the wave, so the worker runs most.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_takes_its_batch_and_no_more() {
    let s = Setup::new("claim", 20, 0.1).await;
    let mut c = s.db.conn().await;
    let m = s.m.path().to_str().unwrap().to_string();
    let first = s.start(&[
        "rollout",
        "--fleet",
        &s.fleet,
        "--migrations",
        &m,
        "--concurrency",
        "1",
    ]);
    let id = s.rollout_id(&mut c).await;
    // the rollout's first claim, counted in the store
    let t0 = Instant::now();
    let claimed = loop {
        let n = count(
            &mut c,
            &format!("SELECT count(*) FROM fleetmig_tenant_runs WHERE rollout_id = '{id}' AND claimed_by IS NOT NULL"),
        )
        .await;
        if n > 0 || t0.elapsed() > Duration::from_secs(20) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        (1..=2).contains(&claimed),
        "the first claim took {claimed} tenants"
    );
    let second = s.worker(&id, &["--migrations", &m, "--concurrency", "3"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (a, _) = wait_until(first, deadline);
    let (b, _) = wait_until(second, deadline);
    assert_eq!(a.status.code(), Some(0), "{}", said(&a));
    assert_eq!(b.status.code(), Some(0), "{}", said(&b));
    ran_once(&mut c).await;
    let by_worker: i64 = count(
        &mut c,
        &format!("SELECT count(*) FROM fleetmig_tenant_runs WHERE rollout_id = '{id}' AND worker LIKE '%' AND worker IN (SELECT worker FROM fleetmig_workers WHERE rollout_id = '{id}' ORDER BY started_at DESC LIMIT 1)"),
    )
    .await;
    assert!(
        by_worker >= 8,
        "the worker at concurrency 3 ran {by_worker} of 20"
    );
    // schema 13: the run rows' pages keep room, so a claim updates in place
    let room: i64 = count(
        &mut c,
        "SELECT count(*) FROM pg_class WHERE relname = 'fleetmig_tenant_runs' \
         AND reloptions @> ARRAY['fillfactor=40']",
    )
    .await;
    assert_eq!(room, 1, "fleetmig_tenant_runs has no fillfactor 40");
    s.db.drop_now().await;
}

/// `--per-server 2` holds for the rollout, not per process: a rollout and
/// three workers joining it, each at concurrency 4, on 24 schemas of one
/// server whose migration takes 0.3 s; the spans the server itself
/// recorded (clock_timestamp at a migration's start and end) never overlap
/// more than 2 deep.
#[tokio::test(flavor = "multi_thread")]
async fn per_server_holds_across_every_worker_of_the_rollout() {
    let most = deepest_on_the_server("perserver", &["--per-server", "2"], "4").await;
    assert!(
        most <= 2,
        "{most} migrations ran at once on the server (--per-server 2)"
    );
    assert_eq!(most, 2, "the limit was used");
}

/// Without `--per-server`, each worker's `--concurrency` is its only bound:
/// four processes at concurrency 2 on one server run more than 2 tenants
/// at once (workers add throughput), and never more than 8.
#[tokio::test(flavor = "multi_thread")]
async fn without_per_server_workers_add_up() {
    let most = deepest_on_the_server("unbounded", &[], "2").await;
    assert!(
        (3..=8).contains(&most),
        "{most} migrations ran at once on the server (4 processes at concurrency 2)"
    );
}

/// A rollout started with `rollout_flags` and three workers joining it,
/// each at `concurrency`, on 24 schemas of one server whose migration takes
/// 0.3 s: how many migrations the server saw running at once (the spans it
/// recorded itself, clock_timestamp at a migration's start and end), after
/// checking every tenant ran once.
async fn deepest_on_the_server(tag: &str, rollout_flags: &[&str], concurrency: &str) -> i32 {
    let db = pg_database(tag).await;
    let schemas: String = (0..24)
        .map(|i| format!("CREATE SCHEMA tenant_{i:03};"))
        .collect();
    db.exec(&format!(
        "{schemas} CREATE TABLE public.spans (tenant text NOT NULL, started timestamptz NOT NULL, ended timestamptz)"
    ))
    .await;
    let m = migration_dir(&[(
        "0001_slow.sql",
        "INSERT INTO public.spans SELECT current_schema(), clock_timestamp(), NULL;\n\
         SELECT pg_sleep(0.3);\n\
         UPDATE public.spans SET ended = clock_timestamp() WHERE tenant = current_schema();\n",
    )]);
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("postgres-schemas:{}", db.url);
    let mp = m.path().to_str().unwrap().to_string();
    let common = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(
            [
                "--state",
                &db.url,
                "--lease",
                "2s",
                "--progress-every",
                "0",
                "--migrations",
                &mp,
                "--concurrency",
                concurrency,
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        v
    };
    let run = |args: Vec<String>| {
        start(
            dir.path(),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let first = run(common(
        &[&["rollout", "--fleet", &fleet][..], rollout_flags].concat(),
    ));
    let mut c = db.conn().await;
    let t0 = Instant::now();
    let id: String = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let found: Option<String> = sqlx::query_scalar("SELECT id FROM fleetmig_rollouts LIMIT 1")
            .fetch_optional(&mut c)
            .await
            .unwrap_or(None);
        if let Some(id) = found {
            break id;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no rollout started");
    };
    let workers: Vec<_> = (0..3)
        .map(|_| run(common(&["worker", "--rollout", &id, "--fleet", &fleet])))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (out, _) = wait_until(first, deadline);
    assert!(matches!(out.status.code(), Some(0)), "{}", said(&out));
    for w in workers {
        let (out, _) = wait_until(w, deadline);
        assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    }
    let spans: Vec<(f64, f64)> = sqlx::query_as(
        "SELECT extract(epoch FROM started)::float8, extract(epoch FROM ended)::float8 FROM public.spans",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(spans.len(), 24, "every tenant ran once");
    let mut edges: Vec<(f64, i32)> = spans
        .iter()
        .flat_map(|(a, b)| [(*a, 1), (*b, -1)])
        .collect();
    // an end before a start at the same instant
    edges.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap().then(x.1.cmp(&y.1)));
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    drop(c);
    db.drop_now().await;
    most
}

/// A worker of another fleetmig version does not join a rollout: exit 2,
/// naming both versions.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_of_another_version_does_not_join() {
    let s = Setup::new("version", 4, 0.0).await;
    let mut c = s.db.conn().await;
    let m = s.m.path().to_str().unwrap().to_string();
    // paused after its first wave: unfinished, for a worker to join
    let first = s.start(&[
        "rollout",
        "--fleet",
        &s.fleet,
        "--migrations",
        &m,
        "--waves",
        "first=ids:tenant_000,rest",
        "--pause-after",
        "first",
    ]);
    let id = s.rollout_id(&mut c).await;
    let (out, _) = wait_until(first, Instant::now() + Duration::from_secs(60));
    assert!(out.status.code().is_some(), "{}", said(&out));
    sqlx::query(
        "UPDATE fleetmig_rollouts SET settings = jsonb_set(settings::jsonb, '{fleetmig_version}', '\"0.0.1\"')::text WHERE id = $1",
    )
    .bind(&id)
    .execute(&mut c)
    .await
    .unwrap();
    let (out, _) = wait_until(
        s.worker(&id, &["--migrations", &m]),
        Instant::now() + Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    let err = said(&out);
    assert!(
        err.contains("fleetmig 0.0.1")
            && err.contains(&format!("fleetmig {}", env!("CARGO_PKG_VERSION"))),
        "{err}"
    );
    drop(c);
    s.db.drop_now().await;
}
