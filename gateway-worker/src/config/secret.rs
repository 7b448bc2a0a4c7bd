//! Provider keys: held only here, printed nowhere; and where each comes from, which can be
//! printed.

use std::fmt;
use std::path::PathBuf;

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

/// Compares the values (a config reload tells a changed key from a kept one); neither is
/// printed.
impl PartialEq for ApiKey {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
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

/// Where a provider's key comes from, as the config says. Reading it is the loader's job;
/// `--check-config` prints this instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `api_key_env`: the variable's name.
    Env(String),
    /// `api_key_file`, relative paths resolved against the config file's directory.
    File(PathBuf),
    /// Both `api_key_env` and `api_key_file`: a config error.
    Ambiguous,
    /// Set directly by the code that built the config.
    Given,
    /// No key (optional for `openai_compatible`).
    None,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env(var) => write!(f, "key from environment variable {var}"),
            KeySource::File(path) => write!(f, "key from file {}", path.display()),
            KeySource::Ambiguous => f.write_str("both api_key_env and api_key_file (invalid)"),
            KeySource::Given => f.write_str("key given by the caller"),
            KeySource::None => f.write_str("no key"),
        }
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
