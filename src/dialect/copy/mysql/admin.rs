//! Creating and dropping a MySQL/MariaDB move's place: a database, through
//! a session of the server in no database of its own.

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{Connection, Executor};

use super::super::{Created, failed};
use super::{database_of, options};
use crate::dialect::connect;
use crate::dialect::mysql::quote_ident;
use crate::error::TenantError;
use crate::options::Settings;
use crate::tenant::Dialect;

/// Creates the database `url` names where missing; says whether it did.
pub async fn create(settings: &Settings, url: &str) -> Result<Created, TenantError> {
    let opts = options(url)?;
    let database = database_of(url, &opts)?;
    let mut c = server(settings, url, &opts).await?;
    let sql = format!("CREATE DATABASE {}", quote_ident(&database));
    let r = c.execute(sqlx::AssertSqlSafe(sql)).await;
    let _ = c.close().await;
    match r {
        Ok(_) => Ok(Created::Database),
        Err(e) => {
            let e = failed(Dialect::Mysql, &format!("creating database {database}"), e);
            // 1007: it exists
            if e.code.as_deref() == Some("1007") {
                Ok(Created::Nothing)
            } else {
                Err(e)
            }
        }
    }
}

/// A connection to the server of `url`, in no database.
async fn server(
    settings: &Settings,
    url: &str,
    opts: &MySqlConnectOptions,
) -> Result<MySqlConnection, TenantError> {
    let mut o = opts.clone();
    o = o.database("information_schema");
    connect(
        Dialect::Mysql,
        url,
        settings.connect_timeout,
        MySqlConnection::connect_with(&o),
    )
    .await
}

/// Drops the database tenant at `url`.
pub async fn drop(settings: &Settings, url: &str) -> Result<(), TenantError> {
    let opts = options(url)?;
    let database = opts.get_database().unwrap_or_default().to_string();
    let mut c = server(settings, url, &opts).await?;
    let sql = format!("DROP DATABASE {}", quote_ident(&database));
    let r = c.execute(sqlx::AssertSqlSafe(sql)).await;
    let _ = c.close().await;
    r.map(|_| ())
        .map_err(|e| failed(Dialect::Mysql, "dropping the source", e))
}
