//! The migration set: loading the `migrations/` folder in sqlx's file format
//! (`source`), the `-- fleetmig:` directives (`directive`), the pure plan
//! of what each tenant needs (`plan`), and what the SQL parser reads from a
//! script for the executor (`parse`: tables touched, indexes built
//! concurrently), and `new`, which writes the next migration file.

mod directive;
mod new;
pub mod parse;
pub mod plan;
mod source;
pub use fleetmig_parse::split;

pub use directive::{Batch, Directives, Phase, Scope};
pub use new::new_migration;
pub use plan::{Applied, PlanError, TenantPlan, plan_tenant};
pub use source::{Migration, MigrationSet, Script, Variants, hex, load};
