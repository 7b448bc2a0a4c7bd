//! Live configuration: what a re-read config changes, and which changes need a restart.
//!
//! A reload (SIGHUP, [`crate::RunningWorker::reload_config`]) is all or nothing. The new
//! file is loaded exactly as start-up loads it (environment overlay, validation, keys);
//! a file that does not load, or that changes a setting the running worker was built
//! around (its connection, streams, identity, admin endpoint, logging, job slots), is
//! rejected whole and the running config stays. What can change — models, deployments,
//! weights, fallbacks, prices, providers, retry, cooldowns, deadlines, fetch sizes — is
//! swapped in one step: every job runs to its end on the config it started with.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;

use crate::config::{Config, ConfigError, NatsOptions};
use crate::nats::SetupError;
use crate::routing::RouteError;

/// Why a reload was rejected; the running config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not parse or validate: the same problems `--check-config` prints.
    #[error("invalid config:\n{0}")]
    Invalid(#[from] ConfigError),
    /// Settings that only a restart applies differ from the running config.
    #[error("these settings need a restart: {}", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
    #[error("invalid config:\n{0}")]
    Routes(#[from] RouteError),
    /// A new model's consumer could not be created.
    #[error(transparent)]
    Consumer(#[from] SetupError),
}

impl ReloadError {
    /// The fixed label of the rejection, for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ReloadError::Invalid(_) | ReloadError::Routes(_) => "invalid",
            ReloadError::NeedsRestart(_) => "needs_restart",
            ReloadError::Consumer(_) => "consumer",
        }
    }
}

/// What an applied reload changed, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub models_added: Vec<String>,
    pub models_removed: Vec<String>,
    /// Same name, other deployments, weights, fallbacks or settings.
    pub models_changed: Vec<String>,
    pub providers_added: Vec<String>,
    pub providers_removed: Vec<String>,
    /// Same name, other settings (URL, concurrency, timeouts, headers, key source...).
    pub providers_changed: Vec<String>,
    /// Other sections that changed: `prices`, `retry`, `cooldown`, `worker`, `limits`.
    pub sections: Vec<&'static str>,
}

impl Changes {
    pub fn between(old: &Config, new: &Config) -> Changes {
        let (models_added, models_removed, models_changed) = diff(&old.models, &new.models);
        let (providers_added, providers_removed, providers_changed) =
            diff(&old.providers, &new.providers);
        let sections = [
            ("prices", old.prices != new.prices),
            ("retry", old.retry != new.retry),
            ("cooldown", old.cooldown != new.cooldown),
            ("worker", old.worker != new.worker),
            ("limits", old.limits != new.limits),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect();
        Changes {
            models_added,
            models_removed,
            models_changed,
            providers_added,
            providers_removed,
            providers_changed,
            sections,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// Names only in `new`, only in `old`, and in both with other values.
fn diff<T: PartialEq>(
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let added = new.keys().filter(|k| !old.contains_key(*k)).cloned();
    let removed = old.keys().filter(|k| !new.contains_key(*k)).cloned();
    let changed = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
        .map(|(k, _)| k.clone());
    (added.collect(), removed.collect(), changed.collect())
}

/// The settings that differ between `old` and `new` and that only a restart applies.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.worker, &new.worker);
    [
        ("nats", !same_nats(&old.nats, &new.nats)),
        ("jetstream", old.jetstream != new.jetstream),
        ("worker.id", o.id != n.id),
        ("worker.max_inflight", o.max_inflight != n.max_inflight),
        ("worker.batch_share", o.batch_share != n.batch_share),
        ("worker.threads", o.threads != n.threads),
        (
            "worker.sweep_interval",
            o.sweep_interval != n.sweep_interval,
        ),
        ("admin", old.admin != new.admin),
        ("log", old.log != new.log),
        ("tenants", old.tenants != new.tenants),
        ("limits.lease", old.limits.lease != new.limits.lease),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// Field by field: the secrets are compared, never printed.
fn same_nats(a: &NatsOptions, b: &NatsOptions) -> bool {
    let secret =
        |s: &Option<secrecy::SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned());
    a.url == b.url
        && a.name == b.name
        && a.user == b.user
        && secret(&a.password) == secret(&b.password)
        && secret(&a.token) == secret(&b.token)
        && a.creds_file == b.creds_file
        && a.nkey_file == b.nkey_file
        && a.tls == b.tls
        && a.connect_timeout == b.connect_timeout
        && a.request_timeout == b.request_timeout
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    const BASE: &str = r#"
[providers.a]
kind = "openai_compatible"
base_url = "http://127.0.0.1:1/v1"
[providers.b]
kind = "openai_compatible"
base_url = "http://127.0.0.1:2/v1"
[models.chat]
deployments = [{ provider = "a", model = "m" }]
[models.old]
deployments = [{ provider = "a", model = "m" }]
"#;

    fn config(extra: &str, body: &str) -> Config {
        load_str(&format!("{extra}\n{body}"), None).unwrap()
    }

    #[test]
    fn models_and_providers_added_removed_and_changed_are_named() {
        let old = config("", BASE);
        let new_body = BASE
            .replace("[models.old]", "[models.new]")
            .replace(
                "deployments = [{ provider = \"a\", model = \"m\" }]\n[models.new]",
                "deployments = [{ provider = \"b\", model = \"m\", weight = 3 }]\n[models.new]",
            )
            .replace("http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1");
        let new = config("[retry]\nmax_attempts = 2", &new_body);
        let changes = Changes::between(&old, &new);
        assert_eq!(changes.models_added, ["new"]);
        assert_eq!(changes.models_removed, ["old"]);
        assert_eq!(changes.models_changed, ["chat"]);
        assert_eq!(changes.providers_changed, ["b"]);
        assert!(changes.providers_added.is_empty() && changes.providers_removed.is_empty());
        assert_eq!(changes.sections, ["retry"]);
        assert!(needs_restart(&old, &new).is_empty());
        assert!(Changes::between(&old, &old).is_empty());
    }

    #[test]
    fn settings_the_worker_was_built_around_need_a_restart() {
        let old = config("", BASE);
        let new = config(
            "[jetstream]\nprefix = \"other\"\n[worker]\nmax_inflight = 3\n[nats]\npassword = \"x\"",
            BASE,
        );
        assert_eq!(
            needs_restart(&old, &new),
            ["nats", "jetstream", "worker.max_inflight"]
        );
        let live = config(
            "[worker]\nfetch_batch = 3\ninteractive_deadline = \"1m\"",
            BASE,
        );
        assert!(needs_restart(&old, &live).is_empty());
        assert_eq!(Changes::between(&old, &live).sections, ["worker"]);
    }
}
