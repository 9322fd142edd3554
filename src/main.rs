//! The `fleetmig` binary: parse the command line, run the library, map the
//! outcome to an exit code. Nothing else lives here.

use clap::Parser;

fn main() {
    let cli = fleetmig::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLEETMIG_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleetmig: cannot start the runtime: {e}");
            std::process::exit(3);
        }
    };
    let code = runtime.block_on(async {
        match fleetmig::cli::run(cli).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("fleetmig: error: {e}");
                e.exit_code()
            }
        }
    });
    std::process::exit(code);
}
