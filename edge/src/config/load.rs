//! Reading the config: file, the environment variables that are the edge's, the command
//! line's flags, validation.
//!
//! One shell or compose file often sets variables for a worker and an edge at once, so the
//! edge takes only the variables of what it has: its sections `nats`, `http` and `log`,
//! and `jetstream.prefix`. A worker's own settings (`LLMQ__WORKER__*`,
//! `LLMQ__JETSTREAM__REPLICAS`, `LLMQ__ADMIN__LISTEN`, ...) are left to the worker. A
//! variable set to nothing counts as unset, as it always has for the edge.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use llmq_runtime::config_file::{self, ConfigError, Env};

use super::{EdgeConfig, validate};

/// What the command line sets over the file and the environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub max_body_bytes: Option<usize>,
    pub default_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub keep_alive: Option<Duration>,
}

impl Overrides {
    fn apply(&self, config: &mut EdgeConfig) {
        let http = &mut config.http;
        http.listen = self.listen.unwrap_or(http.listen);
        http.max_body_bytes = self.max_body_bytes.unwrap_or(http.max_body_bytes);
        http.default_timeout = self.default_timeout.unwrap_or(http.default_timeout);
        http.read_timeout = self.read_timeout.unwrap_or(http.read_timeout);
        http.keep_alive = self.keep_alive.unwrap_or(http.keep_alive);
    }
}

/// The file at `path` (none: every setting at its default), the edge's variables of `env`
/// over it, `overrides` over both; validated.
pub fn load(
    path: Option<&Path>,
    env: &Env,
    overrides: &Overrides,
) -> Result<EdgeConfig, ConfigError> {
    let text = match path {
        Some(path) => config_file::read(path)?,
        None => String::new(),
    };
    load_text(&text, Some(env), overrides)
}

/// [`load`] of TOML text; without `env`, no variable is read (tests).
pub fn load_text(
    text: &str,
    env: Option<&Env>,
    overrides: &Overrides,
) -> Result<EdgeConfig, ConfigError> {
    let overlay = env.map(|env| {
        let set: Env = env
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        config_file::overlay(&set, edge_variable)
    });
    let mut config: EdgeConfig = config_file::parse(text, overlay)?;
    overrides.apply(&mut config);
    validate(&config).map_err(ConfigError::Invalid)?;
    Ok(config)
}

/// `Some(var)` when the variable sets one of the edge's settings.
fn edge_variable(var: &str) -> Option<String> {
    let parts: Vec<String> = var.split("__").map(str::to_ascii_lowercase).collect();
    let section = parts.get(1).map(String::as_str);
    let ours = match section {
        Some("nats" | "http" | "log") => parts.len() >= 3,
        Some("jetstream") => parts.len() == 3 && parts[2] == "prefix",
        _ => false,
    };
    ours.then(|| var.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn problems(result: Result<EdgeConfig, ConfigError>) -> Vec<String> {
        match result {
            Err(ConfigError::Invalid(problems)) => problems.iter().map(|p| p.to_string()).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn the_cli_variables_still_point_the_edge_at_nats_and_the_workers_own_are_left_alone() {
        let vars = env(&[
            ("LLMQ__NATS__URL", "nats://n:4222"),
            ("LLMQ__NATS__USER", "1000"),
            ("LLMQ__NATS__PASSWORD", "12345"),
            ("LLMQ__NATS__CREDS_FILE", "/c.creds"),
            ("LLMQ__NATS__TLS__REQUIRED", "true"),
            ("LLMQ__NATS__CONNECT_TIMEOUT", "2s"),
            ("LLMQ__JETSTREAM__PREFIX", "other"),
            ("LLMQ__JETSTREAM__REPLICAS", "3"),
            ("LLMQ__WORKER__MAX_INFLIGHT", "64"),
            ("LLMQ__ADMIN__LISTEN", "127.0.0.1:0"),
            ("LLMQ__HTTP__MAX_BODY_BYTES", "65536"),
            ("LLMQ__LOG__FORMAT", "json"),
            ("LLMQ__NATS__TOKEN", ""),
        ]);
        let config = load_text("", Some(&vars), &Overrides::default()).unwrap();
        let nats = &config.nats;
        assert_eq!(nats.url, "nats://n:4222");
        assert_eq!(nats.user.as_deref(), Some("1000"), "digits stay text");
        let password = nats
            .password
            .as_ref()
            .map(secrecy::ExposeSecret::expose_secret);
        assert_eq!(password, Some("12345"));
        assert!(nats.token.is_none(), "set to nothing is unset");
        assert_eq!(nats.creds_file.as_deref(), Some(Path::new("/c.creds")));
        assert!(nats.tls.required);
        assert_eq!(nats.connect_timeout, Duration::from_secs(2));
        assert_eq!(config.jetstream.prefix, "other");
        assert_eq!(config.http.max_body_bytes, 65536);
        assert_eq!(config.log.format, llmq_runtime::telemetry::LogFormat::Json);
    }

    #[test]
    fn flags_win_over_variables_which_win_over_the_file() {
        let text = "[http]\nlisten = \"127.0.0.1:1\"\nkeep_alive = \"3s\"\nread_timeout = \"4s\"\n";
        let vars = env(&[
            ("LLMQ__HTTP__LISTEN", "127.0.0.1:2"),
            ("LLMQ__HTTP__KEEP_ALIVE", "5s"),
        ]);
        let flags = Overrides {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 3))),
            ..Overrides::default()
        };
        let config = load_text(text, Some(&vars), &flags).unwrap();
        assert_eq!(config.http.listen.port(), 3);
        assert_eq!(config.http.keep_alive, Duration::from_secs(5));
        assert_eq!(config.http.read_timeout, Duration::from_secs(4));
        assert_eq!(config.http.default_timeout, Duration::from_secs(600));
        let defaults = load_text("", None, &Overrides::default()).unwrap();
        assert_eq!(
            defaults.http.listen,
            SocketAddr::from(([127, 0, 0, 1], 8080))
        );
        assert_eq!(defaults.jetstream.prefix, "llmq");
    }

    #[test]
    fn unknown_keys_in_the_edges_sections_are_refused() {
        for text in [
            "[http]\nlisten_on = \"x\"\n",
            "[jetstream]\nreplicas = 3\n",
            "[worker]\n",
        ] {
            let err = load_text(text, None, &Overrides::default()).unwrap_err();
            assert!(matches!(err, ConfigError::Parse(_)), "{text}: {err}");
        }
        let typo = env(&[("LLMQ__HTTP__LISTNE", "127.0.0.1:1")]);
        let err = load_text("", Some(&typo), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let text = "[nats]\nurl = \" \"\npassword = \"p\"\n[nats.tls]\ncert_file = \"c.pem\"\n\
                    [jetstream]\nprefix = \"a.b\"\n[http]\nmax_body_bytes = 0\nread_timeout = \"0s\"\n";
        let found = problems(load_text(text, None, &Overrides::default()));
        let fields: Vec<&str> = found.iter().filter_map(|p| p.split(':').next()).collect();
        assert_eq!(
            fields,
            [
                "nats.url",
                "nats.password",
                "nats.tls",
                "jetstream.prefix",
                "http.max_body_bytes",
                "http.read_timeout"
            ],
            "{found:?}"
        );
    }
}
