//! The hidden subcommands: this binary re-executed as a worker (`bench __worker`), as
//! the mock upstream (`bench __mock`) or as the HTTP edge (`bench __edge`).
//!
//! A worker must be its own process for its RSS and CPU to be its own, and re-executing
//! the bench binary runs the real worker library without building (or finding) a second
//! binary. `worker_main` does what `gateway-worker`'s `main` does (config, telemetry,
//! crypto provider, multi-thread runtime, `run` until SIGINT/SIGTERM) and prints
//! `ready <worker id>` once the worker consumes, so the bench waits on a line, not a
//! sleep. The mock child prints `listening on <url>` and then answers `stats` and `reset`
//! lines on stdin; it exits when stdin closes. The edge child runs the edge library as
//! `llmq-edge` does (two runtime threads; warn logs on stderr) and prints
//! `listening on <url>` once it accepts connections.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use llmq_edge::{EdgeConfig, RunningEdge};

use super::setup::MockStats;
use crate::mock::{MockOptions, MockProvider};

/// Exit codes, as `gateway-worker` uses them.
const EX_CONFIG: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;
const EX_SOFTWARE: u8 = 70;

/// `bench __worker --config FILE`.
pub fn worker_main(config: &Path) -> ExitCode {
    let config = match gateway_worker::config::load(config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!(
                "bench __worker: invalid config {}:\n{err}",
                config.display()
            );
            return ExitCode::from(EX_CONFIG);
        }
    };
    gateway_worker::telemetry::init(&config.log);
    gateway_worker::providers::http_client::install_crypto_provider();
    let runtime = match config.worker.runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("bench __worker: cannot start the async runtime: {err}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    let result = runtime.block_on(async {
        let worker = gateway_worker::RunningWorker::start(config).await?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready {}", worker.id()).and_then(|()| out.flush());
        drop(out);
        shutdown_signal().await;
        worker.drain().await;
        Ok::<(), gateway_worker::RunError>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench __worker: {err}");
            ExitCode::from(match err {
                gateway_worker::RunError::Config(_)
                | gateway_worker::RunError::Routes(_)
                | gateway_worker::RunError::Admin { .. } => EX_CONFIG,
                gateway_worker::RunError::Connect(_)
                | gateway_worker::RunError::Setup(_)
                | gateway_worker::RunError::Registry(_) => EX_UNAVAILABLE,
                _ => EX_SOFTWARE,
            })
        }
    }
}

/// Completes on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `bench __mock`: how the mock child answers.
#[derive(Debug, Clone, Copy)]
pub struct MockArgs {
    pub first_token_delay: Duration,
    pub token_interval: Duration,
    pub tokens: usize,
}

/// `bench __mock ...`: the lean mock on a free loopback port.
pub fn mock_main(args: MockArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("bench __mock: cannot start the async runtime: {err}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    match runtime.block_on(serve_mock(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench __mock: {err:#}");
            ExitCode::from(EX_SOFTWARE)
        }
    }
}

async fn serve_mock(args: MockArgs) -> anyhow::Result<()> {
    let options = MockOptions {
        first_token_delay: args.first_token_delay,
        token_interval: args.token_interval,
        tokens_per_reply: args.tokens,
        lean: true,
        ..MockOptions::default()
    };
    let mock = MockProvider::bind(SocketAddr::from(([127, 0, 0, 1], 0)), options).await?;
    say(&format!("listening on {}", mock.base_url()))?;
    let mut lines = stdin_lines();
    loop {
        let line = tokio::select! {
            line = lines.recv() => line,
            () = shutdown_signal() => None,
        };
        match line.as_deref().map(str::trim) {
            None => return Ok(()),
            Some("stats") => {
                let stats = MockStats {
                    requests: mock.request_count(),
                    peak_concurrency: mock.peak_concurrency(),
                    in_flight: mock.in_flight(),
                    disconnects: mock.disconnects(),
                };
                say(&serde_json::to_string(&stats)?)?;
            }
            Some("reset") => {
                mock.reset_stats();
                say("ok")?;
            }
            Some(other) => say(&format!("error: unknown command {other:?}"))?,
        }
    }
}

/// Lines of stdin, read on a thread of their own (blocking reads); the channel closes at
/// end of input.
fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// `bench __edge --nats URL`: the HTTP edge on a free loopback port, until SIGTERM.
pub fn edge_main(nats_url: &str) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .try_init();
    // `llmq-edge`'s runtime: two worker threads.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("bench __edge: cannot start the async runtime: {err}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    let mut config = EdgeConfig::for_nats(nats_url);
    config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let result = runtime.block_on(async {
        let edge = RunningEdge::start(config).await?;
        say(&format!("listening on http://{}", edge.addr())).map_err(anyhow::Error::from)?;
        shutdown_signal().await;
        edge.drain().await;
        Ok::<(), anyhow::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench __edge: {err:#}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}
