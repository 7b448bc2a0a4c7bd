//! One connection to one llmq deployment, as both handles use it.
//!
//! A producer's [`Client`](crate::Client) and an [`Operator`](crate::Operator) connect the
//! same way (the same [`ClientOptions`], the per-tenant inbox prefix, the server-version
//! check, the connection's events) and make their calls the same way (a durable publish
//! within the client's retry budget, KV buckets and consumers whose absence means "llmq is
//! not set up", a permission error reported at once rather than as a timeout). That is
//! this type; each handle adds only what its own calls need (the producer its reply inbox
//! and caches), so neither reaches into the other.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use llmq_runtime::{Budget, Durable, PublishFailure, connect, publish_durable};
use llmq_schemas::{Subjects, Tenant};

use crate::connect::ConnectionEvents;
use crate::denied::{self, Denied};
use crate::error::{ClientError, ConnectError, is_stream_not_found};
use crate::options::ClientOptions;

/// A connection, its JetStream contexts, and the deployment and tenant it talks to.
pub(crate) struct Session {
    nats: async_nats::Client,
    /// For API requests (direct gets, consumers, KV): the connection's request timeout.
    js: jetstream::Context,
    /// For publishes: its timeout is the PubAck timeout.
    js_publish: jetstream::Context,
    subjects: Subjects,
    tenant: Tenant,
    options: ClientOptions,
    /// The connection's events, when this session installed them or was given them.
    events: Option<ConnectionEvents>,
}

impl Session {
    /// Connects to NATS with `options.nats`, using the per-tenant inbox prefix for every
    /// request inbox and counting reconnects and permission errors.
    pub(crate) async fn connect(options: ClientOptions) -> Result<Session, ConnectError> {
        validate(&options)?;
        let events = ConnectionEvents::new();
        let inbox_prefix = options.effective_inbox_prefix();
        let nats = connect(&options.nats, |connect| {
            events.install(connect.custom_inbox_prefix(&inbox_prefix))
        })
        .await?;
        Self::on(nats, options, Some(&events))
    }

    /// A session on an existing connection (whose connect options had `events` installed,
    /// if given).
    pub(crate) fn on(
        nats: async_nats::Client,
        options: ClientOptions,
        events: Option<&ConnectionEvents>,
    ) -> Result<Session, ConnectError> {
        let (subjects, tenant) = validate(&options)?;
        llmq_runtime::check_server_version(&nats.server_info().version)?;
        let js = jetstream::new(nats.clone());
        let js_publish = jetstream::ContextBuilder::new()
            .timeout(options.publish_timeout)
            .build(nats.clone());
        Ok(Session {
            nats,
            js,
            js_publish,
            subjects,
            tenant,
            options,
            events: events.cloned(),
        })
    }

    pub(crate) fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    pub(crate) fn js(&self) -> &jetstream::Context {
        &self.js
    }

    pub(crate) fn js_publish(&self) -> &jetstream::Context {
        &self.js_publish
    }

    pub(crate) fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub(crate) fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    pub(crate) fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub(crate) fn events(&self) -> Option<&ConnectionEvents> {
        self.events.as_ref()
    }

    /// The deployment's subject prefix.
    pub(crate) fn prefix(&self) -> &str {
        self.subjects.prefix()
    }

    /// Runs `call`, unless the server denies an operation on a subject containing one of
    /// `about` first (or already did, on this connection, for the inbox); see `denied.rs`.
    pub(crate) async fn unless_denied<T>(
        &self,
        about: &[&str],
        call: impl Future<Output = T>,
    ) -> Result<T, Denied> {
        let inbox = self.options.effective_inbox_prefix();
        denied::unless_denied(self.events.as_ref(), &inbox, about, call).await
    }

    /// The KV bucket, or `NotSetUp` if no worker created it.
    pub(crate) async fn bucket(&self, name: &str) -> Result<kv::Store, ClientError> {
        match self.js.get_key_value(name).await {
            Ok(store) => Ok(store),
            Err(err) if bucket_missing(&err) => Err(ClientError::not_set_up(
                self.prefix(),
                format!("KV bucket {name}"),
            )),
            Err(err) => Err(ClientError::nats("opening a KV bucket", err)),
        }
    }

    /// Publishes durably within the client's retry budget (`publish_retries`): a producer
    /// reports a missing stream at once (llmq is not set up) rather than waiting for it.
    pub(crate) async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        headers: Option<&HeaderMap>,
        payload: &Bytes,
    ) -> Result<jetstream::publish::PublishAck, PublishFailure> {
        let message = Durable {
            subject,
            msg_id,
            headers,
            payload,
            budget: Budget::Attempts(self.options.publish_retries.saturating_add(1)),
            missing_stream_is_transient: false,
            missing_stream_grace: self.options.missing_stream_grace,
            on_retry: None,
        };
        publish_durable(&self.js_publish, message).await
    }

    /// Maps a consumer-creation error, telling a missing stream apart.
    pub(crate) fn consumer_error(
        &self,
        err: jetstream::stream::ConsumerError,
        stream: &str,
        operation: &'static str,
    ) -> ClientError {
        use jetstream::stream::ConsumerErrorKind;
        match err.kind() {
            ConsumerErrorKind::JetStream(api) if is_stream_not_found(&api) => {
                ClientError::not_set_up(self.prefix(), format!("stream {stream}"))
            }
            ConsumerErrorKind::TimedOut => ClientError::Timeout { operation },
            _ => ClientError::nats(operation, err),
        }
    }
}

/// A fresh name for an ordered consumer: random, so that no other connection can guess it
/// (permissions cannot pin pulling by tenant), and a name at all, so that the creation
/// request carries the filter in its subject.
pub(crate) fn consumer_name() -> String {
    format!("llmq_{}", uuid::Uuid::new_v4().simple())
}

fn bucket_missing(err: &jetstream::context::KeyValueError) -> bool {
    use jetstream::context::{GetStreamError, GetStreamErrorKind, KeyValueErrorKind};
    use std::error::Error as _;

    if err.kind() != KeyValueErrorKind::GetBucket {
        return false;
    }
    err.source()
        .and_then(|source| source.downcast_ref::<GetStreamError>())
        .is_some_and(|source| match source.kind() {
            GetStreamErrorKind::JetStream(js) => is_stream_not_found(&js),
            _ => false,
        })
}

fn validate(options: &ClientOptions) -> Result<(Subjects, Tenant), ConnectError> {
    let subjects = Subjects::new(&options.prefix)?;
    let tenant = Tenant::parse(&options.tenant)?;
    let inbox_prefix = options.effective_inbox_prefix();
    // The prefix is followed by two more tokens; checking one full reply subject checks
    // the prefix's tokens and that it stays out of llmq's and the system's subjects.
    let probe = format!("{inbox_prefix}.client.job");
    if !subjects.is_safe_reply_to(&probe) {
        return Err(ConnectError::InvalidInboxPrefix(inbox_prefix));
    }
    Ok((subjects, tenant))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_prefix_tenant_and_inbox_prefix() {
        assert!(validate(&ClientOptions::default()).is_ok());
        let bad_tenant = ClientOptions::for_tenant("a.b");
        assert!(matches!(
            validate(&bad_tenant),
            Err(ConnectError::Subject(_))
        ));
        let bad_prefix = ClientOptions {
            prefix: "a b".into(),
            ..ClientOptions::default()
        };
        assert!(matches!(
            validate(&bad_prefix),
            Err(ConnectError::Subject(_))
        ));
        for inbox in ["llmq.replies", "$JS.x", "a.*", "a..b", ""] {
            let options = ClientOptions {
                inbox_prefix: Some(inbox.into()),
                ..ClientOptions::default()
            };
            assert!(
                matches!(validate(&options), Err(ConnectError::InvalidInboxPrefix(_))),
                "{inbox:?}"
            );
        }
    }
}
