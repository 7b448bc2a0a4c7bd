//! Reading the config: file, environment overlay, secrets, validation.
//!
//! Two ways: [`load`] as start-up does (every provider key read), and [`check`], which
//! checks structure and references without reading any secret, so a config can be
//! checked on a machine that does not hold the keys. The environment is read once into
//! an [`Env`], so tests hand in their own instead of mutating the process's.

use std::path::Path;

use llmq_runtime::Problems;
use llmq_runtime::config_file;

use super::{ApiKey, Config, KeySource, validate};

pub use llmq_runtime::config_file::{ConfigError, Env, process_env};

/// Whether loading reads the provider keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Read every key from its variable or file, as start-up does.
    Read,
    /// Read none: check only that each provider that needs one names where it is.
    Skip,
}

/// Loads `path` (TOML) with `LLMQ__` environment overrides, validates, reads every key.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_file(path, &process_env(), Keys::Read)
}

/// Like [`load`], but reads no key (`--check-config`).
pub fn check(path: &Path) -> Result<Config, ConfigError> {
    load_file(path, &process_env(), Keys::Skip)
}

/// Loads `path` with the overlay and keys from `env`.
pub fn load_file(path: &Path, env: &Env, keys: Keys) -> Result<Config, ConfigError> {
    let text = config_file::read(path)?;
    load_text(&text, path.parent(), Some(env), keys)
}

/// Parses TOML text without environment overrides (tests, `--check-config` of a string).
/// Relative `api_key_file` paths resolve against `base_dir`.
pub fn load_str(text: &str, base_dir: Option<&Path>) -> Result<Config, ConfigError> {
    load_text(text, base_dir, None, Keys::Read)
}

/// Every step: parse, overlay `env` (none: no overlay, keys from the process), resolve
/// key paths, validate, read the keys.
fn load_text(
    text: &str,
    base_dir: Option<&Path>,
    env: Option<&Env>,
    keys: Keys,
) -> Result<Config, ConfigError> {
    let overlay = match env {
        Some(env) => {
            let names = file_names(text)?;
            Some(config_file::overlay(env, |var| {
                Some(rename_dashed(var, &names))
            }))
        }
        None => None,
    };
    let mut config: Config = config_file::parse(text, overlay)?;
    anchor_key_files(&mut config, base_dir);
    let mut problems = validate(&config).err().unwrap_or_default();
    if keys == Keys::Read {
        let process;
        let env = match env {
            Some(env) => env,
            None => {
                process = process_env();
                &process
            }
        };
        problems.extend(read_keys(&mut config, env));
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// The provider and model names the file defines.
#[derive(Debug, Default)]
struct FileNames {
    providers: Vec<String>,
    models: Vec<String>,
}

fn file_names(text: &str) -> Result<FileNames, ConfigError> {
    let parsed = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .map_err(|err| ConfigError::Parse(err.to_string()))?;
    let keys = |table: &str| -> Vec<String> {
        parsed
            .get_table(table)
            .map(|entries| entries.into_keys().collect())
            .unwrap_or_default()
    };
    Ok(FileNames {
        providers: keys("providers"),
        models: keys("models"),
    })
}

/// The `LLMQ__` variables are the overlay, with `_` standing for `-` in provider and model
/// names: bash cannot export `LLMQ__PROVIDERS__AZURE-EU__BASE_URL`, so
/// `LLMQ__PROVIDERS__AZURE_EU__BASE_URL` reaches `providers.azure-eu` when the file has no
/// provider `azure_eu` ([`rename_dashed`]).
/// `LLMQ__PROVIDERS__AZURE_EU__X` -> `LLMQ__PROVIDERS__azure-eu__X` when only the dashed
/// name exists in the file; any other variable unchanged.
fn rename_dashed(var: &str, names: &FileNames) -> String {
    let mut parts: Vec<String> = var.split("__").map(str::to_owned).collect();
    let (Some(section), Some(name)) = (parts.get(1), parts.get(2)) else {
        return var.to_owned();
    };
    let defined = match section.to_ascii_lowercase().as_str() {
        "providers" => &names.providers,
        "models" => &names.models,
        _ => return var.to_owned(),
    };
    let name = name.to_ascii_lowercase();
    if defined.contains(&name) {
        return var.to_owned();
    }
    let dashed: Vec<&String> = defined
        .iter()
        .filter(|defined| defined.contains('-') && defined.replace('-', "_") == name)
        .collect();
    match dashed.as_slice() {
        [only] => {
            parts[2] = (*only).clone();
            parts.join("__")
        }
        _ => var.to_owned(),
    }
}

/// Relative `api_key_file` paths are relative to the config file's directory.
fn anchor_key_files(config: &mut Config, base_dir: Option<&Path>) {
    let Some(dir) = base_dir else { return };
    for provider in config.providers.values_mut() {
        if let Some(file) = &mut provider.api_key_file
            && file.is_relative()
        {
            *file = dir.join(&*file);
        }
    }
}

/// Reads every provider's key from its source; one message per key that cannot be read.
fn read_keys(config: &mut Config, env: &Env) -> Problems {
    let mut problems = Problems::default();
    for (name, provider) in &mut config.providers {
        let field = format!("providers.{name}");
        let key = match provider.key_source() {
            KeySource::Env(var) => match env.get(&var) {
                Some(key) if !key.trim().is_empty() => Ok(key.trim().to_owned()),
                _ => Err((
                    format!("{field}.api_key_env"),
                    format!("environment variable {var} is not set or empty"),
                )),
            },
            KeySource::File(path) => match std::fs::read_to_string(&path) {
                Ok(key) if !key.trim().is_empty() => Ok(key.trim().to_owned()),
                Ok(_) => Err((
                    format!("{field}.api_key_file"),
                    format!("{} is empty", path.display()),
                )),
                Err(err) => Err((
                    format!("{field}.api_key_file"),
                    format!("cannot read {}: {err}", path.display()),
                )),
            },
            KeySource::Given | KeySource::None | KeySource::Ambiguous => continue,
        };
        match key {
            Ok(key) => provider.api_key = Some(ApiKey::new(key)),
            Err((field, message)) => problems.add(field, message),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROVIDERS: &str = r#"
[providers.openai]
kind = "openai"
api_key_env = "LLMQ_TEST_OPENAI_KEY"

[providers.azure-eu]
kind = "azure"
base_url = "https://r.openai.azure.com"
api_key_file = "azure.key"
api_version = "2024-10-21"

[models.chat-fast]
deployments = [{ provider = "openai", model = "gpt-4.1-mini" }, { provider = "azure-eu", model = "d" }]
"#;

    fn env(vars: &[(&str, &str)]) -> Env {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_with(
        text: &str,
        dir: &Path,
        vars: &[(&str, &str)],
        keys: Keys,
    ) -> Result<Config, ConfigError> {
        let path = dir.join("worker.toml");
        std::fs::write(&path, text).unwrap();
        load_file(&path, &env(vars), keys)
    }

    fn problems(result: Result<Config, ConfigError>) -> Vec<String> {
        match result {
            Err(ConfigError::Invalid(problems)) => problems.iter().map(|p| p.to_string()).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_check_reads_no_key_and_says_where_each_would_come_from() {
        let dir = tempfile::tempdir().unwrap();
        let config = load_with(PROVIDERS, dir.path(), &[], Keys::Skip).unwrap();
        assert!(config.providers.values().all(|p| p.api_key.is_none()));
        assert_eq!(
            config.providers["openai"].key_source(),
            KeySource::Env("LLMQ_TEST_OPENAI_KEY".into())
        );
        assert_eq!(
            config.providers["azure-eu"].key_source(),
            KeySource::File(dir.path().join("azure.key"))
        );
    }

    #[test]
    fn loading_reads_every_key_and_names_the_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let missing = problems(load_with(PROVIDERS, dir.path(), &[], Keys::Read));
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].starts_with("providers.azure-eu.api_key_file: cannot read"));
        assert!(missing[1].starts_with(
            "providers.openai.api_key_env: environment variable LLMQ_TEST_OPENAI_KEY is not set"
        ));

        std::fs::write(dir.path().join("azure.key"), " azure-secret\n").unwrap();
        let vars = [("LLMQ_TEST_OPENAI_KEY", "sk-secret")];
        let config = load_with(PROVIDERS, dir.path(), &vars, Keys::Read).unwrap();
        let key = |name: &str| config.providers[name].api_key.as_ref().map(ApiKey::expose);
        assert_eq!(key("openai"), Some("sk-secret"));
        assert_eq!(key("azure-eu"), Some("azure-secret"));
    }

    #[test]
    fn a_check_still_refuses_missing_and_doubled_key_sources() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
[providers.none]
kind = "openai"
[providers.both]
kind = "anthropic"
api_key_env = "A"
api_key_file = "a.key"
[models.m]
deployments = [{ provider = "none", model = "x" }, { provider = "both", model = "y" }]
"#;
        let found = problems(load_with(text, dir.path(), &[], Keys::Skip));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("providers.both: set one of api_key_env and api_key_file"));
        assert!(found[1].starts_with("providers.none: a key is required"));
    }

    #[test]
    fn underscores_in_variables_reach_dashed_provider_and_model_names() {
        let dir = tempfile::tempdir().unwrap();
        let vars = [
            (
                "LLMQ__PROVIDERS__AZURE_EU__BASE_URL",
                "https://other.openai.azure.com",
            ),
            ("LLMQ__MODELS__CHAT_FAST__DEFAULT_MAX_TOKENS", "77"),
            ("LLMQ__NATS__URL", "nats://n:4222"),
        ];
        let config = load_with(PROVIDERS, dir.path(), &vars, Keys::Skip).unwrap();
        assert_eq!(
            config.providers["azure-eu"].base_url(),
            "https://other.openai.azure.com"
        );
        assert_eq!(config.models["chat-fast"].default_max_tokens, Some(77));
        assert_eq!(config.nats.url, "nats://n:4222");
        assert_eq!(config.providers.len(), 2);
        assert_eq!(config.models.len(), 1);
    }

    #[test]
    fn an_underscored_name_in_the_file_wins_over_the_dashed_one() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{PROVIDERS}\n[providers.azure_eu]\nkind = \"openai_compatible\"\nbase_url = \"http://u/v1\"\n"
        );
        let vars = [("LLMQ__PROVIDERS__AZURE_EU__BASE_URL", "http://env/v1")];
        let config = load_with(&text, dir.path(), &vars, Keys::Skip).unwrap();
        assert_eq!(config.providers["azure_eu"].base_url(), "http://env/v1");
        assert_eq!(
            config.providers["azure-eu"].base_url(),
            "https://r.openai.azure.com"
        );
    }

    #[test]
    fn the_dashed_spelling_still_works() {
        let dir = tempfile::tempdir().unwrap();
        let vars = [("LLMQ__PROVIDERS__AZURE-EU__MAX_CONCURRENCY", "3")];
        let config = load_with(PROVIDERS, dir.path(), &vars, Keys::Skip).unwrap();
        assert_eq!(config.providers["azure-eu"].max_concurrency, 3);
    }
}
