//! How to reach NATS, as one config-friendly struct.
//!
//! The worker embeds this very struct under `[nats]` in its TOML config and the CLI fills
//! it from flags, so both sides authenticate and time out the same way. Unknown keys are
//! refused (a misspelt `pasword` must not silently connect without one), durations are
//! humantime strings (`"5s"`), and secrets never reach `Debug` output, logs or errors.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// Connection settings for a NATS server or cluster.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsOptions {
    /// One server URL, or several separated by commas (`nats://a:4222,nats://b:4222`).
    pub url: String,
    /// The connection name shown by the server's monitoring.
    pub name: Option<String>,
    pub user: Option<String>,
    pub password: Option<SecretString>,
    pub token: Option<SecretString>,
    /// A `.creds` file (JWT and NKey seed) for decentralized auth.
    pub creds_file: Option<PathBuf>,
    /// A file holding a user's NKey seed (`SU...`), as `submitter auth generate` writes
    /// them: the server knows only the public key.
    pub nkey_file: Option<PathBuf>,
    pub tls: TlsOptions,
    /// Time allowed for the TCP/TLS handshake and the server's first PONG.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for a request (JetStream API calls included) to be answered.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl NatsOptions {
    pub const DEFAULT_URL: &'static str = "nats://127.0.0.1:4222";

    /// Options for `url` with every other field at its default.
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// The server URLs, split on commas, blanks dropped.
    pub fn urls(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            url: Self::DEFAULT_URL.to_owned(),
            name: None,
            user: None,
            password: None,
            token: None,
            creds_file: None,
            nkey_file: None,
            tls: TlsOptions::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsOptions")
            .field("url", &redact_url_userinfo(&self.url))
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("creds_file", &self.creds_file)
            .field("nkey_file", &self.nkey_file)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// TLS settings. Files are PEM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsOptions {
    /// Extra root certificates to trust (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Client certificate, for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub required: bool,
}

/// `nats://user:secret@host` -> `nats://[REDACTED]@host`, for each URL of a list.
pub fn redact_url_userinfo(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let (scheme, rest) = match url.split_once("://") {
                Some((scheme, rest)) => (Some(scheme), rest),
                None => (None, url),
            };
            let redacted = match rest.rsplit_once('@') {
                Some((_, host)) => format!("[REDACTED]@{host}"),
                None => rest.to_owned(),
            };
            match scheme {
                Some(scheme) => format!("{scheme}://{redacted}"),
                None => redacted,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_a_local_server() {
        let options = NatsOptions::default();
        assert_eq!(options.url, "nats://127.0.0.1:4222");
        assert_eq!(options.connect_timeout, Duration::from_secs(5));
        assert_eq!(options.request_timeout, Duration::from_secs(10));
        assert!(!options.tls.required);
    }

    #[test]
    fn parses_humantime_durations_and_nested_tls() {
        let options: NatsOptions = serde_json::from_value(serde_json::json!({
            "url": "nats://a:4222, nats://b:4222",
            "password": "hunter2",
            "connect_timeout": "2s",
            "request_timeout": "1m 30s",
            "tls": {"required": true, "ca_file": "/etc/ca.pem"}
        }))
        .unwrap();
        assert_eq!(options.connect_timeout, Duration::from_secs(2));
        assert_eq!(options.request_timeout, Duration::from_secs(90));
        assert!(options.tls.required);
        assert_eq!(options.urls(), vec!["nats://a:4222", "nats://b:4222"]);
        assert_eq!(options.user, None);
    }

    #[test]
    fn refuses_unknown_keys_at_every_level() {
        let top = serde_json::from_value::<NatsOptions>(serde_json::json!({"pasword": "x"}));
        assert!(top.is_err());
        let nested = serde_json::from_value::<NatsOptions>(serde_json::json!({"tls": {"ca": "x"}}));
        assert!(nested.is_err());
    }

    #[test]
    fn debug_never_prints_secrets() {
        let options = NatsOptions {
            url: "nats://alice:urlsecret@host:4222,tls://h2".into(),
            user: Some("alice".into()),
            password: Some(SecretString::from("pwsecret")),
            token: Some(SecretString::from("toksecret")),
            ..NatsOptions::default()
        };
        let debug = format!("{options:?}");
        for secret in ["urlsecret", "pwsecret", "toksecret"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("host:4222"), "{debug}");
        assert!(debug.contains("alice"), "{debug}");
    }
}
