//! The operator's handle on one llmq deployment: everything that is not "submit and follow
//! my own jobs".
//!
//! The tenant registry, API keys, the fleet's limits and status, dead letters, and usage
//! and budget reports. Most of these need an admin's NATS permissions; the reports that
//! name one tenant (usage, budgets) are also a tenant's to read on its own credentials,
//! which is what `submitter usage` does without `--all-tenants`: an `Operator` connected
//! as a tenant reads that tenant's usage and budgets and is denied the rest.
//!
//! An `Operator` connects exactly as a [`Client`] does (the same [`ClientOptions`]; its
//! `tenant` is the default scope of the reports), but opens no reply inbox and keeps no
//! caches: it makes a handful of reads, not thousands of submits.

mod api_keys;
mod budget_report;
mod dlq;
mod limits;
mod status;
mod tenants;
mod usage_report;

use std::fmt;
use std::sync::Arc;

use llmq_schemas::{Subjects, Tenant};

use crate::client::Client;
use crate::connect::ConnectionEvents;
use crate::error::ConnectError;
use crate::options::ClientOptions;
use crate::session::Session;

pub use budget_report::BudgetStatus;
pub use dlq::{DlqEntry, ReplayResult};
pub use status::{QueueStatus, Status, StreamStatus, WorkerStatus};
pub use usage_report::{UsageQuery, UsageReport, UsageRow};

/// A connected operator. Cheap to clone.
#[derive(Clone)]
pub struct Operator {
    session: Arc<Session>,
}

impl Operator {
    /// Connects to NATS with `options.nats`, as [`Client::connect`] does.
    pub async fn connect(options: ClientOptions) -> Result<Operator, ConnectError> {
        Ok(Self::of(Session::connect(options).await?))
    }

    /// An operator on an existing connection. Without the connection's events, a call the
    /// server's permissions deny fails only when its request times out; prefer
    /// [`from_nats_with_events`](Self::from_nats_with_events) when you made the connection.
    pub fn from_nats(
        nats: async_nats::Client,
        options: ClientOptions,
    ) -> Result<Operator, ConnectError> {
        Ok(Self::of(Session::on(nats, options, None)?))
    }

    /// An operator on an existing connection whose connect options had `events` installed.
    pub fn from_nats_with_events(
        nats: async_nats::Client,
        options: ClientOptions,
        events: &ConnectionEvents,
    ) -> Result<Operator, ConnectError> {
        Ok(Self::of(Session::on(nats, options, Some(events))?))
    }

    /// An operator on `client`'s connection, credentials and tenant: for a producer that
    /// also reads its own usage, or looks for its job among the dead letters.
    pub fn from_client(client: &Client) -> Operator {
        Operator {
            session: Arc::clone(client.session()),
        }
    }

    fn of(session: Session) -> Operator {
        Operator {
            session: Arc::new(session),
        }
    }

    /// The underlying NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        self.session.nats()
    }

    pub fn subjects(&self) -> &Subjects {
        self.session.subjects()
    }

    /// The tenant whose usage and budgets the reports show by default.
    pub fn tenant(&self) -> &Tenant {
        self.session.tenant()
    }

    pub fn options(&self) -> &ClientOptions {
        self.session.options()
    }
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator")
            .field("prefix", &self.session.prefix())
            .field("tenant", &self.tenant().as_str())
            .finish_non_exhaustive()
    }
}
