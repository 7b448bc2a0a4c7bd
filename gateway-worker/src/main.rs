//! `gateway-worker --config worker.toml`: loads the config, sets up logging, runs the
//! worker until SIGINT or SIGTERM (SIGHUP re-reads the provider key files and the config
//! file, and applies the config live; `--watch-config` also re-reads the file when its
//! content changes), and exits with a code that says what went wrong.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use gateway_worker::RunError;
use gateway_worker::config;
use gateway_worker::lifecycle::serve;

/// The llmq gateway worker: holds provider keys, runs chat-completion jobs from NATS
/// JetStream, streams results back.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Environment: LLMQ__<SECTION>__<KEY> overrides a config value \
(e.g. LLMQ__WORKER__MAX_INFLIGHT=64, LLMQ__NATS__URL=nats://nats:4222); in provider and model \
names, _ stands for - (LLMQ__PROVIDERS__AZURE_EU__BASE_URL sets providers.azure-eu). Provider \
keys are read from the variables or files the config names (api_key_env / api_key_file); \
SIGHUP re-reads every api_key_file at once (they are also re-read every \
worker.key_reload_interval).\n\n\
Live configuration: SIGHUP (and, with --watch-config, a change of the file's content) also \
re-reads the config file, with the same environment overrides, and applies models, \
deployments, weights, fallbacks, prices, providers, retry, cooldown, limits.interactive_max_wait \
and the worker's deadlines, fetch and key-reload settings without a restart; jobs in flight \
finish on the config they started with. A file that does not load, or that changes nats, \
jetstream, admin, log, tenants, limits.lease or worker.id/max_inflight/batch_share/threads/\
sweep_interval (those need a restart), is rejected whole and logged; the running config stays.\n\n\
Start-up waits (logging what for) while NATS does not accept connections or JetStream cannot yet \
place the streams, up to worker.startup_timeout (2m); SIGTERM ends the wait.\n\n\
Exit codes: 0 clean shutdown; 64 invalid config (also: admin.listen already in use); 69 NATS \
unreachable, too old, or its streams could not be set up (after worker.startup_timeout, or at once \
when waiting cannot help); 70 internal error."
)]
struct Cli {
    /// The TOML config file.
    #[arg(short, long, env = "LLMQ_CONFIG", default_value = "llmq.toml")]
    config: PathBuf,
    /// Check the config's structure and references without reading any key (each
    /// provider's key source is printed), then exit.
    #[arg(long)]
    check_config: bool,
    /// Like --check-config, and also read every provider key as start-up does.
    #[arg(long)]
    check_keys: bool,
    /// Also re-read the config file this often (e.g. 10s) and apply it when its content
    /// changed, as on SIGHUP (for mounts that change files in place, like a Kubernetes
    /// ConfigMap).
    #[arg(long, env = "LLMQ_WATCH_CONFIG", value_parser = humantime::parse_duration)]
    watch_config: Option<Duration>,
}

const EX_CONFIG: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;
const EX_SOFTWARE: u8 = 70;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.check_config || cli.check_keys {
        return check(&cli.config, cli.check_keys);
    }
    let config = match config::load(&cli.config) {
        Ok(config) => config,
        Err(err) => return invalid_config(&cli.config, &err),
    };
    gateway_worker::telemetry::init(&config.log);
    let runtime = match config.worker.runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("gateway-worker: cannot start the async runtime: {err}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    let result = runtime.block_on(serve(config, &cli.config, cli.watch_config));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "worker failed");
            eprintln!("gateway-worker: {err}");
            ExitCode::from(match err {
                RunError::Config(_) | RunError::Routes(_) | RunError::Admin { .. } => EX_CONFIG,
                RunError::Connect(_)
                | RunError::Setup(_)
                | RunError::StartupTimeout { .. }
                | RunError::Registry(_) => EX_UNAVAILABLE,
                RunError::Metrics(_) => EX_SOFTWARE,
            })
        }
    }
}

/// `--check-config` (no key read) or `--check-keys` (every key read): validates, builds
/// every adapter and HTTP client (all a config can get wrong without a network), prints
/// a summary with each provider's key source.
fn check(path: &Path, read_keys: bool) -> ExitCode {
    let loaded = if read_keys {
        config::load(path)
    } else {
        config::check(path)
    };
    let config = match loaded {
        Ok(config) => config,
        Err(err) => return invalid_config(path, &err),
    };
    gateway_worker::providers::http_client::install_crypto_provider();
    if let Err(err) = gateway_worker::routing::Router::build(&config) {
        eprintln!("gateway-worker: invalid config {}:\n{err}", path.display());
        return ExitCode::from(EX_CONFIG);
    }
    let keys = if read_keys {
        "every key read"
    } else {
        "no key read (--check-keys also reads every key)"
    };
    println!(
        "config ok: {} provider(s), {} model(s), prefix {:?}; {keys}",
        config.providers.len(),
        config.models.len(),
        config.jetstream.prefix
    );
    for (name, provider) in &config.providers {
        println!(
            "  providers.{name} ({}): {}",
            provider.kind.as_str(),
            provider.key_source()
        );
    }
    ExitCode::SUCCESS
}

fn invalid_config(path: &Path, err: &config::ConfigError) -> ExitCode {
    eprintln!("gateway-worker: invalid config {}:\n{err}", path.display());
    ExitCode::from(EX_CONFIG)
}
