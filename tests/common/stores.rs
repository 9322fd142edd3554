//! The two state stores every rollout scenario runs against, from one test
//! body: the SQLite file a command makes by default in its working folder
//! (one process runs a rollout), and a PostgreSQL database of the test's own
//! (workers share a rollout). `on_both_stores!` makes one test of each.

use std::path::{Path, PathBuf};

use sqlx::Connection;

use super::{PgDb, pg_database};

/// Where the commands a test runs in its folder keep their state.
pub enum Store {
    /// `.fleetmig/state.db` in the folder (the default).
    Sqlite(PathBuf),
    /// A fresh database, named by the folder's `fleetmig.toml`.
    Postgres(PgDb),
}

impl Store {
    pub fn sqlite(dir: &Path) -> Store {
        Store::Sqlite(dir.join(".fleetmig/state.db"))
    }

    /// A fresh PostgreSQL store that every command run in `dir` uses.
    pub async fn postgres(dir: &Path) -> Store {
        let db = pg_database("store").await;
        std::fs::write(
            dir.join("fleetmig.toml"),
            format!("state = \"{}\"\n", db.url),
        )
        .unwrap();
        Store::Postgres(db)
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    async fn any(&self) -> sqlx::AnyConnection {
        sqlx::any::install_default_drivers();
        let url = match self {
            Store::Sqlite(p) => format!("sqlite://{}", p.display()),
            Store::Postgres(db) => db.url.clone(),
        };
        sqlx::AnyConnection::connect(&url).await.unwrap()
    }

    /// Runs `sql` (binds `$1`, `$2`, … in both) on the store.
    pub async fn exec(&self, sql: &str, binds: &[&str]) {
        let mut c = self.any().await;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
        for b in binds {
            q = q.bind(b.to_string());
        }
        q.execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        c.close().await.unwrap();
    }

    /// The one text value `sql` selects.
    pub async fn text(&self, sql: &str, binds: &[&str]) -> String {
        let mut c = self.any().await;
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.to_string()));
        for b in binds {
            q = q.bind(b.to_string());
        }
        let v = q
            .fetch_one(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        c.close().await.unwrap();
        v
    }

    pub async fn drop_now(self) {
        if let Store::Postgres(db) = self {
            db.drop_now().await;
        }
    }
}

/// One scenario, two tests: `NAME::on_sqlite` and `NAME::on_postgres`, each with a
/// fresh folder and a store of that kind:
/// `on_both_stores!(async fn name(dir, store) { … })`.
#[macro_export]
macro_rules! on_both_stores {
    ($(#[doc = $doc:literal])* async fn $name:ident($dir:ident, $store:ident) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn scenario($dir: &std::path::Path, $store: &$crate::common::stores::Store) {
                let _ = &$store;
                $body
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn on_sqlite() {
                let d = tempfile::tempdir().unwrap();
                let s = $crate::common::stores::Store::sqlite(d.path());
                scenario(d.path(), &s).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn on_postgres() {
                let d = tempfile::tempdir().unwrap();
                let s = $crate::common::stores::Store::postgres(d.path()).await;
                scenario(d.path(), &s).await;
                s.drop_now().await;
            }
        }
    };
}
