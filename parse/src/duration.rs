//! Durations as people write them (`500ms`, `5s`, `2m`), bounded by what
//! the databases' timers take.

use std::time::Duration;

/// The longest duration fleetmig accepts for a timeout or pause: server
/// timeouts are 32-bit milliseconds (about 24.8 days), and a timer past that
/// would never fire in any useful sense.
pub const MAX_DURATION: Duration = Duration::from_millis(i32::MAX as u64);

/// `value`, given to flag or setting `name`; the error names both.
pub fn parse(value: &str, name: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value)
        .map_err(|e| format!("{name} {value:?}: {e} (write e.g. 500ms, 5s, 2m)"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "{name} {value:?}: at most {} (about 24.8 days)",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}
