//! Durations as people write them (`500ms`, `5s`, `2m`), bounded by what
//! the databases' timers take.

use std::time::Duration;

/// The longest duration fleetmig accepts for a timeout or pause: server
/// timeouts are 32-bit milliseconds (about 24.8 days), and a timer past that
/// would never fire in any useful sense.
pub const MAX_DURATION: Duration = Duration::from_millis(i32::MAX as u64);

/// `value`, as a flag or setting gives it; the error says what is wrong
/// (the caller names the flag).
pub fn parse(value: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(value).map_err(|e| format!("{e} (write e.g. 500ms, 5s, 2m)"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "at most {} (about 24.8 days)",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}
