//! The state store's own schema: versioned, each version one step of DDL
//! that works on SQLite and PostgreSQL alike; `StateStore::open` brings an
//! older store up to date under a lock (see `migrate`).

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
