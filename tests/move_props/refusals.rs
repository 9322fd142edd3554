//! What a target cannot hold is refused by name (table, column, key), and
//! no target is left behind (part 1 of main.rs, its second half).

use rand::RngExt;
use rand::rngs::StdRng;

use crate::places::{Cleanup, exec, exists, fill, mv, point, said, synced_source, target};
use crate::read::read_pg;
use crate::rows::Row;
use crate::seeds::{cut, rng_for, seed};
use crate::systems::{Lite, My, Pg, Sys, values_set};
use crate::values::Gen;

/// One value the target cannot hold: set on a random row of generated
/// ones; the move must refuse naming `v.<col> at id=<key>` and `says`.
struct Refused {
    dst: Sys,
    col: &'static str,
    /// SQL for the source's value.
    value: String,
    says: &'static str,
}

fn refused(dst: Sys, col: &'static str, value: &str, says: &'static str) -> Refused {
    Refused {
        dst,
        col,
        value: value.to_string(),
        says,
    }
}

async fn refusals_from(src: Sys, cases: impl FnOnce(&mut StdRng) -> Vec<Refused>) {
    let seed = seed(&format!("refusals from {}", src.name()));
    let cases = cases(&mut rng_for(seed, "cases"));
    let dir = tempfile::tempdir().unwrap();
    let set = values_set();
    let mut clean = Cleanup::default();
    let source = synced_source(src, dir.path(), set.path(), &mut clean).await;
    let mut failures = Vec::new();
    for case in cases {
        let mut g = Gen::new(seed, src, case.dst, &format!("refused {}", case.col));
        let rows: Vec<Row> = (1..=40).map(|id| g.row(id)).collect();
        let key = g.rng.random_range(1..=40);
        fill(&source, &rows).await;
        exec(
            &source,
            &format!(
                "UPDATE v SET {} = {} WHERE id = {key}",
                case.col, case.value
            ),
        )
        .await;
        point(dir.path(), &source.url);
        let (to, args) = target(case.dst, dir.path(), &mut clean, src == Lite).await;
        let out = mv(dir.path(), set.path(), &args);
        let text = said(&out);
        let label = format!(
            "seed {seed}, {} → {}, {} = {} at id={key}",
            src.name(),
            case.dst.name(),
            case.col,
            case.value
        );
        let named = format!("v.{} at id={key}: cannot carry", case.col);
        if !matches!(out.status.code(), Some(1 | 2)) {
            failures.push(format!(
                "{label}: the move exited {:?}, not 1 or 2: {}",
                out.status.code(),
                cut(&text, 2000)
            ));
        } else if !text.contains(&named) || !text.contains(case.says) {
            failures.push(format!(
                "{label}: the refusal does not say {named:?} and {:?}: {}",
                case.says,
                cut(&text, 2000)
            ));
        }
        if text.contains("panicked") {
            failures.push(format!("{label}: a panic: {}", cut(&text, 2000)));
        }
        if exists(&to).await {
            failures.push(format!("{label}: the target {} is left behind", to.url));
        }
    }
    drop(clean);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_target_cannot_hold_of_a_postgresql_tenant_is_refused_by_name() {
    refusals_from(Pg, |_| {
        vec![
            refused(
                My,
                "d",
                "'infinity'",
                "into date (mysql): the column holds no infinity",
            ),
            refused(
                My,
                "d",
                "'0044-03-15 BC'",
                "the column holds years 0 to 9999 only",
            ),
            refused(
                My,
                "tz",
                "'1969-12-31 23:59:59.999999+00'",
                "a MySQL TIMESTAMP holds 1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC only",
            ),
            refused(
                My,
                "f",
                "'NaN'",
                "this system's floats hold no NaN or infinity",
            ),
            refused(
                My,
                "r",
                "'-Infinity'",
                "this system's floats hold no NaN or infinity",
            ),
            refused(My, "n", "'NaN'", "the column cannot hold it"),
            refused(
                My,
                "d",
                "'0001-02-29 BC'",
                "MySQL's calendar has no 0000-02-29",
            ),
            refused(My, "f", "'-0'", "a MySQL float column keeps -0.0 as 0.0"),
            refused(
                Lite,
                "ts",
                "'10000-01-01 00:00:00'",
                "the column holds years 0 to 9999 only",
            ),
            refused(
                Lite,
                "d",
                "'0002-01-01 BC'",
                "the column holds years 0 to 9999 only",
            ),
            refused(
                Lite,
                "n",
                "'NaN'",
                "SQLite holds no NaN or infinite decimal",
            ),
            refused(Lite, "f", "'NaN'", "SQLite keeps NaN as NULL"),
            refused(Lite, "r", "'-0'", "a SQLite REAL column keeps -0.0 as 0.0"),
            refused(
                My,
                "u",
                "'00000000-0000-8000-0100-000000000000'",
                "MariaDB's UUID type holds no UUID of version 8 to 15",
            ),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_target_cannot_hold_of_a_mariadb_tenant_is_refused_by_name() {
    refusals_from(My, |rng| {
        // 20 digits before the point: a REAL does not hold them
        let twenty: String = (0..20)
            .map(|i| rng.random_range(u8::from(i == 0)..10).to_string())
            .collect();
        vec![
            refused(Pg, "d", "'0000-00-00'", "--zero-dates null"),
            refused(Pg, "ts", "'2020-00-15 10:00:00'", "--zero-dates null"),
            refused(Lite, "tz", "'0000-00-00 00:00:00'", "--zero-dates null"),
            refused(
                Pg,
                "t",
                "CONCAT('a', CHAR(0 USING utf8mb4), 'b')",
                "PostgreSQL text cannot hold a NUL character",
            ),
            refused(
                Pg,
                "jb",
                "CONCAT('{\"a\": \"', CHAR(92 USING utf8mb4), 'u0000\"}')",
                "PostgreSQL's jsonb cannot hold",
            ),
            refused(
                Lite,
                "n",
                &format!("'{twenty}.5'"),
                "as a REAL, which does not hold it exactly",
            ),
        ]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_target_cannot_hold_of_a_sqlite_tenant_is_refused_by_name() {
    refusals_from(Lite, |_| {
        vec![
            refused(Pg, "i", "'abc'", "not an integer"),
            refused(Pg, "r", "1e300", "out of a 4-byte float's range"),
            // SQLite keeps it as a REAL, whose digits do not fit (38, 10)
            refused(
                Pg,
                "n",
                "'12345678901234567890123456789.5'",
                "it does not fit (38, 10) without losing digits",
            ),
            refused(My, "u", "'not-a-uuid'", "not a UUID"),
            refused(My, "d", "'2026-02-30'", "not a date or timestamp"),
            refused(
                My,
                "tz",
                "'2038-01-19 03:14:08Z'",
                "a MySQL TIMESTAMP holds",
            ),
            // -0.0 as a 4-byte float
            refused(My, "r", "-1e-50", "a MySQL float column keeps -0.0 as 0.0"),
            refused(Pg, "f", "'1,5'", "not a number"),
        ]
    })
    .await;
}

/// Two failures these property tests found outside the value layer, now
/// fixed: PostgreSQL's first timestamp, and MariaDB's JSON columns.
#[tokio::test(flavor = "multi_thread")]
async fn postgresqls_first_timestamp_and_mariadbs_json_columns() {
    // PostgreSQL's first timestamp, 4714-11-24 00:00:00 BC, between two
    // PostgreSQL tenants (catalog.rs gave timestamps years from -4712)
    let dir = tempfile::tempdir().unwrap();
    let set = values_set();
    let mut clean = Cleanup::default();
    let source = synced_source(Pg, dir.path(), set.path(), &mut clean).await;
    exec(
        &source,
        "INSERT INTO v (id, ts, tz) VALUES (1, '4714-11-24 00:00:00 BC', '4714-11-24 00:00:00+00 BC')",
    )
    .await;
    let (to, args) = target(Pg, dir.path(), &mut clean, false).await;
    let out = mv(dir.path(), set.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    let got = read_pg(&to.url, &to.table).await;
    assert_eq!(got[0].1[7].as_deref(), Some("4714-11-24 00:00:00 BC"));
    assert_eq!(got[0].1[8].as_deref(), Some("4714-11-24 00:00:00+00 BC"));
    drop(clean);
    // invalid JSON from a SQLite tenant into a MariaDB JSON column: refused
    // by name (MariaDB reports a JSON column as `longtext` with a
    // json_valid CHECK; the server's CHECK refused it naming no key)
    refusals_from(Lite, |_| vec![refused(My, "j", "'not json'", "not JSON")]).await;
}
