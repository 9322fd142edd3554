//! Splits a SQL script into statements at top-level semicolons, by each
//! dialect's own rules, where a database cannot run a script as one unit
//! (MySQL commits DDL one statement at a time; a no-transaction migration
//! runs statement by statement), so that a failure can say which statement
//! ran last:
//! - everywhere: quotes (`'…'`, `"…"`), `--` and `/* */` comments;
//! - PostgreSQL: dollar-quoted bodies (`$$…$$`, `$tag$…$tag$`), backslash
//!   escapes only in `E'…'` strings (`\'` is not an escape in a standard
//!   string), nested block comments, `#` an operator;
//! - MySQL: backslash escapes in strings, backquoted names, `#` comments,
//!   `--` a comment only before a space, conditional comments (`/*!50610 …
//!   */`, `/*M!…*/`) code the server runs, `BEGIN … END` bodies of
//!   triggers, procedures, functions and events kept whole, and the `mysql`
//!   client's `DELIMITER` lines of dumps understood;
//! - SQLite: `[…]` and backquoted names, `BEGIN … END` bodies of triggers.

use crate::Dialect;

/// One statement, with the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub line: usize,
    pub sql: String,
}

/// Splits `sql` by PostgreSQL's rules (see `split_for`).
pub fn split_statements(sql: &str) -> Vec<Statement> {
    split_for(sql, Dialect::Postgres)
}

/// Splits `sql` by `dialect`'s rules; statements that hold only comments
/// and blanks are dropped.
pub fn split_for(sql: &str, dialect: Dialect) -> Vec<Statement> {
    let mut s = Splitter {
        b: sql.as_bytes(),
        sql,
        dialect,
        out: Vec::new(),
        i: 0,
        line: 1,
        start: 0,
        start_line: 1,
        depth: 0,
        delimiter: b";".to_vec(),
    };
    s.run();
    s.out
}

struct Splitter<'a> {
    b: &'a [u8],
    sql: &'a str,
    dialect: Dialect,
    out: Vec<Statement>,
    i: usize,
    line: usize,
    start: usize,
    start_line: usize,
    /// BEGIN … END blocks open in a compound statement.
    depth: usize,
    /// MySQL's `DELIMITER`, `;` unless a dump changed it.
    delimiter: Vec<u8>,
}

impl Splitter<'_> {
    fn run(&mut self) {
        while self.i < self.b.len() {
            if self.at_line_start() && self.dialect == Dialect::Mysql && self.delimiter_line() {
                continue;
            }
            let c = self.b[self.i];
            match c {
                b'\n' => self.line += 1,
                b'\'' | b'"' => self.quoted(c, self.escapes(c)),
                b'`' if self.dialect != Dialect::Postgres => self.quoted(c, false),
                b'[' if self.dialect == Dialect::Sqlite => self.until(b']'),
                b'-' if self.b.get(self.i + 1) == Some(&b'-') && self.dash_comment() => {
                    self.skip_line();
                    continue;
                }
                b'#' if self.dialect == Dialect::Mysql => {
                    self.skip_line();
                    continue;
                }
                b'/' if self.b.get(self.i + 1) == Some(&b'*') => {
                    self.block_comment();
                    continue;
                }
                b'$' if self.dialect == Dialect::Postgres && self.dollar_quote() => continue,
                c if c.is_ascii_alphabetic() && self.dialect != Dialect::Postgres => {
                    self.word();
                    continue;
                }
                _ => {}
            }
            if self.depth == 0 && self.b[self.i..].starts_with(&self.delimiter) {
                let end = self.i;
                self.push(end);
                self.i += self.delimiter.len();
                self.start = self.i;
                self.start_line = self.line;
                continue;
            }
            self.i += 1;
        }
        if self.start < self.sql.len() {
            self.push(self.sql.len());
        }
    }

    fn at_line_start(&self) -> bool {
        self.i == 0 || self.b[self.i - 1] == b'\n'
    }

    /// A `DELIMITER x` line of a MySQL dump: the delimiter changes, and the
    /// line is no SQL.
    fn delimiter_line(&mut self) -> bool {
        let rest = &self.sql[self.i..];
        let end = rest.find('\n').unwrap_or(rest.len());
        let line = rest[..end].trim();
        let Some(d) = line
            .get(..10)
            .filter(|p| p.eq_ignore_ascii_case("delimiter "))
            .map(|_| line[10..].trim())
        else {
            return false;
        };
        if d.is_empty() {
            return false;
        }
        // what came before is a statement of its own
        let here = self.i;
        self.push(here);
        self.delimiter = d.as_bytes().to_vec();
        self.i += end;
        self.start = self.i;
        self.start_line = self.line;
        true
    }

    /// Whether a string quoted by `q` takes backslash escapes.
    fn escapes(&self, q: u8) -> bool {
        match self.dialect {
            Dialect::Mysql => true,
            Dialect::Sqlite => false,
            // only E'…' strings; never identifiers
            Dialect::Postgres => {
                q == b'\''
                    && self.i > 0
                    && matches!(self.b[self.i - 1], b'E' | b'e')
                    && (self.i < 2
                        || !(self.b[self.i - 2].is_ascii_alphanumeric()
                            || self.b[self.i - 2] == b'_'))
            }
        }
    }

    fn quoted(&mut self, q: u8, backslash: bool) {
        self.i += 1;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            if c == b'\n' {
                self.line += 1;
            }
            if backslash && c == b'\\' {
                if self.b.get(self.i + 1) == Some(&b'\n') {
                    self.line += 1;
                }
                self.i += 2;
                continue;
            }
            if c == q {
                if self.b.get(self.i + 1) == Some(&q) {
                    self.i += 2;
                    continue;
                }
                break;
            }
            self.i += 1;
        }
    }

    fn until(&mut self, close: u8) {
        while self.i < self.b.len() && self.b[self.i] != close {
            if self.b[self.i] == b'\n' {
                self.line += 1;
            }
            self.i += 1;
        }
    }

    /// `--` starts a comment (MySQL: only before a blank or the end).
    fn dash_comment(&self) -> bool {
        self.dialect != Dialect::Mysql
            || self
                .b
                .get(self.i + 2)
                .is_none_or(|c| c.is_ascii_whitespace())
    }

    fn skip_line(&mut self) {
        while self.i < self.b.len() && self.b[self.i] != b'\n' {
            self.i += 1;
        }
    }

    /// A block comment (PostgreSQL nests them); MySQL's conditional comments
    /// are skipped the same way (their `;` is not the statement's end) but
    /// count as code (`code_offset`).
    fn block_comment(&mut self) {
        let nests = self.dialect == Dialect::Postgres;
        let mut level = 0usize;
        while self.i < self.b.len() {
            if self.b[self.i..].starts_with(b"/*") && (level == 0 || nests) {
                level += 1;
                self.i += 2;
                continue;
            }
            if self.b[self.i..].starts_with(b"*/") {
                level -= 1;
                self.i += 2;
                if level == 0 {
                    return;
                }
                continue;
            }
            if self.b[self.i] == b'\n' {
                self.line += 1;
            }
            self.i += 1;
        }
    }

    /// `$tag$ … $tag$`: true when one was skipped.
    fn dollar_quote(&mut self) -> bool {
        let i = self.i;
        let Some(end) = self.sql[i + 1..].find('$') else {
            return false;
        };
        let tag = &self.sql[i..i + end + 2];
        let plain = tag[1..tag.len() - 1]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain || (i > 0 && (self.b[i - 1].is_ascii_alphanumeric() || self.b[i - 1] == b'_')) {
            return false;
        }
        let Some(close) = self.sql[i + tag.len()..].find(tag) else {
            return false;
        };
        let body_end = i + tag.len() + close + tag.len();
        self.line += self.sql[i..body_end].matches('\n').count();
        self.i = body_end;
        true
    }

    /// A word (MySQL, SQLite): `BEGIN`, `CASE` and `END` of a compound
    /// statement's body move its depth.
    fn word(&mut self) {
        let from = self.i;
        while self.i < self.b.len()
            && (self.b[self.i].is_ascii_alphanumeric() || self.b[self.i] == b'_')
        {
            self.i += 1;
        }
        if from > 0
            && (self.b[from - 1].is_ascii_alphanumeric()
                || matches!(self.b[from - 1], b'_' | b'.' | b'@' | b'$'))
        {
            return;
        }
        let w = &self.sql[from..self.i];
        if !self.compound() {
            return;
        }
        if w.eq_ignore_ascii_case("BEGIN") || w.eq_ignore_ascii_case("CASE") {
            self.depth += 1;
        } else if w.eq_ignore_ascii_case("END") && self.depth > 0 {
            // END IF / END LOOP / END WHILE / END REPEAT close what was not
            // counted; END and END CASE close a BEGIN or a CASE
            let next = self.sql[self.i..]
                .trim_start()
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            if !matches!(next.as_str(), "IF" | "LOOP" | "WHILE" | "REPEAT") {
                self.depth -= 1;
            }
        }
    }

    /// Whether the statement being read is one with a `BEGIN … END` body:
    /// `CREATE [OR REPLACE] [DEFINER=…] [TEMP] TRIGGER|PROCEDURE|FUNCTION|EVENT`.
    fn compound(&self) -> bool {
        let text = &self.sql[self.start..self.i];
        let words: Vec<String> = strip_comments(text)
            .split(|c: char| c.is_whitespace() || c == '(')
            .filter(|w| !w.is_empty())
            .take(8)
            .map(|w| w.to_ascii_uppercase())
            .collect();
        words.first().map(String::as_str) == Some("CREATE")
            && words
                .iter()
                .any(|w| matches!(w.as_str(), "TRIGGER" | "PROCEDURE" | "FUNCTION" | "EVENT"))
    }

    fn push(&mut self, end: usize) {
        let text = &self.sql[self.start..end];
        if let Some(at) = code_offset(text, self.dialect) {
            self.out.push(Statement {
                line: self.start_line + text[..at].matches('\n').count(),
                sql: text[at..].trim_end().to_string(),
            });
        }
    }
}

/// `text` with its leading comments taken off (for `compound`).
fn strip_comments(text: &str) -> String {
    match code_offset(text, Dialect::Mysql) {
        Some(at) => text[at..].to_string(),
        None => String::new(),
    }
}

/// The byte offset of the first character of `text` that is not blank or
/// comment, if any (a MySQL conditional comment is code).
fn code_offset(text: &str, dialect: Dialect) -> Option<usize> {
    let mut at = 0;
    loop {
        let rest = &text[at..];
        let trimmed = rest.trim_start();
        at += rest.len() - trimmed.len();
        if trimmed.is_empty() {
            return None;
        }
        let mysql = dialect == Dialect::Mysql;
        if trimmed.starts_with("--") || (mysql && trimmed.starts_with('#')) {
            at += trimmed.find('\n').map(|i| i + 1).unwrap_or(trimmed.len());
        } else if trimmed.starts_with("/*")
            && !(mysql && (trimmed.starts_with("/*!") || trimmed.starts_with("/*M!")))
        {
            at += trimmed.find("*/").map(|i| i + 2).unwrap_or(trimmed.len());
        } else {
            return Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqls(v: &[Statement]) -> Vec<&str> {
        v.iter().map(|s| s.sql.as_str()).collect()
    }

    #[test]
    fn splits_at_top_level_semicolons() {
        let s = split_for(
            "-- header; not a statement\nCREATE TABLE a (x TEXT DEFAULT 'a;b');\n\n\
             INSERT INTO a VALUES (\"q;\"), (`c;`);  /* ; */\nUPDATE a SET x = 'it''s;'\n",
            Dialect::Mysql,
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

    #[test]
    fn backslashes_escape_where_the_dialect_says_so() {
        // PostgreSQL: a standard string ends at the quote after the backslash
        let pg = split_for("SELECT 'x \\'; SELECT 2;", Dialect::Postgres);
        assert_eq!(sqls(&pg), vec!["SELECT 'x \\'", "SELECT 2"]);
        // …but an E'' string takes the escape
        let pg = split_for("SELECT E'x \\'; y'; SELECT 2;", Dialect::Postgres);
        assert_eq!(sqls(&pg), vec!["SELECT E'x \\'; y'", "SELECT 2"]);
        // MySQL: always
        let my = split_for(
            "UPDATE t SET a = 'x \\' y; z' WHERE id = :tenant_id; SELECT 2",
            Dialect::Mysql,
        );
        assert_eq!(my.len(), 2, "{my:?}");
        assert!(my[0].sql.ends_with(":tenant_id"));
        // SQLite: never
        let lite = split_for("SELECT 'x \\'; SELECT [a;b] FROM t;", Dialect::Sqlite);
        assert_eq!(sqls(&lite), vec!["SELECT 'x \\'", "SELECT [a;b] FROM t"]);
        // `#` is PostgreSQL's XOR, MySQL's comment
        assert_eq!(
            split_for("SELECT 1 # 2; SELECT 3", Dialect::Postgres).len(),
            2
        );
        assert_eq!(
            split_for("SELECT 1 # 2; SELECT 3\nSELECT 4", Dialect::Mysql).len(),
            1
        );
    }

    #[test]
    fn mysql_trigger_bodies_conditional_comments_and_delimiters() {
        let sql = "CREATE TABLE t (a int);\n\
             CREATE TRIGGER t_bi BEFORE INSERT ON t FOR EACH ROW BEGIN\n\
               IF NEW.a < 0 THEN SET NEW.a = 0; END IF;\n\
               SET NEW.a = CASE WHEN NEW.a > 9 THEN 9 ELSE NEW.a END;\n\
             END;\n\
             /*!50610 ALTER TABLE t ENGINE=InnoDB */;\n\
             INSERT INTO t VALUES (1);\n";
        let s = split_for(sql, Dialect::Mysql);
        assert_eq!(s.len(), 4, "{s:#?}");
        assert!(
            s[1].sql.starts_with("CREATE TRIGGER") && s[1].sql.ends_with("END"),
            "{}",
            s[1].sql
        );
        assert_eq!(s[2].sql, "/*!50610 ALTER TABLE t ENGINE=InnoDB */");
        assert_eq!(s[3].line, 7);
        let dump = "DELIMITER ;;\nCREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END ;;\nDELIMITER ;\nSELECT 3;\n";
        let s = split_for(dump, Dialect::Mysql);
        assert_eq!(
            sqls(&s),
            vec![
                "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END",
                "SELECT 3"
            ]
        );
        // a transaction's BEGIN is no body
        assert_eq!(
            split_for("BEGIN; SELECT 1; COMMIT;", Dialect::Mysql).len(),
            3
        );
    }

    #[test]
    fn sqlite_trigger_bodies_stay_whole() {
        let s = split_for(
            "CREATE TABLE a (x);\nCREATE TRIGGER a_log AFTER INSERT ON a BEGIN INSERT INTO b VALUES (1); UPDATE c SET y = 2; END;\nSELECT 1;",
            Dialect::Sqlite,
        );
        assert_eq!(s.len(), 3, "{s:?}");
        assert!(s[1].sql.ends_with("END"));
    }
}
