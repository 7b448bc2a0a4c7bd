//! `mock-provider`: the test suite's mock LLM provider as a standalone server, so the demo
//! and manual runs use exactly what the tests use. It speaks all four wire formats at once
//! (OpenAI, Azure OpenAI, Anthropic, Gemini) on one port.
//!
//! The first stdout line is `listening on http://ADDR` (flushed), so a script can start it
//! with `--listen 127.0.0.1:0` and read the port back. Runs until SIGINT or SIGTERM, then
//! exits 0. Logs go to stderr (`RUST_LOG`, default `info`).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use llmq_tests::mock::{Fault, MockOptions, MockProvider, RandomFaults, RetryHint};
use tracing_subscriber::EnvFilter;

/// Mock LLM provider (OpenAI, Azure OpenAI, Anthropic and Gemini wire formats).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// An API key requests may carry; repeat it to accept several (a key rotation).
    #[arg(
        long = "api-key",
        env = "MOCK_PROVIDER_API_KEY",
        default_value = "test-key",
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// Content tokens per reply (a prompt can ask for N with `[tokens=N]`).
    #[arg(long, default_value_t = 12)]
    tokens: usize,
    /// Delay before the first content token, in milliseconds.
    #[arg(long, default_value_t = 0)]
    first_token_ms: u64,
    /// Delay between content tokens, in milliseconds.
    #[arg(long, default_value_t = 0)]
    token_interval_ms: u64,
    /// Share of requests (0..1) that get a fault: an even mix of 429, 500, 529/503,
    /// a stream cut after 3 tokens and a 2 s stall after 2 tokens.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    fault_rate: f64,
    /// Seed of the fault sequence (same seed, same faults in the same request order).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Benchmark mode: no request recording, pre-rendered replies.
    #[arg(long)]
    lean: bool,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not a number between 0 and 1")),
    }
}

fn options(cli: &Cli) -> MockOptions {
    let random_faults = (cli.fault_rate > 0.0).then(|| RandomFaults {
        seed: cli.seed,
        probability: cli.fault_rate,
        faults: vec![
            (Fault::RateLimited(RetryHint::RetryAfterSecs(1)), 1),
            (Fault::ServerError, 1),
            (Fault::Overloaded, 1),
            (Fault::CutMidStream { after_tokens: 3 }, 1),
            (
                Fault::StallMidStream {
                    after_tokens: 2,
                    stall: Duration::from_secs(2),
                },
                1,
            ),
        ],
    });
    MockOptions {
        api_keys: cli.api_keys.clone(),
        tokens_per_reply: cli.tokens,
        first_token_delay: Duration::from_millis(cli.first_token_ms),
        token_interval: Duration::from_millis(cli.token_interval_ms),
        random_faults,
        lean: cli.lean,
        ..MockOptions::default()
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch SIGTERM; stopping on SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let mock = match MockProvider::bind(cli.listen, options(&cli)).await {
        Ok(mock) => mock,
        Err(err) => {
            eprintln!("mock-provider: --listen {}: {err}", cli.listen);
            return ExitCode::from(64);
        }
    };
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "listening on {}", mock.base_url())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(stdout);
    tracing::info!(
        addr = %mock.addr(),
        tokens = cli.tokens,
        first_token_ms = cli.first_token_ms,
        token_interval_ms = cli.token_interval_ms,
        fault_rate = cli.fault_rate,
        seed = cli.seed,
        lean = cli.lean,
        "mock provider ready"
    );
    shutdown_signal().await;
    tracing::info!(requests = mock.request_count(), "mock provider stopping");
    drop(mock);
    ExitCode::SUCCESS
}
