//! Following a connection's reconnects, for a producer's waiting handles.

use std::sync::Arc;

use async_nats::{ConnectOptions, Event};
use tokio::sync::watch;

/// Counts a connection's (re)connects, so that waiters can look for what core NATS may
/// have dropped while it was down.
///
/// [`install`](Self::install) sets the connection's event callback; a caller that needs
/// its own callback calls [`connected`](Self::connected) from it instead.
#[derive(Debug, Clone)]
pub struct ConnectionEvents {
    connects: Arc<watch::Sender<u64>>,
}

impl ConnectionEvents {
    pub fn new() -> Self {
        Self {
            connects: Arc::new(watch::Sender::new(0)),
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
