//! Tests of `lint`.

use super::*;
use crate::migration::load;

fn lint(files: &[(&str, &str)]) -> Vec<(String, &'static str, usize)> {
    let dir = tempfile::tempdir().unwrap();
    for (n, t) in files {
        std::fs::write(dir.path().join(n), t).unwrap();
    }
    let set = load(dir.path()).unwrap();
    lint_set(&set)
        .into_iter()
        .map(|f| {
            (
                f.file.file_name().unwrap().to_string_lossy().to_string(),
                f.rule,
                f.line,
            )
        })
        .collect()
}

#[test]
fn each_rule_fires_and_names_file_and_line() {
    let f = lint(&[
        (
            "0001_idx.sql",
            "CREATE TABLE u (a int);\nCREATE INDEX t_a ON t (a);\n",
        ),
        (
            "0002_cic.postgres.sql",
            "CREATE INDEX CONCURRENTLY t_b ON t (a);\n",
        ),
        ("0002_cic.sql", "CREATE INDEX t_b ON t (a);\n"),
        ("0003_nn.sql", "ALTER TABLE t ADD COLUMN b int NOT NULL;\n"),
        (
            "0004_type.sql",
            "ALTER TABLE t ALTER COLUMN a TYPE bigint;\n",
        ),
        ("0005_rename.sql", "ALTER TABLE t RENAME COLUMN a TO c;\n"),
        (
            "0006_fk.sql",
            "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u (id);\n",
        ),
        ("0007_upd.sql", "UPDATE t SET a = 1;\n"),
        (
            "0008_lt.sql",
            "SET lock_timeout = 0;\nALTER TABLE t ADD COLUMN d int;\n",
        ),
        (
            "0009_dropidx.postgres.sql",
            "DROP INDEX CONCURRENTLY t_b;\n",
        ),
        ("0009_dropidx.sql", "DROP INDEX t_b;\n"),
    ]);
    let want = [
        ("0001_idx.sql", "FM001", 2),
        ("0002_cic.postgres.sql", "FM002", 1),
        ("0003_nn.sql", "FM003", 1),
        ("0004_type.sql", "FM004", 1),
        ("0005_rename.sql", "FM005", 1),
        ("0006_fk.sql", "FM006", 1),
        ("0007_upd.sql", "FM007", 1),
        ("0008_lt.sql", "FM008", 1),
        ("0009_dropidx.postgres.sql", "FM002", 1),
    ];
    for w in want {
        assert!(
            f.iter().any(|x| (x.0.as_str(), x.1, x.2) == w),
            "{w:?} not in {f:?}"
        );
    }
    // the plain files serve only sqlite/mysql when a postgres variant exists
    assert!(
        !f.iter()
            .any(|x| x.0 == "0002_cic.sql" || x.0 == "0009_dropidx.sql"),
        "{f:?}"
    );
}

#[test]
fn a_table_created_in_the_same_migration_is_not_a_live_table() {
    let f = lint(&[(
        "0001_users.sql",
        "CREATE TABLE users (id bigint, email text);\n\
         CREATE UNIQUE INDEX users_email ON users (email);\n\
         ALTER TABLE users ALTER COLUMN id TYPE bigint;\n\
         ALTER TABLE users ADD COLUMN name text NOT NULL;\n\
         ALTER TABLE users ADD CONSTRAINT ok CHECK (id > 0);\n\
         CREATE INDEX live ON accounts (id);\n",
    )]);
    assert_eq!(
        f,
        vec![("0001_users.sql".to_string(), "FM001", 6)],
        "only the index on a table that existed before"
    );
}

#[test]
fn safe_forms_contract_batch_and_ignores_pass() {
    let f = lint(&[
        (
            "0001_a.postgres.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n",
        ),
        ("0001_a.sql", "CREATE INDEX t_a ON t (a);\n"),
        (
            "0002_b.sql",
            "ALTER TABLE t ADD COLUMN b int NOT NULL DEFAULT 0;\nALTER TABLE t ADD CONSTRAINT c CHECK (b >= 0) NOT VALID;\n",
        ),
        (
            "0003_c.sql",
            "-- fleetmig: phase=contract\nALTER TABLE t DROP COLUMN a;\nALTER TABLE t ALTER COLUMN b SET NOT NULL;\n",
        ),
        (
            "0004_d.sql",
            "-- fleetmig: batch size=100\nUPDATE t SET b = 1 WHERE id IN (SELECT id FROM t WHERE b IS NULL LIMIT :batch_size);\n",
        ),
        (
            "0005_e.sql",
            "-- fleetmig-lint: ignore FM007 (tiny lookup table)\nDELETE FROM lookup;\n",
        ),
        (
            "0006_f.sql",
            "-- fleetmig-lint: ignore-file all\nUPDATE t SET b = 2;\nDROP TABLE old;\n",
        ),
    ]);
    assert!(f.is_empty(), "{f:?}");
}

#[test]
fn partitioning_hazards_are_named() {
    let f = lint(&[
        (
            // the seed's conversion: a primary key without the partition key
            "0001_events.postgres.sql",
            "CREATE TABLE events (\n  id BIGINT PRIMARY KEY,\n  created_at TIMESTAMP NOT NULL\n) PARTITION BY RANGE (created_at);\n\
             CREATE TABLE tags (\n  id bigint,\n  at date,\n  UNIQUE (id)\n) PARTITION BY LIST (at);\n",
        ),
        (
            // an attach of a table with rows and no CHECK first
            "0002_attach.postgres.sql",
            "ALTER TABLE events ATTACH PARTITION events_2025 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');\n",
        ),
    ]);
    assert_eq!(
        f,
        vec![
            ("0001_events.postgres.sql".to_string(), "FM009", 1),
            ("0001_events.postgres.sql".to_string(), "FM009", 5),
            ("0002_attach.postgres.sql".to_string(), "FM010", 1),
        ]
    );
    // the safe forms: the key includes the partition key; a CHECK that
    // implies the bound is added (and validated) before the attach
    let f = lint(&[
        (
            "0001_events.postgres.sql",
            "CREATE TABLE events (id bigint, created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at);\n\
             CREATE TABLE events_y2026m01 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');\n",
        ),
        (
            "0002_attach.postgres.sql",
            "ALTER TABLE events_2025 ADD CONSTRAINT in_2025 CHECK (created_at >= '2025-01-01' AND created_at < '2026-01-01') NOT VALID;\n\
             ALTER TABLE events_2025 VALIDATE CONSTRAINT in_2025;\n\
             ALTER TABLE events ATTACH PARTITION events_2025 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');\n",
        ),
    ]);
    assert!(f.is_empty(), "{f:?}");
}

/// The worked example in examples/partitioning passes its own lint.
#[test]
fn the_partitioning_example_lints_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/partitioning");
    let set = load(&dir).unwrap();
    assert_eq!(set.migrations.len(), 6);
    let f = lint_set(&set);
    assert!(f.is_empty(), "{f:?}");
}
