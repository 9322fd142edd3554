//! The migration set: loading the `migrations/` folder in sqlx's file format
//! (`source`), the `-- fleetmig:` directives (`directive`), and the pure plan
//! of what each tenant needs (`plan`).

mod directive;
pub mod parse;
pub mod plan;
mod source;
pub mod split;

pub use directive::{Batch, Directives, Phase};
pub use plan::{Applied, PlanError, TenantPlan, plan_tenant};
pub use source::{Migration, MigrationSet, Script, Variants, hex, load, new_migration};
