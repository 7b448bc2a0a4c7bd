//! `submitter serve`: the OpenAI-compatible HTTP edge (see `llmq_submitter::edge`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use llmq_submitter::ClientOptions;
use llmq_submitter::edge::{self, EdgeOptions};

use super::{CliError, Exit};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Largest request body, in bytes (413 above it).
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_name = "BYTES")]
    pub max_body_bytes: usize,
    /// A request's deadline when it sends no x-llmq-timeout.
    #[arg(long, default_value = "600s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub default_timeout: Duration,
    /// Time a client has to send a request's headers, and then its body.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub read_timeout: Duration,
    /// How often an idle stream gets an SSE keep-alive comment.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_alive: Duration,
}

pub async fn run(args: ServeArgs, options: ClientOptions) -> Result<Exit, CliError> {
    let options = EdgeOptions {
        max_body_bytes: args.max_body_bytes,
        default_timeout: args.default_timeout,
        keep_alive: args.keep_alive,
        read_timeout: args.read_timeout,
        ..EdgeOptions::new(args.listen, options)
    };
    let started = edge::Edge::start(options)
        .await
        .map_err(|err| CliError::Usage(err.to_string()))?;
    eprintln!("edge listening on http://{}", started.addr());
    llmq_runtime::signals::shutdown().await;
    started.stop().await;
    Ok(Exit::Success)
}
