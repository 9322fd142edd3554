//! The statuses the state store keeps, as enums: text only at the storage
//! edge (`as_str` to write, `FromStr` to read back), so a typo is a compile
//! error and a damaged row is a clear error, never a silent default.

text_enum! {
    /// Where a rollout stands.
    pub enum RolloutStatus {
        Running = "running",
        /// Stopped on purpose (`--pause-after`, a signal, `fleetmig pause`).
        Paused = "paused",
        /// A wave's gate failed.
        Halted = "halted",
        Completed = "completed",
        Aborted = "aborted",
    }
}

impl RolloutStatus {
    /// Nothing more will run in it (`retry` still may).
    pub fn is_finished(self) -> bool {
        matches!(self, RolloutStatus::Completed | RolloutStatus::Aborted)
    }
}

text_enum! {
    /// Where one wave of a rollout stands.
    pub enum WaveStatus {
        Pending = "pending",
        Running = "running",
        /// Its tenants are done and one worker is evaluating its gate.
        Gating = "gating",
        /// Its gate passed.
        Passed = "passed",
        /// Its gate failed: the rollout halted on it.
        Failed = "failed",
        /// Its gate failed and `--override-gate` passed it on purpose.
        Overridden = "overridden",
    }
}

text_enum! {
    /// What an operator asked of the process running a rollout; it sees
    /// the request at its next heartbeat.
    pub enum Request {
        /// Start no new tenant, finish the ones in flight, end `paused`.
        Pause = "pause",
        /// Start no new tenant, finish the ones in flight, end `aborted`.
        Abort = "abort",
    }
}

text_enum! {
    /// Where one tenant of a rollout stands.
    pub enum RunStatus {
        Pending = "pending",
        Running = "running",
        /// At its target (with or without migrations applied).
        Succeeded = "succeeded",
        Failed = "failed",
        /// Not run: the rollout was aborted.
        Skipped = "skipped",
        /// Not started: `--max-failures` was reached first.
        NotStarted = "not_started",
        /// Taken back down after its wave's gate failed.
        Reverted = "reverted",
    }
}

impl RunStatus {
    /// The one definition of "still to do": the statuses of a tenant that
    /// runs (again) when its rollout goes on.
    pub const TODO: [RunStatus; 3] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::NotStarted,
    ];

    /// Still to run when the rollout goes on.
    pub fn is_todo(self) -> bool {
        Self::TODO.contains(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_text() {
        for s in RolloutStatus::ALL {
            assert_eq!(s.as_str().parse::<RolloutStatus>().unwrap(), *s);
        }
        for s in WaveStatus::ALL {
            assert_eq!(s.to_string().parse::<WaveStatus>().unwrap(), *s);
        }
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), *s);
        }
        assert!("Running".parse::<RolloutStatus>().is_err());
        assert!("".parse::<RunStatus>().is_err());
    }
}
