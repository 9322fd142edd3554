//! What a PostgreSQL tenant holds, for a move: the schemas it owns (a
//! schema tenant its one schema; a database tenant every schema of its
//! database but the system's, the extensions' and fleetmig's), its tables
//! with their columns' kinds and what each column can hold, the foreign
//! keys among them, and every object (what an existing target may hold).

use sqlx::{PgConnection, Row};

use super::super::value::{JsonStore, Spec, typmod};
use super::super::{Catalog, Column, Contents, ForeignKey, Kind, Table, failed};
use crate::error::TenantError;
use crate::tenant::Dialect;

/// The kind of a column of type `typname`, and what it holds (`shown`: the
/// type as `format_type` prints it, with its modifier).
pub(super) fn column_kind(typname: &str, shown: &str) -> (Option<Kind>, Spec) {
    let mut spec = Spec::of(Dialect::Postgres);
    let kind = match typname {
        "int2" => {
            spec.int_range = (i16::MIN as i128, i16::MAX as i128);
            Kind::Int
        }
        "int4" => {
            spec.int_range = (i32::MIN as i128, i32::MAX as i128);
            Kind::Int
        }
        "int8" => Kind::Int,
        "float4" => {
            spec.single = true;
            Kind::Float
        }
        "float8" => Kind::Float,
        "numeric" => {
            spec = spec.with_numeric_typmod(shown);
            Kind::Decimal
        }
        "text" | "varchar" | "bpchar" | "name" | "citext" => Kind::Text,
        "bool" => Kind::Bool,
        "date" => Kind::Date,
        "timestamp" | "timestamptz" => {
            // PostgreSQL timestamps: 4713 BC to 294276 AD
            spec.years = (-4713, 294_276);
            spec.fsp = typmod(shown).map_or(6, |(p, _)| p);
            if typname == "timestamp" {
                Kind::Timestamp
            } else {
                Kind::TimestampTz
            }
        }
        "json" => Kind::Json,
        "jsonb" => {
            spec.json = JsonStore::Jsonb;
            Kind::Json
        }
        "bytea" => Kind::Bytes,
        "uuid" => Kind::Uuid,
        _ => return (None, spec),
    };
    (Some(kind), spec)
}

/// The schemas of the tenant: `home` alone for a schema tenant; for a
/// database tenant (`whole`) every schema of the database that neither the
/// system, an extension nor fleetmig made.
pub(super) async fn schemas(
    conn: &mut PgConnection,
    home: &str,
    whole: bool,
) -> Result<Vec<String>, TenantError> {
    if !whole {
        return Ok(vec![home.to_string()]);
    }
    sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_namespace n \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
           AND n.nspname NOT LIKE '\\_fleetmig\\_%' \
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass \
             AND d.objid = n.oid AND d.deptype = 'e') \
         ORDER BY 1",
    )
    .fetch_all(conn)
    .await
    .map_err(|e| failed(Dialect::Postgres, "listing the database's schemas", e))
}

/// `schema` as a table's schema: `None` for the tenant's own.
fn relative(schema: String, home: &str) -> Option<String> {
    (schema != home).then_some(schema)
}

/// The tables of `schemas`, each with its columns, key and references.
pub(super) async fn tables(
    conn: &mut PgConnection,
    home: &str,
    schemas: &[String],
) -> Result<Vec<Table>, TenantError> {
    let rows = sqlx::query(
        "SELECT n.nspname::text AS s, c.relname::text AS t, a.attname::text AS c, \
         format_type(a.atttypid, a.atttypmod) AS ty, ty.typname::text AS typname, \
         (a.attidentity <> '' OR pg_get_serial_sequence(quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname) IS NOT NULL) AS serial, \
         COALESCE(array_position(string_to_array(i.indkey::text, ' ')::int2[], a.attnum), 0) AS keypos \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
         JOIN pg_type ty ON ty.oid = a.atttypid \
         LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
         WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') \
         ORDER BY n.nspname, c.relname, a.attnum",
    )
    .bind(schemas)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| failed(Dialect::Postgres, "reading the catalog", e))?;
    let mut catalog = Catalog::default();
    for r in &rows {
        let typname: String = r.get("typname");
        let shown: String = r.get("ty");
        let pos: i32 = r.get("keypos");
        let (kind, spec) = column_kind(&typname, &shown);
        let column = Column {
            name: r.get("c"),
            type_name: shown,
            kind,
            serial: r.get("serial"),
            spec,
        };
        catalog.column(relative(r.get("s"), home), r.get("t"), column, pos as i64);
    }
    type FkRow = (
        String,
        String,
        String,
        String,
        String,
        Vec<String>,
        Vec<String>,
    );
    let fks: Vec<FkRow> = sqlx::query_as(
        "SELECT k.conname::text, n.nspname::text, c.relname::text, rn.nspname::text, r.relname::text, \
         ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY x(att, i) \
           JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = x.att ORDER BY x.i), \
         ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY x(att, i) \
           JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = x.att ORDER BY x.i) \
         FROM pg_constraint k \
         JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_class r ON r.oid = k.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace \
         WHERE k.contype = 'f' AND n.nspname = ANY($1) ORDER BY 1",
    )
    .bind(schemas)
    .fetch_all(conn)
    .await
    .map_err(|e| failed(Dialect::Postgres, "reading foreign keys", e))?;
    let fks = fks
        .into_iter()
        .map(|(name, s, t, rs, r, columns, parent_columns)| {
            let fk = ForeignKey {
                name,
                columns,
                parent: (relative(rs, home), r),
                parent_columns,
            };
            ((relative(s, home), t), fk)
        })
        .collect();
    Ok(catalog.finish(fks))
}

/// Every object of `schemas` but fleetmig's tables and what extensions
/// brought (names outside `home` qualified), and the tables holding a row.
pub(super) async fn contents(
    conn: &mut PgConnection,
    home: &str,
    schemas: &[String],
) -> Result<Contents, TenantError> {
    let what = |e| failed(Dialect::Postgres, "reading what the target holds", e);
    let objects: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view' \
           WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' \
           WHEN 'i' THEN 'index' ELSE 'relation' END, n.nspname::text, c.relname::text, c.relkind IN ('r', 'p') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'i') \
           AND c.relname <> '_sqlx_migrations' AND c.relname NOT LIKE '\\_fleetmig\\_%' \
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') \
           AND NOT EXISTS (SELECT 1 FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid \
             WHERE x.indexrelid = c.oid AND (t.relname = '_sqlx_migrations' OR t.relname LIKE '\\_fleetmig\\_%')) \
         UNION ALL SELECT 'function', n.nspname::text, p.proname::text, false FROM pg_proc p \
         JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = ANY($1) AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') \
         UNION ALL SELECT 'type', n.nspname::text, t.typname::text, false FROM pg_type t \
         JOIN pg_namespace n ON n.oid = t.typnamespace \
         WHERE n.nspname = ANY($1) AND t.typtype IN ('e', 'd', 'r', 'm') \
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e') \
         UNION ALL SELECT 'schema', n.nspname::text, n.nspname::text, false FROM pg_namespace n \
         WHERE n.nspname = ANY($1) AND n.nspname <> $2",
    )
    .bind(schemas)
    .bind(home)
    .fetch_all(&mut *conn)
    .await
    .map_err(what)?;
    let mut contents = Contents::default();
    for (kind, schema, name, table) in objects {
        let label = match relative(schema.clone(), home) {
            Some(s) if kind != "schema" => format!("{s}.{name}"),
            _ => name.clone(),
        };
        if table {
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM {}.{})",
                crate::dialect::quote_ident(&schema),
                crate::dialect::quote_ident(&name)
            );
            let rows: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut *conn)
                .await
                .map_err(what)?;
            if rows {
                contents.filled.push(label.clone());
            }
        }
        contents.objects.push(format!("{kind} {label}"));
    }
    contents.objects.sort();
    contents.filled.sort();
    Ok(contents)
}
