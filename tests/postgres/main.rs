//! PostgreSQL fleets on a real server: schema-per-tenant and
//! database-per-tenant, locks, isolation, timeouts, error classes, concurrent
//! indexes, transaction modes, redaction.
//!
//! `fleets`: schema, query and database fleets; `concurrency`: two
//! processes at once, the per-server limit; `errors`: lock timeouts, syntax
//! errors, transaction modes; `faults`: an index build killed, the server
//! restarted mid-run; `redaction`: passwords and hostile names.

#[path = "../common/mod.rs"]
mod common;

mod shared;

mod concurrency;
mod errors;
mod faults;
mod fleets;
mod redaction;
mod sockets;
