//! Opening a NATS connection the way every llmq process should.
//!
//! Producers and the worker share this so that auth, TLS and timeouts mean the same on both
//! sides, and so that both refuse a server too old to be trusted: such a server accepts the
//! stream and consumer configs llmq sends and silently ignores parts of them.

use std::path::PathBuf;

use async_nats::ConnectOptions;

use crate::nats_options::{NatsOptions, redact_url_userinfo};

/// The oldest nats-server llmq accepts.
pub const MINIMUM_SERVER_VERSION: &str = "2.11.0";

/// Connecting to NATS.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The options contradict each other (a TLS key without a certificate, no URL).
    #[error("invalid NATS options: {0}")]
    InvalidOptions(String),
    #[error("cannot read the NATS credentials file {path}: {source}", path = path.display())]
    Credentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The server is unreachable, refused the credentials, or the TLS handshake failed;
    /// `source.kind()` says which.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// With any `user:password@` removed.
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error(
        "nats-server {version} is too old: llmq needs {minimum} or newer, because older servers \
         lack JetStream behaviour the protocol relies on (2.9 silently ignores a consumer's \
         filter_subjects, so a worker would be handed every model's jobs)"
    )]
    ServerTooOld {
        version: String,
        minimum: &'static str,
    },
}

/// Connects with `options`, lets `customize` add to the connect options (an inbox prefix, an
/// event callback), and refuses a server older than [`MINIMUM_SERVER_VERSION`].
pub async fn connect(
    options: &NatsOptions,
    customize: impl FnOnce(ConnectOptions) -> ConnectOptions,
) -> Result<async_nats::Client, ConnectError> {
    let urls = options.urls();
    if urls.is_empty() {
        return Err(ConnectError::InvalidOptions("no NATS server URL".into()));
    }
    let connect_options = customize(connect_options(options).await?);
    let client = connect_options
        .connect(urls)
        .await
        .map_err(|source| ConnectError::Connect {
            url: redact_url_userinfo(&options.url),
            source,
        })?;
    check_server_version(&client.server_info().version)?;
    Ok(client)
}

async fn connect_options(options: &NatsOptions) -> Result<ConnectOptions, ConnectError> {
    use secrecy::ExposeSecret;

    let mut connect = ConnectOptions::new()
        .connection_timeout(options.connect_timeout)
        .request_timeout(Some(options.request_timeout));
    if let Some(name) = &options.name {
        connect = connect.name(name);
    }
    match (&options.user, &options.password) {
        (Some(user), password) => {
            let password = password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_default();
            connect = connect.user_and_password(user.clone(), password);
        }
        (None, Some(_)) => {
            return Err(ConnectError::InvalidOptions(
                "a NATS password needs a user".into(),
            ));
        }
        (None, None) => {}
    }
    if let Some(token) = &options.token {
        connect = connect.token(token.expose_secret().to_owned());
    }
    if let Some(path) = &options.creds_file {
        connect =
            connect
                .credentials_file(path)
                .await
                .map_err(|source| ConnectError::Credentials {
                    path: path.clone(),
                    source,
                })?;
    }
    if let Some(path) = &options.nkey_file {
        connect = connect.nkey(read_seed(path)?);
    }
    let tls = &options.tls;
    if let Some(ca) = &tls.ca_file {
        connect = connect.add_root_certificates(ca.clone());
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            connect = connect.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        _ => {
            return Err(ConnectError::InvalidOptions(
                "tls.cert_file and tls.key_file go together".into(),
            ));
        }
    }
    if tls.required {
        connect = connect.require_tls(true);
    }
    Ok(connect)
}

/// Refuses a version below [`MINIMUM_SERVER_VERSION`] (or one that does not parse).
/// The seed in an NKey file (surrounding blanks and comment lines ignored).
fn read_seed(path: &std::path::Path) -> Result<String, ConnectError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConnectError::Credentials {
        path: path.to_owned(),
        source,
    })?;
    text.lines()
        .map(str::trim)
        .find(|line| line.starts_with('S'))
        .map(str::to_owned)
        .ok_or_else(|| {
            ConnectError::InvalidOptions(format!(
                "{} holds no NKey seed (a line starting with S)",
                path.display()
            ))
        })
}

pub fn check_server_version(version: &str) -> Result<(), ConnectError> {
    let too_old = || ConnectError::ServerTooOld {
        version: if version.is_empty() {
            "(unknown)".to_owned()
        } else {
            version.to_owned()
        },
        minimum: MINIMUM_SERVER_VERSION,
    };
    let parsed = parse_version(version).ok_or_else(too_old)?;
    let minimum = parse_version(MINIMUM_SERVER_VERSION).ok_or_else(too_old)?;
    if parsed < minimum {
        return Err(too_old());
    }
    Ok(())
}

/// `"2.11.3"`, `"v2.12.0-beta.1"` -> `(2, 11, 3)`.
fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.trim().trim_start_matches('v');
    let core = core.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|part| part.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_servers_older_than_2_11() {
        for old in ["2.9.25", "2.10.22", "v2.10.0", "1.4.1", "", "garbage"] {
            assert!(
                matches!(
                    check_server_version(old),
                    Err(ConnectError::ServerTooOld {
                        minimum: "2.11.0",
                        ..
                    })
                ),
                "{old}"
            );
        }
        for ok in ["2.11.0", "2.11.3", "2.15.1", "v2.12.0-beta.1", "3.0.0"] {
            assert!(check_server_version(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn too_old_message_says_why() {
        let text = check_server_version("2.9.0").unwrap_err().to_string();
        assert!(
            text.contains("2.9.0") && text.contains("filter_subjects"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn password_without_user_is_refused_before_connecting() {
        let options = NatsOptions {
            password: Some("x".into()),
            ..NatsOptions::default()
        };
        assert!(matches!(
            connect(&options, |o| o).await,
            Err(ConnectError::InvalidOptions(_))
        ));
        let options = NatsOptions {
            tls: crate::TlsOptions {
                key_file: Some("/k.pem".into()),
                ..Default::default()
            },
            ..NatsOptions::default()
        };
        assert!(matches!(
            connect(&options, |o| o).await,
            Err(ConnectError::InvalidOptions(_))
        ));
        let options = NatsOptions::with_url(" , ");
        assert!(matches!(
            connect(&options, |o| o).await,
            Err(ConnectError::InvalidOptions(_))
        ));
    }
}
