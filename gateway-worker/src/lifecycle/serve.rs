//! The binary's life: start, answer signals, drain.
//!
//! `gateway-worker` runs [`serve`]: SIGINT or SIGTERM drain the worker (also while it is
//! still starting), SIGHUP re-reads the provider key files and then the config file, and
//! with `--watch-config` a change of the file's content ([`ConfigWatch`]) reloads the config
//! too. Tests use [`super::run`] with a shutdown future of their own, or these pieces.

use std::path::Path;
use std::time::Duration;

use llmq_runtime::signals::{Signal, Signals};

use super::config_watch::ConfigWatch;
use super::{RunError, RunningWorker};
use crate::config::Config;

/// Runs the worker until SIGINT or SIGTERM, then drains it; SIGHUP (and a change of the
/// config file, with `watch_every`) reloads it. Every signal the worker answers is
/// handled here, in [`Signals`] and this loop.
pub async fn serve(
    config: Config,
    path: &Path,
    watch_every: Option<Duration>,
) -> Result<(), RunError> {
    // Listening first: a SIGHUP during start-up must not end the process.
    let mut signals = Signals::listen();
    let mut watch = ConfigWatch::new(path, watch_every);
    // Start-up may wait for the broker for minutes: SIGTERM ends it too.
    let worker = tokio::select! {
        started = RunningWorker::start(config) => started?,
        () = signals.shutdown() => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    loop {
        let asked = tokio::select! {
            asked = signals.next() => asked.into(),
            () = watch.changed() => Asked::ReloadConfig,
        };
        match asked {
            Asked::Reload => {
                // Keys first: the config load reads them too, and would hide a rotation.
                reload_keys(&worker).await;
                watch.seen();
                let _ = worker.reload_config(watch.path()).await;
            }
            Asked::ReloadConfig => {
                tracing::info!(path = %watch.path().display(), "config file changed");
                let _ = worker.reload_config(watch.path()).await;
            }
            Asked::Shutdown => {
                worker.drain().await;
                return Ok(());
            }
        }
    }
}

/// SIGHUP: every `api_key_file` re-read now; which providers changed or kept their key.
async fn reload_keys(worker: &RunningWorker) {
    let reload = worker.reload_keys().await;
    tracing::info!(
        changed = ?reload.changed,
        kept = ?reload.kept,
        "provider key files re-read"
    );
}

/// What a signal (or the config watch) asks of the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// SIGHUP: re-read every `api_key_file` and the config file now.
    Reload,
    /// The config file's content changed (`--watch-config`).
    ReloadConfig,
    /// SIGINT or SIGTERM: drain and exit.
    Shutdown,
}

impl From<Signal> for Asked {
    fn from(signal: Signal) -> Asked {
        match signal {
            Signal::Reload => Asked::Reload,
            Signal::Shutdown => Asked::Shutdown,
        }
    }
}
