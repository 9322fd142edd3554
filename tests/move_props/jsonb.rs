//! `jsonb::normalize` against PostgreSQL's `::jsonb::text` on thousands of
//! generated documents, valid and not (part 2 of main.rs): the same text,
//! or both refuse.

use fleetmig::dialect::copy::jsonb;
use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use sqlx::Connection;

use crate::common::*;
use crate::json::{json_chars, json_key, json_number, ws};
use crate::seeds::{cut, rng_for, seed};

/// A number with an exponent anywhere near numeric's limits now and then.
fn prop_number(rng: &mut StdRng, out: &mut String) {
    match rng.random_range(0..20) {
        0 => {
            // past or at the limits: 131072 digits before the point, 16383
            // after, exponents of ±1000 and more
            let (int, frac, exp) = *[
                ("1", "", 1000i64),
                ("1", "", 1001),
                ("1", "", -1000),
                ("1", "", -1001),
                ("1", "", 131_071),
                ("1", "", 131_072),
                ("10", "", 131_070),
                ("10", "", 131_071),
                ("0", "001", 131_074),
                ("0", "001", 131_075),
                ("1", "", -16_383),
                ("1", "", -16_384),
                ("1", "5", -16_382),
                ("1", "5", -16_383),
                ("0", "", -16_383),
                ("0", "", -16_384),
                ("0", "", 5000),
                ("0", "0", 1_073_741_822),
                ("0", "", 1_073_741_823),
                ("1", "", 1_073_741_822),
                ("1", "", -1_073_741_822),
                ("123456789", "", -1005),
            ]
            .choose(rng)
            .unwrap();
            if rng.random_bool(0.3) {
                out.push('-');
            }
            out.push_str(int);
            if !frac.is_empty() {
                out.push('.');
                out.push_str(frac);
            }
            out.push_str(&format!("e{exp}"));
        }
        1 => {
            // long digit strings
            out.push(rng.random_range(b'1'..=b'9') as char);
            for _ in 0..rng.random_range(100..3000) {
                out.push(rng.random_range(b'0'..=b'9') as char);
            }
            if rng.random_bool(0.5) {
                out.push('.');
                for _ in 0..rng.random_range(1..3000) {
                    out.push(rng.random_range(b'0'..=b'9') as char);
                }
            }
            if rng.random_bool(0.5) {
                out.push_str(&format!("e{}", rng.random_range(-20_000..20_000)));
            }
        }
        2 => out.push_str(&format!("1e{}", rng.random_range(-20_000i64..140_000))),
        _ => json_number(rng, out, 40, 2000),
    }
}

fn prop_value(rng: &mut StdRng, out: &mut String, depth: usize, max_depth: usize) {
    let k = if depth >= max_depth {
        rng.random_range(2..6)
    } else {
        rng.random_range(0..6)
    };
    match k {
        0 => {
            out.push('{');
            ws(rng, out);
            for i in 0..rng.random_range(0..7) {
                if i > 0 {
                    out.push(',');
                    ws(rng, out);
                }
                json_key(rng, out);
                ws(rng, out);
                out.push(':');
                ws(rng, out);
                prop_value(rng, out, depth + 1, max_depth);
                ws(rng, out);
            }
            out.push('}');
        }
        1 => {
            out.push('[');
            ws(rng, out);
            for i in 0..rng.random_range(0..6) {
                if i > 0 {
                    out.push(',');
                    ws(rng, out);
                }
                prop_value(rng, out, depth + 1, max_depth);
                ws(rng, out);
            }
            out.push(']');
        }
        2 => {
            out.push('"');
            let n = rng.random_range(0..16);
            json_chars(rng, out, n);
            out.push('"');
        }
        3 => prop_number(rng, out),
        _ => out.push_str(["true", "false", "null"].choose(rng).unwrap()),
    }
}

/// Any text, mostly JSON: a generated document, now and then spoiled by a
/// character put anywhere, or given an escape neither side can read.
fn prop_doc(rng: &mut StdRng) -> String {
    let mut s = String::new();
    ws(rng, &mut s);
    let depth = if rng.random_bool(0.05) { 30 } else { 6 };
    prop_value(rng, &mut s, 0, depth);
    ws(rng, &mut s);
    match rng.random_range(0..12) {
        0 => {
            // a character somewhere
            let at: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
            let i = *at.choose(rng).unwrap();
            let c = *[
                ',', ']', '}', '[', '{', '"', '\\', ':', 'x', '0', ' ', '\u{1}', '-', '.', 'e',
                '\u{a0}',
            ]
            .choose(rng)
            .unwrap();
            s.insert(i, c);
        }
        1 => {
            // an escape at the end of a string: lone surrogates, NUL, bad
            // hex, and the good ones beside them
            let e = *[
                "\\ud83d",
                "\\ude00",
                "\\ud83d\\u0041",
                "\\ud83dx",
                "\\ud83d\\ud83d",
                "\\u0000",
                "\\u12",
                "\\u12g4",
                "\\x",
                "\\ud83d\\ude00",
                "\\uDBFF\\uDFFF",
                "\\u0001",
            ]
            .choose(rng)
            .unwrap();
            s = format!("[\"a{e}\", {s}]");
        }
        _ => {}
    }
    s
}

/// Documents at the edges, every run.
fn edge_docs() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "{",
        "[1,]",
        "01",
        "1.",
        ".5",
        "+1",
        "NaN",
        "Infinity",
        "-Infinity",
        "tru",
        "nul",
        "\"\t\"",
        "1 2",
        "[1] x",
        "\u{feff}{}",
        "{\"a\":1,}",
        "{,}",
        "{\"a\" 1}",
        "-",
        "-01",
        "1e",
        "1e+",
        "0x10",
        "\"\\u0000\"",
        "{\"a\\u0000\": 1}",
        "\"\\ud83d\"",
        "\"\\ude00\"",
        "\"\\ud83d\\ude00\"",
        "{\"é\": 1, \"\\u00e9\": 2}",
        "{\"\\u00e9\": 1, \"é\": 2, \"e\": 0}",
        "{\"b\": 1, \"a\": 2, \"aa\": 3, \"\": 4, \"b\": 5}",
        "-0",
        "-0.0",
        "-0e-5",
        "0.0e5",
        "1.50e1",
        "1E+2",
        "1e-0",
        "[1e1001, {\"a\": 1e-1001}]",
        "\n\t {\"a\" :\r\n1 } \n",
        "\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"",
        "\"\\u001f\\u007f\\u0080\\u2028\"",
        "[[], {}, [{}], {\"\": []}]",
        "1e99999999999999999999",
        "0e-99999999999999999999",
        "1e0000000000000000000000001",
        "\"\u{7f}\u{80}\u{10ffff}\"",
        "{\"a\":{\"a\":{\"a\":[1,2,{\"a\":null}]}}}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // nesting to normalize's limit (deeper ones: below)
    for n in [500, 1000, 1001] {
        v.push(format!("{}{}", "[".repeat(n), "]".repeat(n)));
        v.push(format!("{}1{}", "[".repeat(n - 1), "]".repeat(n - 1)));
    }
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn jsonb_normalisation_is_what_postgresql_makes_of_any_document() {
    let seed = seed("jsonb normalisation");
    let mut rng = rng_for(seed, "jsonb");
    let mut docs: Vec<String> = (0..3000).map(|_| prop_doc(&mut rng)).collect();
    docs.extend(edge_docs());
    let mut c = pg_connect(&pg_base_url()).await;
    // one statement: what the server makes of each, NULL where it refuses
    sqlx::raw_sql(
        "CREATE FUNCTION pg_temp.fm_jsonb(t text) RETURNS text LANGUAGE plpgsql AS $$ \
         BEGIN RETURN t::jsonb::text; EXCEPTION WHEN others THEN RETURN NULL; END $$",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let server: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT pg_temp.fm_jsonb(d) FROM unnest($1::text[]) WITH ORDINALITY AS u(d, n) ORDER BY n",
    )
    .bind(&docs)
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut wrong = Vec::new();
    let (mut agreed, mut refused) = (0, 0);
    for (i, (doc, server)) in docs.iter().zip(&server).enumerate() {
        let ours = jsonb::normalize(doc);
        match (&ours, server) {
            (Ok(a), Some(b)) if a == b => agreed += 1,
            (Err(_), None) => refused += 1,
            _ => wrong.push(format!(
                "seed {seed}, document {i} {:?}:\n  normalize: {:?}\n  PostgreSQL: {:?}",
                cut(doc, 300),
                ours.as_ref().map(|s| cut(s, 300)).map_err(|e| cut(e, 300)),
                server.as_ref().map(|s| cut(s, 300))
            )),
        }
    }
    eprintln!(
        "{} documents: {agreed} the same, {refused} refused by both, {} differ",
        docs.len(),
        wrong.len()
    );
    // deeper than normalize's limit: refused, by name, though the server
    // (up to its max_stack_depth) reads them
    let deep = format!("{}{}", "[".repeat(1002), "]".repeat(1002));
    let e = jsonb::normalize(&deep).unwrap_err();
    assert!(e.contains("nested too deeply"), "{e}");
    let server: Option<String> = sqlx::query_scalar("SELECT pg_temp.fm_jsonb($1)")
        .bind(&deep)
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(server.as_deref(), Some(deep.as_str()));
    c.close().await.unwrap();
    assert!(
        wrong.is_empty(),
        "{} of {} documents differ:\n{}",
        wrong.len(),
        docs.len(),
        wrong
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        agreed > 1000 && refused > 100,
        "{agreed} agreed, {refused} refused"
    );
}
