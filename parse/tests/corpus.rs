//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`, every input
//! the fuzzer kept, and `fuzz/artifacts/<target>/`, every case it found)
//! through the same properties the fuzz targets check, so CI holds them
//! without a fuzzing build.

mod props;

use std::path::Path;

use fleetmig_parse::Dialect;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let caught = std::panic::catch_unwind(|| check(&data));
            assert!(caught.is_ok(), "{target}: {} fails", path.display());
            n += 1;
        }
    }
    assert!(
        n > 0,
        "{target}: no committed corpus under {}",
        root.display()
    );
}

#[test]
fn split_sqlite() {
    replay("split_sqlite", props::split_sqlite);
}

#[test]
fn split_postgres() {
    replay("split_postgres", |d| {
        props::split_server(d, Dialect::Postgres)
    });
}

#[test]
fn split_mysql() {
    replay("split_mysql", |d| props::split_server(d, Dialect::Mysql));
}

#[test]
fn bind() {
    replay("bind", props::bind);
}

#[test]
fn redact() {
    replay("redact", props::redact);
}

#[test]
fn directive() {
    replay("directive", props::directive);
}

#[test]
fn name() {
    replay("name", props::name);
}

#[test]
fn registry() {
    replay("registry", props::registry);
}

#[test]
fn waves() {
    replay("waves", props::waves);
}

#[test]
fn duration() {
    replay("duration", props::duration);
}
