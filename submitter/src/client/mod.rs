//! The producer's handle on one llmq deployment, for one tenant: submit jobs, follow them,
//! cancel them, read their outcomes.
//!
//! Everything a `Client` owns (its session, reply inbox and its dispatcher, catalog and
//! policy caches) lives behind one `Arc`, so clones are cheap and share it; the dispatcher
//! stops when the last clone, and the last [`JobHandle`](crate::JobHandle) holding one, is
//! dropped. What is not "submit and follow my own jobs" (the registry, API keys, the
//! fleet's limits and status, dead letters, usage reports) is the
//! [`Operator`](crate::Operator)'s.

mod cancel;
mod catalog_check;
mod handle;
mod inbox;
mod outcome;
mod policy;
mod request_blob;
mod submit;

use std::fmt;
use std::sync::Arc;

use llmq_schemas::{CatalogEntry, Subjects, Tenant};

use crate::connect::ConnectionEvents;
use crate::error::{ClientError, ConnectError};
use crate::options::ClientOptions;
use crate::session::Session;
use catalog_check::CatalogCache;
use inbox::Inbox;
use policy::PolicyCache;

pub use cancel::CancelStatus;
pub use handle::JobHandle;
pub use policy::POLICY_CACHE;

/// A connected producer. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared with the operators made from this client (`Operator::from_client`).
    session: Arc<Session>,
    inbox: Inbox,
    catalog: CatalogCache,
    policy: PolicyCache,
}

impl Client {
    /// Connects to NATS with `options.nats`, using the per-tenant inbox prefix for every
    /// reply and request inbox, and watching reconnects to recover lost final events.
    pub async fn connect(options: ClientOptions) -> Result<Client, ConnectError> {
        Self::build(Session::connect(options).await?).await
    }

    /// A client on an existing connection. Without reconnect notifications, a final event
    /// lost in a reconnect is found by the slow results poll only; prefer
    /// [`from_nats_with_events`](Self::from_nats_with_events) when you made the connection.
    pub async fn from_nats(
        nats: async_nats::Client,
        options: ClientOptions,
    ) -> Result<Client, ConnectError> {
        Self::build(Session::on(nats, options, None)?).await
    }

    /// A client on an existing connection whose connect options had `events` installed.
    pub async fn from_nats_with_events(
        nats: async_nats::Client,
        options: ClientOptions,
        events: &ConnectionEvents,
    ) -> Result<Client, ConnectError> {
        Self::build(Session::on(nats, options, Some(events))?).await
    }

    async fn build(session: Session) -> Result<Client, ConnectError> {
        let prefix = session.options().effective_inbox_prefix();
        let inbox = Inbox::open(session.nats(), &prefix).await?;
        Ok(Client {
            inner: Arc::new(Inner {
                session: Arc::new(session),
                inbox,
                catalog: CatalogCache::default(),
                policy: PolicyCache::default(),
            }),
        })
    }

    /// The underlying NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        self.inner.session.nats()
    }

    pub fn subjects(&self) -> &Subjects {
        self.inner.session.subjects()
    }

    pub fn tenant(&self) -> &Tenant {
        self.inner.session.tenant()
    }

    pub fn options(&self) -> &ClientOptions {
        self.inner.session.options()
    }

    /// How many submitted jobs have a live handle on this client.
    pub fn jobs_waiting(&self) -> usize {
        self.inner.inbox.len()
    }

    /// Every entry in the catalog bucket (stale ones included: see
    /// [`is_live`](crate::is_live)): the models live workers serve.
    pub async fn catalog(&self) -> Result<Vec<CatalogEntry>, ClientError> {
        self.inner.session.catalog().await
    }

    /// The session an [`Operator`](crate::Operator) made from this client shares.
    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.inner.session
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("prefix", &self.inner.session.prefix())
            .field("tenant", &self.tenant().as_str())
            .field("inbox", &self.inner.inbox)
            .finish_non_exhaustive()
    }
}
