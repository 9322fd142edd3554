//! Tests of `tenant`.

use super::*;

#[test]
fn ids_are_validated() {
    assert!(TenantId::new("acme-01_x").is_ok());
    assert!(TenantId::new("").is_err());
    assert!(TenantId::new("a b").is_err());
    assert!(TenantId::new("a;drop").is_err());
    assert!(TenantId::new("tenant_$dollar").is_ok());
    assert!(TenantId::new(&"x".repeat(129)).is_err());
}

#[test]
fn identifiers_reject_hostile_names() {
    assert!(validate_identifier("tenant_001").is_ok());
    for bad in [
        "a\"b", "a;b", "a b", "tenаnt", "1abc", "", "x'--", "ｔenant",
    ] {
        assert!(validate_identifier(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn passwords_are_redacted() {
    let r = redact_url("postgres://bob:s3cret@db.local:5432/app?sslmode=disable&password=x1");
    assert!(!r.contains("s3cret") && !r.contains("x1"), "{r}");
    assert!(r.contains("bob") && r.contains("db.local"));
    assert_eq!(redact_url("not a url://u:pw@host"), "not a url://***@host");
    let scrubbed = scrub_secrets("failed for s3cret", ["postgres://bob:s3cret@h/db"]);
    assert_eq!(scrubbed, "failed for ***");
}

#[test]
fn free_text_is_redacted() {
    let t = redact_text(
        "ignoring parameter sslpassword=hunter2 for postgres://bob:s3cret@db:5432/app?password=x1&a=b done",
    );
    for secret in ["hunter2", "s3cret", "x1"] {
        assert!(!t.contains(secret), "{t}");
    }
    assert!(t.contains("postgres://bob:***@db:5432/app"), "{t}");
    assert!(t.contains("a=b done"), "{t}");
    assert_eq!(
        redact_text("no secrets here, key=value"),
        "no secrets here, key=value"
    );
    assert_eq!(redact_loose("postgres:/u:pw@h/db"), "postgres:***@h/db");
}

#[test]
fn tags_parse() {
    let t = parse_tags("tier=free; canary ;region=eu").unwrap();
    assert_eq!(t.get("canary").map(String::as_str), Some(""));
    assert_eq!(t.get("tier").map(String::as_str), Some("free"));
    assert!(parse_tags("a b=c").is_err());
}

#[test]
fn fleet_specs_parse() {
    assert_eq!(
        "sqlite-dir:/x".parse::<FleetSpec>().unwrap(),
        FleetSpec::SqliteDir("/x".into())
    );
    assert!("nope:/x".parse::<FleetSpec>().is_err());
    assert!("postgres-schemas:mysql://x".parse::<FleetSpec>().is_err());
    let e = "postgres-schemas:mysql://u:hunter2@x"
        .parse::<FleetSpec>()
        .unwrap_err();
    assert!(!e.to_string().contains("hunter2"));
}

#[test]
fn server_urls_with_one_slash_none_or_a_bare_at_are_refused_and_hidden_whole() {
    let secret = "Sup3r-Secret";
    for bad in [
        format!("postgres:/fleetmig:{secret}@127.0.0.1/db"),
        format!("mysql:fleetmig:{secret}@127.0.0.1/db"),
        format!("postgres://fleetmig:{secret}@x@127.0.0.1/db"),
        format!("postgres://fleetmig:{secret}@/db"),
        format!("mysql://fleetmig:p@{secret}:w@127.0.0.1/db"),
        // found by the fuzzer: a raw `?` or `/` ends the user part early
        format!("postgres://fleetmig:x?{secret}@127.0.0.1/db"),
        format!("postgres://fleetmig:x/{secret}@127.0.0.1/db"),
    ] {
        let e = check_server_url(&bad).unwrap_err();
        assert!(!e.contains(secret), "{e}");
        assert!(!redact_url(&bad).contains(secret), "{}", redact_url(&bad));
        let fleet = format!("postgres-schemas:{bad}").parse::<FleetSpec>();
        if let Err(e) = fleet {
            assert!(!e.to_string().contains(secret), "{e}");
        }
        let loc = registry::locator_from(&bad, None, std::path::Path::new("."));
        let e = loc.unwrap_err();
        assert!(!e.contains(secret), "{e}");
        let line = redact_text(&format!("connecting to {bad} failed"));
        assert!(!line.contains(secret), "{line}");
    }
    // a password holding `:` or an encoded `@` is fine, and hidden
    let good = format!("postgres://fleetmig:{secret}:x%40y@127.0.0.1:5432/db?sslmode=disable");
    assert!(check_server_url(&good).is_ok());
    assert!(!redact_url(&good).contains(secret));
    assert_eq!(redact_userinfo("mysql:u:pw@h/db"), "mysql:***@h/db");
    assert_eq!(
        redact_userinfo("postgres://u:p@w@h/db"),
        "postgres://***@h/db"
    );
}
