//! Reading the config: file, environment overlay, secrets, validation.

use std::path::{Path, PathBuf};

use super::{ApiKey, Config, validate};

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
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// Environment variables overriding the file: `LLMQ__SECTION__KEY`.
pub const ENV_PREFIX: &str = "LLMQ";

/// Loads `path` (TOML) with `LLMQ__` environment overrides, resolves keys, validates.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let builder = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
    finish(builder, path.parent())
}

/// Parses TOML text without environment overrides (tests, `--check-config` of a string).
/// Relative `api_key_file` paths resolve against `base_dir`.
pub fn load_str(text: &str, base_dir: Option<&Path>) -> Result<Config, ConfigError> {
    let builder = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml));
    finish(builder, base_dir)
}

fn finish(
    builder: config::ConfigBuilder<config::builder::DefaultState>,
    base_dir: Option<&Path>,
) -> Result<Config, ConfigError> {
    let mut config: Config = builder
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|err| ConfigError::Parse(err.to_string()))?;
    resolve_keys(&mut config, base_dir)?;
    validate(&config).map_err(ConfigError::Invalid)?;
    Ok(config)
}

fn resolve_keys(config: &mut Config, base_dir: Option<&Path>) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    for (name, provider) in &mut config.providers {
        let field = format!("providers.{name}");
        match (&provider.api_key_env, &provider.api_key_file) {
            (Some(_), Some(_)) => problems.push(format!(
                "{field}: set one of api_key_env and api_key_file, not both"
            )),
            (Some(var), None) => match std::env::var(var) {
                Ok(key) if !key.trim().is_empty() => {
                    provider.api_key = Some(ApiKey::new(key.trim()))
                }
                _ => problems.push(format!(
                    "{field}.api_key_env: environment variable {var} is not set or empty"
                )),
            },
            (None, Some(file)) => {
                let path = match base_dir {
                    Some(dir) if file.is_relative() => dir.join(file),
                    _ => file.clone(),
                };
                match std::fs::read_to_string(&path) {
                    Ok(key) if !key.trim().is_empty() => {
                        provider.api_key = Some(ApiKey::new(key.trim()));
                    }
                    Ok(_) => {
                        problems.push(format!("{field}.api_key_file: {} is empty", path.display()))
                    }
                    Err(err) => problems.push(format!(
                        "{field}.api_key_file: cannot read {}: {err}",
                        path.display()
                    )),
                }
            }
            (None, None) => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(problems))
    }
}
