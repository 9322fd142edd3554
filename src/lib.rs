//! fleetmig: a multi-tenant fleet migration coordinator.
//!
//! It discovers the tenants of a fleet (`tenant`), loads and validates one set
//! of versioned SQL migrations in sqlx's format (`migration`), plans each
//! tenant purely from its own history, applies what is pending with bounded
//! parallelism and retries of transient errors (`rollout`, `dialect`), emits
//! events (`event`) that progress displays and reports (`report`) subscribe
//! to, and maps the outcome to an exit code (`cli`).

pub mod cli;
pub mod config;
pub mod dialect;
pub mod error;
pub mod event;
pub mod fanout;
pub mod inspect;
pub mod lint;
pub mod migration;
pub mod options;
pub mod report;
pub mod rollout;
pub mod state;
pub mod tenant;

pub use error::{Error, ErrorClass, TenantError};
