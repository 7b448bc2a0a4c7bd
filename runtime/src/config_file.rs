//! A server's config file: TOML, with `LLMQ__<SECTION>__<KEY>` environment variables over
//! it (`LLMQ__NATS__URL` sets `nats.url`).
//!
//! The worker and the HTTP edge read their files the same way, so one `export` in a shell
//! or one `environment:` block in a compose file means the same to both. Each decides
//! which variables are its own ([`overlay`]): a worker's `LLMQ__WORKER__MAX_INFLIGHT` is
//! nothing to an edge started from the same shell. The environment is read once into an
//! [`Env`], so tests hand in their own instead of changing the process's.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::Problems;

/// Environment variables overriding the file: `LLMQ__SECTION__KEY`.
pub const ENV_PREFIX: &str = "LLMQ";

/// A snapshot of environment variables.
pub type Env = BTreeMap<String, String>;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Syntax, unknown keys, wrong types: the message names the key.
    #[error("{0}")]
    Parse(String),
    /// One line per problem, each starting with the field's path.
    #[error(transparent)]
    Invalid(Problems),
}

/// The process's environment (variables that are not UTF-8 are left out).
pub fn process_env() -> Env {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

/// The text of the config file at `path`.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The `LLMQ__` variables of `env`, each as `name` has it: renamed, or left out (`None`).
pub fn overlay(env: &Env, name: impl Fn(&str) -> Option<String>) -> HashMap<String, String> {
    let prefix = format!("{ENV_PREFIX}__");
    env.iter()
        .filter(|(var, _)| var.to_ascii_uppercase().starts_with(&prefix))
        .filter_map(|(var, value)| Some((name(var)?, value.clone())))
        .collect()
}

/// `text` (TOML) as a `T`, with `overlay` over it; values that look like numbers or
/// booleans are read as such.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    overlay: Option<HashMap<String, String>>,
) -> Result<T, ConfigError> {
    let file = config::File::from_str(text, config::FileFormat::Toml);
    let mut builder = config::Config::builder().add_source(file);
    if let Some(overlay) = overlay {
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overlay)),
        );
    }
    builder
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|err| ConfigError::Parse(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Small {
        section: Section,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        name: String,
        count: u32,
    }

    #[test]
    fn variables_a_server_keeps_override_the_file_and_the_rest_are_left_out() {
        let env: Env = [
            ("LLMQ__SECTION__COUNT", "7"),
            ("LLMQ__OTHER__KEY", "x"),
            ("PATH", "/bin"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let ours = overlay(&env, |var| var.contains("SECTION").then(|| var.to_owned()));
        assert_eq!(ours.len(), 1);
        let text = "[section]\nname = \"a\"\ncount = 1\n";
        let small: Small = parse(text, Some(ours)).unwrap();
        assert_eq!((small.section.name.as_str(), small.section.count), ("a", 7));
        let all = overlay(&env, |var| Some(var.to_owned()));
        let err = parse::<Small>(text, Some(all)).unwrap_err();
        assert!(err.to_string().contains("other"), "{err}");
    }
}
