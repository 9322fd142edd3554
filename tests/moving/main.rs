//! `fleetmig move` on the real servers: a MariaDB database to a PostgreSQL
//! database and a SQLite file to a PostgreSQL schema with every kind of
//! value (examples/moving), verified; a move killed mid-copy and run again;
//! a type that cannot be carried; a source written to during the copy.
//!
//! `whole`: whole tenants moved between the systems and compared value for
//! value; `failures`: a move killed and run again, a type refused, a
//! source written to; `keys`: keys that are not one integer.

#[path = "../common/mod.rs"]
mod common;

mod shared;

mod failures;
mod keys;
mod whole;
