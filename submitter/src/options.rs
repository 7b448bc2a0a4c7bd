//! What a producer decides once per process: where NATS is, which llmq deployment
//! (prefix) and tenant it talks to, and how patient it is.

use std::time::Duration;

use serde::Deserialize;

use llmq_runtime::NatsOptions;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientOptions {
    pub nats: NatsOptions,
    /// Subject prefix of the llmq deployment (`llmq`).
    pub prefix: String,
    /// The tenant jobs are submitted as; the last token of every job subject.
    pub tenant: String,
    /// Prefix of every reply subject this client listens on, and of its request inboxes.
    /// Default: `_INBOX_llmq.<tenant>`, a per-tenant prefix NATS permissions can grant.
    pub inbox_prefix: Option<String>,
    /// Refuse a job at submit time when no live worker serves its model.
    pub check_catalog: bool,
    /// How long to wait for one PubAck.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Further publish attempts (same job id, so JetStream dedups) after a timeout or a
    /// connection error.
    pub publish_retries: u32,
    /// How long a submit keeps trying when no stream answers, before it reports llmq as
    /// not set up: a cluster electing a new leader for the job stream answers like a
    /// missing stream for a few seconds.
    pub missing_stream_grace: Duration,
    /// How often a waiting handle looks in the results stream, in case its final event was
    /// lost: a slow safety net, not the way outcomes normally arrive.
    #[serde(with = "humantime_serde")]
    pub results_poll_interval: Duration,
}

impl ClientOptions {
    pub const DEFAULT_INBOX_ROOT: &'static str = llmq_schemas::Subjects::INBOX_ROOT;

    /// Options for `tenant` on the default prefix.
    pub fn for_tenant(tenant: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            ..Self::default()
        }
    }

    /// The inbox prefix in effect.
    pub fn effective_inbox_prefix(&self) -> String {
        self.inbox_prefix
            .clone()
            .unwrap_or_else(|| format!("{}.{}", Self::DEFAULT_INBOX_ROOT, self.tenant))
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            nats: NatsOptions::default(),
            prefix: llmq_schemas::Subjects::DEFAULT_PREFIX.to_owned(),
            tenant: llmq_schemas::Tenant::DEFAULT.to_owned(),
            inbox_prefix: None,
            check_catalog: true,
            publish_timeout: Duration::from_secs(5),
            publish_retries: 3,
            missing_stream_grace: Duration::from_secs(10),
            results_poll_interval: Duration::from_secs(15),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let options = ClientOptions::default();
        assert_eq!(options.prefix, "llmq");
        assert_eq!(options.tenant, "default");
        assert!(options.check_catalog);
        assert_eq!(options.results_poll_interval, Duration::from_secs(15));
        assert_eq!(options.effective_inbox_prefix(), "_INBOX_llmq.default");
        let acme = ClientOptions::for_tenant("acme");
        assert_eq!(acme.effective_inbox_prefix(), "_INBOX_llmq.acme");
    }

    #[test]
    fn parses_from_config_with_nested_nats() {
        let options: ClientOptions = serde_json::from_value(serde_json::json!({
            "tenant": "acme",
            "publish_timeout": "250ms",
            "nats": {"url": "nats://n:4222"}
        }))
        .unwrap();
        assert_eq!(options.publish_timeout, Duration::from_millis(250));
        assert_eq!(options.nats.url, "nats://n:4222");
        assert!(
            serde_json::from_value::<ClientOptions>(serde_json::json!({"tenat": "x"})).is_err()
        );
    }
}
