//! Connection options every subcommand takes, from flags or the environment.
//!
//! Secrets are best given through the environment (`LLMQ_NATS_PASSWORD`,
//! `LLMQ_NATS_TOKEN`): flags are visible to other users in the process list. Their values
//! are never shown in `--help`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use llmq_submitter::{ClientOptions, NatsOptions, TlsOptions};
use secrecy::SecretString;

use super::CliError;

#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
pub struct GlobalArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(long, global = true, env = "LLMQ_NATS_URL", default_value = NatsOptions::DEFAULT_URL)]
    pub url: String,
    /// Subject prefix of the llmq deployment.
    #[arg(long, global = true, env = "LLMQ_PREFIX", default_value = "llmq")]
    pub prefix: String,
    /// The tenant to submit as and read results, usage and cancels of.
    #[arg(long, global = true, env = "LLMQ_TENANT", default_value = "default")]
    pub tenant: String,
    /// NATS user.
    #[arg(long, global = true, env = "LLMQ_NATS_USER")]
    pub user: Option<String>,
    /// NATS password (prefer the environment variable).
    #[arg(
        long,
        global = true,
        env = "LLMQ_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// NATS token (prefer the environment variable).
    #[arg(long, global = true, env = "LLMQ_NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// NATS credentials file (JWT + NKey seed).
    #[arg(long, global = true, env = "LLMQ_NATS_CREDS", value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// CA certificate(s) to trust, PEM.
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS, PEM (with --tls-key).
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS, PEM (with --tls-cert).
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Refuse to connect without TLS.
    #[arg(long, global = true)]
    pub tls_required: bool,
    /// How long to try to connect.
    #[arg(long, global = true, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

impl GlobalArgs {
    pub fn client_options(&self) -> Result<ClientOptions, CliError> {
        if self.password.is_some() && self.user.is_none() {
            return Err(CliError::Usage("--password needs --user".into()));
        }
        let nats = NatsOptions {
            url: self.url.clone(),
            name: Some("llmq-submitter".into()),
            user: self.user.clone(),
            password: self.password.clone().map(SecretString::from),
            token: self.token.clone().map(SecretString::from),
            creds_file: self.creds.clone(),
            tls: TlsOptions {
                ca_file: self.tls_ca.clone(),
                cert_file: self.tls_cert.clone(),
                key_file: self.tls_key.clone(),
                required: self.tls_required,
            },
            connect_timeout: self.connect_timeout,
            ..NatsOptions::default()
        };
        Ok(ClientOptions {
            nats,
            prefix: self.prefix.clone(),
            tenant: self.tenant.clone(),
            ..ClientOptions::default()
        })
    }
}
