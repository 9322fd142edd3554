//! Waved rollouts end to end on SQLite fleets: canary halts, gate SQL, pause
//! and resume, retry, revert on halt, one rollout at a time, reports.
//!
//! `halts`: gates that halt a rollout and what follows; `lifecycle`: pause,
//! resume, retry, abort, plan and one rollout at a time; `store`: reports
//! and rollouts read back from the state store.

#[path = "../common/mod.rs"]
mod common;

mod shared;

mod fold;
mod halts;
mod lifecycle;
mod prune;
mod settings;
mod store;
