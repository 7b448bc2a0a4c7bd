//! `submitter`: the llmq producer CLI. Parses, runs, and maps the result to an exit code
//! (the table is in `--help`). Logs go to stderr, coloured only when it is a terminal.

mod cli;

use std::io::IsTerminal;

use clap::Parser;

use cli::{Cli, Exit};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            cli::print::note(format!("error: cannot start the async runtime: {err}"));
            return Exit::Unexpected.into();
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(exit) => exit.into(),
        Err(err) => {
            let exit = err.exit();
            // Messages already include their causes.
            cli::print::note(format!("error: {err}"));
            exit.into()
        }
    }
}
