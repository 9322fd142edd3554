//! `fleetmig lint`: checks the migration set for changes that lock or break a
//! live system, before any rollout and as its own command. Each statement is
//! parsed with a real SQL parser (`sqlparser`, in the dialect of the file);
//! the few statements it cannot parse (e.g. `DROP INDEX CONCURRENTLY`) are
//! read token by token with its tokenizer, never with regular expressions.
//!
//! Ignore comments: `-- fleetmig-lint: ignore FM001 FM007` on a statement's
//! first line or the line above it; `-- fleetmig-lint: ignore-file FM001` (or
//! `ignore-file all`) anywhere in the file.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;
use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnOption, ObjectType, Statement, TableConstraint,
};
use sqlparser::dialect::{
    Dialect as SqlDialect, GenericDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect,
};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::migration::split::split_for;
use crate::migration::{MigrationSet, Phase, Script};
use crate::tenant::Dialect;

/// A rule: id, short name, what breaks, how to do it safely.
pub struct Rule {
    pub id: &'static str,
    pub name: &'static str,
    pub breaks: &'static str,
    pub instead: &'static str,
}

pub const RULES: &[Rule] = &[
    Rule {
        id: "FM001",
        name: "index-without-concurrently",
        breaks: "CREATE/DROP INDEX without CONCURRENTLY holds a SHARE (create) or ACCESS EXCLUSIVE (drop) lock: writes to the table wait for the whole build",
        instead: "use CREATE INDEX CONCURRENTLY / DROP INDEX CONCURRENTLY in a `-- no-transaction` migration (a .postgres.sql variant if the plain file serves other dialects)",
    },
    Rule {
        id: "FM002",
        name: "concurrently-in-transaction",
        breaks: "CONCURRENTLY cannot run inside a transaction block: the migration fails on every tenant",
        instead: "make `-- no-transaction` the first line of the file, with the concurrent statement alone in it",
    },
    Rule {
        id: "FM003",
        name: "not-null-without-default",
        breaks: "adding a NOT NULL column without a default fails on tables with rows (and rewrites the table on older servers)",
        instead: "add the column nullable (expand), backfill it in batches, then SET NOT NULL in a `phase=contract` migration; or give it a constant DEFAULT",
    },
    Rule {
        id: "FM004",
        name: "column-type-change",
        breaks: "changing a column's type rewrites the table under an ACCESS EXCLUSIVE lock and breaks application code that reads it",
        instead: "add a new column (expand), backfill, switch the application, drop the old column in a `phase=contract` migration",
    },
    Rule {
        id: "FM005",
        name: "rename-or-drop-outside-contract",
        breaks: "renaming or dropping a column or table breaks the application version still running against it",
        instead: "mark the migration `-- fleetmig: phase=contract` so it waits until every tenant has the expand step and the operator passes --allow-contract",
    },
    Rule {
        id: "FM006",
        name: "constraint-without-not-valid",
        breaks: "adding a FOREIGN KEY or CHECK constraint validates every row under a lock that blocks writes",
        instead: "ADD CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT in a later migration",
    },
    Rule {
        id: "FM007",
        name: "unbounded-dml",
        breaks: "UPDATE/DELETE without WHERE changes every row in one transaction: long locks, bloat, replication lag",
        instead: "add a WHERE clause, or make it a batched backfill (`-- fleetmig: batch size=5000 pause=100ms`)",
    },
    Rule {
        id: "FM008",
        name: "lock-timeout-disabled",
        breaks: "setting lock_timeout to 0 lets DDL queue behind a long transaction while every query on the table queues behind the DDL",
        instead: "leave fleetmig's --lock-timeout in force (default 5s), or set a per-migration `-- fleetmig: lock_timeout=10s`",
    },
    Rule {
        id: "FM009",
        name: "partition-key-not-in-unique",
        breaks: "a primary key or unique constraint of a partitioned table must include every partition key column: PostgreSQL refuses the CREATE TABLE, on every tenant",
        instead: "add the partition key to the key, e.g. PRIMARY KEY (id, created_at); uniqueness of id alone cannot be enforced across partitions",
    },
    Rule {
        id: "FM010",
        name: "attach-partition-without-check",
        breaks: "ATTACH PARTITION scans the whole table to prove its rows fit the bound, holding a lock that blocks writes to it (and SHARE UPDATE EXCLUSIVE on the parent) for the scan",
        instead: "first ADD CONSTRAINT ... CHECK (the bound) NOT VALID and VALIDATE CONSTRAINT it (no write lock), in this migration or an earlier one (then ignore FM010 here with the reason); the attach then skips the scan",
    },
    Rule {
        id: "FM000",
        name: "unparsable",
        breaks: "the statement could not be parsed, so it was not checked",
        instead: "check it by hand, or add `-- fleetmig-lint: ignore FM000` once you have",
    },
];

fn rule(id: &str) -> &'static Rule {
    RULES.iter().find(|r| r.id == id).expect("known rule")
}

/// One finding. `FM000` (a statement the parser cannot read) is a note; every
/// other rule is an error: `lint` exits 1 and a rollout refuses the set.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: &'static str,
    pub name: &'static str,
    pub file: PathBuf,
    pub line: usize,
    pub statement: String,
    pub breaks: &'static str,
    pub instead: &'static str,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {} {}: {}. Instead: {}.\n    {}",
            self.file.display(),
            self.line,
            self.rule,
            self.name,
            self.breaks,
            self.instead,
            self.statement
        )
    }
}

/// Which dialects a script serves: its own variant, or every dialect without one.
fn dialects_of(m: &crate::migration::Migration, script: &Script) -> Vec<Dialect> {
    [Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite]
        .into_iter()
        .filter(|d| m.up.get(*d).is_some_and(|s| std::ptr::eq(s, script)))
        .collect()
}

/// Ignore comments: ids on each line (`ignore`), and for the whole file.
fn ignores(sql: &str) -> (Vec<(usize, BTreeSet<String>)>, BTreeSet<String>) {
    let mut per_line = Vec::new();
    let mut file = BTreeSet::new();
    for (i, line) in sql.lines().enumerate() {
        let Some(pos) = line.find("-- fleetmig-lint:") else {
            continue;
        };
        let rest = line[pos + "-- fleetmig-lint:".len()..].trim();
        let (kind, ids) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let ids: BTreeSet<String> = ids
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty() && !s.starts_with('('))
            .take_while(|s| s.starts_with("FM") || *s == "all")
            .map(str::to_string)
            .collect();
        match kind {
            "ignore" => per_line.push((i + 1, ids)),
            "ignore-file" => file.extend(ids),
            _ => {}
        }
    }
    (per_line, file)
}

impl Finding {
    pub fn is_error(&self) -> bool {
        self.severity == "error"
    }
}

/// Lints the whole set, for every dialect.
pub fn lint_set(set: &MigrationSet) -> Vec<Finding> {
    lint_for(set, &[Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite])
}

/// Lints the scripts that serve `fleet_dialects` (a SQLite-only fleet is not
/// held to PostgreSQL's locking rules).
pub fn lint_for(set: &MigrationSet, fleet_dialects: &[Dialect]) -> Vec<Finding> {
    lint_versions(set, fleet_dialects, |_| true)
}

/// Lints the migrations whose version `judge` accepts (those still pending on
/// some tenant, or `--since VERSION`), for `fleet_dialects`.
pub fn lint_versions(
    set: &MigrationSet,
    fleet_dialects: &[Dialect],
    judge: impl Fn(i64) -> bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in set.migrations.iter().filter(|m| judge(m.version)) {
        for script in m.up.all() {
            let dialects: Vec<Dialect> = dialects_of(m, script)
                .into_iter()
                .filter(|d| fleet_dialects.contains(d))
                .collect();
            if dialects.is_empty() {
                continue;
            }
            out.extend(lint_script(script, &dialects));
        }
    }
    out
}

/// Lints one script for the dialects it serves.
pub fn lint_script(script: &Script, dialects: &[Dialect]) -> Vec<Finding> {
    let postgres = dialects.contains(&Dialect::Postgres);
    let parser_dialect: Box<dyn SqlDialect> = match dialects {
        [Dialect::Postgres] => Box::new(PostgreSqlDialect {}),
        [Dialect::Mysql] => Box::new(MySqlDialect {}),
        [Dialect::Sqlite] => Box::new(SQLiteDialect {}),
        _ if postgres => Box::new(PostgreSqlDialect {}),
        _ => Box::new(GenericDialect {}),
    };
    let contract = script.directives.phase == Phase::Contract;
    let batch = script.directives.batch.is_some();
    let (line_ignores, file_ignores) = ignores(&script.sql);
    let mut out = Vec::new();
    // tables this migration creates: no application reads them yet, so an
    // index, a type change or a constraint on one locks nothing anyone waits on
    let mut created: std::collections::HashSet<String> = Default::default();
    // tables given a CHECK constraint earlier in this migration (an attach
    // of one as a partition can skip the scan)
    let mut checked: std::collections::HashSet<String> = Default::default();
    let split_dialect = match dialects {
        [d] => *d,
        _ => Dialect::Postgres,
    };
    for st in split_for(&script.sql, split_dialect) {
        let mut hits: Vec<&'static str> = Vec::new();
        match Parser::parse_sql(parser_dialect.as_ref(), &st.sql) {
            Ok(stmts) => {
                for s in &stmts {
                    if let Statement::CreateTable(ct) = s {
                        created.insert(table_key(&ct.name));
                    }
                    partitions(s, postgres, &mut checked, &mut hits);
                    if touches_created(s, &created) {
                        continue;
                    }
                    check_statement(s, postgres, script.no_tx, contract, batch, &mut hits);
                }
            }
            Err(_) => check_tokens(
                parser_dialect.as_ref(),
                &st.sql,
                postgres,
                script.no_tx,
                &mut hits,
            ),
        }
        for id in hits {
            let ignored = file_ignores.contains(id)
                || file_ignores.contains("all")
                || line_ignores.iter().any(|(l, ids)| {
                    (*l == st.line || *l + 1 == st.line)
                        && (ids.contains(id) || ids.contains("all"))
                });
            if ignored {
                continue;
            }
            let r = rule(id);
            out.push(Finding {
                rule: r.id,
                severity: if r.id == "FM000" { "note" } else { "error" },
                name: r.name,
                file: script.path.clone(),
                line: st.line,
                statement: crate::dialect::one_line(&st.sql)
                    .chars()
                    .take(160)
                    .collect(),
                breaks: r.breaks,
                instead: r.instead,
            });
        }
    }
    out
}

/// The last part of a table name, unquoted and lower-cased (quoted names
/// keep their case).
fn table_key(name: &sqlparser::ast::ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| match i.quote_style {
            Some(_) => i.value.clone(),
            None => i.value.to_ascii_lowercase(),
        })
        .unwrap_or_default()
}

/// An index on, or an ALTER of, a table created earlier in the same
/// migration (rules about locking live tables do not apply to it).
fn touches_created(s: &Statement, created: &std::collections::HashSet<String>) -> bool {
    match s {
        Statement::CreateIndex(ci) => {
            !ci.concurrently && created.contains(&table_key(&ci.table_name))
        }
        Statement::AlterTable(at) => created.contains(&table_key(&at.name)),
        _ => false,
    }
}

/// The partitioning rules (PostgreSQL): FM009 on a partitioned table's keys,
/// FM010 on an attach of a table with no CHECK added before it.
fn partitions(
    s: &Statement,
    postgres: bool,
    checked: &mut std::collections::HashSet<String>,
    hits: &mut Vec<&'static str>,
) {
    if !postgres {
        return;
    }
    match s {
        Statement::CreateTable(ct) => {
            let Some(by) = &ct.partition_by else { return };
            let key = idents(by.as_ref());
            let mut uniques: Vec<Vec<String>> = Vec::new();
            for c in &ct.columns {
                if c.options.iter().any(|o| {
                    matches!(
                        o.option,
                        ColumnOption::PrimaryKey(_) | ColumnOption::Unique(_)
                    )
                }) {
                    uniques.push(vec![c.name.value.to_ascii_lowercase()]);
                }
            }
            for tc in &ct.constraints {
                let cols = match tc {
                    TableConstraint::PrimaryKey(pk) => &pk.columns,
                    TableConstraint::Unique(u) => &u.columns,
                    _ => continue,
                };
                uniques.push(cols.iter().flat_map(|c| idents(&c.column.expr)).collect());
            }
            if uniques.iter().any(|u| key.iter().any(|k| !u.contains(k))) {
                hits.push("FM009");
            }
        }
        Statement::AlterTable(at) => {
            for op in &at.operations {
                match op {
                    AlterTableOperation::AddConstraint {
                        constraint: TableConstraint::Check(_),
                        ..
                    } => {
                        checked.insert(table_key(&at.name));
                    }
                    AlterTableOperation::AttachPartitionOf { partition, .. }
                        if !checked.contains(&table_key(partition)) =>
                    {
                        hits.push("FM010");
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// The column names an expression reads, lower-cased.
fn idents(e: &sqlparser::ast::Expr) -> Vec<String> {
    let mut out = Vec::new();
    let _ = sqlparser::ast::visit_expressions(e, |e| {
        match e {
            sqlparser::ast::Expr::Identifier(i) => out.push(i.value.to_ascii_lowercase()),
            sqlparser::ast::Expr::CompoundIdentifier(p) => {
                if let Some(i) = p.last() {
                    out.push(i.value.to_ascii_lowercase());
                }
            }
            _ => {}
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    out
}

fn check_statement(
    s: &Statement,
    postgres: bool,
    no_tx: bool,
    contract: bool,
    batch: bool,
    hits: &mut Vec<&'static str>,
) {
    match s {
        Statement::CreateIndex(ci) => {
            if ci.concurrently && !no_tx {
                hits.push("FM002");
            }
            if postgres && !ci.concurrently {
                hits.push("FM001");
            }
        }
        Statement::Drop { object_type, .. } => match object_type {
            ObjectType::Index if postgres => hits.push("FM001"),
            ObjectType::Table if !contract => hits.push("FM005"),
            _ => {}
        },
        Statement::RenameTable(_) if !contract => hits.push("FM005"),
        Statement::AlterTable(at) => {
            for op in &at.operations {
                check_alter(op, postgres, contract, hits);
            }
        }
        Statement::Update(u) if u.selection.is_none() && !batch => hits.push("FM007"),
        Statement::Delete(d) if d.selection.is_none() && !batch => hits.push("FM007"),
        Statement::Set(set) => {
            let text = set.to_string().to_ascii_lowercase();
            if text.contains("lock_timeout")
                && (text.ends_with("= 0") || text.ends_with("to 0") || text.ends_with("'0'"))
            {
                hits.push("FM008");
            }
        }
        _ => {}
    }
}

/// The findings of one `ALTER TABLE` operation.
fn check_alter(
    op: &AlterTableOperation,
    postgres: bool,
    contract: bool,
    hits: &mut Vec<&'static str>,
) {
    match op {
        AlterTableOperation::AddColumn { column_def, .. } => {
            let not_null = column_def
                .options
                .iter()
                .any(|o| matches!(o.option, ColumnOption::NotNull));
            let default = column_def
                .options
                .iter()
                .any(|o| matches!(o.option, ColumnOption::Default(_)));
            if not_null && !default {
                hits.push("FM003");
            }
        }
        AlterTableOperation::AlterColumn { op, .. } => match op {
            AlterColumnOperation::SetDataType { .. } => hits.push("FM004"),
            AlterColumnOperation::SetNotNull if !contract => hits.push("FM005"),
            _ => {}
        },
        AlterTableOperation::ChangeColumn { .. } | AlterTableOperation::ModifyColumn { .. } => {
            hits.push("FM004")
        }
        AlterTableOperation::RenameColumn { .. }
        | AlterTableOperation::RenameTable { .. }
        | AlterTableOperation::DropColumn { .. }
            if !contract =>
        {
            hits.push("FM005")
        }
        AlterTableOperation::AddConstraint {
            constraint,
            not_valid,
        } if postgres && !not_valid => {
            if matches!(
                constraint,
                TableConstraint::ForeignKey(_) | TableConstraint::Check(_)
            ) {
                hits.push("FM006");
            }
        }
        _ => {}
    }
}

/// For statements the parser does not know (e.g. `DROP INDEX CONCURRENTLY`):
/// the keywords in order, from the tokenizer.
fn check_tokens(
    d: &dyn SqlDialect,
    sql: &str,
    postgres: bool,
    no_tx: bool,
    hits: &mut Vec<&'static str>,
) {
    let Ok(tokens) = Tokenizer::new(d, sql).tokenize() else {
        hits.push("FM000");
        return;
    };
    let words: Vec<String> = tokens
        .iter()
        .filter_map(|t| match t {
            Token::Word(w) => Some(w.value.to_ascii_uppercase()),
            _ => None,
        })
        .take(4)
        .collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["DROP", "INDEX", "CONCURRENTLY", ..]
        | ["CREATE", "INDEX", "CONCURRENTLY", ..]
        | ["CREATE", "UNIQUE", "INDEX", "CONCURRENTLY"] => {
            if !no_tx {
                hits.push("FM002");
            }
        }
        ["DROP", "INDEX", ..] if postgres => hits.push("FM001"),
        _ => hits.push("FM000"),
    }
}

/// Text for people, one finding a paragraph, and a count.
pub fn render_text(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        s.push_str(&f.to_string());
        s.push('\n');
    }
    let errors = findings.iter().filter(|f| f.is_error()).count();
    s.push_str(&format!(
        "{errors} finding(s), {} note(s)\n",
        findings.len() - errors
    ));
    s
}

/// JSON for tools.
pub fn render_json(findings: &[Finding]) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        format_version: u32,
        findings: &'a [Finding],
    }
    serde_json::to_string_pretty(&Out {
        format_version: 1,
        findings,
    })
    .expect("serialisable")
}

#[cfg(test)]
mod tests;
