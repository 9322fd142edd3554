//! `-- fleetmig: key=value ...` comment lines (parsed in `fleetmig_parse`),
//! their errors pointing at the migration's file and line.

use std::path::Path;
#[cfg(test)]
use std::time::Duration;

pub use fleetmig_parse::directive::{Batch, Directives, Phase, Scope};

use crate::error::Error;

/// Parses every directive line of `sql`; errors name `path` and the line.
pub fn parse(path: &Path, sql: &str) -> Result<Directives, Error> {
    fleetmig_parse::directive::parse(sql).map_err(|e| Error::Migration {
        path: path.to_path_buf(),
        line: Some(e.line),
        message: e.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_directives() {
        let d = parse(
            Path::new("x.sql"),
            "-- fleetmig: phase=contract\n-- fleetmig: batch size=5000 pause=100ms\nUPDATE t SET a=1;\n",
        )
        .unwrap();
        assert_eq!(d.phase, Phase::Contract);
        assert_eq!(
            d.batch,
            Some(Batch {
                size: 5000,
                pause: Duration::from_millis(100)
            })
        );
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let e = parse(
            Path::new("m/0001_x.sql"),
            "SELECT 1;\n-- fleetmig: phsae=contract\n",
        )
        .unwrap_err();
        assert_eq!(e.to_string().split(": ").next().unwrap(), "m/0001_x.sql:2");
        assert!(parse(Path::new("x"), "-- fleetmig: size=10\n").is_err());
        assert!(parse(Path::new("x"), "-- fleetmig: batch size=0\n").is_err());
        assert!(parse(Path::new("x"), "-- fleetmig: phase=sideways\n").is_err());
    }

    #[test]
    fn near_misses_are_errors_naming_the_line() {
        for bad in [
            "--fleetmig: phase=contract",
            "-- FLEETMIG: phase=contract",
            "--  fleetmig: phase=contract",
            "-- fleetmig phase=contract",
            "  -- Fleetmig: batch",
        ] {
            let e = parse(Path::new("m/0009_c.sql"), &format!("SELECT 1;\n{bad}\n"))
                .expect_err(bad)
                .to_string();
            assert!(e.starts_with("m/0009_c.sql:2: "), "{e}");
            assert!(e.contains("looks like a fleetmig directive"), "{e}");
        }
        for fine in [
            "-- fleetmig-lint: ignore FM001",
            "-- fleetmigration notes",
            "-- this keeps fleetmig happy",
            "-- fleetmig: phase=expand",
        ] {
            assert!(parse(Path::new("x"), fine).is_ok(), "{fine}");
        }
    }
}

#[cfg(test)]
mod conflicts {
    use super::*;

    #[test]
    fn a_key_twice_and_a_directive_in_a_block_comment_are_errors_naming_the_line() {
        let p = Path::new("0009_drop.sql");
        let e = parse(
            p,
            "-- fleetmig: phase=contract\nALTER TABLE t DROP COLUMN c;\n-- fleetmig: phase=expand\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("0009_drop.sql:3") && e.contains("line 1 and line 3"),
            "{e}"
        );
        let e = parse(
            p,
            "/* fleetmig: phase=contract */\nALTER TABLE t DROP COLUMN c;\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("0009_drop.sql:1") && e.contains("block comment"),
            "{e}"
        );
        let e = parse(p, "SELECT 1; /*\n * fleetmig: phase=contract */\n").err();
        // the directive on a comment's second line is not a line of its own
        // either; its opener is on the line above
        assert!(e.is_none() || e.unwrap().to_string().contains("block comment"));
        assert!(parse(p, "/* fleetmigration notes */\nSELECT 1;\n").is_ok());
    }
}
