//! Read-only work on a fleet: where every tenant stands (`inspect`, for
//! `status`, `plan` and the checks a rollout makes before it starts), and
//! drift (`drift`, for `verify`). Connects without creating anything, reads,
//! and writes nothing to any tenant; bounded by the command's `Fanout`.

pub mod drift;

use crate::error::FailureKind;
use serde::Serialize;

use crate::dialect::{Access, Connector};
use crate::error::TenantError;
use crate::fanout::Fanout;
use crate::migration::{MigrationSet, plan_tenant};
use crate::tenant::{Dialect, Tenant, TenantId};

/// Where one tenant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    UpToDate,
    Pending,
    /// A migration failed part-way; the history has a `success = false` row.
    Dirty,
    /// History disagrees with the files: an edited or unknown migration.
    Drifted,
    /// Its file does not exist (a registry row whose SQLite file is gone, or
    /// not yet created: `sync --create-missing` creates it).
    Missing,
    /// Could not be read (unreachable, no permission, no variant...).
    Error,
}

impl TenantState {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::UpToDate => "up_to_date",
            TenantState::Pending => "pending",
            TenantState::Dirty => "dirty",
            TenantState::Drifted => "drifted",
            TenantState::Missing => "missing",
            TenantState::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub tenant: TenantId,
    pub dialect: Dialect,
    /// The locator with any password redacted.
    pub locator: String,
    pub tags: String,
    pub state: TenantState,
    /// Highest applied version; `None` when it could not be read.
    pub version: Option<i64>,
    pub pending: Vec<i64>,
    pub error: Option<TenantError>,
}

/// How many tenants one read-ahead takes at a time: the histories read
/// ahead are held only until they are judged, so memory stays flat with
/// the fleet's size.
const PEEK_CHUNK: usize = 4096;

/// Where `tenant` stands, from its history as read (or why it could not be
/// read); `exists`: its file or database is there.
fn judged(
    set: &MigrationSet,
    tenant: &Tenant,
    target: Option<i64>,
    history: Result<Vec<crate::migration::Applied>, TenantError>,
    exists: bool,
) -> Inspection {
    let mut out = Inspection {
        tenant: tenant.id.clone(),
        dialect: tenant.locator.dialect(),
        locator: tenant.locator.redacted(),
        tags: tenant.tags_string(),
        state: TenantState::Error,
        version: None,
        pending: Vec::new(),
        error: None,
    };
    let history = match history {
        Ok(h) => h,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    out.version = Some(
        history
            .iter()
            .filter(|a| a.success)
            .map(|a| a.version)
            .max()
            .unwrap_or(0),
    );
    match plan_tenant(&history, set, out.dialect, target) {
        Ok(p) => {
            out.state = if p.pending.is_empty() {
                TenantState::UpToDate
            } else {
                TenantState::Pending
            };
            out.pending = p.pending;
        }
        Err(e) => {
            out.state = match e.kind() {
                FailureKind::Dirty => TenantState::Dirty,
                FailureKind::ChecksumMismatch | FailureKind::MissingMigration => {
                    TenantState::Drifted
                }
                _ => TenantState::Error,
            };
            out.error = Some(e.into());
        }
    }
    if !exists {
        out.state = TenantState::Missing;
    }
    out
}

/// A tenant the read-ahead left to a session: opened read-only, its
/// history read, closed.
async fn inspect_one(
    connector: &Connector,
    set: &MigrationSet,
    tenant: &Tenant,
    target: Option<i64>,
) -> Inspection {
    let mut session = match connector.open(tenant, Access::Read).await {
        Ok(s) => s,
        Err(e) => return judged(set, tenant, target, Err(e), true),
    };
    let exists = session.exists();
    let history = session.history().await;
    session.close().await;
    judged(set, tenant, target, history, exists)
}

/// Inspects every tenant within the fan-out's limits; results in tenant
/// order. Histories are read ahead as `sync` reads them (many SQLite files
/// per blocking reader, a hundred schemas per round trip); a tenant the
/// read-ahead cannot settle (missing, busy, a database of its own) gets a
/// session.
pub async fn inspect(
    connector: &Connector,
    fanout: &Fanout,
    set: &MigrationSet,
    tenants: &[Tenant],
    target: Option<i64>,
) -> Vec<Inspection> {
    let mut v: Vec<Inspection> = Vec::with_capacity(tenants.len());
    for chunk in tenants.chunks(PEEK_CHUNK) {
        let peeked = connector.peek(fanout, chunk).await;
        let mut rest = Vec::new();
        for (t, h) in chunk.iter().zip(peeked) {
            match h {
                Some(h) => v.push(judged(set, t, target, Ok(h), true)),
                None => rest.push(t),
            }
        }
        let read = fanout
            .run(rest, |t| t, |t| inspect_one(connector, set, t, target))
            .await;
        v.extend(read);
    }
    v.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    v
}
