//! The process signals every llmq server answers, in one place.
//!
//! A server listens from the start of `main`, before anything slow: a SIGHUP that arrives
//! while nothing listens ends the process (its default action), and a SIGTERM during a
//! long start-up (a worker waiting for its broker) must stop the wait.

/// What a signal asks of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: re-read what may change while running.
    Reload,
    /// SIGINT or SIGTERM: drain and exit.
    Shutdown,
}

/// The signals a server answers, listened to from creation on. A signal that cannot be
/// listened to is warned about and never arrives.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    pub fn listen() -> Signals {
        use tokio::signal::unix::SignalKind;
        Signals {
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
            hangup: listen(SignalKind::hangup(), "SIGHUP"),
        }
    }

    /// The next signal.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            Some(()) = received(&mut self.interrupt) => {
                tracing::info!("SIGINT received");
                Signal::Shutdown
            }
            Some(()) = received(&mut self.terminate) => {
                tracing::info!("SIGTERM received");
                Signal::Shutdown
            }
            Some(()) = received(&mut self.hangup) => {
                tracing::info!("SIGHUP received");
                Signal::Reload
            }
            else => Signal::Shutdown,
        }
    }
}

impl Signals {
    /// Waits for SIGINT or SIGTERM; a SIGHUP meanwhile is ignored.
    pub async fn shutdown(&mut self) {
        while self.next().await != Signal::Shutdown {}
    }
}

/// Waits for SIGINT or SIGTERM, for a server that answers no other signal.
pub async fn shutdown() {
    Signals::listen().shutdown().await
}

#[cfg(unix)]
fn listen(
    kind: tokio::signal::unix::SignalKind,
    name: &str,
) -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(kind) {
        Ok(signal) => Some(signal),
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for {name}");
            None
        }
    }
}

/// The next delivery of `signal`; never, when it is not listened to.
#[cfg(unix)]
async fn received(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
impl Signals {
    pub fn listen() -> Signals {
        Signals {}
    }

    pub async fn next(&mut self) -> Signal {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        Signal::Shutdown
    }
}
