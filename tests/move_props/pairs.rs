//! Every ordered pair of systems, value for value (part 1 of main.rs): one
//! move from each system into each, of 2,000 rows generated for that pair,
//! read back and compared cell by cell.

use std::collections::HashMap;

use rand::RngExt;

use crate::expect::{expected, pg_jsonb};
use crate::places::{Cleanup, fill, mv, point, said, synced_source, target};
use crate::read::{compare, read_lite, read_my, read_pg};
use crate::rows::Row;
use crate::seeds::{cut, seed};
use crate::systems::{Lite, My, Pg, ROWS, Sys, values_set};
use crate::values::Gen;

/// One move from `src` into each system, each of 2,000 rows generated for
/// that pair, read back and compared cell by cell.
async fn moves_from(src: Sys) {
    let seed = seed(&format!("moves from {}", src.name()));
    let dir = tempfile::tempdir().unwrap();
    let set = values_set();
    let mut clean = Cleanup::default();
    let source = synced_source(src, dir.path(), set.path(), &mut clean).await;
    let mut failures = Vec::new();
    for dst in [Lite, Pg, My] {
        let label = format!("seed {seed}, {} → {}", src.name(), dst.name());
        let mut g = Gen::new(seed, src, dst, "move");
        let rows: Vec<Row> = (1..=ROWS).map(|id| g.row(id)).collect();
        let batch = g.rng.random_range(200..=1000usize).to_string();
        fill(&source, &rows).await;
        // the expected jsonb, from the server itself
        let jsonb = if src == Pg || dst == Pg {
            pg_jsonb(rows.iter().filter_map(|r| r.jb.clone()).collect()).await
        } else {
            HashMap::new()
        };
        point(dir.path(), &source.url);
        // a SQLite tenant goes to a schema of a PostgreSQL database, the
        // others to a database of their own
        let (to, mut args) = target(dst, dir.path(), &mut clean, src == Lite).await;
        args.extend(["--batch-rows".to_string(), batch.clone()]);
        let t0 = std::time::Instant::now();
        let out = mv(dir.path(), set.path(), &args);
        eprintln!(
            "{} → {}: moved {ROWS} rows in {:.1} s (batch {batch})",
            src.name(),
            dst.name(),
            t0.elapsed().as_secs_f64()
        );
        if out.status.code() != Some(0) {
            failures.push(format!(
                "{label}: the move exited {:?}: {}",
                out.status.code(),
                cut(&said(&out), 3000)
            ));
            continue;
        }
        let got = match dst {
            Pg => read_pg(&to.url, &to.table).await,
            My => read_my(&to.url).await,
            Lite => read_lite(&to.path).await,
        };
        let want: Vec<_> = rows.iter().map(|r| expected(r, src, dst, &jsonb)).collect();
        let wrong = compare(&label, &rows, &want, &got);
        if !wrong.is_empty() {
            failures.push(format!(
                "{label}: {} cells differ:\n{}",
                wrong.len(),
                wrong
                    .iter()
                    .take(12)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    drop(clean);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_tenant_arrives_value_for_value_in_every_system() {
    moves_from(Lite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgresql_tenant_arrives_value_for_value_in_every_system() {
    moves_from(Pg).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mariadb_tenant_arrives_value_for_value_in_every_system() {
    moves_from(My).await;
}
