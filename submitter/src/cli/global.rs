//! Connection options every subcommand takes: a flag, else the environment, else a default.
//!
//! The environment variables are the worker's config names (`LLMQ__NATS__URL`,
//! `LLMQ__NATS__PASSWORD`, `LLMQ__JETSTREAM__PREFIX`, ...), so one `export` points the CLI
//! and a worker started from the same shell at the same server. They are read here, not by
//! clap's `env`: clap names every option set from the environment in its usage lines, as
//! if it were required. The older single-underscore names (`LLMQ_NATS_URL`, ...) still
//! work, with a warning. The tenant has no worker config key: it stays `LLMQ_TENANT`
//! (an `LLMQ__` name would be an unknown key to a worker started from the same shell).
//!
//! Secrets are best given through the environment: flags are visible to other users in
//! the process list. Their values are never shown in `--help`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use llmq_submitter::{ClientOptions, NatsOptions, TlsOptions};
use secrecy::SecretString;

use super::CliError;

/// The environment variable of one setting, and the name it had before.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    pub name: &'static str,
    pub deprecated: Option<&'static str>,
}

/// A variable that replaced an older name.
const fn renamed(name: &'static str, deprecated: &'static str) -> EnvVar {
    EnvVar {
        name,
        deprecated: Some(deprecated),
    }
}

/// A variable without an older name.
const fn named(name: &'static str) -> EnvVar {
    EnvVar {
        name,
        deprecated: None,
    }
}

pub const URL: EnvVar = renamed("LLMQ__NATS__URL", "LLMQ_NATS_URL");
pub const PREFIX: EnvVar = renamed("LLMQ__JETSTREAM__PREFIX", "LLMQ_PREFIX");
pub const TENANT: EnvVar = named("LLMQ_TENANT");
pub const USER: EnvVar = renamed("LLMQ__NATS__USER", "LLMQ_NATS_USER");
pub const PASSWORD: EnvVar = renamed("LLMQ__NATS__PASSWORD", "LLMQ_NATS_PASSWORD");
pub const TOKEN: EnvVar = renamed("LLMQ__NATS__TOKEN", "LLMQ_NATS_TOKEN");
pub const CREDS: EnvVar = renamed("LLMQ__NATS__CREDS_FILE", "LLMQ_NATS_CREDS");
pub const NKEY: EnvVar = named("LLMQ__NATS__NKEY_FILE");
pub const TLS_CA: EnvVar = named("LLMQ__NATS__TLS__CA_FILE");
pub const TLS_CERT: EnvVar = named("LLMQ__NATS__TLS__CERT_FILE");
pub const TLS_KEY: EnvVar = named("LLMQ__NATS__TLS__KEY_FILE");
pub const TLS_REQUIRED: EnvVar = named("LLMQ__NATS__TLS__REQUIRED");
pub const CONNECT_TIMEOUT: EnvVar = named("LLMQ__NATS__CONNECT_TIMEOUT");

/// Every variable the CLI reads: the help test checks that `--help` names each.
#[cfg(test)]
pub const ALL: [EnvVar; 13] = [
    URL,
    PREFIX,
    TENANT,
    USER,
    PASSWORD,
    TOKEN,
    CREDS,
    NKEY,
    TLS_CA,
    TLS_CERT,
    TLS_KEY,
    TLS_REQUIRED,
    CONNECT_TIMEOUT,
];

const DEFAULT_PREFIX: &str = "llmq";
const DEFAULT_TENANT: &str = "default";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
pub struct GlobalArgs {
    /// NATS server URL(s), comma-separated [env: LLMQ__NATS__URL] [default: nats://127.0.0.1:4222]
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Subject prefix of the llmq deployment [env: LLMQ__JETSTREAM__PREFIX] [default: llmq]
    #[arg(long, global = true, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// The tenant to submit as and read results, usage and cancels of [env: LLMQ_TENANT]
    /// [default: default]
    #[arg(long, global = true, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// NATS user [env: LLMQ__NATS__USER]
    #[arg(long, global = true, value_name = "USER")]
    pub user: Option<String>,
    /// NATS password; prefer the environment variable [env: LLMQ__NATS__PASSWORD]
    #[arg(long, global = true, value_name = "PASSWORD")]
    pub password: Option<String>,
    /// NATS token; prefer the environment variable [env: LLMQ__NATS__TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// NATS credentials file (JWT + NKey seed) [env: LLMQ__NATS__CREDS_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// File with a NATS user's NKey seed, as `submitter auth generate` writes them
    /// [env: LLMQ__NATS__NKEY_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub nkey_file: Option<PathBuf>,
    /// CA certificate(s) to trust, PEM [env: LLMQ__NATS__TLS__CA_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS, PEM, with --tls-key [env: LLMQ__NATS__TLS__CERT_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Client key for mutual TLS, PEM, with --tls-cert [env: LLMQ__NATS__TLS__KEY_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Refuse to connect without TLS [env: LLMQ__NATS__TLS__REQUIRED=true]
    #[arg(long, global = true)]
    pub tls_required: bool,
    /// How long to try to connect [env: LLMQ__NATS__CONNECT_TIMEOUT] [default: 5s]
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub connect_timeout: Option<Duration>,
}

/// The options a subcommand connects with, and what an error message should know about
/// where they came from.
#[derive(Debug)]
pub struct Connection {
    pub options: ClientOptions,
    /// Neither `--url` nor the environment named a server.
    pub default_url: bool,
    /// One line per deprecated variable that was read.
    pub warnings: Vec<String>,
}

/// Adds to a connection or server error on the default URL that it was the default,
/// which may be some other NATS server, and how to name llmq's.
pub fn explain(default_url: bool, err: CliError) -> CliError {
    if default_url && err.exit() == super::Exit::Unavailable {
        CliError::OnDefaultUrl(Box::new(err))
    } else {
        err
    }
}

/// Reads settings from an environment: the process's, or a test's.
struct EnvReader<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    warnings: Vec<String>,
}

impl EnvReader<'_> {
    fn read(&mut self, var: EnvVar) -> Option<String> {
        let present = |name: &str| (self.env)(name).filter(|value| !value.is_empty());
        if let Some(value) = present(var.name) {
            return Some(value);
        }
        let old = var.deprecated?;
        let value = present(old)?;
        self.warnings.push(format!(
            "warning: {old} is deprecated; set {} instead",
            var.name
        ));
        Some(value)
    }

    fn flag_or(&mut self, flag: &Option<String>, var: EnvVar) -> Option<String> {
        flag.clone().or_else(|| self.read(var))
    }

    fn path_or(&mut self, flag: &Option<PathBuf>, var: EnvVar) -> Option<PathBuf> {
        flag.clone().or_else(|| self.read(var).map(PathBuf::from))
    }

    fn bool_or(&mut self, flag: bool, var: EnvVar) -> Result<bool, CliError> {
        if flag {
            return Ok(true);
        }
        match self.read(var) {
            None => Ok(false),
            Some(value) => match value.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(CliError::Usage(format!(
                    "{}: {value:?} is neither true nor false",
                    var.name
                ))),
            },
        }
    }

    fn duration_or(
        &mut self,
        flag: Option<Duration>,
        var: EnvVar,
    ) -> Result<Option<Duration>, CliError> {
        if flag.is_some() {
            return Ok(flag);
        }
        self.read(var)
            .map(|value| {
                humantime::parse_duration(&value).map_err(|err| {
                    CliError::Usage(format!("{}: {value:?} is not a duration: {err}", var.name))
                })
            })
            .transpose()
    }
}

impl GlobalArgs {
    /// Merges the flags with the environment `env` reads (flags win) and the defaults.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Connection, CliError> {
        let mut env = EnvReader {
            env,
            warnings: Vec::new(),
        };
        let url = env.flag_or(&self.url, URL);
        let user = env.flag_or(&self.user, USER);
        let password = env.flag_or(&self.password, PASSWORD);
        if password.is_some() && user.is_none() {
            return Err(CliError::Usage(format!(
                "--password ({}) needs --user ({})",
                PASSWORD.name, USER.name
            )));
        }
        let tls = TlsOptions {
            ca_file: env.path_or(&self.tls_ca, TLS_CA),
            cert_file: env.path_or(&self.tls_cert, TLS_CERT),
            key_file: env.path_or(&self.tls_key, TLS_KEY),
            required: env.bool_or(self.tls_required, TLS_REQUIRED)?,
        };
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(CliError::Usage(format!(
                "--tls-cert ({}) and --tls-key ({}) go together",
                TLS_CERT.name, TLS_KEY.name
            )));
        }
        let nats = NatsOptions {
            url: url
                .clone()
                .unwrap_or_else(|| NatsOptions::DEFAULT_URL.into()),
            name: Some("llmq-submitter".into()),
            user,
            password: password.map(SecretString::from),
            token: env.flag_or(&self.token, TOKEN).map(SecretString::from),
            creds_file: env.path_or(&self.creds, CREDS),
            nkey_file: env.path_or(&self.nkey_file, NKEY),
            tls,
            connect_timeout: env
                .duration_or(self.connect_timeout, CONNECT_TIMEOUT)?
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            ..NatsOptions::default()
        };
        let options = ClientOptions {
            nats,
            prefix: env
                .flag_or(&self.prefix, PREFIX)
                .unwrap_or_else(|| DEFAULT_PREFIX.into()),
            tenant: env
                .flag_or(&self.tenant, TENANT)
                .unwrap_or_else(|| DEFAULT_TENANT.into()),
            ..ClientOptions::default()
        };
        Ok(Connection {
            options,
            default_url: url.is_none(),
            warnings: env.warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::Parser;
    use secrecy::ExposeSecret;

    use super::*;
    use crate::cli::{Cli, Exit};

    fn resolve(args: &[&str], vars: &[(&str, &str)]) -> Result<Connection, CliError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cli = Cli::try_parse_from(args).unwrap();
        cli.global.resolve(&|name| vars.get(name).cloned())
    }

    #[test]
    fn reads_the_workers_variable_names() {
        let connection = resolve(
            &["submitter", "models"],
            &[
                ("LLMQ__NATS__URL", "nats://n:4222"),
                ("LLMQ__NATS__USER", "u"),
                ("LLMQ__NATS__PASSWORD", "p"),
                ("LLMQ__NATS__CREDS_FILE", "/c.creds"),
                ("LLMQ__NATS__TLS__REQUIRED", "true"),
                ("LLMQ__NATS__CONNECT_TIMEOUT", "2s"),
                ("LLMQ__JETSTREAM__PREFIX", "other"),
                ("LLMQ_TENANT", "acme"),
            ],
        )
        .unwrap();
        let nats = &connection.options.nats;
        assert_eq!(nats.url, "nats://n:4222");
        assert_eq!(nats.user.as_deref(), Some("u"));
        assert_eq!(
            nats.password.as_ref().map(|p| p.expose_secret().to_owned()),
            Some("p".into())
        );
        assert_eq!(nats.creds_file, Some(PathBuf::from("/c.creds")));
        assert!(nats.tls.required);
        assert_eq!(nats.connect_timeout, Duration::from_secs(2));
        assert_eq!(connection.options.prefix, "other");
        assert_eq!(connection.options.tenant, "acme");
        assert!(!connection.default_url);
        assert!(connection.warnings.is_empty());
    }

    #[test]
    fn flags_win_over_the_environment_and_defaults_fill_the_rest() {
        let connection = resolve(
            &["submitter", "models", "--url", "nats://flag:4222"],
            &[("LLMQ__NATS__URL", "nats://env:4222")],
        )
        .unwrap();
        assert_eq!(connection.options.nats.url, "nats://flag:4222");
        assert_eq!(connection.options.prefix, "llmq");
        assert_eq!(connection.options.tenant, "default");
        assert_eq!(
            connection.options.nats.connect_timeout,
            Duration::from_secs(5)
        );

        let connection = resolve(&["submitter", "models"], &[]).unwrap();
        assert_eq!(connection.options.nats.url, NatsOptions::DEFAULT_URL);
        assert!(connection.default_url);
    }

    #[test]
    fn old_names_still_work_with_a_warning() {
        let connection = resolve(
            &["submitter", "models"],
            &[("LLMQ_NATS_URL", "nats://old:4222")],
        )
        .unwrap();
        assert_eq!(connection.options.nats.url, "nats://old:4222");
        assert_eq!(
            connection.warnings,
            vec!["warning: LLMQ_NATS_URL is deprecated; set LLMQ__NATS__URL instead"]
        );
        let both = resolve(
            &["submitter", "models"],
            &[
                ("LLMQ_NATS_URL", "nats://old:4222"),
                ("LLMQ__NATS__URL", "nats://new:4222"),
            ],
        )
        .unwrap();
        assert_eq!(both.options.nats.url, "nats://new:4222");
        assert!(both.warnings.is_empty());
    }

    #[test]
    fn bad_values_are_usage_errors_naming_the_variable() {
        for vars in [
            &[("LLMQ__NATS__TLS__REQUIRED", "yes")][..],
            &[("LLMQ__NATS__CONNECT_TIMEOUT", "soon")][..],
            &[("LLMQ__NATS__PASSWORD", "p")][..],
            &[("LLMQ__NATS__TLS__CERT_FILE", "/cert.pem")][..],
        ] {
            let err = resolve(&["submitter", "models"], vars).unwrap_err();
            assert_eq!(err.exit(), Exit::Usage, "{vars:?}");
            assert!(err.to_string().contains(vars[0].0), "{err}");
        }
    }

    #[test]
    fn an_outage_on_the_default_url_says_it_was_the_default() {
        let unavailable = || {
            CliError::from(llmq_submitter::ClientError::NotSetUp {
                prefix: "llmq".into(),
                missing: "stream LLMQ_JOBS".into(),
            })
        };
        let on_default = resolve(&["submitter", "models"], &[]).unwrap().default_url;
        assert!(on_default);
        let explained = explain(on_default, unavailable());
        assert!(matches!(explained, CliError::OnDefaultUrl(_)));
        assert_eq!(explained.exit(), Exit::Unavailable);
        let text = explained.to_string();
        assert!(text.contains(NatsOptions::DEFAULT_URL), "{text}");
        assert!(text.contains("--url"), "{text}");
        assert!(text.contains("LLMQ__NATS__URL"), "{text}");

        let named = resolve(&["submitter", "models", "--url", "nats://n:1"], &[])
            .unwrap()
            .default_url;
        assert!(matches!(explain(named, unavailable()), CliError::Client(_)));
        let usage = explain(on_default, CliError::Usage("x".into()));
        assert!(matches!(usage, CliError::Usage(_)));
    }
}
