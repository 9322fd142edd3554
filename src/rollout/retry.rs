//! Retry policy: which failures get another attempt (transient ones only) and
//! how long to wait (exponential backoff with jitter, capped), so that a fleet
//! of tenants on one busy server does not come back all at the same instant.

use std::time::Duration;

use crate::error::TenantError;
use crate::options::RetryPolicy;

impl RetryPolicy {
    /// Whether `error`, met on attempt `attempt` (1-based), is retried.
    pub fn should_retry(&self, error: &TenantError, attempt: u32) -> bool {
        error.is_transient() && attempt < self.max_attempts
    }

    /// The wait after attempt `attempt` failed: `backoff * 2^(attempt-1)`,
    /// capped, then scaled by a random factor in [0.5, 1.0] ("equal jitter").
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_backoff);
        let jitter: f64 = 0.5 + rand::random::<f64>() * 0.5;
        exp.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_errors_are_retried() {
        let p = RetryPolicy::default();
        let t = TenantError::transient(crate::error::FailureKind::Busy, "x");
        let perm = TenantError::permanent(crate::error::FailureKind::Syntax, "x");
        assert!(p.should_retry(&t, 1) && p.should_retry(&t, 2));
        assert!(!p.should_retry(&t, 3));
        assert!(!p.should_retry(&perm, 1));
    }

    #[test]
    fn backoff_grows_with_jitter_and_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let d1 = p.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            assert!(p.delay(30) <= Duration::from_secs(1));
        }
    }
}
