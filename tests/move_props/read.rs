//! Reading every cell back from a target, and comparing it with what is
//! expected.

use std::path::Path;

use sqlx::{Connection, Row as _, TypeInfo, ValueRef};

use crate::common::*;
use crate::rows::Row;
use crate::seeds::{cut, hex};
use crate::systems::COLUMNS;

pub type Cells = Vec<(i64, Vec<Option<String>>)>;

pub async fn read_pg(url: &str, table: &str) -> Cells {
    let mut c = pg_connect(url).await;
    sqlx::raw_sql("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
        .execute(&mut c)
        .await
        .unwrap();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, i, f, r, n::text, t, b, d::text, ts::text, tz::text, j::text, jb::text, x, u::text \
         FROM {table} ORDER BY id"
    )))
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    rows.iter()
        .map(|r| {
            let s = |i: usize| r.get::<Option<String>, _>(i);
            (
                r.get(0),
                vec![
                    r.get::<Option<i64>, _>(1).map(|v| v.to_string()),
                    r.get::<Option<f64>, _>(2).map(|v| format!("{v:?}")),
                    r.get::<Option<f32>, _>(3).map(|v| format!("{v:?}")),
                    s(4),
                    s(5),
                    r.get::<Option<bool>, _>(6).map(|v| v.to_string()),
                    s(7),
                    s(8),
                    s(9),
                    s(10),
                    s(11),
                    r.get::<Option<Vec<u8>>, _>(12).map(|v| hex(&v)),
                    s(13),
                ],
            )
        })
        .collect()
}

pub async fn read_my(url: &str) -> Cells {
    let mut c = mysql_connect(url).await;
    sqlx::raw_sql("SET SESSION time_zone = '+00:00'")
        .execute(&mut c)
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT id, i, f, r, CAST(n AS CHAR), t, CAST(b AS SIGNED), CAST(d AS CHAR), CAST(ts AS CHAR), \
         CAST(tz AS CHAR), CAST(j AS CHAR), CAST(jb AS CHAR), x, CAST(u AS CHAR) FROM v ORDER BY id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    rows.iter()
        .map(|r| {
            let s = |i: usize| r.get::<Option<String>, _>(i);
            (
                r.get(0),
                vec![
                    r.get::<Option<i64>, _>(1).map(|v| v.to_string()),
                    r.get::<Option<f64>, _>(2).map(|v| format!("{v:?}")),
                    r.get::<Option<f32>, _>(3).map(|v| format!("{v:?}")),
                    s(4),
                    s(5),
                    r.get::<Option<i64>, _>(6).map(|v| v.to_string()),
                    s(7),
                    s(8),
                    s(9),
                    s(10),
                    s(11),
                    r.get::<Option<Vec<u8>>, _>(12).map(|v| hex(&v)),
                    s(13),
                ],
            )
        })
        .collect()
}

/// Every cell by its storage class: `integer:…`, `real:…`, `text:…`,
/// `blob:…`.
pub async fn read_lite(path: &Path) -> Cells {
    let mut c = sqlite(path).await;
    let rows =
        sqlx::query("SELECT id, i, f, r, n, t, b, d, ts, tz, j, jb, x, u FROM v ORDER BY id")
            .fetch_all(&mut c)
            .await
            .unwrap();
    c.close().await.unwrap();
    rows.iter()
        .map(|r| {
            let cells = (1..=13)
                .map(|i| {
                    let raw = r.try_get_raw(i).unwrap();
                    if raw.is_null() {
                        return None;
                    }
                    let class = raw.type_info().name().to_string();
                    Some(match class.as_str() {
                        "INTEGER" => format!("integer:{}", r.get::<i64, _>(i)),
                        "REAL" => format!("real:{:?}", r.get::<f64, _>(i)),
                        "BLOB" => format!("blob:{}", hex(&r.get::<Vec<u8>, _>(i))),
                        _ => format!("text:{}", r.get::<String, _>(i)),
                    })
                })
                .collect();
            (r.get(0), cells)
        })
        .collect()
}

/// The mismatches between what was inserted and what the target holds.
pub fn compare(
    label: &str,
    rows: &[Row],
    want: &[Vec<Option<String>>],
    got: &Cells,
) -> Vec<String> {
    let mut out = Vec::new();
    if got.len() != rows.len() {
        out.push(format!(
            "{label}: the target holds {} rows, {} were inserted",
            got.len(),
            rows.len()
        ));
    }
    for ((row, want), (id, got)) in rows.iter().zip(want).zip(got) {
        if row.id != *id {
            out.push(format!("{label}: row id={} arrived as id={id}", row.id));
            break;
        }
        for (c, (w, g)) in COLUMNS.iter().zip(want.iter().zip(got)) {
            if w != g {
                out.push(format!(
                    "{label}: row id={id}, column {c}: expected {:?}, the target holds {:?}; the source was given {}",
                    w.as_deref().map(|s| cut(s, 200)),
                    g.as_deref().map(|s| cut(s, 200)),
                    row.given(c)
                ));
            }
        }
    }
    out
}
