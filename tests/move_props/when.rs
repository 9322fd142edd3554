//! `When::parse` and `write_pg` against PostgreSQL's `::date::text`,
//! `::timestamp::text` and `::timestamptz::text` over its whole range
//! (part 3 of main.rs).

use fleetmig::dialect::copy::when::When;
use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use sqlx::Connection;

use crate::calendar::{
    Col, LAST_MICRO, Moment, PG_FIRST, SEC, Span, moment_in, offset, pg_text, span, zone,
};
use crate::common::*;
use crate::seeds::{rng_for, seed};
use crate::systems::Pg;

/// A moment spelled as PostgreSQL reads it: its fraction in 0 to 6 digits,
/// BC, for `Tz` an offset now and then; and the moment in UTC.
fn pg_input(rng: &mut StdRng, col: Col) -> (String, Option<Moment>) {
    if rng.random_bool(0.01) {
        return (
            ["infinity", "-infinity"].choose(rng).unwrap().to_string(),
            None,
        );
    }
    // PostgreSQL's whole range (When has none of fleetmig's column limits)
    let span = Span {
        lo: PG_FIRST,
        ..span(Pg, col)
    };
    let m = match rng.random_range(0..4) {
        // around the turn of the era, where BC and leap years meet
        0 => moment_in(
            rng,
            Span {
                lo: Moment::at(-10, 1, 1, 0),
                hi: Moment::at(10, 12, 31, LAST_MICRO),
            },
            false,
        ),
        _ => moment_in(rng, span, false),
    };
    let m = if col == Col::Date {
        Moment { nanos: 0, ..m }
    } else {
        m
    };
    let off = if col == Col::Tz && (1..=294_275).contains(&m.year) && rng.random_bool(0.5) {
        offset(rng)
    } else {
        0
    };
    let local = m.shifted(off);
    let bc = local.year <= 0;
    let year = if bc { 1 - local.year } else { local.year };
    let mut s = format!("{year:04}-{:02}-{:02}", local.month, local.day);
    if col != Col::Date {
        s.push(if rng.random_bool(0.8) { ' ' } else { 'T' });
        s.push_str(&local.clock());
        let micros = local.nanos % SEC / 1000;
        // the fraction in as many digits as it needs, or more
        let need = format!("{micros:06}").trim_end_matches('0').len();
        let digits = rng.random_range(need..=6);
        if digits > 0 {
            s.push_str(&format!(".{}", &format!("{micros:06}")[..digits]));
        }
    }
    if col == Col::Tz {
        s.push_str(&if off == 0 {
            ["+00", "+00:00", "Z", "-00"]
                .choose(rng)
                .unwrap()
                .to_string()
        } else {
            zone(rng, off)
        });
    }
    if bc {
        s.push_str(" BC");
    }
    (s, Some(m))
}

#[tokio::test(flavor = "multi_thread")]
async fn dates_and_timestamps_read_and_write_as_postgresql_prints_them() {
    let seed = seed("When against PostgreSQL");
    let mut rng = rng_for(seed, "when");
    let mut c = pg_connect(&pg_base_url()).await;
    sqlx::raw_sql("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
        .execute(&mut c)
        .await
        .unwrap();
    let mut wrong = Vec::new();
    let mut compared = 0;
    for (col, cast) in [
        (Col::Date, "date"),
        (Col::Ts, "timestamp"),
        (Col::Tz, "timestamptz"),
    ] {
        let inputs: Vec<(String, Option<Moment>)> =
            (0..2000).map(|_| pg_input(&mut rng, col)).collect();
        let texts: Vec<String> = inputs.iter().map(|(s, _)| s.clone()).collect();
        let printed: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT x::{cast}::text FROM unnest($1::text[]) WITH ORDINALITY AS u(x, n) ORDER BY n"
        )))
        .bind(&texts)
        .fetch_all(&mut c)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {cast}: {e}"));
        let (time, zone) = (col != Col::Date, col == Col::Tz);
        compared += printed.len();
        for ((input, m), pg) in inputs.iter().zip(&printed) {
            let mut fail = |what: String| {
                wrong.push(format!(
                    "seed {seed}, {cast} {input:?} (PostgreSQL prints {pg:?}): {what}"
                ))
            };
            // what PostgreSQL prints is what this test expects of it
            let want = match m {
                Some(m) => pg_text(m, col),
                None => input.clone(),
            };
            if *pg != want {
                fail(format!("the test expected PostgreSQL to print {want:?}"));
            }
            // PostgreSQL's print, read and written back
            let Some(w) = When::parse(pg) else {
                fail("When::parse reads nothing".into());
                continue;
            };
            let mut back = String::new();
            w.write_pg(&mut back, time, zone);
            if back != *pg {
                fail(format!("write_pg gives {back:?}"));
            }
            // the input read as PostgreSQL read it
            match When::parse(input) {
                Some(v) if v == w => {}
                other => fail(format!(
                    "When::parse of the input gives {other:?}, of the print {w:?}"
                )),
            }
        }
    }
    c.close().await.unwrap();
    eprintln!("{compared} dates and timestamps: {} differ", wrong.len());
    assert_eq!(compared, 6000);
    assert!(
        wrong.is_empty(),
        "{} differ:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
