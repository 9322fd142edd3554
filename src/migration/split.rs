//! Splits a SQL script into statements at top-level semicolons, skipping
//! semicolons inside quotes ('...', "...", `...`), dollar-quoted bodies
//! ($$...$$, $tag$...$tag$) and comments. Used where a database cannot run a
//! script as one unit (MySQL commits DDL one statement at a time), so that a
//! failure can say which statement ran last.

/// One statement, with the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub line: usize,
    pub sql: String,
}

/// Splits `sql`; statements that hold only comments and blanks are dropped.
pub fn split_statements(sql: &str) -> Vec<Statement> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut line = 1;
    let mut start_line = 1;
    let push = |out: &mut Vec<Statement>, text: &str, line: usize| {
        if let Some(at) = code_offset(text) {
            out.push(Statement {
                line: line + text[..at].matches('\n').count(),
                sql: text[at..].trim_end().to_string(),
            });
        }
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => line += 1,
            b'\'' | b'"' | b'`' => {
                i += 1;
                while i < b.len() {
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    if b[i] == b'\\' && c == b'\'' {
                        i += 2;
                        continue;
                    }
                    if b[i] == c {
                        if i + 1 < b.len() && b[i + 1] == c {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'$' => {
                // $tag$ ... $tag$
                if let Some(end) = sql[i + 1..].find('$') {
                    let tag = &sql[i..i + end + 2];
                    let plain = tag[1..tag.len() - 1]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if let Some(close) = sql[i + tag.len()..].find(tag).filter(|_| plain) {
                        let body_end = i + tag.len() + close + tag.len();
                        line += sql[i..body_end].matches('\n').count();
                        i = body_end;
                        continue;
                    }
                }
            }
            b';' => {
                push(&mut out, &sql[start..i], start_line);
                start = i + 1;
                start_line = line;
            }
            _ => {}
        }
        i += 1;
    }
    if start < sql.len() {
        push(&mut out, &sql[start..], start_line);
    }
    out
}

/// The byte offset of the first character of `text` that is not blank or
/// comment, if any.
fn code_offset(text: &str) -> Option<usize> {
    let mut at = 0;
    loop {
        let rest = &text[at..];
        let trimmed = rest.trim_start();
        at += rest.len() - trimmed.len();
        if trimmed.is_empty() {
            return None;
        }
        if trimmed.starts_with("--") || trimmed.starts_with('#') {
            at += trimmed.find('\n').map(|i| i + 1).unwrap_or(trimmed.len());
        } else if trimmed.starts_with("/*") {
            at += trimmed.find("*/").map(|i| i + 2).unwrap_or(trimmed.len());
        } else {
            return Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_top_level_semicolons() {
        let s = split_statements(
            "-- header; not a statement\nCREATE TABLE a (x TEXT DEFAULT 'a;b');\n\n\
             INSERT INTO a VALUES (\"q;\"), (`c;`);  /* ; */\nUPDATE a SET x = 'it''s;'\n",
        );
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0].line, 2);
        assert!(s[0].sql.starts_with("CREATE TABLE a"));
        assert_eq!(s[1].line, 4);
        assert_eq!(s[2].sql, "UPDATE a SET x = 'it''s;'");
    }

    #[test]
    fn dollar_quotes_and_trailing_comments() {
        let s = split_statements(
            "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n-- done\n",
        );
        assert_eq!(s.len(), 1);
        assert!(s[0].sql.ends_with("LANGUAGE sql"));
        assert!(split_statements("-- only a comment;\n").is_empty());
    }
}
