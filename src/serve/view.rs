//! How times and counts read on the pages.

use crate::state::RunStatus;

/// A moment (ms since the epoch) as UTC, to the second.
pub(super) fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// A span of `ms` milliseconds, short: 850 ms, 12.3 s, 4 min 05 s, 2 h 03 min.
pub(super) fn age(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{} h {:02} min", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// Tenants with `status` among counts by (wave, status), in `wave` or all.
pub(super) fn count_of(
    counts: &[(i64, RunStatus, usize)],
    wave: Option<i64>,
    status: RunStatus,
) -> usize {
    counts
        .iter()
        .filter(|c| c.1 == status && wave.is_none_or(|w| c.0 == w))
        .map(|c| c.2)
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn spans_read_short() {
        assert_eq!(super::age(850), "850 ms");
        assert_eq!(super::age(12_345), "12.3 s");
        assert_eq!(super::age(245_000), "4 min 05 s");
        assert_eq!(super::age(7_380_000), "2 h 03 min");
        assert_eq!(super::when(0), "1970-01-01 00:00:00 UTC");
    }
}
