//! The producer's handle on one llmq deployment, for one tenant.
//!
//! Everything a `Client` owns (connection, reply inbox and its dispatcher, catalog cache)
//! lives behind one `Arc`, so clones are cheap and share it; the dispatcher stops when the
//! last clone, and the last [`JobHandle`](crate::JobHandle) holding one, is dropped.

use std::fmt;
use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use llmq_schemas::{Subjects, Tenant};
use tokio::sync::watch;

use crate::catalog::CatalogCache;
use crate::connect::ConnectionEvents;
use crate::error::{ClientError, ConnectError};
use crate::inbox::Inbox;
use crate::options::ClientOptions;
use llmq_runtime::connect;

/// A connected producer. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) nats: async_nats::Client,
    /// For API requests (direct gets, consumers, KV): the connection's request timeout.
    pub(crate) js: jetstream::Context,
    /// For job publishes: its timeout is the PubAck timeout.
    pub(crate) js_publish: jetstream::Context,
    pub(crate) subjects: Subjects,
    pub(crate) tenant: Tenant,
    pub(crate) options: ClientOptions,
    pub(crate) inbox: Inbox,
    pub(crate) connects: Option<watch::Receiver<u64>>,
    /// The connection's events, when this client installed them or was given them.
    pub(crate) events: Option<ConnectionEvents>,
    pub(crate) catalog: CatalogCache,
    /// This tenant's registry entry as last read, and when (see `tenants.rs`).
    pub(crate) policy:
        tokio::sync::Mutex<Option<(tokio::time::Instant, Option<llmq_runtime::tenants::Lookup>)>>,
}

impl Client {
    /// Connects to NATS with `options.nats`, using the per-tenant inbox prefix for every
    /// reply and request inbox, and watching reconnects to recover lost final events.
    pub async fn connect(options: ClientOptions) -> Result<Client, ConnectError> {
        validate(&options)?;
        let events = ConnectionEvents::new();
        let inbox_prefix = options.effective_inbox_prefix();
        let nats = connect(&options.nats, |connect| {
            events.install(connect.custom_inbox_prefix(&inbox_prefix))
        })
        .await?;
        Self::build(nats, options, Some(&events)).await
    }

    /// A client on an existing connection. Without reconnect notifications, a final event
    /// lost in a reconnect is found by the slow results poll only; prefer
    /// [`from_nats_with_events`](Self::from_nats_with_events) when you made the connection.
    pub async fn from_nats(
        nats: async_nats::Client,
        options: ClientOptions,
    ) -> Result<Client, ConnectError> {
        validate(&options)?;
        Self::build(nats, options, None).await
    }

    /// A client on an existing connection whose connect options had `events` installed.
    pub async fn from_nats_with_events(
        nats: async_nats::Client,
        options: ClientOptions,
        events: &ConnectionEvents,
    ) -> Result<Client, ConnectError> {
        validate(&options)?;
        Self::build(nats, options, Some(events)).await
    }

    async fn build(
        nats: async_nats::Client,
        options: ClientOptions,
        events: Option<&ConnectionEvents>,
    ) -> Result<Client, ConnectError> {
        llmq_runtime::check_server_version(&nats.server_info().version)?;
        let (subjects, tenant) = validate(&options)?;
        let inbox = Inbox::open(&nats, &options.effective_inbox_prefix()).await?;
        let js = jetstream::new(nats.clone());
        let js_publish = jetstream::ContextBuilder::new()
            .timeout(options.publish_timeout)
            .build(nats.clone());
        Ok(Client {
            inner: Arc::new(Inner {
                nats,
                js,
                js_publish,
                subjects,
                tenant,
                options,
                inbox,
                connects: events.map(ConnectionEvents::subscribe),
                events: events.cloned(),
                catalog: CatalogCache::default(),
                policy: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The underlying NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.inner.nats
    }

    pub fn subjects(&self) -> &Subjects {
        &self.inner.subjects
    }

    pub fn tenant(&self) -> &Tenant {
        &self.inner.tenant
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// How many submitted jobs have a live handle on this client.
    pub fn jobs_waiting(&self) -> usize {
        self.inner.inbox.len()
    }

    /// The KV bucket, or `NotSetUp` if no worker created it.
    pub(crate) async fn bucket(&self, name: &str) -> Result<kv::Store, ClientError> {
        match self.inner.js.get_key_value(name).await {
            Ok(store) => Ok(store),
            Err(err) if bucket_missing(&err) => Err(ClientError::not_set_up(
                self.inner.subjects.prefix(),
                format!("KV bucket {name}"),
            )),
            Err(err) => Err(ClientError::nats("opening a KV bucket", err)),
        }
    }
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
            GetStreamErrorKind::JetStream(js) => crate::error::is_stream_not_found(&js),
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

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("prefix", &self.inner.subjects.prefix())
            .field("tenant", &self.inner.tenant.as_str())
            .field("inbox", &self.inner.inbox)
            .finish_non_exhaustive()
    }
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
