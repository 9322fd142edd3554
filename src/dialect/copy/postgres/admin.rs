//! Creating and dropping a PostgreSQL move's places: a database (through
//! the server's `postgres` database), a schema.

use sqlx::{Connection, Executor, PgConnection};

use super::super::{Created, failed};
use crate::dialect::{connect, quote_ident};
use crate::error::TenantError;
use crate::options::Settings;
use crate::tenant::Dialect;

/// Creates the database `url` names (and `schema` in it) where missing;
/// says what it created.
pub async fn create(
    settings: &Settings,
    url: &str,
    schema: Option<&str>,
) -> Result<Created, TenantError> {
    let opts = crate::dialect::postgres::connect_options(url)
        .map_err(|e| crate::dialect::connect_error(Dialect::Postgres, url, &e))?;
    let open = || {
        connect(
            Dialect::Postgres,
            url,
            settings.connect_timeout,
            PgConnection::connect_with(&opts),
        )
    };
    let mut created = Created::Nothing;
    let mut conn = match open().await {
        Ok(c) => c,
        Err(e) if e.code.as_deref() == Some("3D000") => {
            let name = opts
                .get_database()
                .unwrap_or_else(|| opts.get_username())
                .to_string();
            let sql = format!("CREATE DATABASE {}", quote_ident(&name));
            match admin(settings, url, &opts, &sql).await {
                Ok(()) => created = Created::Database,
                // created by another meanwhile: it is not ours
                Err(e) if e.code.as_deref() == Some("42P04") => {}
                Err(e) => return Err(e),
            }
            open().await?
        }
        Err(e) => return Err(e),
    };
    if let Some(s) = schema {
        let sql = format!("CREATE SCHEMA {}", quote_ident(s));
        match conn.execute(sqlx::AssertSqlSafe(sql)).await {
            Ok(_) if created == Created::Nothing => created = Created::Schema,
            Ok(_) => {}
            Err(e) => {
                let e = failed(Dialect::Postgres, &format!("creating schema {s}"), e);
                if e.code.as_deref() != Some("42P06") {
                    let _ = conn.close().await;
                    return Err(e);
                }
            }
        }
    }
    let _ = conn.close().await;
    Ok(created)
}

/// Runs `sql` through the server's `postgres` database.
async fn admin(
    settings: &Settings,
    url: &str,
    opts: &sqlx::postgres::PgConnectOptions,
    sql: &str,
) -> Result<(), TenantError> {
    let mut c = connect(
        Dialect::Postgres,
        url,
        settings.connect_timeout,
        PgConnection::connect_with(&opts.clone().database("postgres")),
    )
    .await?;
    let r = c.execute(sqlx::AssertSqlSafe(sql.to_string())).await;
    let _ = c.close().await;
    r.map(|_| ()).map_err(|e| failed(Dialect::Postgres, sql, e))
}

/// Drops a schema tenant (`DROP SCHEMA … CASCADE`) or a database tenant;
/// `force`: a database fleetmig created, whoever is connected to it.
pub async fn drop(
    settings: &Settings,
    url: &str,
    schema: Option<&str>,
    force: bool,
) -> Result<(), TenantError> {
    let opts = crate::dialect::postgres::connect_options(url)
        .map_err(|e| crate::dialect::connect_error(Dialect::Postgres, url, &e))?;
    match schema {
        Some(s) => {
            let mut c = connect(
                Dialect::Postgres,
                url,
                settings.connect_timeout,
                PgConnection::connect_with(&opts),
            )
            .await?;
            let sql = format!("DROP SCHEMA {} CASCADE", quote_ident(s));
            let r = c.execute(sqlx::AssertSqlSafe(sql)).await;
            let _ = c.close().await;
            r.map(|_| ())
                .map_err(|e| failed(Dialect::Postgres, &format!("dropping schema {s}"), e))
        }
        None => {
            let name = opts
                .get_database()
                .unwrap_or_else(|| opts.get_username())
                .to_string();
            let sql = format!(
                "DROP DATABASE {}{}",
                quote_ident(&name),
                if force { " WITH (FORCE)" } else { "" }
            );
            admin(settings, url, &opts, &sql).await
        }
    }
}
