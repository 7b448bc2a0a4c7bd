//! What subject permissions cannot stop a tenant from doing to a stream it may touch, and
//! the stream settings that stop it instead.
//!
//! `auth` pins *which* subjects a tenant may publish to and which consumers it may create;
//! a permission cannot look at a message's headers or count a user's consumers. So:
//!
//! - **A stream a tenant publishes to** must refuse the headers that act on other
//!   messages than the one published. Every KV bucket's stream allows `Nats-Rollup` (KV
//!   purge uses it), and one `Nats-Rollup: all` on a tenant's own cancel key wipes every
//!   tenant's cancels. [`Guards::tenant_writable`] refuses rollups and the purge API. The
//!   other headers a client chooses are harmless there: `Nats-Expected-*` and
//!   `Nats-Required-Api-Level` can only make the tenant's own publish fail; `Nats-TTL`,
//!   `Nats-Incr`, `Nats-Batch-*` and `Nats-Schedule*` are refused unless a stream enables
//!   them (llmq's tenant-writable streams do not); `KV-Operation: PURGE` without a rollup
//!   marks only the tenant's own key; `Nats-Msg-Id` dedup is stream-wide, so llmq's own ids
//!   are unguessable (`publish::private_msg_id`).
//! - **A stream a tenant creates consumers on** (results, usage, the catalog) would keep
//!   every consumer a tenant made until someone deleted it. [`ReaderLimits`] caps how many
//!   the stream holds and removes any left idle: the server gives consumers created
//!   without an inactivity threshold (durable ones too) this one, and refuses a longer one.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    stream::{self, ConsumerLimits},
};

/// Bounds on the consumers of a stream tenants read through consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderLimits {
    /// A consumer nobody used for this long is removed; none may ask for longer. At least
    /// 30 s: async-nats's ordered consumers and KV watches (every llmq reader) ask for 30 s.
    pub inactive_threshold: Duration,
    /// Consumers the stream holds at most, every tenant's and llmq's own together.
    pub max_consumers: i32,
}

impl ReaderLimits {
    /// The shortest threshold llmq's own readers accept (async-nats asks for 30 s).
    pub const MIN_INACTIVE_THRESHOLD: Duration = Duration::from_secs(30);

    pub fn apply(self, config: &mut stream::Config) {
        config.max_consumers = self.max_consumers;
        config.consumer_limits = Some(ConsumerLimits {
            inactive_threshold: self.inactive_threshold,
            max_ack_pending: 0,
        });
    }

    fn hold(self, config: &stream::Config) -> bool {
        config.max_consumers == self.max_consumers
            && config
                .consumer_limits
                .as_ref()
                .is_some_and(|limits| limits.inactive_threshold == self.inactive_threshold)
    }
}

/// The settings a stream needs because of what tenants may do to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Guards {
    /// Tenants publish to it: refuse `Nats-Rollup` (hence KV purge) and the purge API.
    pub tenant_writable: bool,
    /// Tenants create consumers on it.
    pub readers: Option<ReaderLimits>,
}

impl Guards {
    pub fn apply(self, config: &mut stream::Config) {
        if self.tenant_writable {
            config.allow_rollup = false;
            config.deny_purge = true;
        }
        if let Some(readers) = self.readers {
            readers.apply(config);
        }
    }

    /// Whether `config` already has every guard.
    pub fn hold(self, config: &stream::Config) -> bool {
        let writes = !self.tenant_writable || (!config.allow_rollup && config.deny_purge);
        writes && self.readers.is_none_or(|readers| readers.hold(config))
    }
}

/// A bucket's stream could not be given its guards.
#[derive(Debug, thiserror::Error)]
#[error("cannot guard the stream of bucket {bucket}: {message}")]
pub struct GuardError {
    pub bucket: String,
    pub message: String,
}

/// Gives bucket `bucket`'s stream `guards`, which `kv::Config` cannot express (a bucket is
/// created with rollups allowed): one stream update, only when a guard is missing.
pub async fn guard_bucket(
    js: &jetstream::Context,
    bucket: &str,
    guards: Guards,
) -> Result<(), GuardError> {
    let err = |message: String| GuardError {
        bucket: bucket.to_owned(),
        message,
    };
    let stream = js
        .get_stream(format!("KV_{bucket}"))
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut config = stream.cached_info().config.clone();
    if guards.hold(&config) {
        return Ok(());
    }
    guards.apply(&mut config);
    js.update_stream(config)
        .await
        .map(drop)
        .map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_hold_only_once_applied() {
        let readers = ReaderLimits {
            inactive_threshold: Duration::from_secs(60),
            max_consumers: 100,
        };
        let guards = Guards {
            tenant_writable: true,
            readers: Some(readers),
        };
        let mut config = stream::Config {
            allow_rollup: true,
            ..Default::default()
        };
        assert!(!guards.hold(&config));
        assert!(Guards::default().hold(&config), "no guards: nothing to do");
        guards.apply(&mut config);
        assert!(guards.hold(&config));
        assert!(!config.allow_rollup && config.deny_purge);
        let longer = ReaderLimits {
            inactive_threshold: Duration::from_secs(120),
            ..readers
        };
        assert!(
            !longer.hold(&config),
            "a changed threshold is applied again"
        );
    }
}
