//! Whole-config validation, after parsing: every problem, each naming its field.
//!
//! One validator per section, all adding to one [`Problems`] collector, so a section
//! added to the config (tenants, limits, the HTTP edge) brings its own validator and the
//! operator still sees every problem in one run.

use std::collections::BTreeMap;
use std::time::Duration;

use llmq_runtime::Problems;
use llmq_schemas::{ModelName, Subjects};

use super::{
    Config, CooldownConfig, JetStreamConfig, KeySource, LimitsConfig, ModelConfig, PriceConfig,
    ProviderConfig, ProviderKind, RetryConfig, WorkerConfig,
};

/// Headers that carry keys: set by the adapters from the resolved key only.
const AUTH_HEADERS: &[&str] = &["authorization", "api-key", "x-api-key", "x-goog-api-key"];

/// Checks the whole config; every problem names its field.
pub fn validate(config: &Config) -> Result<(), Problems> {
    let mut problems = Problems::default();
    jetstream(&config.jetstream, &mut problems);
    worker(&config.worker, &mut problems);
    retry(&config.retry, &mut problems);
    cooldown(&config.cooldown, &mut problems);
    problems.check(
        !config.nats.url.trim().is_empty(),
        "nats.url",
        "must not be empty",
    );
    limits(&config.limits, &mut problems);
    providers(config, &mut problems);
    models(config, &mut problems);
    for (i, price) in config.prices.iter().enumerate() {
        self::price(&format!("prices[{i}]"), price, config, &mut problems);
    }
    problems.into_result()
}

fn jetstream(js: &JetStreamConfig, p: &mut Problems) {
    if let Err(err) = Subjects::new(&js.prefix) {
        p.add("jetstream.prefix", err);
    }
    p.check(
        (1..=5).contains(&js.replicas),
        "jetstream.replicas",
        "must be 1 to 5",
    );
    at_least(p, "jetstream.ack_wait", js.ack_wait, Duration::from_secs(1));
    p.check(
        js.max_deliver >= 1,
        "jetstream.max_deliver",
        "must be at least 1",
    );
    p.check(
        js.max_ack_pending >= 1,
        "jetstream.max_ack_pending",
        "must be at least 1",
    );
    for (field, value) in [
        ("jetstream.jobs_max_msgs", js.jobs_max_msgs),
        ("jetstream.jobs_max_bytes", js.jobs_max_bytes),
        ("jetstream.blobs_max_bytes", js.blobs_max_bytes),
        ("jetstream.jobs_max_per_subject", js.jobs_max_per_subject),
        ("jetstream.cancel_max_bytes", js.cancel_max_bytes),
    ] {
        p.check(
            value > 0 || value == -1,
            field,
            "must be positive, or -1 for no limit",
        );
    }
    at_least(
        p,
        "jetstream.catalog_heartbeat",
        js.catalog_heartbeat,
        Duration::from_millis(100),
    );
    at_least(
        p,
        "jetstream.duplicate_window",
        js.duplicate_window,
        Duration::from_secs(1),
    );
    readers(js, p);
}

/// The bounds on tenants' consumers must leave room for llmq's own readers.
fn readers(js: &JetStreamConfig, p: &mut Problems) {
    let min = llmq_runtime::stream_guards::ReaderLimits::MIN_INACTIVE_THRESHOLD;
    p.check(
        js.reader_inactive_threshold >= min,
        "jetstream.reader_inactive_threshold",
        format!(
            "must be at least {}: llmq's own readers (outcome waits, usage reports, the \
             catalog) ask the server for that long",
            humantime::format_duration(min)
        ),
    );
    p.check(
        js.reader_max_consumers >= 1,
        "jetstream.reader_max_consumers",
        "must be at least 1",
    );
}

fn worker(worker: &WorkerConfig, p: &mut Problems) {
    p.check(
        worker.max_inflight >= 1,
        "worker.max_inflight",
        "must be at least 1",
    );
    p.check(
        worker.batch_share > 0.0 && worker.batch_share <= 1.0,
        "worker.batch_share",
        "must be in (0, 1]",
    );
    p.check(
        worker.fetch_batch >= 1,
        "worker.fetch_batch",
        "must be at least 1",
    );
    p.check(
        worker.threads <= 1024,
        "worker.threads",
        "must be 0 (one per core) to 1024",
    );
    p.check(
        worker.max_request_bytes >= 64 * 1024,
        "worker.max_request_bytes",
        "must be at least 65536",
    );
    p.check(
        worker.max_response_bytes >= 64 * 1024,
        "worker.max_response_bytes",
        "must be at least 65536",
    );
    at_least(
        p,
        "worker.fetch_expires",
        worker.fetch_expires,
        Duration::from_millis(100),
    );
    at_least(
        p,
        "worker.startup_timeout",
        worker.startup_timeout,
        Duration::from_millis(100),
    );
    at_least(
        p,
        "worker.key_reload_interval",
        worker.key_reload_interval,
        Duration::from_millis(100),
    );
    if let Some(id) = &worker.id {
        p.check(
            is_name(id, 64),
            "worker.id",
            "must be 1-64 characters of A-Z a-z 0-9 _ -",
        );
    }
}

fn retry(retry: &RetryConfig, p: &mut Problems) {
    p.check(
        retry.max_attempts >= 1,
        "retry.max_attempts",
        "must be at least 1",
    );
    p.check(
        retry.base_delay <= retry.max_delay,
        "retry.base_delay",
        "must not exceed retry.max_delay",
    );
}

fn cooldown(cooldown: &CooldownConfig, p: &mut Problems) {
    p.check(
        cooldown.failure_threshold > 0.0 && cooldown.failure_threshold <= 1.0,
        "cooldown.failure_threshold",
        "must be in (0, 1]",
    );
}

fn limits(limits: &LimitsConfig, p: &mut Problems) {
    at_least(p, "limits.lease", limits.lease, Duration::from_secs(1));
}

fn providers(config: &Config, p: &mut Problems) {
    p.check(
        !config.providers.is_empty(),
        "providers",
        "at least one provider is required",
    );
    for (name, provider) in &config.providers {
        let field = format!("providers.{name}");
        p.check(
            is_name(name, 64),
            &field,
            "name must be 1-64 characters of A-Z a-z 0-9 _ -",
        );
        base_url(&field, provider, p);
        key_source(&field, provider, p);
        p.check(
            provider.max_concurrency >= 1,
            format!("{field}.max_concurrency"),
            "must be at least 1",
        );
        timeouts(&field, provider, p);
        llmq_runtime::limits::validate(&provider.limits, &format!("{field}.limits"), p);
        kind_settings(&field, provider, p);
        headers(&field, provider, p);
    }
}

fn base_url(field: &str, provider: &ProviderConfig, p: &mut Problems) {
    let base_url = provider.base_url();
    let field = format!("{field}.base_url");
    if base_url.is_empty() {
        p.add(
            field,
            format!("required for kind {}", provider.kind.as_str()),
        );
        return;
    }
    p.check(
        base_url.starts_with("http://") || base_url.starts_with("https://"),
        &field,
        "must start with http:// or https://",
    );
    p.check(
        !base_url.contains('?'),
        &field,
        "must not contain a query string (keys never go in URLs)",
    );
}

fn key_source(field: &str, provider: &ProviderConfig, p: &mut Problems) {
    let needs_key = provider.kind != ProviderKind::OpenaiCompatible;
    match provider.key_source() {
        KeySource::Ambiguous => p.add(field, "set one of api_key_env and api_key_file, not both"),
        KeySource::None if needs_key => p.add(
            field,
            "a key is required: set api_key_env (an environment variable name) or api_key_file",
        ),
        _ => {}
    }
}

fn timeouts(field: &str, provider: &ProviderConfig, p: &mut Problems) {
    let t = &provider.timeouts;
    for (timeout, value) in [
        ("connect", t.connect),
        ("first_token", t.first_token),
        ("inter_token", t.inter_token),
        ("total", t.total),
    ] {
        p.check(
            value > Duration::ZERO,
            format!("{field}.timeouts.{timeout}"),
            "must be greater than 0",
        );
    }
}

/// Settings only some kinds use.
fn kind_settings(field: &str, provider: &ProviderConfig, p: &mut Problems) {
    let kind = provider.kind;
    if kind == ProviderKind::Azure {
        p.check(
            provider.api_version.is_some(),
            format!("{field}.api_version"),
            "required for kind azure (e.g. \"2024-10-21\")",
        );
    }
    if !matches!(kind, ProviderKind::Azure | ProviderKind::Anthropic) {
        p.check(
            provider.api_version.is_none(),
            format!("{field}.api_version"),
            "only used by kinds azure and anthropic",
        );
    }
    if kind != ProviderKind::Openai {
        p.check(
            provider.organization.is_none() && provider.project.is_none(),
            format!("{field}.organization"),
            "organization and project are only used by kind openai",
        );
    }
}

fn headers(field: &str, provider: &ProviderConfig, p: &mut Problems) {
    for header in provider.headers.keys() {
        let lower = header.to_ascii_lowercase();
        let field = format!("{field}.headers.{header}");
        p.check(
            !AUTH_HEADERS.contains(&lower.as_str()),
            &field,
            "carries a key: use api_key_env or api_key_file",
        );
        p.check(
            reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_ok(),
            &field,
            "is not a valid header name",
        );
    }
}

fn models(config: &Config, p: &mut Problems) {
    p.check(
        !config.models.is_empty(),
        "models",
        "at least one model is required",
    );
    let mut tokens: BTreeMap<String, &str> = BTreeMap::new();
    for (name, model) in &config.models {
        let field = format!("models.{name}");
        model_name(&field, name, &mut tokens, p);
        deployments(&field, model, config, p);
        fallback_lists(&field, name, model, config, p);
        if let Some(max) = model.default_max_tokens {
            p.check(
                max > 0,
                format!("{field}.default_max_tokens"),
                "must be at least 1",
            );
        }
    }
}

/// A name that can be a subject token, and that no other differs from only in case.
fn model_name<'a>(
    field: &str,
    name: &'a str,
    tokens: &mut BTreeMap<String, &'a str>,
    p: &mut Problems,
) {
    match ModelName::parse(name) {
        Ok(parsed) => {
            // Consumer names live in the server's store directory: on a case-insensitive
            // file system, `GPT` and `gpt` would be one consumer.
            let folded = parsed.token().to_ascii_lowercase();
            if let Some(other) = tokens.insert(folded, name) {
                p.add(
                    field,
                    format!("collides with model {other:?} (names may differ only in case)"),
                );
            }
        }
        Err(err) => p.add(field, err),
    }
}

fn deployments(field: &str, model: &ModelConfig, config: &Config, p: &mut Problems) {
    p.check(
        !model.deployments.is_empty(),
        format!("{field}.deployments"),
        "at least one deployment is required",
    );
    p.check(
        model.deployments.iter().any(|d| d.weight > 0),
        format!("{field}.deployments"),
        "at least one deployment needs a weight above 0",
    );
    for (i, deployment) in model.deployments.iter().enumerate() {
        let field = format!("{field}.deployments[{i}]");
        if !config.providers.contains_key(&deployment.provider) {
            let known: Vec<&str> = config.providers.keys().map(String::as_str).collect();
            p.add(
                format!("{field}.provider"),
                format!(
                    "unknown provider {:?} (known: {})",
                    deployment.provider,
                    known.join(", ")
                ),
            );
        }
        p.check(
            !deployment.model.trim().is_empty(),
            format!("{field}.model"),
            "must not be empty",
        );
        llmq_runtime::limits::validate(&deployment.limits, &format!("{field}.limits"), p);
    }
}

fn fallback_lists(field: &str, name: &str, model: &ModelConfig, config: &Config, p: &mut Problems) {
    for (list, names) in [
        ("fallbacks", &model.fallbacks),
        ("context_window_fallbacks", &model.context_window_fallbacks),
        ("content_policy_fallbacks", &model.content_policy_fallbacks),
    ] {
        for (i, fallback) in names.iter().enumerate() {
            let field = format!("{field}.{list}[{i}]");
            p.check(
                config.models.contains_key(fallback),
                &field,
                format!("unknown model {fallback:?}"),
            );
            p.check(
                fallback != name,
                &field,
                "a model cannot fall back to itself",
            );
        }
    }
}

fn price(field: &str, price: &PriceConfig, config: &Config, p: &mut Problems) {
    let known_kind = ProviderKind::ALL
        .iter()
        .any(|kind| kind.as_str() == price.provider);
    p.check(
        known_kind || config.providers.contains_key(&price.provider),
        format!("{field}.provider"),
        format!(
            "{:?} is neither a provider kind nor a configured provider",
            price.provider
        ),
    );
    let values = [
        Some(price.input),
        price.cached_input,
        price.cache_write,
        Some(price.output),
    ];
    p.check(
        values.iter().flatten().all(|v| v.is_finite() && *v >= 0.0),
        field,
        "prices must be finite and not negative",
    );
}

fn at_least(p: &mut Problems, field: &str, value: Duration, min: Duration) {
    p.check(
        value >= min,
        field,
        format!("must be at least {}", humantime::format_duration(min)),
    );
}

fn is_name(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[providers.p]
kind = "openai_compatible"
base_url = "http://127.0.0.1:1/v1"
[models.m]
deployments = [{ provider = "p", model = "x" }]
"#;

    #[test]
    fn key_files_are_reread_every_five_seconds_and_not_more_often_than_every_100ms() {
        let mut config = crate::config::load_str(MINIMAL, None).unwrap();
        assert_eq!(config.worker.key_reload_interval, Duration::from_secs(5));
        config.worker.key_reload_interval = Duration::from_millis(50);
        let problems: Vec<String> = validate(&config)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            vec!["worker.key_reload_interval: must be at least 100ms".to_owned()]
        );
        config.worker.key_reload_interval = Duration::from_millis(100);
        assert!(validate(&config).is_ok());
    }

    #[test]
    fn the_bounds_on_tenants_leave_room_for_llmqs_own_readers() {
        let mut config = crate::config::load_str(MINIMAL, None).unwrap();
        config.jetstream.reader_inactive_threshold = Duration::from_secs(29);
        config.jetstream.reader_max_consumers = 0;
        config.jetstream.jobs_max_per_subject = 0;
        let problems: Vec<String> = validate(&config)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        let fields = [
            "jetstream.jobs_max_per_subject: must be positive",
            "jetstream.reader_inactive_threshold: must be at least 30s",
            "jetstream.reader_max_consumers: must be at least 1",
        ];
        for field in fields {
            assert!(
                problems.iter().any(|p| p.starts_with(field)),
                "{problems:?}"
            );
        }
        config.jetstream.reader_inactive_threshold = Duration::from_secs(30);
        config.jetstream.reader_max_consumers = 1;
        config.jetstream.jobs_max_per_subject = -1;
        assert!(validate(&config).is_ok());
    }
}
