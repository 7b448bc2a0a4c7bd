//! Provider keys that change while the worker runs.
//!
//! A key from `api_key_file` (a mounted secret) is rotated by changing the file: the
//! worker re-reads every key file every `worker.key_reload_interval` and on SIGHUP
//! ([`KeyFiles`]), and swaps a changed key whole into the provider's [`ProviderKey`]. An
//! attempt takes the key once, at its start, and keeps it for its whole call, so calls in
//! flight finish with the key they started with and every later one sends the new key;
//! no job waits or fails for a rotation. A key from `api_key_env` cannot change in a
//! running process: rotating it is a rolling restart (README, "Configuration").

mod files;

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::config::ApiKey;

pub use files::{KeyFileError, KeyFiles, KeyReload};

/// One provider's key as the worker holds it now. Cloning shares it: every clone sees a
/// replacement. Debug prints whether a key is set, never the key.
#[derive(Clone, Default)]
pub struct ProviderKey(Arc<ArcSwapOption<ApiKey>>);

impl ProviderKey {
    pub fn new(key: Option<ApiKey>) -> Self {
        Self(Arc::new(ArcSwapOption::from(key.map(Arc::new))))
    }

    /// The key now. A call holds on to what this returns: a later replacement does not
    /// change it.
    pub fn current(&self) -> Option<Arc<ApiKey>> {
        self.0.load_full()
    }

    /// From now on, calls take `key`.
    pub fn replace(&self, key: ApiKey) {
        self.0.store(Some(Arc::new(key)));
    }

    /// Whether the key now is `candidate`.
    fn is(&self, candidate: &str) -> bool {
        self.0
            .load()
            .as_deref()
            .is_some_and(|key| key.expose() == candidate)
    }
}

impl fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.0.load().is_some() {
            "[redacted]"
        } else {
            "none"
        };
        write!(f, "ProviderKey({state})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_keeps_the_key_it_took_while_later_calls_get_the_new_one() {
        let key = ProviderKey::new(Some(ApiKey::new("old-key-1")));
        let shared = key.clone();
        let in_flight = key.current().unwrap();
        shared.replace(ApiKey::new("new-key-2"));
        assert_eq!(in_flight.expose(), "old-key-1");
        assert_eq!(key.current().unwrap().expose(), "new-key-2");
        assert!(key.is("new-key-2"));
        assert!(!format!("{key:?}").contains("key-2"));
        assert_eq!(format!("{:?}", ProviderKey::new(None)), "ProviderKey(none)");
    }
}
