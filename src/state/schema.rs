//! The state store's own schema: versioned, each version one step of DDL
//! that works on SQLite and PostgreSQL alike; `StateStore::open` brings an
//! older store up to date under a lock (see `migrate`).

use super::StateStore;
use crate::error::Error;

/// The version of this store's schema; `open` brings older stores up to it.
pub const SCHEMA_VERSION: i64 = 13;

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: rollouts, their waves and their tenants
    "CREATE TABLE IF NOT EXISTS fleetmig_rollouts (
        id TEXT PRIMARY KEY,
        created_at BIGINT NOT NULL,
        operator TEXT NOT NULL,
        command TEXT NOT NULL,
        fleet TEXT NOT NULL,
        migrations_dir TEXT NOT NULL,
        set_checksum TEXT NOT NULL,
        target BIGINT NOT NULL,
        settings TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        current_wave BIGINT NOT NULL,
        claimed_by TEXT,
        heartbeat_at BIGINT,
        finished_at BIGINT
    );
    CREATE TABLE IF NOT EXISTS fleetmig_waves (
        rollout_id TEXT NOT NULL,
        wave BIGINT NOT NULL,
        name TEXT NOT NULL,
        selector TEXT NOT NULL,
        status TEXT NOT NULL,
        gate TEXT,
        started_at BIGINT,
        finished_at BIGINT,
        PRIMARY KEY (rollout_id, wave)
    );
    CREATE TABLE IF NOT EXISTS fleetmig_tenant_runs (
        rollout_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        wave BIGINT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        from_version BIGINT,
        to_version BIGINT,
        applied TEXT NOT NULL,
        started_at BIGINT,
        finished_at BIGINT,
        duration_ms BIGINT NOT NULL,
        error_class TEXT,
        error_kind TEXT,
        error_code TEXT,
        error_version BIGINT,
        error_message TEXT,
        gate_error TEXT,
        PRIMARY KEY (rollout_id, tenant)
    );
    CREATE INDEX IF NOT EXISTS fleetmig_rollouts_fleet ON fleetmig_rollouts (fleet, status)",
    // 2: checkpoints of batched backfills
    "CREATE TABLE IF NOT EXISTS fleetmig_backfills (
        rollout_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        version BIGINT NOT NULL,
        batches BIGINT NOT NULL,
        rows_changed BIGINT NOT NULL,
        max_batch_ms BIGINT NOT NULL,
        done BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (rollout_id, tenant, version)
    )",
    // 3: per-tenant backups
    "CREATE TABLE IF NOT EXISTS fleetmig_backups (
        rollout_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        path TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (rollout_id, tenant)
    )",
    // 4: preflight results
    "ALTER TABLE fleetmig_tenant_runs ADD COLUMN preflight TEXT",
    // 5: an operator's request to the process running a rollout (pause,
    // abort), and where its reports go
    "ALTER TABLE fleetmig_rollouts ADD COLUMN requested TEXT;
    ALTER TABLE fleetmig_rollouts ADD COLUMN reports_dir TEXT",
    // 6: several workers on one rollout (PostgreSQL store): tenants claimed
    // by a worker (the claim holds while it heartbeats), the worker that ran each,
    // the version an unfinished attempt started from (written before it applies), the workers themselves, the
    // one evaluation of each wave's gate, and when a baked wave opens
    "ALTER TABLE fleetmig_tenant_runs ADD COLUMN claimed_by TEXT;
    ALTER TABLE fleetmig_tenant_runs ADD COLUMN worker TEXT;
    ALTER TABLE fleetmig_tenant_runs ADD COLUMN journal_from BIGINT;
    CREATE INDEX IF NOT EXISTS fleetmig_tenant_runs_wave ON fleetmig_tenant_runs (rollout_id, wave, status);
    ALTER TABLE fleetmig_waves ADD COLUMN gated_by TEXT;
    ALTER TABLE fleetmig_waves ADD COLUMN gated_at BIGINT;
    ALTER TABLE fleetmig_waves ADD COLUMN opens_at BIGINT;
    CREATE TABLE IF NOT EXISTS fleetmig_workers (
        rollout_id TEXT NOT NULL,
        worker TEXT NOT NULL,
        host TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        heartbeat_at BIGINT NOT NULL,
        stopped_at BIGINT,
        done BIGINT NOT NULL,
        PRIMARY KEY (rollout_id, worker)
    );
    CREATE TABLE IF NOT EXISTS fleetmig_gates (
        rollout_id TEXT NOT NULL,
        wave BIGINT NOT NULL,
        worker TEXT NOT NULL,
        status TEXT NOT NULL,
        evaluated_at BIGINT NOT NULL,
        PRIMARY KEY (rollout_id, wave)
    )",
    // 7: tenants moved to another server or database system (locations
    // without credentials); one copying move per target at a time
    "CREATE TABLE IF NOT EXISTS fleetmig_moves (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        source TEXT NOT NULL,
        target TEXT NOT NULL,
        version BIGINT NOT NULL,
        status TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        finished_at BIGINT,
        rows_copied BIGINT NOT NULL,
        tables TEXT,
        error TEXT
    );
    CREATE UNIQUE INDEX IF NOT EXISTS fleetmig_moves_copying ON fleetmig_moves (target)
        WHERE status = 'copying'",
    // 8: a move's target claimed by its place (one place spelled two ways
    // is one place), not by how the URL was written
    "ALTER TABLE fleetmig_moves ADD COLUMN target_key TEXT;
    DROP INDEX IF EXISTS fleetmig_moves_copying;
    CREATE UNIQUE INDEX IF NOT EXISTS fleetmig_moves_claim ON fleetmig_moves (target_key)
        WHERE status = 'copying'",
    // 9: --per-server for the whole rollout, however many workers: a slot
    // per tenant server, taken with the tenant and given back after it
    "CREATE TABLE IF NOT EXISTS fleetmig_slots (
        rollout_id TEXT NOT NULL,
        server TEXT NOT NULL,
        slot BIGINT NOT NULL,
        worker TEXT NOT NULL,
        tenant TEXT NOT NULL,
        taken_at BIGINT NOT NULL,
        PRIMARY KEY (rollout_id, server, slot)
    )",
    // 10: `prune`: a finished rollout's tenant rows removed, what they
    // said kept in its row (JSON: at, tenants, succeeded, failed)
    "ALTER TABLE fleetmig_rollouts ADD COLUMN pruned TEXT",
    // 11: what operators asked of a rollout (pause, resume, abort,
    // retry), by name: `fleetmig serve`'s controls and the CLI's
    "CREATE TABLE IF NOT EXISTS fleetmig_actions (
        rollout_id TEXT NOT NULL,
        at BIGINT NOT NULL,
        operator TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS fleetmig_actions_rollout ON fleetmig_actions (rollout_id, at)",
    // 12: a finished rollout's up-to-date tenants folded (`fold.rs`): per
    // wave and version a count and the tenants' ids, a list kept once
    // however many rollouts name it (a nightly names the same fleet every
    // night); `fleetmig_tenants` reads rows and folds as one table.
    // `{EACH_ID}` is the dialect's way of reading a JSON array's strings.
    "CREATE TABLE IF NOT EXISTS fleetmig_id_lists (
        key TEXT PRIMARY KEY,
        ids TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS fleetmig_folds (
        rollout_id TEXT NOT NULL,
        wave BIGINT NOT NULL,
        version BIGINT NOT NULL,
        tenants BIGINT NOT NULL,
        list TEXT NOT NULL,
        started_at BIGINT,
        finished_at BIGINT,
        PRIMARY KEY (rollout_id, wave, version)
    );
    CREATE INDEX IF NOT EXISTS fleetmig_folds_list ON fleetmig_folds (list);
    CREATE VIEW fleetmig_tenants AS
        SELECT rollout_id, tenant, wave, status, attempts, from_version, to_version, applied,
            started_at, finished_at, duration_ms, error_class, error_kind, error_code,
            error_version, error_message, gate_error, preflight, claimed_by, worker, journal_from
        FROM fleetmig_tenant_runs
        UNION ALL
        SELECT f.rollout_id, j.value, f.wave, 'succeeded', 1, f.version, f.version, '',
            f.started_at, f.finished_at, 0, CAST(NULL AS TEXT), CAST(NULL AS TEXT),
            CAST(NULL AS TEXT), CAST(NULL AS BIGINT), CAST(NULL AS TEXT), CAST(NULL AS TEXT),
            CAST(NULL AS TEXT), CAST(NULL AS TEXT), CAST(NULL AS TEXT), CAST(NULL AS BIGINT)
        FROM fleetmig_folds f JOIN fleetmig_id_lists l ON l.key = f.list {EACH_ID}",
    // 13: a tenant's row is claimed in place, and no index names the
    // column a claim sets (`claimed_by`): on PostgreSQL the table's pages
    // keep room for the updated versions, so a claim is a HOT update (no
    // index entry written, none left dead for the next claim to step
    // over): claiming 20,000 rows took 170 ms of the server's time, 33
    // after. (A finish changes `status`, which the wave's index names so
    // that what is left of a wave is found without reading its finished
    // rows: a finish is not HOT.) `{POSTGRES}` marks a statement only
    // PostgreSQL runs; rows written before it get the room as they move.
    // A SQLite store has one process, which reads a wave's to-do rows
    // once, never polls them: its wave index names tenants, so a finish
    // writes no index entry (a sync of 100,000 tenants at head: 9.8 s
    // against 10.9, median of 3 interleaved). `{SQLITE}`: only SQLite.
    "{POSTGRES}ALTER TABLE fleetmig_tenant_runs SET (fillfactor = 40);
    {SQLITE}DROP INDEX IF EXISTS fleetmig_tenant_runs_wave;
    {SQLITE}CREATE INDEX IF NOT EXISTS fleetmig_tenant_runs_wave ON fleetmig_tenant_runs (rollout_id, wave, tenant)",
];

/// How the view of migration 12 reads each id of a list's JSON array, as
/// a column `j.value`.
pub(super) fn each_id(postgres: bool) -> &'static str {
    if postgres {
        "CROSS JOIN LATERAL json_array_elements_text(l.ids::json) AS j(value)"
    } else {
        "CROSS JOIN json_each(l.ids) AS j"
    }
}

/// The statements of one migration as `postgres` (or SQLite) runs them:
/// those marked `{POSTGRES}` or `{SQLITE}` only on that store, `{EACH_ID}`
/// written in its dialect.
fn statements(ddl: &str, postgres: bool) -> Vec<String> {
    ddl.split(";\n")
        .map(str::trim_start)
        .filter(|s| !s.trim().is_empty())
        .filter_map(
            |s| match (s.strip_prefix("{POSTGRES}"), s.strip_prefix("{SQLITE}")) {
                (Some(only), _) if postgres => Some(only),
                (_, Some(only)) if !postgres => Some(only),
                (None, None) => Some(s),
                _ => None,
            },
        )
        .map(|s| s.replace("{EACH_ID}", each_id(postgres)))
        .collect()
}

/// The schema version a store records (0: none yet).
async fn version(c: &mut sqlx::AnyConnection) -> Result<i64, sqlx::Error> {
    let v: Option<String> =
        sqlx::query_scalar("SELECT value FROM fleetmig_meta WHERE key = 'schema_version'")
            .fetch_optional(&mut *c)
            .await?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Opening a store: whether it can be read as it is, and bringing it up
/// to this schema (the one writer's way in).
impl StateStore {
    /// A store a read command can read as it is: there, and at this
    /// fleetmig's schema version.
    pub(super) async fn readable(&self) -> Result<(), Error> {
        let there: i64 = if self.postgres {
            sqlx::query_scalar(
                "SELECT CAST(count(*) AS BIGINT) FROM pg_class WHERE oid = to_regclass('fleetmig_meta')",
            )
        } else {
            sqlx::query_scalar(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'fleetmig_meta'",
            )
        }
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        if there == 0 {
            return Err(self.err(
                "no state store here: no rollout has been recorded with it yet (check --state); \
                 a command that only reads never creates one",
            ));
        }
        let mut c = self.pool.acquire().await.map_err(|e| self.err(e))?;
        let current = version(&mut c).await.map_err(|e| self.err(e))?;
        if current != SCHEMA_VERSION {
            return Err(self.err(format!(
                "the state store has schema version {current}, this fleetmig reads version \
                 {SCHEMA_VERSION}: {}",
                if current < SCHEMA_VERSION {
                    "a command that writes (sync, rollout, resume) brings it up to date"
                } else {
                    "upgrade fleetmig"
                }
            )));
        }
        Ok(())
    }

    /// Brings the store up to this schema. A store already there is only
    /// read (a command opened beside a running rollout takes no write lock:
    /// writing the version again after reading it could not wait for the
    /// writer on SQLite, and failed as "database is locked"); one to bring
    /// up is migrated holding the write lock (`BEGIN IMMEDIATE`, which
    /// waits) or, on PostgreSQL, an advisory lock.
    pub(super) async fn migrate(&self) -> Result<(), Error> {
        {
            let mut c = self.pool.acquire().await.map_err(|e| self.err(e))?;
            // no meta table yet reads as an error: a new store
            if version(&mut c).await.ok() == Some(SCHEMA_VERSION) {
                return Ok(());
            }
        }
        let mut tx = self.write_tx().await?;
        if self.postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7215092861)")
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS fleetmig_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        let current = version(&mut tx).await.map_err(|e| self.err(e))?;
        if current > SCHEMA_VERSION {
            return Err(self.err(format!(
                "the state store has schema version {current}, newer than this fleetmig ({SCHEMA_VERSION}): upgrade fleetmig"
            )));
        }
        for (i, ddl) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            for stmt in statements(ddl, self.postgres) {
                sqlx::raw_sql(sqlx::AssertSqlSafe(stmt))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        self.err(format!(
                            "migrating the state store to version {}: {e}",
                            i + 1
                        ))
                    })?;
            }
        }
        sqlx::query(
            "INSERT INTO fleetmig_meta (key, value) VALUES ('schema_version', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(SCHEMA_VERSION.to_string())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Open;
    use std::time::Duration;

    /// A command opened while a rollout writes (`abort`, `pause`, `status`)
    /// takes no write lock on a store already at this schema: it neither
    /// waits for the writer nor fails "database is locked".
    #[tokio::test]
    async fn opening_a_current_store_beside_a_writer_writes_nothing() {
        use sqlx::{Connection, Executor};
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("state.db").to_str().unwrap().to_string();
        let open = || StateStore::open(&spec, Open::Create, Duration::from_secs(5));
        open().await.unwrap().close().await;
        let url = format!("sqlite://{spec}");
        let mut writer = sqlx::SqliteConnection::connect(&url).await.unwrap();
        writer.execute("BEGIN IMMEDIATE").await.unwrap();
        writer
            .execute("UPDATE fleetmig_meta SET value = value WHERE key = 'schema_version'")
            .await
            .unwrap();
        let t0 = std::time::Instant::now();
        let store = open().await.unwrap();
        let waited = t0.elapsed();
        writer.execute("COMMIT").await.unwrap();
        assert!(
            waited < Duration::from_secs(2),
            "opening waited {waited:?} for the writer"
        );
        store.close().await;
    }

    #[test]
    fn a_statement_marked_for_one_store_runs_only_there() {
        let ddl = "CREATE TABLE a (x INT);\n    {POSTGRES}ALTER TABLE a SET (fillfactor = 40);\n    {SQLITE}CREATE INDEX i ON a (x)";
        assert_eq!(
            statements(ddl, true),
            [
                "CREATE TABLE a (x INT)",
                "ALTER TABLE a SET (fillfactor = 40)"
            ]
        );
        assert_eq!(
            statements(ddl, false),
            ["CREATE TABLE a (x INT)", "CREATE INDEX i ON a (x)"]
        );
    }

    #[tokio::test]
    async fn a_store_of_schema_12_is_brought_to_13_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("state.db").to_str().unwrap().to_string();
        let open = || StateStore::open(&spec, Open::Create, Duration::from_secs(5));
        let store = open().await.unwrap();
        // as schema 12 left it: the wave's index names status
        sqlx::raw_sql(
            "DROP INDEX fleetmig_tenant_runs_wave;
             CREATE INDEX fleetmig_tenant_runs_wave ON fleetmig_tenant_runs (rollout_id, wave, status);
             INSERT INTO fleetmig_tenant_runs (rollout_id, tenant, wave, status, attempts, applied, duration_ms)
                 VALUES ('r', 'acme', 0, 'pending', 0, '', 0);
             UPDATE fleetmig_meta SET value = '12' WHERE key = 'schema_version'",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        store.close().await;
        let store = open().await.unwrap();
        let (v, index, rows): (String, String, i64) = sqlx::query_as(
            "SELECT (SELECT value FROM fleetmig_meta WHERE key = 'schema_version'), \
             (SELECT sql FROM sqlite_master WHERE name = 'fleetmig_tenant_runs_wave'), \
             (SELECT count(*) FROM fleetmig_tenant_runs WHERE tenant = 'acme')",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!(v, "13");
        assert!(index.ends_with("(rollout_id, wave, tenant)"), "{index}");
        assert_eq!(rows, 1);
        store.close().await;
    }

    #[tokio::test]
    async fn schema_is_versioned_and_a_newer_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/state.db");
        let spec = path.to_str().unwrap().to_string();
        let open =
            |_: &std::path::Path| StateStore::open(&spec, Open::Create, Duration::from_secs(5));
        let store = open(&path).await.unwrap();
        let v: String =
            sqlx::query_scalar("SELECT value FROM fleetmig_meta WHERE key = 'schema_version'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(v, SCHEMA_VERSION.to_string());
        sqlx::query("UPDATE fleetmig_meta SET value = '99' WHERE key = 'schema_version'")
            .execute(&store.pool)
            .await
            .unwrap();
        store.close().await;
        let e = open(&path).await.err().unwrap().to_string();
        assert!(e.contains("newer than this fleetmig"), "{e}");
    }
}
