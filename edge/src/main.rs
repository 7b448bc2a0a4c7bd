//! `llmq-edge`: the OpenAI-compatible HTTP endpoint on the queue. Loads the config (file,
//! environment, flags), sets up logging, serves until SIGINT or SIGTERM, then drains, and
//! exits with a code that says what went wrong (the `submitter` CLI's codes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use llmq_edge::config::{self, ConfigError, EdgeConfig, Overrides};
use llmq_edge::{EXIT_INTERNAL, EXIT_USAGE, EdgeError, RunningEdge};
use llmq_runtime::signals::Signals;

const AFTER_HELP: &str = "\
Routes: POST /v1/chat/completions, GET /v1/models, GET /v1/models/{id}; /healthz, /readyz
(connected to NATS), /metrics.

Config: --config names a TOML file with the sections [nats] (as a worker's), [jetstream]
(prefix), [http] (listen, max_body_bytes, default_timeout, read_timeout, keep_alive,
shutdown_grace) and [log] (format, level); without one, every setting has its default. The
environment overrides the file with the worker's variable names, for the settings the edge
has: LLMQ__NATS__URL, LLMQ__NATS__NKEY_FILE, LLMQ__NATS__TLS__CA_FILE, ...,
LLMQ__JETSTREAM__PREFIX, LLMQ__HTTP__LISTEN, LLMQ__LOG__FORMAT (a worker's own settings, such
as LLMQ__WORKER__MAX_INFLIGHT, are left to it); a flag overrides both.

SIGINT or SIGTERM: stop accepting, let open requests finish within http.shutdown_grace (30s),
cut the rest (their jobs are cancelled), exit 0.

Exit codes: 0 clean shutdown; 1 internal error; 2 bad arguments or invalid config (also:
http.listen cannot be bound); 4 NATS unreachable or too old, or llmq's API keys, tenant
registry or limits cannot be read (retry later).";

/// The llmq HTTP edge: OpenAI's chat-completions API on the queue, for any number of
/// tenants, authenticated by llmq API keys.
#[derive(Debug, Parser)]
#[command(name = "llmq-edge", version, after_help = AFTER_HELP)]
struct Cli {
    /// The TOML config file (optional).
    #[arg(short, long, env = "LLMQ_EDGE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the config (file, environment and flags together) and print what the edge
    /// would use, then exit.
    #[arg(long)]
    check_config: bool,
    /// Address to listen on [http.listen; default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Largest request body, in bytes (413 above it) [http.max_body_bytes; default: 4 MiB]
    #[arg(long, value_name = "BYTES")]
    max_body_bytes: Option<usize>,
    /// A request's deadline when it sends no x-llmq-timeout [http.default_timeout; default: 600s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    default_timeout: Option<Duration>,
    /// Time a client has to send a request's headers, and then its body
    /// [http.read_timeout; default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    read_timeout: Option<Duration>,
    /// How often an idle stream gets an SSE keep-alive comment [http.keep_alive; default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    keep_alive: Option<Duration>,
}

impl Cli {
    fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            max_body_bytes: self.max_body_bytes,
            default_timeout: self.default_timeout,
            read_timeout: self.read_timeout,
            keep_alive: self.keep_alive,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.config.as_deref();
    let config = match config::load(path, &config::process_env(), &cli.overrides()) {
        Ok(config) => config,
        Err(err) => return invalid_config(path, &err),
    };
    if cli.check_config {
        return check(&config);
    }
    llmq_runtime::telemetry::init(&config.log);
    // Two threads, as `submitter serve` ran: the edge's work is I/O.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("llmq-edge: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_INTERNAL);
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "edge failed");
            eprintln!("llmq-edge: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Serves until SIGINT or SIGTERM (also during start-up), then drains.
async fn serve(config: EdgeConfig) -> Result<(), EdgeError> {
    let mut signals = Signals::listen();
    let edge = tokio::select! {
        started = RunningEdge::start(config) => started?,
        () = signals.shutdown() => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    eprintln!("edge listening on http://{}", edge.addr());
    signals.shutdown().await;
    edge.drain().await;
    Ok(())
}

/// `--check-config`: what the edge would use (no secret printed).
fn check(config: &EdgeConfig) -> ExitCode {
    let http = &config.http;
    println!(
        "config ok: listen {}, prefix {:?}, nats {}",
        http.listen,
        config.jetstream.prefix,
        llmq_runtime::redact_url_userinfo(&config.nats.url)
    );
    println!(
        "  http: max_body_bytes {}, default_timeout {}, read_timeout {}, keep_alive {}, shutdown_grace {}",
        http.max_body_bytes,
        humantime::format_duration(http.default_timeout),
        humantime::format_duration(http.read_timeout),
        humantime::format_duration(http.keep_alive),
        humantime::format_duration(http.shutdown_grace),
    );
    ExitCode::SUCCESS
}

fn invalid_config(path: Option<&Path>, err: &ConfigError) -> ExitCode {
    let from = path.map_or_else(|| "(no file)".to_owned(), |path| path.display().to_string());
    eprintln!("llmq-edge: invalid config {from}:\n{err}");
    ExitCode::from(EXIT_USAGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent_and_its_help_names_the_exit_codes() {
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        for needed in [
            "Exit codes",
            "LLMQ__NATS__URL",
            "--listen",
            "--check-config",
        ] {
            assert!(help.contains(needed), "{needed} missing from:\n{help}");
        }
    }
}
