//! fleetmig: a multi-tenant fleet migration coordinator.
//!
//! It discovers the tenants of a fleet (`discover`, over the model in
//! `tenant`), loads and validates one set of versioned SQL migrations in
//! sqlx's format (`migration`, judged by `lint`), plans each tenant purely
//! from its own history, and runs rollouts (`rollout`): waves of tenants
//! through their pending migrations within one bounded fan-out (`fanout`),
//! each tenant through its database's `dialect::Session`, with retries of
//! transient errors, gates between waves, and everything recorded in the
//! `state` store. The engine takes plain settings (`options`, filled by
//! `config`) and emits events (`event`) that the state recorder and the
//! CLI's progress display subscribe to; reports (`report`) are written from
//! the store. Read-only work (status, drift) is `inspect`. Only `cli` prints.

#[macro_use]
mod text_enum;

pub mod cli;
pub mod config;
pub mod dialect;
pub mod discover;
pub mod error;
pub mod event;
pub mod fanout;
pub mod inspect;
pub mod lint;
pub mod migration;
pub mod options;
pub mod relocate;
pub mod report;
pub mod rollout;
pub mod serve;
pub mod state;
pub mod tenant;

pub use error::{About, Error, ErrorClass, TenantError};
