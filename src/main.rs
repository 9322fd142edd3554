//! The `fleetmig` binary: parse the command line, set up logging and
//! signals, run the library, map the outcome to an exit code. Nothing else
//! lives here.

use clap::Parser;
use fleetmig::cli::{self, out};

fn main() {
    let args = cli::Cli::parse();
    cli::logging::init(args.log_level.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            out::err_line(format_args!("fleetmig: cannot start the runtime: {e}"));
            std::process::exit(3);
        }
    };
    let code = runtime.block_on(async {
        cli::signals::install();
        match cli::run(args).await {
            Ok(code) => code,
            Err(e) => {
                out::err_line(format_args!("fleetmig: error: {e}"));
                e.exit_code()
            }
        }
    });
    let code = match out::failure() {
        // a closed pipe (`| head`): the work is done, nothing more to say
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Some(e) => {
            out::err_line(format_args!("fleetmig: error: stdout: {e}"));
            3
        }
        None => code,
    };
    std::process::exit(code);
}
