//! Following a connection's reconnects, for a producer's waiting handles, and the server's
//! permission errors, for every call.
//!
//! A request the server's permissions deny is never answered: the server tells the
//! connection asynchronously (`-ERR 'Permissions Violation ...'`) and the request would
//! only time out. Remembering those errors lets a call fail at once with the subject that
//! was denied (see `denied.rs`).

use std::sync::{Arc, Mutex, PoisonError};

use async_nats::{ConnectOptions, Event, ServerError};
use tokio::sync::{broadcast, watch};

/// How many recent permission errors a connection remembers.
const RECENT_DENIALS: usize = 16;

/// Counts a connection's (re)connects, so that waiters can look for what core NATS may
/// have dropped while it was down.
///
/// [`install`](Self::install) sets the connection's event callback; a caller that needs
/// its own callback calls [`connected`](Self::connected) from it instead.
#[derive(Debug, Clone)]
pub struct ConnectionEvents {
    connects: Arc<watch::Sender<u64>>,
    denials: broadcast::Sender<String>,
    recent: Arc<Mutex<Vec<String>>>,
}

impl ConnectionEvents {
    pub fn new() -> Self {
        Self {
            connects: Arc::new(watch::Sender::new(0)),
            denials: broadcast::channel(RECENT_DENIALS).0,
            recent: Arc::default(),
        }
    }

    /// Adds an event callback that counts `Connected` events.
    pub fn install(&self, options: ConnectOptions) -> ConnectOptions {
        let events = self.clone();
        options.event_callback(move |event| {
            let events = events.clone();
            async move {
                match event {
                    Event::Connected => events.connected(),
                    Event::Disconnected => tracing::warn!("disconnected from NATS"),
                    Event::ServerError(ServerError::Other(message))
                        if message.contains("Permissions Violation") =>
                    {
                        events.denied(message)
                    }
                    Event::SlowConsumer(sid) => {
                        tracing::warn!(sid, "NATS slow consumer: messages were dropped")
                    }
                    other => tracing::debug!(event = %other, "NATS connection event"),
                }
            }
        })
    }

    /// Records a (re)connect.
    pub fn connected(&self) {
        self.connects
            .send_modify(|count| *count = count.wrapping_add(1));
        tracing::debug!("connected to NATS");
    }

    /// Records a permission error of the server (`Permissions Violation for ...`).
    pub fn denied(&self, message: String) {
        tracing::warn!(%message, "the NATS server denied an operation");
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() == RECENT_DENIALS {
                recent.remove(0);
            }
            recent.push(message.clone());
        }
        let _ = self.denials.send(message);
    }

    /// Permission errors seen so far (the last few), and a receiver of later ones.
    pub(crate) fn denials(&self) -> (Vec<String>, broadcast::Receiver<String>) {
        let receiver = self.denials.subscribe();
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        (recent.clone(), receiver)
    }

    /// A receiver that sees every later (re)connect as a change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.connects.subscribe()
    }
}

impl Default for ConnectionEvents {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_events_are_seen_by_later_receivers_only_when_new() {
        let events = ConnectionEvents::new();
        events.connected();
        let mut rx = events.subscribe();
        assert!(!rx.has_changed().unwrap());
        events.connected();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 2);
    }
}
