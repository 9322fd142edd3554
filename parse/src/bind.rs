//! The `:tenant_id` binder of row tenants' migrations: each `:tenant_id`
//! outside strings and comments, found by the dialect's own tokenizer,
//! becomes a bind parameter; the id is never pasted into the text.

use crate::Dialect;

/// The name a tenant-scoped migration writes for its tenant's id.
pub const TENANT_ID: &str = ":tenant_id";

/// `sql` with each `:tenant_id` (outside strings and comments) turned into
/// a bind parameter of `dialect`, and how many times the id is bound. The
/// rest of the text is kept byte for byte.
pub fn bind_tenant(sql: &str, dialect: Dialect) -> (String, usize) {
    use sqlparser::tokenizer::{Token, Tokenizer};
    // the dialect's own string rules: MySQL's `'x \' y'` is one string (a
    // generic tokenizer ended it at the backslash and took `:tenant_id`
    // after it for part of a string)
    let d: Box<dyn sqlparser::dialect::Dialect> = match dialect {
        Dialect::Mysql => Box::new(sqlparser::dialect::MySqlDialect {}),
        Dialect::Postgres => Box::new(sqlparser::dialect::PostgreSqlDialect {}),
        Dialect::Sqlite => Box::new(sqlparser::dialect::SQLiteDialect {}),
    };
    let Ok(tokens) = Tokenizer::new(d.as_ref(), sql).tokenize_with_location() else {
        return (sql.to_string(), 0);
    };
    // byte offset of each line's start, to turn (line, column) into offsets
    let starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |line: u64, column: u64| -> Option<usize> {
        let start = *starts.get(line.checked_sub(1)? as usize)?;
        let rest = &sql[start..];
        let skip = column.checked_sub(1)? as usize;
        Some(start + rest.char_indices().nth(skip).map_or(rest.len(), |(b, _)| b))
    };
    let mut out = String::with_capacity(sql.len());
    let (mut copied, mut n) = (0, 0);
    for (i, t) in tokens.iter().enumerate() {
        // `:tenant_id` is a colon and a bare word to the tokenizer (`::` is
        // one token of its own, so a cast never matches)
        let named = matches!(t.token, Token::Colon)
            && matches!(tokens.get(i + 1).map(|t| &t.token), Some(Token::Word(w))
                if w.quote_style.is_none() && w.value == TENANT_ID[1..]);
        let Some(at) = named
            .then(|| offset(t.span.start.line, t.span.start.column))
            .flatten()
            .filter(|at| sql[*at..].starts_with(TENANT_ID))
        else {
            continue;
        };
        out.push_str(&sql[copied..at]);
        out.push_str(match dialect {
            Dialect::Postgres => "$1",
            _ => "?",
        });
        copied = at + TENANT_ID.len();
        n += 1;
    }
    out.push_str(&sql[copied..]);
    let n = match dialect {
        Dialect::Postgres => n.min(1),
        _ => n,
    };
    (out, n)
}
