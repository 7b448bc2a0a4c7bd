//! Building an edge, step by step: validate, connect, follow the API keys and the tenant
//! registry (both held in memory by watches, so checking a key or a policy costs no round
//! trip), open the limits bucket for keys' own rates, bind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use llmq_runtime::api_keys::{self, ApiKeys};
use llmq_runtime::limits::{self, Limiter};
use llmq_runtime::tenants::{self, Mode, Registry};
use llmq_runtime::{NatsOptions, Problems};
use llmq_schemas::Subjects;
use llmq_submitter::{ClientOptions, ConnectionEvents};
use tokio::net::TcpListener;

use super::{Edge, Tasks};
use crate::config::{EdgeConfig, validate};
use crate::error::EdgeError;
use crate::metrics::EdgeMetrics;
use crate::oidc::Verifier;
use crate::state::{Clients, EdgeState};

/// How long the edge's hold on a key's rate lasts without renewal.
const LIMIT_LEASE: Duration = Duration::from_secs(10);

/// What the edge follows in memory.
struct Followed {
    keys: ApiKeys,
    registry: Arc<Registry>,
    limiter: Arc<Limiter>,
}

impl Edge {
    /// Validates `config`, connects, reads the API keys and the registry, binds.
    pub async fn build(config: EdgeConfig) -> Result<Edge, EdgeError> {
        validate(&config)?;
        let subjects = Subjects::new(&config.jetstream.prefix).map_err(|err| {
            let mut problems = Problems::default();
            problems.add("jetstream.prefix", err);
            problems
        })?;
        let metrics = EdgeMetrics::new().map_err(EdgeError::Metrics)?;
        let tasks = Tasks::default();
        let events = ConnectionEvents::new();
        let nats = connect(&config.nats, &events).await?;
        let followed = follow(&nats, &subjects, &tasks).await?;
        let (listener, addr) = bind(config.http.listen).await?;
        tasks
            .services
            .spawn(Arc::clone(&metrics).upkeep(tasks.background.clone()));
        let client = ClientOptions {
            nats: config.nats.clone(),
            prefix: config.jetstream.prefix.clone(),
            ..ClientOptions::default()
        };
        let state = EdgeState {
            nats,
            events,
            http: config.http.clone(),
            batches: config.batches.clone(),
            client,
            keys: followed.keys,
            registry: followed.registry,
            limiter: followed.limiter,
            metrics,
            tasks: tasks.services.clone(),
            clients: Clients::default(),
            files: Default::default(),
            oidc: config.oidc.clone().map(Verifier::new),
            batch_counts: Default::default(),
        };
        Ok(Edge {
            state: Arc::new(state),
            listener,
            addr,
            grace: config.http.shutdown_grace,
            tasks,
        })
    }
}

/// The one connection every tenant's producer shares. API replies use the default
/// `_INBOX`, outside every tenant's inbox; each tenant's producer has its own reply inbox
/// for its jobs' events.
async fn connect(
    options: &NatsOptions,
    events: &ConnectionEvents,
) -> Result<async_nats::Client, EdgeError> {
    let mut options = options.clone();
    options.name.get_or_insert_with(|| "llmq-edge".to_owned());
    Ok(llmq_runtime::connect(&options, |connect| events.install(connect)).await?)
}

/// The API keys and the registry, each read whole and then followed by a watch, and the
/// limiter of keys' own rates; their tasks run until the edge stops.
async fn follow(
    nats: &async_nats::Client,
    subjects: &Subjects,
    tasks: &Tasks,
) -> Result<Followed, EdgeError> {
    let js = jetstream::new(nats.clone());
    let stop = &tasks.background;
    let bucket = api_keys::bucket(&js, subjects, 0)
        .await
        .map_err(EdgeError::KeysBucket)?;
    let (keys, following_keys) = ApiKeys::start(bucket, stop.clone())
        .await
        .map_err(EdgeError::Keys)?;
    tasks.services.spawn(following_keys);
    let bucket = tenants::bucket(&js, subjects, 0)
        .await
        .map_err(EdgeError::RegistryBucket)?;
    let (registry, following_registry) = Registry::start(bucket, Mode::Auto, stop.clone())
        .await
        .map_err(EdgeError::Registry)?;
    tasks.services.spawn(following_registry);
    let limiter = limiter(&js, subjects).await?;
    tasks
        .services
        .spawn(Arc::clone(&limiter).maintain(stop.clone()));
    Ok(Followed {
        keys,
        registry,
        limiter,
    })
}

async fn limiter(js: &jetstream::Context, subjects: &Subjects) -> Result<Arc<Limiter>, EdgeError> {
    let config = limits::bucket_config(subjects, 0);
    let bucket = config.bucket.clone();
    let store = llmq_runtime::buckets::open_or_create(js, subjects, config)
        .await
        .map_err(|source| EdgeError::LimitsBucket { bucket, source })?;
    let edge_id = format!("edge-{}", uuid::Uuid::new_v4().simple());
    Ok(Limiter::new(store, edge_id, LIMIT_LEASE))
}

async fn bind(listen: SocketAddr) -> Result<(TcpListener, SocketAddr), EdgeError> {
    let failed = |source| EdgeError::Listen {
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(failed)?;
    let addr = listener.local_addr().map_err(failed)?;
    Ok((listener, addr))
}
