//! Helpers shared by the modules of the PostgreSQL tests: tenant schemas
//! made in a test database.

use crate::common::*;

pub async fn schemas(db: &PgDb, n: usize) {
    let mut sql = String::new();
    for i in 0..n {
        sql.push_str(&format!("CREATE SCHEMA tenant_{i:03};"));
    }
    db.exec(&sql).await;
}
