//! What the SQL parser reads from a migration script for the executor (as
//! opposed to `lint`, which judges it): the tables a script touches, for
//! preflight and `--analyze`, and the indexes it builds concurrently, whose
//! INVALID leftovers are dropped before a retry. Parsed with `sqlparser` in
//! the dialect of the tenant, statement by statement (`split`).

use std::collections::BTreeSet;

use sqlparser::ast::{ObjectType, Statement};
use sqlparser::dialect::{Dialect as SqlDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use super::Script;
use super::split::split_statements;
use crate::tenant::Dialect;

/// The tables a script creates or changes (every relation its statements
/// name, minus those it drops), as the parser reads them: what `--analyze`
/// analyzes after the migration.
pub fn touched_tables(script: &Script, dialect: Dialect) -> Vec<String> {
    let d: Box<dyn SqlDialect> = match dialect {
        Dialect::Postgres => Box::new(PostgreSqlDialect {}),
        Dialect::Mysql => Box::new(MySqlDialect {}),
        Dialect::Sqlite => Box::new(SQLiteDialect {}),
    };
    let mut tables = BTreeSet::new();
    let mut dropped = BTreeSet::new();
    for st in split_statements(&script.sql) {
        let Ok(stmts) = Parser::parse_sql(d.as_ref(), &st.sql) else {
            continue;
        };
        for s in &stmts {
            if let Statement::Drop {
                object_type: ObjectType::Table,
                names,
                ..
            } = s
            {
                for n in names {
                    if let Some(last) = n.0.last().and_then(|p| p.as_ident()) {
                        dropped.insert(last.value.clone());
                    }
                }
                continue;
            }
            let _ = sqlparser::ast::visit_relations(s, |rel| {
                if let Some(last) = rel.0.last().and_then(|p| p.as_ident()) {
                    tables.insert(last.value.clone());
                }
                std::ops::ControlFlow::<()>::Continue(())
            });
        }
    }
    tables.retain(|t| !dropped.contains(t) && t != "_sqlx_migrations");
    tables.into_iter().collect()
}

/// The names of the indexes a PostgreSQL script builds with `CREATE INDEX
/// CONCURRENTLY`, as written (quoted parts keep their quotes and case,
/// unquoted ones are folded by the server), for `to_regclass`: the INVALID
/// leftovers of an interrupted build are dropped before a retry. `None` when
/// a statement that mentions CONCURRENTLY cannot be parsed, so that the
/// caller falls back to a broader look.
pub fn concurrent_indexes(sql: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for st in split_statements(sql) {
        let Ok(stmts) = Parser::parse_sql(&PostgreSqlDialect {}, &st.sql) else {
            if st.sql.to_ascii_lowercase().contains("concurrently") {
                return None;
            }
            continue;
        };
        for s in stmts {
            if let Statement::CreateIndex(ci) = s
                && ci.concurrently
                && let Some(name) = ci.name
            {
                out.push(name.to_string());
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::load;

    #[test]
    fn touched_tables_come_from_the_parser() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("0001_a.sql"),
            "CREATE TABLE a (x int);\nUPDATE b SET y = 1 WHERE z IN (SELECT z FROM c);\nCREATE INDEX i ON d (x);\nDROP TABLE e;\nINSERT INTO \"F\" VALUES (1);\n",
        )
        .unwrap();
        let set = load(dir.path()).unwrap();
        let s = set.get(1).unwrap().up.generic.as_ref().unwrap();
        assert_eq!(
            touched_tables(s, Dialect::Postgres),
            vec!["F", "a", "b", "c", "d"]
        );
    }

    #[test]
    fn concurrent_index_names_as_written_or_none_when_unreadable() {
        assert_eq!(
            concurrent_indexes(
                "-- no-transaction\nCREATE INDEX CONCURRENTLY Big_X ON t (x);\n\
                 CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS \"Mixed\" ON s.t (y);\n\
                 CREATE INDEX plain ON t (z);"
            ),
            Some(vec!["Big_X".to_string(), "\"Mixed\"".to_string()])
        );
        assert_eq!(concurrent_indexes("VACUUM t;"), Some(vec![]));
        // a statement the parser cannot read but that builds concurrently
        assert_eq!(
            concurrent_indexes("CREATE INDEX CONCURRENTLY i ON t (x) TABLESPACE fast WITH OOPS;"),
            None
        );
    }
}
