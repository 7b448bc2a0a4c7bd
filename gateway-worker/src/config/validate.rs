//! Whole-config validation, after parsing: every problem, each naming its field.

use std::collections::BTreeMap;
use std::time::Duration;

use llmq_schemas::{ModelName, Subjects};

use super::{Config, KeySource, ProviderKind};

/// Headers that carry keys: set by the adapters from the resolved key only.
const AUTH_HEADERS: &[&str] = &["authorization", "api-key", "x-api-key", "x-goog-api-key"];

/// Checks the whole config; returns one message per problem, each starting with the
/// field's path.
pub fn validate(config: &Config) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let mut check = |ok: bool, field: &str, message: &str| {
        if !ok {
            errors.push(format!("{field}: {message}"));
        }
    };

    let js = &config.jetstream;
    if let Err(err) = Subjects::new(&js.prefix) {
        check(false, "jetstream.prefix", &err.to_string());
    }
    check(
        (1..=5).contains(&js.replicas),
        "jetstream.replicas",
        "must be 1 to 5",
    );
    check(
        js.ack_wait >= Duration::from_secs(1),
        "jetstream.ack_wait",
        "must be at least 1s",
    );
    check(
        js.max_deliver >= 1,
        "jetstream.max_deliver",
        "must be at least 1",
    );
    check(
        js.max_ack_pending >= 1,
        "jetstream.max_ack_pending",
        "must be at least 1",
    );
    check(
        js.jobs_max_msgs > 0 || js.jobs_max_msgs == -1,
        "jetstream.jobs_max_msgs",
        "must be positive, or -1 for no limit",
    );
    check(
        js.jobs_max_bytes > 0 || js.jobs_max_bytes == -1,
        "jetstream.jobs_max_bytes",
        "must be positive, or -1 for no limit",
    );
    check(
        js.catalog_heartbeat >= Duration::from_millis(100),
        "jetstream.catalog_heartbeat",
        "must be at least 100ms",
    );
    check(
        js.duplicate_window >= Duration::from_secs(1),
        "jetstream.duplicate_window",
        "must be at least 1s",
    );

    let worker = &config.worker;
    check(
        worker.max_inflight >= 1,
        "worker.max_inflight",
        "must be at least 1",
    );
    check(
        worker.batch_share > 0.0 && worker.batch_share <= 1.0,
        "worker.batch_share",
        "must be in (0, 1]",
    );
    check(
        worker.fetch_batch >= 1,
        "worker.fetch_batch",
        "must be at least 1",
    );
    check(
        worker.threads <= 1024,
        "worker.threads",
        "must be 0 (one per core) to 1024",
    );
    check(
        worker.fetch_expires >= Duration::from_millis(100),
        "worker.fetch_expires",
        "must be at least 100ms",
    );
    if let Some(id) = &worker.id {
        check(
            is_name(id, 64),
            "worker.id",
            "must be 1-64 characters of A-Z a-z 0-9 _ -",
        );
    }

    let retry = &config.retry;
    check(
        retry.max_attempts >= 1,
        "retry.max_attempts",
        "must be at least 1",
    );
    check(
        retry.base_delay <= retry.max_delay,
        "retry.base_delay",
        "must not exceed retry.max_delay",
    );
    let cooldown = &config.cooldown;
    check(
        cooldown.failure_threshold > 0.0 && cooldown.failure_threshold <= 1.0,
        "cooldown.failure_threshold",
        "must be in (0, 1]",
    );
    check(
        !config.nats.url.trim().is_empty(),
        "nats.url",
        "must not be empty",
    );

    check(
        !config.providers.is_empty(),
        "providers",
        "at least one provider is required",
    );
    for (name, provider) in &config.providers {
        let field = format!("providers.{name}");
        check(
            is_name(name, 64),
            &field,
            "name must be 1-64 characters of A-Z a-z 0-9 _ -",
        );
        let base_url = provider.base_url();
        if base_url.is_empty() {
            check(
                false,
                &format!("{field}.base_url"),
                &format!("required for kind {}", provider.kind.as_str()),
            );
        } else {
            check(
                base_url.starts_with("http://") || base_url.starts_with("https://"),
                &format!("{field}.base_url"),
                "must start with http:// or https://",
            );
            check(
                !base_url.contains('?'),
                &format!("{field}.base_url"),
                "must not contain a query string (keys never go in URLs)",
            );
        }
        let needs_key = provider.kind != ProviderKind::OpenaiCompatible;
        match provider.key_source() {
            KeySource::Ambiguous => check(
                false,
                &field,
                "set one of api_key_env and api_key_file, not both",
            ),
            KeySource::None if needs_key => check(
                false,
                &field,
                "a key is required: set api_key_env (an environment variable name) or api_key_file",
            ),
            _ => {}
        }
        check(
            provider.max_concurrency >= 1,
            &format!("{field}.max_concurrency"),
            "must be at least 1",
        );
        let t = &provider.timeouts;
        for (timeout, value) in [
            ("connect", t.connect),
            ("first_token", t.first_token),
            ("inter_token", t.inter_token),
            ("total", t.total),
        ] {
            check(
                value > Duration::ZERO,
                &format!("{field}.timeouts.{timeout}"),
                "must be greater than 0",
            );
        }
        if provider.kind == ProviderKind::Azure {
            check(
                provider.api_version.is_some(),
                &format!("{field}.api_version"),
                "required for kind azure (e.g. \"2024-10-21\")",
            );
        }
        if !matches!(provider.kind, ProviderKind::Azure | ProviderKind::Anthropic) {
            check(
                provider.api_version.is_none(),
                &format!("{field}.api_version"),
                "only used by kinds azure and anthropic",
            );
        }
        if provider.kind != ProviderKind::Openai {
            check(
                provider.organization.is_none() && provider.project.is_none(),
                &format!("{field}.organization"),
                "organization and project are only used by kind openai",
            );
        }
        for header in provider.headers.keys() {
            let lower = header.to_ascii_lowercase();
            check(
                !AUTH_HEADERS.contains(&lower.as_str()),
                &format!("{field}.headers.{header}"),
                "carries a key: use api_key_env or api_key_file",
            );
            check(
                reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_ok(),
                &format!("{field}.headers.{header}"),
                "is not a valid header name",
            );
        }
    }

    check(
        !config.models.is_empty(),
        "models",
        "at least one model is required",
    );
    let mut tokens: BTreeMap<String, &str> = BTreeMap::new();
    for (name, model) in &config.models {
        let field = format!("models.{name}");
        match ModelName::parse(name) {
            Ok(parsed) => {
                // Consumer names live in the server's store directory: on a
                // case-insensitive file system, `GPT` and `gpt` would be one consumer.
                let folded = parsed.token().to_ascii_lowercase();
                if let Some(other) = tokens.insert(folded, name) {
                    check(
                        false,
                        &field,
                        &format!("collides with model {other:?} (names may differ only in case)"),
                    );
                }
            }
            Err(err) => check(false, &field, &err.to_string()),
        }
        check(
            !model.deployments.is_empty(),
            &format!("{field}.deployments"),
            "at least one deployment is required",
        );
        check(
            model.deployments.iter().any(|d| d.weight > 0),
            &format!("{field}.deployments"),
            "at least one deployment needs a weight above 0",
        );
        for (i, deployment) in model.deployments.iter().enumerate() {
            let dfield = format!("{field}.deployments[{i}]");
            if !config.providers.contains_key(&deployment.provider) {
                let known: Vec<&str> = config.providers.keys().map(String::as_str).collect();
                check(
                    false,
                    &format!("{dfield}.provider"),
                    &format!(
                        "unknown provider {:?} (known: {})",
                        deployment.provider,
                        known.join(", ")
                    ),
                );
            }
            check(
                !deployment.model.trim().is_empty(),
                &format!("{dfield}.model"),
                "must not be empty",
            );
        }
        for (list, names) in [
            ("fallbacks", &model.fallbacks),
            ("context_window_fallbacks", &model.context_window_fallbacks),
            ("content_policy_fallbacks", &model.content_policy_fallbacks),
        ] {
            for (i, fallback) in names.iter().enumerate() {
                let ffield = format!("{field}.{list}[{i}]");
                check(
                    config.models.contains_key(fallback),
                    &ffield,
                    &format!("unknown model {fallback:?}"),
                );
                check(
                    fallback != name,
                    &ffield,
                    "a model cannot fall back to itself",
                );
            }
        }
        if let Some(max) = model.default_max_tokens {
            check(
                max > 0,
                &format!("{field}.default_max_tokens"),
                "must be at least 1",
            );
        }
    }

    for (i, price) in config.prices.iter().enumerate() {
        let field = format!("prices[{i}]");
        let known_kind = [
            ProviderKind::Openai,
            ProviderKind::OpenaiCompatible,
            ProviderKind::Azure,
            ProviderKind::Anthropic,
            ProviderKind::Gemini,
        ]
        .iter()
        .any(|kind| kind.as_str() == price.provider);
        check(
            known_kind || config.providers.contains_key(&price.provider),
            &format!("{field}.provider"),
            &format!(
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
        check(
            values.iter().flatten().all(|v| v.is_finite() && *v >= 0.0),
            &field,
            "prices must be finite and not negative",
        );
    }

    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn is_name(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
