//! What every request handler shares: the connection, the keys, the registry, the limits,
//! one producer per tenant, the metrics, and the tracker of the tasks a request leaves
//! behind (the cancel of a job whose client went away).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use llmq_runtime::api_keys::ApiKeys;
use llmq_runtime::limits::Limiter;
use llmq_runtime::tenants::Registry;
use llmq_schemas::BatchId;
use llmq_schemas::Subjects;
use llmq_submitter::{BatchCount, Client, ClientOptions, ConnectionEvents};
use tokio::sync::OnceCell;
use tokio_util::task::TaskTracker;

use crate::api_error::ApiError;
use crate::config::{BatchesConfig, HttpConfig};
use crate::files::Files;
use crate::metrics::EdgeMetrics;
use crate::oidc::Verifier;

pub(crate) struct EdgeState {
    pub nats: async_nats::Client,
    pub events: ConnectionEvents,
    pub http: HttpConfig,
    pub batches: BatchesConfig,
    /// What every tenant's producer starts from (connection, prefix).
    pub client: ClientOptions,
    pub keys: ApiKeys,
    pub registry: Arc<Registry>,
    /// Each key's own request rate, fleet-wide (every edge shares the limits bucket).
    pub limiter: Arc<Limiter>,
    pub metrics: Arc<EdgeMetrics>,
    /// Tasks a request leaves behind; a stopping edge waits for them.
    pub tasks: TaskTracker,
    pub clients: Clients,
    /// The files bucket, opened on first use.
    pub files: OnceCell<Files>,
    /// Sign-in with the identity provider, when `[oidc]` is configured.
    pub oidc: Option<Verifier>,
    /// Each polled batch's outcomes counted so far, so a poll reads only the new ones.
    pub batch_counts: BatchCounts,
}

/// Batches' counts between two polls, by tenant and batch. Taken out while a poll counts
/// on (no lock across the reads) and put back after; a poll that finds none counts the
/// batch whole. At most [`BatchCounts::MOST`] batches are kept.
#[derive(Default)]
pub(crate) struct BatchCounts(Mutex<HashMap<(String, BatchId), BatchCount>>);

impl BatchCounts {
    const MOST: usize = 4096;

    pub fn take(&self, tenant: &str, id: &BatchId) -> BatchCount {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        counts
            .remove(&(tenant.to_owned(), id.clone()))
            .unwrap_or_default()
    }

    pub fn put(&self, tenant: &str, id: &BatchId, count: BatchCount) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.len() >= Self::MOST {
            counts.clear();
        }
        counts.insert((tenant.to_owned(), id.clone()), count);
    }
}

/// One producer per tenant, made on its first request. A cell per tenant, so making one
/// (a round trip to NATS) holds no lock: other tenants' requests go on meanwhile, and the
/// same tenant's wait for that one.
#[derive(Default)]
pub(crate) struct Clients(Mutex<HashMap<String, Arc<OnceCell<Client>>>>);

impl Clients {
    fn cell(&self, tenant: &str) -> Arc<OnceCell<Client>> {
        let mut clients = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(clients.entry(tenant.to_owned()).or_default())
    }
}

impl EdgeState {
    pub fn subjects(&self) -> Subjects {
        Subjects::new(&self.client.prefix).unwrap_or_else(|_| Subjects::default())
    }

    /// The files bucket (opened once; a worker makes it).
    pub async fn files(&self) -> Result<&Files, ApiError> {
        let js = async_nats::jetstream::new(self.nats.clone());
        let subjects = self.subjects();
        self.files
            .get_or_try_init(|| Files::open(&js, &subjects))
            .await
    }

    /// The producer for `tenant` (one per tenant, on the shared connection, each with its
    /// own reply inbox under `_INBOX_llmq.<tenant>`).
    pub async fn client_for(&self, tenant: &str) -> Result<Client, ApiError> {
        let cell = self.clients.cell(tenant);
        let client = cell
            .get_or_try_init(|| self.connect(tenant))
            .await
            .map_err(|err| ApiError::unavailable(format!("cannot serve tenant {tenant}: {err}")))?;
        Ok(client.clone())
    }

    async fn connect(&self, tenant: &str) -> Result<Client, llmq_submitter::ConnectError> {
        let options = ClientOptions {
            tenant: tenant.to_owned(),
            inbox_prefix: None,
            check_catalog: true,
            ..self.client.clone()
        };
        Client::from_nats_with_events(self.nats.clone(), options, &self.events).await
    }
}

impl std::fmt::Debug for EdgeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeState")
            .field("http", &self.http)
            .field("prefix", &self.client.prefix)
            .finish_non_exhaustive()
    }
}
