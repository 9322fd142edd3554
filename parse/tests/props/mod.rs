//! The properties each parser keeps on any input, shared by the `cargo
//! fuzz` targets in `fuzz/` (which include this file) and by
//! `tests/corpus.rs`, which replays the committed corpus through them on
//! every `cargo test`. Each function takes the fuzzer's raw bytes and
//! panics when a property fails.

#![allow(dead_code)]

use std::ffi::CString;

use arbitrary::{Arbitrary, Unstructured};
use fleetmig_parse::Dialect;
use fleetmig_parse::split::terminators;

/// Statement ends agree with SQLite's own `sqlite3_complete`: a `;` ends a
/// statement exactly when the text from the last end through it is
/// complete to SQLite.
pub fn split_sqlite(data: &[u8]) {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    if sql.contains('\0') {
        return; // refused when a set loads
    }
    let mut want = Vec::new();
    let mut start = 0;
    for (i, _) in sql.match_indices(';') {
        let piece = CString::new(&sql[start..=i]).expect("no NUL");
        // SAFETY: a NUL-terminated string that outlives the call
        if unsafe { libsqlite3_sys::sqlite3_complete(piece.as_ptr()) } != 0 {
            want.push(i);
            start = i + 1;
        }
    }
    assert_eq!(terminators(sql, Dialect::Sqlite), want, "{sql:?}");
    statements_hold(sql, Dialect::Sqlite);
}

/// Statement ends agree with sqlparser's tokenizer for the dialect: each
/// top-level `;` token, where the tokenizer reads the text at all and the
/// text has none of what it does not know (MySQL's compound bodies,
/// `DELIMITER` lines and conditional comments).
pub fn split_server(data: &[u8], dialect: Dialect) {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    if sql.contains('\0') {
        return;
    }
    if dialect == Dialect::Mysql {
        let lower = sql.to_ascii_lowercase();
        if ["begin", "case", "delimiter", "/*!", "/*m!"]
            .iter()
            .any(|w| lower.contains(w))
        {
            return;
        }
        // sqlparser reads `@` before any character as a variable's name
        // (`@;` one token; `@'…'` without escapes); the mysql client, which
        // splits for the server, ends a statement at that `;`
        let b = sql.as_bytes();
        if b.iter().enumerate().any(|(i, c)| {
            *c == b'@'
                && b.get(i + 1)
                    .is_none_or(|n| !(n.is_ascii_alphanumeric() || b"_$@".contains(n)))
        }) {
            return;
        }
    }
    // sqlparser reads an operator into a `/*` after it (`|/*` is `|/`
    // then `*`, `-/*` no comment); both servers end an operator where `/*`
    // starts
    let b = sql.as_bytes();
    // (and `--` likewise: `*--` is `*` and a comment to PostgreSQL)
    if (1..b.len()).any(|i| {
        (b[i..].starts_with(b"/*") || b[i..].starts_with(b"--"))
            && b"+-*/<>=~!@#%^&|`?".contains(&b[i - 1])
    }) {
        return;
    }
    // sqlparser takes `$7t$` for a dollar quote's tag, and not `$tԫ$`;
    // PostgreSQL's tags are identifiers: never a digit first, any byte past
    // ASCII
    if dialect == Dialect::Postgres
        && (0..b.len()).any(|i| {
            let run = b[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c >= 0x80)
                .count();
            let tag = &b[i + 1..i + 1 + run];
            b[i] == b'$'
                && b.get(i + 1 + run) == Some(&b'$')
                && (tag.first().is_some_and(u8::is_ascii_digit) || tag.iter().any(|c| *c >= 0x80))
        })
    {
        return;
    }
    // sqlparser reads `$E` as a parameter, so `$E'…'` is no E'' string to
    // it; to PostgreSQL a `$` that starts no quote is a `$` alone
    if dialect == Dialect::Postgres
        && (0..b.len()).any(|i| {
            let run = b[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c >= 0x80)
                .count();
            b[i] == b'$' && run > 0 && b.get(i + 1 + run) == Some(&b'\'')
        })
    {
        return;
    }
    // a number run into a name (`0L$t$`, `0.L$$`) is an error to
    // PostgreSQL 15+ ("trailing junk"), read differently by sqlparser
    let name = |c: u8| c.is_ascii_alphabetic() || c == b'_';
    if dialect == Dialect::Postgres
        && (1..b.len()).any(|i| {
            (b[i - 1].is_ascii_digit() && name(b[i]))
                || (i > 1 && b[i - 2].is_ascii_digit() && b[i - 1] == b'.' && name(b[i]))
        })
    {
        return;
    }
    // sqlparser's `&>` swallows the character after it (`&>;` one token)
    if sql.contains("&>") {
        return;
    }
    // sqlparser takes backslash escapes in PostgreSQL's `X'…'`, `B'…'`,
    // `N'…'`, `U&'…'` strings, where the server does not (only in `E'…'`)
    if dialect == Dialect::Postgres
        && (1..b.len()).any(|i| {
            b[i] == b'\''
                && (b[i - 1] == b'&'
                    || (b[i - 1].is_ascii_alphabetic() && !b"Ee".contains(&b[i - 1])))
        })
    {
        return;
    }
    // MySQL's `--` comment starts before any control character (a byte,
    // not a UTF-8 character); sqlparser's only before a blank
    if dialect == Dialect::Mysql
        && (0..b.len()).any(|i| {
            b[i..].starts_with(b"--")
                && b.get(i + 2)
                    .is_some_and(|c| (*c < b' ' && !b"\t\n\r".contains(c)) || *c >= 0x80)
        })
    {
        return;
    }
    // sqlparser reads MySQL's `b'…'`, `x"…"` as byte strings without
    // escapes; the mysql client, which splits for the server, reads every
    // quote alike
    if dialect == Dialect::Mysql
        && (1..b.len()).any(|i| matches!(b[i], b'"' | b'\'') && b[i - 1].is_ascii_alphabetic())
    {
        return;
    }
    let d: Box<dyn sqlparser::dialect::Dialect> = match dialect {
        Dialect::Mysql => Box::new(sqlparser::dialect::MySqlDialect {}),
        _ => Box::new(sqlparser::dialect::PostgreSqlDialect {}),
    };
    let Ok(tokens) = Tokenizer::new(d.as_ref(), sql).tokenize_with_location() else {
        return;
    };
    let starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let want: Vec<usize> = tokens
        .iter()
        .filter(|t| t.token == Token::SemiColon)
        .map(|t| {
            let start = starts[t.span.start.line as usize - 1];
            let rest = &sql[start..];
            start
                + rest
                    .char_indices()
                    .nth(t.span.start.column as usize - 1)
                    .map_or(rest.len(), |(b, _)| b)
        })
        .collect();
    assert_eq!(terminators(sql, dialect), want, "{sql:?}");
    statements_hold(sql, dialect);
}

/// Every statement is a piece of the text, in order, on the line it says.
fn statements_hold(sql: &str, dialect: Dialect) {
    let mut from = 0;
    for st in fleetmig_parse::split::split_for(sql, dialect) {
        assert!(!st.sql.trim().is_empty(), "{sql:?}: an empty statement");
        // every place the text holds it, overlapping ones too
        let mut line = 1 + sql[..from].matches('\n').count();
        let mut at = None;
        for (i, c) in sql[from..].char_indices() {
            if line == st.line && sql[from + i..].starts_with(&st.sql) {
                at = Some(from + i);
                break;
            }
            if c == '\n' {
                line += 1;
            }
        }
        let at = at.unwrap_or_else(|| panic!("{sql:?}: {st:?} is not on its line"));
        from = at + st.sql.len();
    }
}

/// One piece of a generated tenant-scoped migration.
#[derive(Debug, Arbitrary)]
enum Piece {
    Code(u8),
    TenantId,
    Str(String),
    EscapedStr(String),
    BlockComment(String),
    LineComment(String),
    QuotedName(String),
    DollarQuoted(String),
}

/// The binder binds each `:tenant_id` written as code and nothing else:
/// migrations are generated from pieces (code, strings and comments whose
/// text may hold `:tenant_id`), so what must be bound is known.
pub fn bind(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(dialect) = u.choose(&[Dialect::Sqlite, Dialect::Postgres, Dialect::Mysql]) else {
        return;
    };
    let dialect = *dialect;
    let Ok(pieces) = Vec::<Piece>::arbitrary_take_rest(u) else {
        return;
    };
    const CODE: [&str; 10] = ["SELECT", "x", "=", "(", ")", ",", "1", "::int", "+", "t.a"];
    let mark = match dialect {
        Dialect::Postgres => "$1",
        _ => "?",
    };
    let (mut sql, mut want, mut n) = (String::new(), String::new(), 0);
    for p in &pieces {
        let text = match p {
            Piece::Code(c) => CODE[*c as usize % CODE.len()].to_string(),
            Piece::TenantId => {
                sql.push_str(":tenant_id ");
                want.push_str(mark);
                want.push(' ');
                n += 1;
                continue;
            }
            Piece::Str(s) => match dialect {
                Dialect::Mysql => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
                _ => format!("'{}'", s.replace('\'', "''")),
            },
            Piece::EscapedStr(s) => match dialect {
                Dialect::Postgres => {
                    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
                }
                Dialect::Mysql => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''")),
                Dialect::Sqlite => format!("'{}'", s.replace('\'', "''")),
            },
            Piece::BlockComment(s) => {
                // no `*`: no comment inside or end before the last `*/`
                format!("/* {} */", s.replace('*', ""))
            }
            Piece::LineComment(s) => format!("-- {}\n", s.replace(['\n', '\r'], "")),
            Piece::QuotedName(s) => match dialect {
                Dialect::Mysql => format!("`{}`", s.replace('`', "``")),
                _ => format!("\"{}\"", s.replace('"', "\"\"")),
            },
            Piece::DollarQuoted(s) if dialect == Dialect::Postgres => {
                format!("$q${}$q$", s.replace('$', ""))
            }
            Piece::DollarQuoted(s) => format!("'{}'", s.replace(['\'', '\\'], "")),
        };
        sql.push_str(&text);
        sql.push(' ');
        want.push_str(&text);
        want.push(' ');
    }
    let (got, bound) = fleetmig_parse::bind::bind_tenant(&sql, dialect);
    assert_eq!(got, want, "{dialect}: {sql:?}");
    let n = if dialect == Dialect::Postgres {
        n.min(1)
    } else {
        n
    };
    assert_eq!(bound, n, "{dialect}: {sql:?}");
}

/// Text of fleetmig's and the url crate's own messages: a password found
/// in it proves nothing.
const MESSAGES: &str = "not a URL a server URL starts with :// (a host after two slashes) \
    more than one `@` before the host: write an `@` in a user name or password as %40 \
    an `@` after the host: write an `@` past the host as %40, and a `/`, `?` or `#` in a user name or password as %2F, %3F, %23 \
    no host *** empty host invalid international domain name invalid port number \
    invalid IPv4 address invalid IPv6 address invalid domain character \
    relative URL without a base relative URL with a cannot-be-a-base base \
    a cannot-be-a-base URL doesn’t have a host to set URLs more than 4 GB are not supported";

/// A URL with a password (raw or percent-encoded) chosen to be no
/// substring of the rest of the URL: no redaction (of the URL, of free text
/// holding it, of a check's error) shows it.
pub fn redact(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(scheme), Ok(slashes), Ok(user), Ok(pw), Ok(host), Ok(tail), Ok(encode)) = (
        u.choose(&["postgres", "postgresql", "mysql", "mariadb"]),
        u.choose(&["//", "/", ""]),
        String::arbitrary(&mut u),
        String::arbitrary(&mut u),
        String::arbitrary(&mut u),
        String::arbitrary(&mut u),
        bool::arbitrary(&mut u),
    ) else {
        return;
    };
    let written: String = if encode {
        url::form_urlencoded::byte_serialize(pw.as_bytes()).collect()
    } else {
        pw.clone()
    };
    // the user part ends at the password's `:`, the host at the path
    let user: String = user.chars().filter(|c| !":@/?#".contains(*c)).collect();
    let host: String = host.chars().filter(|c| !"@/?#".contains(*c)).collect();
    let url = format!("{scheme}:{slashes}{user}:{written}@{host}/{tail}");
    // the rest of the URL, bare and as redaction writes it
    let rest = [
        format!("{scheme}:{slashes}{user}:@{host}/{tail}"),
        format!("{scheme}:{slashes}{user}:***@{host}/{tail}"),
        format!("{scheme}:{slashes}***@{host}/{tail}"),
        format!("{scheme}:***@{host}/{tail}"),
    ];
    let secrets = [pw.as_str(), written.as_str()];
    // a character of the password found nowhere else: an output holding
    // the password got it from the password
    // (nor in what percent-encoding writes: `%`, digits, `A`-`F`)
    let own = |c: char| {
        !rest.iter().any(|r| r.contains(c))
            && !MESSAGES.contains(c)
            && !"*%0123456789ABCDEF".contains(c)
    };
    if pw.chars().count() < 3
        || !pw.chars().any(own)
        || secrets
            .iter()
            .any(|s| rest.iter().any(|r| r.contains(s)) || MESSAGES.contains(s) || s.contains('\0'))
    {
        return;
    }
    let show = |what: &str, out: &str| {
        for s in secrets {
            assert!(!out.contains(s), "{what} shows {s:?}: {url:?} -> {out:?}");
        }
    };
    show("redact_url", &fleetmig_parse::secrets::redact_url(&url));
    show("redact_loose", &fleetmig_parse::secrets::redact_loose(&url));
    show(
        "redact_userinfo",
        &fleetmig_parse::secrets::redact_userinfo(&url),
    );
    if let Err(e) = fleetmig_parse::secrets::check_server_url(&url) {
        show("check_server_url", &e);
    }
    // free text ends a URL at a blank or a quote
    if !secrets
        .iter()
        .any(|s| s.contains(|c: char| c.is_whitespace() || "\"'`".contains(c)))
        && !url.contains(char::is_whitespace)
    {
        let line = format!("error connecting to {url}: refused");
        show("redact_text", &fleetmig_parse::secrets::redact_text(&line));
    }
}

/// Directives: any text is read or refused naming a line of it.
pub fn directive(data: &[u8]) {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = fleetmig_parse::directive::parse(sql) {
        assert!(
            e.line >= 1 && e.line <= sql.lines().count().max(1),
            "{sql:?}: {e}"
        );
        assert!(!e.message.is_empty());
    }
}

/// File names: what parses says what the name says.
pub fn name(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(p)) = fleetmig_parse::name::parse_name(name) {
        assert!(p.version > 0, "{name:?}");
        let digits = name.split('_').next().unwrap_or("");
        assert_eq!(digits.parse::<i64>().ok(), Some(p.version), "{name:?}");
        assert!(name.ends_with(".sql") && !name.ends_with(".verify.sql"));
    }
}

/// The registry: rows or an error naming a line of the file; every row's
/// id and url non-empty cells on a line of the file.
pub fn registry(data: &[u8]) {
    let lines = data.split(|b| *b == b'\n').count() as u64;
    match fleetmig_parse::registry::rows(data) {
        Ok(rows) => {
            for r in &rows {
                // (a lone `\r` ends a record, not a line)
                assert!(r.line >= 1 && r.line <= lines, "line {} of {lines}", r.line);
            }
            rewritten(data, &rows);
        }
        Err(e) => {
            assert!(
                e.line >= 1 && e.line <= lines.max(1),
                "line {} of {lines}",
                e.line
            );
            assert!(!e.message.is_empty());
        }
    }
}

/// A registry whose rows parse, with its first tenant's row pointed
/// elsewhere (a move's switch): the same rows, that one's url changed, and
/// every byte before that row as it was.
fn rewritten(data: &[u8], rows: &[fleetmig_parse::registry::Row]) {
    let Some(first) = rows.first() else {
        return;
    };
    let to = "postgres://db.example/app,\"x\"";
    let Ok(bytes) = fleetmig_parse::registry::rewrite(data, &first.id, to, None) else {
        return;
    };
    let again =
        fleetmig_parse::registry::rows(bytes.as_slice()).expect("the rewritten registry parses");
    assert_eq!(again.len(), rows.len());
    let moved = again
        .iter()
        .position(|r| r.id == first.id && r.url == to)
        .expect("the moved row points at its new place");
    for (i, (a, b)) in rows.iter().zip(&again).enumerate() {
        if i != moved {
            assert_eq!(
                (&a.id, &a.url, &a.schema, &a.tags),
                (&b.id, &b.url, &b.schema, &b.tags)
            );
        }
    }
    let common = data.iter().zip(&bytes).take_while(|(a, b)| a == b).count();
    let header_end = data
        .iter()
        .position(|b| *b == b'\n' || *b == b'\r')
        .unwrap_or(data.len());
    assert!(common >= header_end, "the header changed");
}

/// Waves: a parsed spec, written back, parses to the same waves.
pub fn waves(data: &[u8]) {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(waves) = fleetmig_parse::waves::parse(spec) else {
        return;
    };
    assert!(!waves.is_empty());
    let written: Vec<String> = waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            // a name the parser gives a wave unnamed is written unnamed
            let given = match &w.selector {
                fleetmig_parse::waves::Selector::Tag { key, .. } if i == 0 => key.clone(),
                _ => format!("wave{}", i + 1),
            };
            if w.name == given {
                w.selector.to_string()
            } else {
                format!("{}={}", w.name, w.selector)
            }
        })
        .collect();
    let again = fleetmig_parse::waves::parse(&written.join(","))
        .unwrap_or_else(|e| panic!("{spec:?} -> {written:?}: {e}"));
    assert_eq!(again, waves, "{spec:?}");
}

/// Durations: never more than the most a server timer takes; an error says
/// what is wrong (the flag is named by the caller's typed usage error).
pub fn duration(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    match fleetmig_parse::duration::parse(value) {
        Ok(d) => assert!(d <= fleetmig_parse::duration::MAX_DURATION),
        Err(e) => assert!(!e.trim().is_empty(), "{value:?}: an empty error"),
    }
}
