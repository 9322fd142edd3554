//! What fleetmig writes into the text of the queries it sends a MySQL or
//! MariaDB tenant: string and byte literals exact under every `sql_mode`,
//! quoted identifiers, and the session's set-up.

use sqlx::mysql::MySqlConnectOptions;

/// `s` as a MySQL string literal that reads the same under every
/// `sql_mode` (`NO_BACKSLASH_ESCAPES`, `ANSI_QUOTES`): quoted as it is when
/// it has no quote, backslash or control character, else its UTF-8 bytes in
/// hex read as utf8mb4. Queries sent as text carry values this way. (A
/// plain literal where it can be: `information_schema` looks a schema up by
/// a constant, but scans every database for `table_schema = CONVERT(…)`.)
pub fn literal(s: &str) -> String {
    match s.chars().any(|c| c == '\'' || c == '\\' || c.is_control()) {
        false => format!("'{s}'"),
        true => format!("CONVERT({} USING utf8mb4)", bytes_literal(s.as_bytes())),
    }
}

/// Bytes as a hex literal (`X'…'`), exact whatever the `sql_mode`.
pub fn bytes_literal(b: &[u8]) -> String {
    format!("X'{}'", crate::migration::hex(b))
}

/// sqlx's `sql_mode` additions, as a new connection gets them (a kept
/// connection gets the `sql_mode` it had when new instead: `reuse.rs`).
pub(super) const SQL_MODE_ADDED: &str =
    "sql_mode = (SELECT CONCAT(@@sql_mode, ',PIPES_AS_CONCAT,NO_ENGINE_SUBSTITUTION'))";

/// What a tenant's connection is set to besides its `sql_mode`, the
/// assignments of one `SET`: what sqlx sends after connecting (UTC unless
/// the URL names a time zone, the character set), which `open` turns off,
/// and fleetmig's lock waits of `lock_secs`.
pub(super) fn session_setup(url: &str, opts: &MySqlConnectOptions, lock_secs: u64) -> String {
    let zone = url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .filter(|(k, _)| k == "timezone" || k == "time-zone")
                .last()
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| "+00:00".to_string());
    let names = match opts.get_collation() {
        Some(c) => format!("NAMES {} COLLATE {c}", opts.get_charset()),
        None => format!("NAMES {}", opts.get_charset()),
    };
    format!(
        "time_zone = {}, {names}, lock_wait_timeout = {lock_secs}, \
         innodb_lock_wait_timeout = {lock_secs}",
        literal(&zone)
    )
}

/// Quotes an identifier with backticks, doubling any inside.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The name of `database`'s tenant lock, as an SQL expression:
/// `fleetmig:<database>`, or, where that is longer than the 64 characters
/// a lock's name may have, `fleetmig:` and the start of the name's SHA-256
/// (two long names with the same start get locks of their own).
pub(super) fn lock_name(database: &str) -> String {
    let name = format!("fleetmig:{database}");
    match name.chars().count() <= 64 {
        true => literal(&name),
        false => format!(
            "CONCAT('fleetmig:', LEFT(SHA2({}, 256), 55))",
            literal(database)
        ),
    }
}
