//! The conversions checked value by value (the property tests in
//! tests/move_props/ try generated values of every type).

use super::*;

fn col(system: Dialect, kind: Kind, type_name: &str) -> Column {
    let mut spec = Spec::of(system).with_numeric_typmod(type_name);
    if system == Dialect::Sqlite {
        spec.affinity = Some(Affinity::of(type_name));
    }
    Column {
        name: "c".into(),
        type_name: type_name.into(),
        kind: Some(kind),
        serial: false,
        spec,
    }
}

fn c(v: Value, to: &Column) -> Result<Value, String> {
    convert(v, to, &Rules::default())
}

#[test]
fn decimals_keep_every_digit_or_are_refused() {
    let pg = col(Dialect::Postgres, Kind::Decimal, "numeric");
    let n = |t: &str| Value::Decimal(t.into());
    assert_eq!(
        c(n("12345678901234567890.123456789"), &pg),
        Ok(n("12345678901234567890.123456789"))
    );
    let money = col(Dialect::Postgres, Kind::Decimal, "numeric(12,2)");
    assert_eq!(c(n("1.5"), &money), Ok(n("1.50")));
    assert!(c(n("1.505"), &money).is_err());
    assert!(c(n("12345678901.00"), &money).is_err());
    assert_eq!(c(Value::Float(0.1 + 0.2), &money), Ok(n("0.30")));
    assert_eq!(
        c(Value::Float(0.1 + 0.2), &pg),
        Ok(n("0.30000000000000004"))
    );
    let my = col(Dialect::Mysql, Kind::Decimal, "decimal(40,0)");
    assert_eq!(
        c(n("1234567890123456789012345678901234567890"), &my),
        Ok(n("1234567890123456789012345678901234567890"))
    );
    assert!(c(n("NaN"), &my).is_err());
    assert_eq!(c(n("NaN"), &pg), Ok(n("NaN")));
}

#[test]
fn sqlite_numeric_columns_hold_what_a_real_holds() {
    let s = col(Dialect::Sqlite, Kind::Decimal, "NUMERIC(12,2)");
    assert_eq!(
        c(Value::Decimal("12.50".into()), &s),
        Ok(Value::Float(12.5))
    );
    assert_eq!(c(Value::Decimal("12.00".into()), &s), Ok(Value::Int(12)));
    assert_eq!(c(Value::Decimal("7".into()), &s), Ok(Value::Int(7)));
    assert!(c(Value::Decimal("12345678901234567890.5".into()), &s).is_err());
    // a storage class from SQLite passes as it is
    assert_eq!(
        c(Value::Text("abc".into()), &s),
        Ok(Value::Text("abc".into()))
    );
    let t = col(Dialect::Sqlite, Kind::Text, "TEXT");
    assert_eq!(
        c(Value::Float(0.1 + 0.2), &t),
        Ok(Value::Text("0.30000000000000004".into()))
    );
    let b = col(Dialect::Sqlite, Kind::Bool, "BOOLEAN");
    assert_eq!(c(Value::Int(2), &b), Ok(Value::Int(2)));
    assert_eq!(c(Value::Bool(true), &b), Ok(Value::Int(1)));
}

#[test]
fn dates_carry_their_whole_range_or_are_refused_by_reason() {
    let pg = col(Dialect::Postgres, Kind::Date, "date");
    let my = col(Dialect::Mysql, Kind::Date, "date");
    let lite = col(Dialect::Sqlite, Kind::Date, "DATE");
    let d = |t: &str| Value::Date(When::parse(t).unwrap());
    assert_eq!(c(d("infinity"), &pg), Ok(d("infinity")));
    assert!(c(d("infinity"), &my).unwrap_err().contains("no infinity"));
    assert!(c(d("0044-03-15 BC"), &my).unwrap_err().contains("years"));
    assert_eq!(c(d("5874897-12-31"), &pg), Ok(d("5874897-12-31")));
    assert!(c(d("10000-01-01"), &lite).is_err());
    let zero = d("0000-00-00");
    assert_eq!(c(zero.clone(), &my), Ok(zero.clone()));
    assert!(
        c(zero.clone(), &pg)
            .unwrap_err()
            .contains("--zero-dates null")
    );
    let null = Rules {
        zero_dates_null: true,
    };
    assert_eq!(convert(zero, &pg, &null), Ok(Value::Null));
    let ts = col(Dialect::Mysql, Kind::Timestamp, "datetime(3)");
    let mut ts = ts;
    ts.spec.fsp = 3;
    let t = Value::Timestamp(When::parse("2026-01-01 10:00:00.123456").unwrap());
    assert_eq!(
        c(t, &ts),
        Ok(Value::Timestamp(
            When::parse("2026-01-01 10:00:00.123").unwrap()
        ))
    );
}

#[test]
fn json_is_text_and_jsonb_is_what_the_server_makes_of_it() {
    let json = col(Dialect::Postgres, Kind::Json, "json");
    let mut jsonb = col(Dialect::Postgres, Kind::Json, "jsonb");
    jsonb.spec.json = JsonStore::Jsonb;
    let doc = Value::Json(r#"{"b": 12345678901234567890123456789,  "a":0.1000000000000000055511151231257827, "b": 2}"#.into());
    assert_eq!(c(doc.clone(), &json), Ok(doc.clone()));
    assert_eq!(
        c(doc, &jsonb),
        Ok(Value::Json(
            r#"{"a": 0.1000000000000000055511151231257827, "b": 2}"#.into()
        ))
    );
    assert!(c(Value::Text("not json".into()), &json).is_err());
}
