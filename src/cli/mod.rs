//! The command line, and the only place that prints: clap types (`args`),
//! one function per command (`commands` for those that start from flags,
//! `recorded` for those on a recorded rollout, `moving` for moves) that
//! turns flags into a `Config`, builds the engine's context (`run`: one
//! connector, the progress display as an event subscriber, the signal
//! handler) and calls the library, and what the commands print (`output`,
//! `progress`). Nothing below this module knows
//! about clap or writes to the terminal.

#[macro_use]
pub mod out;
mod args;
mod commands;
pub mod logging;
mod moving;
mod output;
mod progress;
mod recorded;
mod run;
pub mod signals;

pub use args::{Cli, Command};

use crate::error::Error;

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32, Error> {
    // before any SQLite connection: the library's settings for a fleet
    crate::dialect::sqlite::tune_library();
    match cli.command {
        Command::Sync(a) => commands::sync(a).await,
        Command::Rollout(a) => commands::rollout(a).await,
        Command::Resume(a) => recorded::resume(a).await,
        Command::Retry(a) => recorded::retry(a).await,
        Command::Abort(a) => recorded::abort(a).await,
        Command::Pause(a) => recorded::pause(a).await,
        Command::Worker(a) => recorded::worker(a).await,
        Command::Status(a) if a.rollout.is_some() => recorded::rollout_status(a).await,
        Command::Status(a) => commands::status(a).await,
        Command::Plan(a) => commands::plan(a).await,
        Command::History(a) => recorded::history(a).await,
        Command::Prune(a) => commands::prune(a).await,
        Command::Report(a) => recorded::report(a).await,
        Command::Lint(a) => commands::lint(a),
        Command::Restore(a) => commands::restore(a).await,
        Command::Verify(a) => commands::verify(a).await,
        Command::Baseline(a) => commands::baseline(a).await,
        Command::Move(a) => moving::run(a).await,
        Command::New(a) => commands::new(a),
        Command::Serve(a) => commands::serve(a).await,
        Command::Completions(a) => commands::completions(a),
        Command::Man => commands::man(),
    }
}
