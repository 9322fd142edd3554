//! `-- fleetmig: key=value ...` comment lines: per-migration instructions to
//! fleetmig that stay valid SQL for every other tool. An unknown key is an
//! error, so a typo never silently turns a contract migration into a normal one.

use std::time::Duration;

use serde::Serialize;

/// Expand/contract phase of a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Expand,
    Contract,
}

/// Where a migration runs on a fleet of row tenants (tenants that are rows
/// of shared tables): once per database (the default: schema changes), or
/// once per tenant with `:tenant_id` bound (`scope=tenant`: data changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    Database,
    Tenant,
}

/// A batched backfill: run the statement until it changes no rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Batch {
    pub size: u64,
    #[serde(with = "humantime_serde_ms")]
    pub pause: Duration,
}

mod humantime_serde_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// Everything the directives of one file say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Directives {
    pub phase: Phase,
    pub scope: Scope,
    pub batch: Option<Batch>,
    pub verify: Option<String>,
    pub lock_timeout: Option<Duration>,
    pub statement_timeout: Option<Duration>,
}

const PREFIX: &str = "-- fleetmig:";

/// A comment line that means to be a directive but is not written as one
/// (`--fleetmig:`, `-- FLEETMIG:`, `--  fleetmig:`, `-- fleetmig phase=...`):
/// silently ignored it would, say, let a contract step through unheld.
/// `-- fleetmig-lint:` lines are lint's, not directives.
fn near_miss(line: &str) -> bool {
    let t = line.trim_start();
    let Some(comment) = t.strip_prefix("--") else {
        return false;
    };
    let words = comment.trim_start();
    let lower = words.to_ascii_lowercase();
    if !lower.starts_with("fleetmig") || lower.starts_with("fleetmig-lint") {
        return false;
    }
    let after = &lower["fleetmig".len()..];
    // `-- fleetmigration notes` is prose, not a directive
    let is_word_end = after
        .chars()
        .next()
        .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_' && c != '-');
    is_word_end && !t.starts_with(PREFIX)
}

/// A block comment that means a directive (`/* fleetmig: phase=contract
/// */`): only `-- fleetmig:` lines are read, and ignoring it would let a
/// contract step through unheld.
fn in_block_comment(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("/*") {
        let after = rest[i + 2..].trim_start_matches(['*', ' ', '\t']);
        if after.starts_with("fleetmig") && !after.starts_with("fleetmig-lint") {
            let next = after["fleetmig".len()..].chars().next();
            if next.is_none_or(|c| c == ':' || c.is_whitespace()) {
                return true;
            }
        }
        rest = &rest[i + 2..];
    }
    false
}

/// A directive that cannot be read: the line (1-based) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Parses every directive line of `sql`; errors name the line.
pub fn parse(sql: &str) -> Result<Directives, LineError> {
    let mut d = Directives::default();
    // each key once per file: a second `phase=` would silently win
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut batch_size: Option<u64> = None;
    let mut batch_pause: Option<Duration> = None;
    let mut batch = false;
    for (i, line) in sql.lines().enumerate() {
        let line_no = i + 1;
        let err = |message: String| LineError {
            line: line_no,
            message,
        };
        if in_block_comment(line) {
            return Err(err(
                "a fleetmig directive in a block comment is not read: write it as a line \
                 `-- fleetmig: key=value`"
                    .into(),
            ));
        }
        if near_miss(line) {
            return Err(err(format!(
                "`{}` looks like a fleetmig directive but is not one: write it exactly \
                 `-- fleetmig: key=value` (two dashes, one space, lower case, a colon)",
                line.trim().chars().take(80).collect::<String>()
            )));
        }
        let Some(rest) = line.trim_start().strip_prefix(PREFIX) else {
            continue;
        };
        for token in rest.split_whitespace() {
            let (key, value) = match token.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (token, None),
            };
            if let Some((_, first)) = seen.iter().find(|(k, _)| k == key) {
                return Err(err(format!(
                    "fleetmig directive `{key}` is given twice (line {first} and line {line_no}): \
                     say it once"
                )));
            }
            seen.push((key.to_string(), line_no));
            fn need<'v>(
                v: Option<&'v str>,
                key: &str,
                err: &dyn Fn(String) -> LineError,
            ) -> Result<&'v str, LineError> {
                v.filter(|v| !v.is_empty()).ok_or_else(|| {
                    err(format!(
                        "fleetmig directive `{key}` needs a value: {key}=..."
                    ))
                })
            }
            let dur = |v: &str| {
                let d = humantime::parse_duration(v).map_err(|e| {
                    err(format!(
                        "fleetmig directive `{key}={v}`: {e} (e.g. 100ms, 5s)"
                    ))
                })?;
                if d > crate::duration::MAX_DURATION {
                    return Err(err(format!(
                        "fleetmig directive `{key}={v}`: at most about 24.8 days"
                    )));
                }
                Ok(d)
            };
            match key {
                "phase" => {
                    d.phase = match need(value, key, &err)? {
                        "expand" => Phase::Expand,
                        "contract" => Phase::Contract,
                        v => return Err(err(format!("phase={v}: expected expand or contract"))),
                    }
                }
                "scope" => {
                    d.scope = match need(value, key, &err)? {
                        "database" => Scope::Database,
                        "tenant" => Scope::Tenant,
                        v => return Err(err(format!("scope={v}: expected database or tenant"))),
                    }
                }
                "batch" => {
                    if value.is_some() {
                        return Err(err(
                            "`batch` takes no value; write `batch size=5000 pause=100ms`".into(),
                        ));
                    }
                    batch = true;
                }
                "size" => {
                    let v = need(value, key, &err)?;
                    let n: u64 = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        err(format!("size={v}: expected a positive whole number"))
                    })?;
                    batch_size = Some(n);
                }
                "pause" => batch_pause = Some(dur(need(value, key, &err)?)?),
                "verify" => d.verify = Some(need(value, key, &err)?.to_string()),
                "lock_timeout" => d.lock_timeout = Some(dur(need(value, key, &err)?)?),
                "statement_timeout" => d.statement_timeout = Some(dur(need(value, key, &err)?)?),
                other => {
                    return Err(err(format!(
                        "unknown fleetmig directive `{other}`; known: phase, scope, batch, size, \
                         pause, verify, lock_timeout, statement_timeout"
                    )));
                }
            }
        }
        if (batch_size.is_some() || batch_pause.is_some()) && !batch {
            return Err(err(
                "`size`/`pause` belong to a batch: write `batch size=5000 pause=100ms`".into(),
            ));
        }
    }
    if batch {
        d.batch = Some(Batch {
            size: batch_size.unwrap_or(1000),
            pause: batch_pause.unwrap_or(Duration::ZERO),
        });
    }
    Ok(d)
}
