//! What the dialects that resume a migration statement by statement share
//! (PostgreSQL's `-- no-transaction` files, every MySQL file): PostgreSQL
//! records each statement in the tenant's `_fleetmig_statements` as it
//! starts and as it ends (MySQL keeps its progress in the history row,
//! `mysql/resume.rs`, and reads an older fleetmig's records with these
//! helpers); the next attempt skips those that ended and decides from the
//! database what became of the one that was running.

/// What an earlier attempt did with a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Earlier {
    /// Never started: run it.
    None,
    /// Started and ended: skip it.
    Ended,
    /// Started, not known to have ended.
    Running,
}

/// What became of a statement that was running when an attempt stopped.
pub(crate) enum InFlight {
    /// It took effect.
    Done,
    /// Run it (again); `drop` first: an INVALID index it left.
    Again { drop: Option<String> },
    /// Nobody can tell from here: what to check.
    Unknown(String),
}

/// The failure of a migration whose statement `i` an earlier attempt left
/// running and nobody can judge (`why`): the tenant is left dirty, and
/// the message says what to do.
pub(crate) fn unjudged(
    step: crate::dialect::Step<'_>,
    statements: &[crate::migration::split::Statement],
    i: usize,
    why: &str,
) -> crate::error::TenantError {
    let v = step.migration.version;
    crate::error::TenantError::permanent(
        crate::error::FailureKind::InterruptedStatement,
        format!(
            "statement {} of {} ({}:{}) {why}, so the tenant is dirty: look at what it \
             does, finish or undo the migration by hand, then delete version {v}'s row \
             from _sqlx_migrations and run again",
            i + 1,
            statements.len(),
            step.script.path.display(),
            statements[i].line
        ),
    )
    .at_version(v)
}

/// A statement's fingerprint, to notice a file changed between attempts.
pub(crate) fn hash(sql: &str) -> String {
    crate::migration::hex(&fnv(sql.trim().as_bytes()))
}

/// FNV-1a over the bytes, 64 bits (not for security: a changed statement).
fn fnv(b: &[u8]) -> [u8; 8] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.to_le_bytes()
}

/// What the recorded rows `(statement, sql_hash, ended)` of version `v` say
/// of each statement of the file now (hashes in `hashes`); an error when
/// the file changed since an attempt ran part of it.
pub(crate) fn earlier_from(
    v: i64,
    hashes: &[String],
    rows: impl IntoIterator<Item = (i32, String, bool)>,
) -> Result<Vec<Earlier>, crate::error::TenantError> {
    let mut out = vec![Earlier::None; hashes.len()];
    for (n, h, ended) in rows {
        let i = n as usize;
        if hashes.get(i) != Some(&h) {
            return Err(crate::error::TenantError::permanent(
                crate::error::FailureKind::ChecksumMismatch,
                format!(
                    "migration {v}: statement {} changed since an interrupted attempt ran part of \
                     it; put the file back as it was, or finish the migration by hand and delete \
                     its rows from _fleetmig_statements",
                    i + 1
                ),
            )
            .at_version(v));
        }
        out[i] = if ended {
            Earlier::Ended
        } else {
            Earlier::Running
        };
    }
    Ok(out)
}
