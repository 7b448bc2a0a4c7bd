//! Provider keys: held only here, printed nowhere.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A provider API key. Debug and Display print a placeholder; the only way to the value
/// is [`ApiKey::expose`], which adapters call to put it in a request header.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(SecretString::from(key.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_key() {
        let key = ApiKey::new("sk-live-123456");
        assert!(!format!("{key:?}").contains("123456"));
        assert!(!format!("{key}").contains("123456"));
        assert_eq!(key.expose(), "sk-live-123456");
    }
}
