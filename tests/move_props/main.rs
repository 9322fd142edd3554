//! Property tests of the value layer on values nobody chose.
//!
//! 1. For every ordered pair of systems (SQLite, PostgreSQL, MariaDB, same
//!    system included), one `fleetmig move` of a tenant holding 2,000
//!    generated rows over every carried type and its edge values, of which
//!    the source can hold each and the target can hold each exactly or by a
//!    documented conversion; every cell read back from the target and
//!    compared with what was inserted, as the target prints it (the
//!    documented conversions applied here independently: PostgreSQL's own
//!    `::jsonb::text` for `jsonb`, chrono's spelling of a timestamp for
//!    SQLite, the nearest 4-byte float, the decimal digits of a float).
//!    Then, for values a target cannot hold, the move refuses naming table,
//!    column and key, and leaves no target behind.
//! 2. `jsonb::normalize` against PostgreSQL's `::jsonb::text` on thousands
//!    of generated documents (valid and not): the same text, or both refuse.
//! 3. `When::parse` and `write_pg` against PostgreSQL's `::date::text`,
//!    `::timestamp::text` and `::timestamptz::text` over its whole range.
//!
//! Every test prints its seed; `FLEETMIG_PROP_SEED=<seed>` replays it.
//!
//! The tests: `pairs` and `refusals` (1), `jsonb` (2), `when` (3). What
//! they share: `seeds`, `systems`, `calendar`, `rows`, `values` (the
//! generator), `json`, `expect`, `read`, `places`.

#[path = "../common/mod.rs"]
mod common;

// the tests
mod jsonb;
mod pairs;
mod refusals;
mod when;

// what they share
mod calendar;
mod expect;
mod json;
mod places;
mod read;
mod rows;
mod seeds;
mod systems;
mod values;
