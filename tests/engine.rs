//! The wave engine driven as a library (no process): what a waved rollout
//! does between waves, read from the tenants' histories, the state store and
//! the events the engine emitted; and the typed refusals a command turns
//! into its message.

mod common;

use std::collections::HashMap;

use common::engine::{Engine, history};
use fleetmig::About;
use fleetmig::event::Event;
use fleetmig::options::{Gates, RolloutRequest};
use fleetmig::state::{RolloutStatus, WaveStatus};

fn waved(waves: &str) -> RolloutRequest {
    RolloutRequest {
        waves: Some(waves.into()),
        gates: Gates {
            max_failures: Some(0),
            max_failure_rate: None,
        },
        ..Default::default()
    }
}

/// (tenant, version) → how many times the engine said it applied it.
fn applied(events: &[Event]) -> HashMap<(String, i64), usize> {
    let mut n = HashMap::new();
    for e in events {
        if let Event::MigrationApplied {
            tenant, version, ..
        } = e
        {
            *n.entry((tenant.to_string(), *version)).or_default() += 1;
        }
    }
    n
}

fn refused(r: Result<fleetmig::rollout::Finished, fleetmig::Error>) -> fleetmig::Error {
    match r {
        Ok(f) => panic!(
            "ran: rollout {} {}",
            f.report.rollout.id, f.report.rollout.status
        ),
        Err(e) => e,
    }
}

fn waves_started(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::WaveStarted { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_failed_canary_halts_the_rollout_before_the_next_wave() {
    let e = Engine::registry(6, 2).await;
    // the first canary already has the table the first migration creates
    let mut c = common::sqlite(&e.tenant("t0000")).await;
    sqlx::query("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
        .execute(&mut c)
        .await
        .unwrap();
    drop(c);

    let f = e
        .rollout(&waved("canary=tag:canary,rest=rest"))
        .await
        .unwrap();
    assert_eq!(f.report.rollout.status, RolloutStatus::Halted);
    assert_eq!(f.exit_code(), 1);
    let waves = e.store.waves(&f.report.rollout.id).await.unwrap();
    let status: Vec<_> = waves.iter().map(|w| (w.name.as_str(), w.status)).collect();
    assert_eq!(
        status,
        [
            ("canary", WaveStatus::Failed),
            ("rest", WaveStatus::Pending)
        ]
    );

    let events = e.events.take();
    assert_eq!(waves_started(&events), ["canary"]);
    assert!(events.iter().any(|ev| matches!(ev,
        Event::GateEvaluated { name, status: WaveStatus::Failed, .. } if name == "canary")));
    // the other canary went to the head; no tenant of the next wave started
    assert_eq!(history(&e.tenant("t0001")).await, common::demo_history());
    assert_eq!(history(&e.tenant("t0000")).await, []);
    for t in ["t0002", "t0003", "t0004", "t0005"] {
        assert_eq!(history(&e.tenant(t)).await, [], "{t}");
    }
    assert!(applied(&events).keys().all(|(t, _)| t == "t0001"));
}

#[tokio::test]
async fn a_pause_between_waves_resumes_where_it_stopped_applying_each_migration_once() {
    let e = Engine::registry(5, 1).await;
    let req = RolloutRequest {
        pause_after: Some("canary".into()),
        ..waved("canary=tag:canary,rest=rest")
    };
    let f = e.rollout(&req).await.unwrap();
    let id = f.report.rollout.id.clone();
    assert_eq!(f.report.rollout.status, RolloutStatus::Paused);
    assert_eq!(history(&e.tenant("t0000")).await, common::demo_history());
    assert_eq!(history(&e.tenant("t0004")).await, []);
    let first = e.events.take();
    assert_eq!(waves_started(&first), ["canary"]);

    let f = e.resume(&id).await.unwrap();
    assert_eq!(f.report.rollout.status, RolloutStatus::Completed);
    assert_eq!(f.exit_code(), 0);
    let second = e.events.take();
    assert_eq!(waves_started(&second), ["rest"]);
    let all: Vec<Event> = first.into_iter().chain(second).collect();
    let applied = applied(&all);
    for i in 0..5 {
        let t = format!("t{i:04}");
        assert_eq!(history(&e.tenant(&t)).await, common::demo_history(), "{t}");
        for v in 1..=common::DEMO_REACHED {
            assert_eq!(applied.get(&(t.clone(), v)), Some(&1), "{t} v{v}");
        }
    }
    let waves = e.store.waves(&id).await.unwrap();
    assert!(
        waves.iter().all(|w| w.status == WaveStatus::Passed),
        "{waves:?}"
    );
    // a finished rollout has nothing to resume: refused, about that rollout
    let err = refused(e.resume(&id).await);
    assert_eq!(err.about(), Some(&About::Rollout(id.clone())), "{err}");
    assert_eq!(err.exit_code(), 2);
}

#[tokio::test]
async fn a_refused_rollout_names_its_flag_and_writes_nothing() {
    let e = Engine::registry(4, 1).await;
    let flag = |f: &str, v: Option<&str>| About::Flag {
        flag: f.into(),
        value: v.map(Into::into),
    };
    let cases = [
        (
            RolloutRequest {
                pause_after: Some("nosuch".into()),
                ..waved("canary=tag:canary,rest=rest")
            },
            flag("--pause-after", Some("nosuch")),
        ),
        (waved("tag:canary"), flag("--waves", None)),
        (waved("ids:t0000+nobody,rest"), flag("--waves", None)),
        (
            RolloutRequest {
                target: Some(42),
                ..Default::default()
            },
            flag("--to", Some("42")),
        ),
    ];
    for (req, about) in cases {
        let err = refused(e.rollout(&req).await);
        assert_eq!(err.about(), Some(&about), "{err}");
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(err.to_string().starts_with(&about.to_string()), "{err}");
    }
    assert!(e.store.rollouts(10).await.unwrap().is_empty());
    for i in 0..4 {
        let t = e.tenant(&format!("t{i:04}"));
        assert_eq!(std::fs::metadata(&t).unwrap().len(), 0, "{t:?} was touched");
    }
    assert!(e.events.take().is_empty());
}
