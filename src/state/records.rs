//! The rows the state store keeps, as typed records, and how they are read
//! back: a status or a frozen settings text that does not decode is an error
//! naming the rollout (exit 3), never a silent default.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::status::{Request, RolloutStatus, RunStatus, WaveStatus};
use crate::error::{ErrorClass, FailureKind, TenantError};
use crate::options::Frozen;

/// One rollout as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutRecord {
    pub id: String,
    pub created_at: i64,
    pub operator: String,
    pub command: String,
    pub fleet: String,
    pub migrations_dir: String,
    pub set_checksum: String,
    pub target: i64,
    pub settings: Frozen,
    pub status: RolloutStatus,
    pub reason: Option<String>,
    pub current_wave: i64,
    pub claimed_by: Option<String>,
    pub heartbeat_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// An operator's pending request to the holder (pause, abort).
    pub requested: Option<Request>,
    /// Where its reports are written (absolute).
    pub reports_dir: Option<String>,
    /// Its tenant rows were removed by `prune`; what they said.
    pub pruned: Option<super::prune::Pruned>,
}

/// One wave as stored.
#[derive(Debug, Clone, Serialize)]
pub struct WaveRecord {
    pub wave: i64,
    pub name: String,
    pub selector: String,
    pub status: WaveStatus,
    pub gate: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Why a tenant's run failed, as stored (all empty when it did not).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RunError {
    #[serde(rename = "error_class")]
    pub class: Option<ErrorClass>,
    #[serde(rename = "error_kind")]
    pub kind: Option<FailureKind>,
    #[serde(rename = "error_code")]
    pub code: Option<String>,
    #[serde(rename = "error_version")]
    pub version: Option<i64>,
    #[serde(rename = "error_message")]
    pub message: Option<String>,
}

impl From<&TenantError> for RunError {
    fn from(e: &TenantError) -> RunError {
        RunError {
            class: Some(e.class),
            kind: Some(e.kind),
            code: e.code.clone(),
            version: e.version,
            message: Some(e.message.clone()),
        }
    }
}

/// One tenant of one rollout as stored.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TenantRun {
    pub tenant: String,
    pub wave: i64,
    pub status: RunStatus,
    pub attempts: i64,
    pub from_version: Option<i64>,
    pub to_version: Option<i64>,
    pub applied: Vec<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: i64,
    #[serde(flatten)]
    pub error: RunError,
    pub gate_error: Option<String>,
    /// What the preflight found, when it ran.
    pub preflight: Option<String>,
}

/// The checkpoint of one tenant's batched backfill.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Backfill {
    pub tenant: String,
    pub version: i64,
    pub batches: i64,
    pub rows: i64,
    pub max_batch_ms: i64,
    pub done: bool,
}

/// How the tenants of one wave stand, counted by the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaveTally {
    pub tenants: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub not_started: usize,
    /// The first failed tenants, by id (at most 10).
    pub failed_examples: Vec<String>,
}

/// The end of one run of a tenant (an executor run, a revert, a tenant gone
/// from the fleet). Counts are what this run adds to the row: attempts,
/// applied versions and time accumulate over `resume` and `retry`.
#[derive(Debug, Clone)]
pub struct Finish {
    pub tenant: String,
    pub status: RunStatus,
    /// Attempts to add to the row: those whose `Started` was not written on
    /// its own (the recorder folds it into this update).
    pub attempts: i64,
    /// Kept when the row already has one.
    pub from_version: Option<i64>,
    /// Replaces the row's when given.
    pub to_version: Option<i64>,
    pub applied: Vec<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: i64,
    pub error: RunError,
}

impl Finish {
    /// A finish that changes nothing but the status (and clears the error).
    pub fn new(tenant: &str, status: RunStatus) -> Finish {
        Finish {
            tenant: tenant.to_string(),
            status,
            attempts: 0,
            from_version: None,
            to_version: None,
            applied: Vec::new(),
            started_at: None,
            finished_at: None,
            duration_ms: 0,
            error: RunError::default(),
        }
    }
}

/// A change to one tenant's row.
#[derive(Debug, Clone)]
pub enum TenantUpdate {
    /// An attempt starts: the row is `running`, one more attempt.
    Started {
        tenant: String,
        at: i64,
    },
    /// An attempt planned migrations from version `from`: the first such
    /// version is kept, so a tenant whose worker dies after applying and
    /// before recording can be credited by the next (`Earlier`).
    Planned {
        tenant: String,
        from: i64,
    },
    /// One batch of a backfill: its statements and rows are added to the
    /// checkpoint.
    Backfill {
        tenant: String,
        version: i64,
        batches: i64,
        rows: i64,
        batch_ms: i64,
        done: bool,
    },
    Backup {
        tenant: String,
        path: String,
    },
    Preflight {
        tenant: String,
        summary: String,
    },
    Finished(Box<Finish>),
}

impl TenantUpdate {
    pub fn tenant(&self) -> &str {
        match self {
            TenantUpdate::Started { tenant, .. }
            | TenantUpdate::Planned { tenant, .. }
            | TenantUpdate::Backfill { tenant, .. }
            | TenantUpdate::Backup { tenant, .. }
            | TenantUpdate::Preflight { tenant, .. } => tenant,
            TenantUpdate::Finished(f) => &f.tenant,
        }
    }
}

/// A tenant whose last attempt wrote where it started and never recorded
/// its end (its process was killed, or its worker lost its claim): the
/// version it started from. Its next attempt credits this rollout with the
/// versions applied since (a finish records what it applied and clears
/// this, so nothing is credited twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earlier {
    pub from: i64,
}

pub(super) fn parse_applied(s: &str) -> Vec<i64> {
    s.split(';').filter_map(|v| v.parse().ok()).collect()
}

pub(super) fn join_applied(v: &[i64]) -> String {
    v.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(";")
}

/// Reads a text column as one of the status enums.
fn status<T: std::str::FromStr<Err = String>>(r: &AnyRow, column: &str) -> Result<T, String> {
    let text: String = r.try_get(column).map_err(|e| e.to_string())?;
    text.parse()
}

pub(super) fn rollout_from(r: &AnyRow) -> Result<RolloutRecord, String> {
    let id: String = r.try_get("id").map_err(|e| e.to_string())?;
    let damaged = |what: &str, why: String| {
        format!(
            "rollout {id} has a damaged {what} ({why}): it cannot be resumed as it was planned; \
             `fleetmig abort {id}` and start a new rollout"
        )
    };
    let settings: String = r.try_get("settings").map_err(|e| e.to_string())?;
    let settings: Frozen =
        serde_json::from_str(&settings).map_err(|e| damaged("settings row", e.to_string()))?;
    if settings.format > Frozen::FORMAT {
        return Err(format!(
            "rollout {id} was planned by a newer fleetmig ({}; its settings are of format {}, \
             this fleetmig {} knows up to {}): run it with that version",
            settings.fleetmig_version.as_deref().unwrap_or("unknown"),
            settings.format,
            env!("CARGO_PKG_VERSION"),
            Frozen::FORMAT
        ));
    }
    let status = status(r, "status").map_err(|e| damaged("status", e))?;
    let requested: Option<String> = r.try_get("requested").map_err(|e| e.to_string())?;
    let requested = requested
        .map(|t| t.parse::<Request>())
        .transpose()
        .map_err(|e| damaged("request", e))?;
    let pruned: Option<String> = r.try_get("pruned").map_err(|e| e.to_string())?;
    let pruned = pruned
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| damaged("summary", e.to_string()))?;
    let get = || -> Result<RolloutRecord, sqlx::Error> {
        Ok(RolloutRecord {
            id: id.clone(),
            created_at: r.try_get("created_at")?,
            operator: r.try_get("operator")?,
            command: r.try_get("command")?,
            fleet: r.try_get("fleet")?,
            migrations_dir: r.try_get("migrations_dir")?,
            set_checksum: r.try_get("set_checksum")?,
            target: r.try_get("target")?,
            settings: settings.clone(),
            status,
            reason: r.try_get("reason")?,
            current_wave: r.try_get("current_wave")?,
            claimed_by: r.try_get("claimed_by")?,
            heartbeat_at: r.try_get("heartbeat_at")?,
            finished_at: r.try_get("finished_at")?,
            requested,
            reports_dir: r.try_get("reports_dir")?,
            pruned,
        })
    };
    get().map_err(|e| damaged("row", e.to_string()))
}

pub(super) fn wave_from(r: &AnyRow) -> Result<WaveRecord, String> {
    Ok(WaveRecord {
        status: status(r, "status")?,
        wave: r.try_get("wave").map_err(|e| e.to_string())?,
        name: r.try_get("name").map_err(|e| e.to_string())?,
        selector: r.try_get("selector").map_err(|e| e.to_string())?,
        gate: r.try_get("gate").map_err(|e| e.to_string())?,
        started_at: r.try_get("started_at").map_err(|e| e.to_string())?,
        finished_at: r.try_get("finished_at").map_err(|e| e.to_string())?,
    })
}

pub(super) fn tenant_from(r: &AnyRow) -> Result<TenantRun, String> {
    let status = status(r, "status")?;
    let text = |col: &str| -> Result<Option<String>, String> {
        r.try_get::<Option<String>, _>(col)
            .map_err(|e| e.to_string())
    };
    let class = text("error_class")?
        .map(|c| c.parse::<ErrorClass>())
        .transpose()?;
    // the words of earlier versions read back as today's
    let kind = text("error_kind")?
        .map(|k| FailureKind::read(&k))
        .transpose()?;
    let get = || -> Result<TenantRun, sqlx::Error> {
        let applied: String = r.try_get("applied")?;
        Ok(TenantRun {
            tenant: r.try_get("tenant")?,
            wave: r.try_get("wave")?,
            status,
            attempts: r.try_get("attempts")?,
            from_version: r.try_get("from_version")?,
            to_version: r.try_get("to_version")?,
            applied: parse_applied(&applied),
            started_at: r.try_get("started_at")?,
            finished_at: r.try_get("finished_at")?,
            duration_ms: r.try_get("duration_ms")?,
            error: RunError {
                class,
                kind,
                code: r.try_get("error_code")?,
                version: r.try_get("error_version")?,
                message: r.try_get("error_message")?,
            },
            gate_error: r.try_get("gate_error")?,
            preflight: r.try_get("preflight")?,
        })
    };
    get().map_err(|e| e.to_string())
}
