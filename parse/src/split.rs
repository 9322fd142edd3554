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
//! - SQLite: exactly where the `sqlite3` shell ends a statement, by the
//!   state machine of SQLite's own `sqlite3_complete` (complete.c): quotes,
//!   `[…]` and backquoted names, comments, and a `CREATE [TEMP] TRIGGER`
//!   that ends only at `; END ;`.

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
    split_at(sql, dialect).0
}

/// The byte offset of every terminator (`;`, or a dump's `DELIMITER`) that
/// ends a statement of `sql` by `dialect`'s rules, statements of only
/// comments included: what the fuzz targets compare with a reference.
pub fn terminators(sql: &str, dialect: Dialect) -> Vec<usize> {
    split_at(sql, dialect).1
}

fn split_at(sql: &str, dialect: Dialect) -> (Vec<Statement>, Vec<usize>) {
    if dialect == Dialect::Sqlite {
        let ends = sqlite_ends(sql);
        let mut out = Vec::new();
        let (mut start, mut line) = (0, 1);
        for &end in ends.iter().chain(std::iter::once(&sql.len())) {
            let text = &sql[start..end];
            push_statement(&mut out, text, line, dialect);
            line += text.matches('\n').count();
            start = (end + 1).min(sql.len());
        }
        return (out, ends);
    }
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
        ends: Vec::new(),
    };
    s.run();
    (s.out, s.ends)
}

/// Where SQLite's `sqlite3_complete` says a statement ends: each `;` after
/// which its state machine is back at the start. A port of complete.c
/// (public domain), token for token; the fuzz target `split_sqlite` holds
/// it to the C function.
fn sqlite_ends(sql: &str) -> Vec<usize> {
    #[derive(Clone, Copy)]
    enum Tk {
        Semi = 0,
        Ws,
        Other,
        Explain,
        Create,
        Temp,
        Trigger,
        End,
    }
    // states: 0 invalid, 1 start, 2 normal, 3 explain, 4 create,
    // 5 trigger, 6 semi (in a trigger), 7 end (in a trigger)
    const TRANS: [[u8; 8]; 8] = [
        [1, 0, 2, 3, 4, 2, 2, 2],
        [1, 1, 2, 3, 4, 2, 2, 2],
        [1, 2, 2, 2, 2, 2, 2, 2],
        [1, 3, 3, 2, 4, 2, 2, 2],
        [1, 4, 2, 2, 2, 4, 5, 2],
        [6, 5, 5, 5, 5, 5, 5, 5],
        [6, 6, 5, 5, 5, 5, 5, 7],
        [1, 7, 5, 5, 5, 5, 5, 5],
    ];
    let id = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    let b = sql.as_bytes();
    let find = |from: usize, what: &[u8]| {
        b[from.min(b.len())..]
            .windows(what.len())
            .position(|w| w == what)
            .map(|p| from + p)
    };
    let (mut state, mut i, mut ends) = (0u8, 0usize, Vec::new());
    while i < b.len() {
        let tk = match b[i] {
            b';' => Tk::Semi,
            b' ' | b'\r' | b'\t' | b'\n' | 0x0c => Tk::Ws,
            b'/' if b.get(i + 1) == Some(&b'*') => match find(i + 2, b"*/") {
                Some(close) => {
                    i = close + 1;
                    Tk::Ws
                }
                None => break,
            },
            b'-' if b.get(i + 1) == Some(&b'-') => match find(i, b"\n") {
                Some(nl) => {
                    i = nl;
                    Tk::Ws
                }
                None => break,
            },
            b'[' => match find(i + 1, b"]") {
                Some(close) => {
                    i = close;
                    Tk::Other
                }
                None => break,
            },
            q @ (b'`' | b'"' | b'\'') => match find(i + 1, &[q]) {
                Some(close) => {
                    i = close;
                    Tk::Other
                }
                None => break,
            },
            c if id(c) => {
                let n = b[i..].iter().take_while(|c| id(**c)).count();
                let w = &b[i..i + n];
                i += n - 1;
                let is = |k: &str| w.eq_ignore_ascii_case(k.as_bytes());
                if is("create") {
                    Tk::Create
                } else if is("trigger") {
                    Tk::Trigger
                } else if is("temp") || is("temporary") {
                    Tk::Temp
                } else if is("end") {
                    Tk::End
                } else if is("explain") {
                    Tk::Explain
                } else {
                    Tk::Other
                }
            }
            _ => Tk::Other,
        };
        state = TRANS[state as usize][tk as usize];
        if state == 1 && matches!(tk, Tk::Semi) {
            ends.push(i);
        }
        i += 1;
    }
    ends
}

/// Adds `text` (one statement's bytes, its terminator left off) to `out`
/// unless it holds only blanks and comments.
fn push_statement(out: &mut Vec<Statement>, text: &str, line: usize, dialect: Dialect) {
    if let Some(at) = code_offset(text, dialect) {
        out.push(Statement {
            line: line + text[..at].matches('\n').count(),
            sql: text[at..].trim_end().to_string(),
        });
    }
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
    /// The offset of each terminator found.
    ends: Vec<usize>,
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
                b'\'' | b'"' => self.quoted(c, self.escapes()),
                b'`' if self.dialect != Dialect::Postgres => self.quoted(c, false),
                b'-' if self.b.get(self.i + 1) == Some(&b'-') && self.dash_comment() => {
                    self.skip_line(self.dialect == Dialect::Postgres);
                    continue;
                }
                b'#' if self.dialect == Dialect::Mysql => {
                    self.skip_line(false);
                    continue;
                }
                b'/' if self.b.get(self.i + 1) == Some(&b'*') => {
                    self.block_comment();
                    continue;
                }
                b'$' if self.dialect == Dialect::Postgres && self.dollar_quote() => continue,
                // PostgreSQL: a name takes `$` (`a$b$` starts no quote), a
                // number does not (`2$t$x$t$` is 2 and a quoted string)
                c if self.dialect == Dialect::Postgres
                    && (c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80) =>
                {
                    self.pg_word();
                    continue;
                }
                c if c.is_ascii_alphabetic() && self.dialect != Dialect::Postgres => {
                    self.word();
                    continue;
                }
                _ => {}
            }
            if self.depth == 0 && self.b[self.i..].starts_with(&self.delimiter) {
                let end = self.i;
                self.ends.push(end);
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

    /// Whether strings take backslash escapes (MySQL); PostgreSQL's `E'…'`
    /// strings are read by `pg_word`.
    fn escapes(&self) -> bool {
        self.dialect == Dialect::Mysql
    }

    /// A PostgreSQL name or number, and the `E'…'` string a lone `E` starts.
    fn pg_word(&mut self) {
        let from = self.i;
        let number = self.b[from].is_ascii_digit();
        // PostgreSQL 16's `0x1F`, `0o17`, `0b101` (`0b0$$…$$` is a number,
        // then a quote)
        let digit = |r: u8, c: u8| match r.to_ascii_lowercase() {
            b'x' => c.is_ascii_hexdigit() || c == b'_',
            b'o' => (b'0'..=b'7').contains(&c) || c == b'_',
            _ => c == b'0' || c == b'1' || c == b'_',
        };
        if number
            && self.b[from] == b'0'
            && (from == 0 || self.b[from - 1] != b'.')
            && let Some(&r) = self.b.get(from + 1).filter(|r| b"xXoObB".contains(r))
            && self.b.get(from + 2).is_some_and(|c| digit(r, *c))
        {
            self.i = from + 2;
            while self.b.get(self.i).is_some_and(|c| digit(r, *c)) {
                self.i += 1;
            }
            return;
        }
        // a number: digits, one `.` not part of `..`, digits (`_` between)
        let mut dot = false;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            let part = if number {
                let point = c == b'.'
                    && !dot
                    && self.b.get(self.i + 1) != Some(&b'.')
                    && self.b[self.i - 1] != b'.';
                dot |= point;
                c.is_ascii_digit() || c == b'_' || point
            } else {
                c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
            };
            if !part {
                break;
            }
            self.i += 1;
        }
        // a number's exponent: `0e0$$` is a number, then a quote
        if number && matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            let sign = matches!(self.b.get(self.i + 1), Some(b'+' | b'-')) as usize;
            if self
                .b
                .get(self.i + 1 + sign)
                .is_some_and(u8::is_ascii_digit)
            {
                self.i += 1 + sign;
                while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
                    self.i += 1;
                }
            }
        }
        if self.sql[from..self.i].eq_ignore_ascii_case("e") && self.b.get(self.i) == Some(&b'\'') {
            self.quoted(b'\'', true);
            self.i = (self.i + 1).min(self.b.len());
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

    /// `--` starts a comment (MySQL: only before a blank, a control
    /// character or the end).
    fn dash_comment(&self) -> bool {
        self.dialect != Dialect::Mysql || self.b.get(self.i + 2).is_none_or(|c| *c <= b' ')
    }

    /// To the end of a line comment: its `\n` (PostgreSQL's also end at a
    /// `\r`, `cr`).
    fn skip_line(&mut self, cr: bool) {
        while self.i < self.b.len() && self.b[self.i] != b'\n' && !(cr && self.b[self.i] == b'\r') {
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

    /// `$tag$ … $tag$`: true when one was skipped. As PostgreSQL's lexer: a
    /// tag is empty or an identifier not starting with a digit (`$1` is a
    /// parameter); a `$` inside a name never gets here (`pg_word`).
    fn dollar_quote(&mut self) -> bool {
        let i = self.i;
        let Some(end) = self.sql[i + 1..].find('$') else {
            return false;
        };
        let tag = &self.sql[i..i + end + 2];
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii();
        let name = &tag[1..tag.len() - 1];
        if !name.chars().all(ident) || name.starts_with(|c: char| c.is_ascii_digit()) {
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
        push_statement(&mut self.out, text, self.start_line, self.dialect);
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
        // MySQL's `--` is a comment only before a blank or a control
        // character (`--1` is code)
        let dashes =
            trimmed.starts_with("--") && !(mysql && trimmed[2..].starts_with(|c: char| c > ' '));
        if dashes || (mysql && trimmed.starts_with('#')) {
            // PostgreSQL ends a line comment at a `\r` too
            let end = match dialect {
                Dialect::Postgres => trimmed.find(['\n', '\r']),
                _ => trimmed.find('\n'),
            };
            at += end.map(|i| i + 1).unwrap_or(trimmed.len());
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
    fn postgres_dollar_quotes_as_its_lexer_reads_them() {
        // after a number a `$` starts a quote; inside a name it does not
        let s = split_for("SELECT 2$t$;$t$; SELECT a$b$; SELECT 3", Dialect::Postgres);
        assert_eq!(sqls(&s), vec!["SELECT 2$t$;$t$", "SELECT a$b$", "SELECT 3"]);
        let s = split_for("SELECT 0e0$$;$$; SELECT 1e$$;", Dialect::Postgres);
        assert_eq!(sqls(&s), vec!["SELECT 0e0$$;$$", "SELECT 1e$$"]);
        // `2..E0$$` is 2, `..`, a name: no quote
        let s = split_for("SELECT 2..E0$$; SELECT 3", Dialect::Postgres);
        assert_eq!(sqls(&s), vec!["SELECT 2..E0$$", "SELECT 3"]);
        // `$1` is a parameter, not a tag; a quote closed by `$$` ends there
        let s = split_for(
            "SELECT $1$; SELECT $$a$$$$; $$; SELECT 4",
            Dialect::Postgres,
        );
        assert_eq!(
            sqls(&s),
            vec!["SELECT $1$", "SELECT $$a$$$$; $$", "SELECT 4"]
        );
        // a line comment ends at a carriage return too
        let s = split_for("SELECT 1 -- note\rSELECT 2; SELECT 3", Dialect::Postgres);
        assert_eq!(s.len(), 2, "{s:?}");
        // E'' takes backslash escapes, a word ending in e does not
        let s = split_for(
            "SELECT e'\\';'; SELECT some'\\'; SELECT 5",
            Dialect::Postgres,
        );
        assert_eq!(sqls(&s).len(), 3, "{s:?}");
    }

    #[test]
    fn sqlite_ends_where_sqlite3_complete_says() {
        // a trigger ends only at `; END ;`, whatever its body holds
        let s = split_for(
            "CREATE TEMP TRIGGER t AFTER INSERT ON a BEGIN SELECT CASE WHEN 1 THEN 2 END; END; SELECT 1",
            Dialect::Sqlite,
        );
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(
            terminators("SELECT 1; -- ;\nSELECT [;]; EXPLAIN x;", Dialect::Sqlite),
            vec![8, 25, 36]
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
        // `--1` is code to MySQL, not a comment
        assert_eq!(
            sqls(&split_for("--1;\nSELECT 2", Dialect::Mysql)),
            vec!["--1", "SELECT 2"]
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
