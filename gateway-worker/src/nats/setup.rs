//! Create-or-update of every stream, bucket and consumer, idempotently.
//!
//! Every worker runs this at start-up, any number at once: creating a stream or consumer
//! with an identical config is a no-op on the server, so the fleet converges on the config
//! of the most recent worker. A stream whose immutable settings (retention, storage)
//! differ from what llmq needs is an error that says so, not a silent mismatch.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::jetstream::{kv, object_store};
use llmq_runtime::stream_guards::{Guards, ReaderLimits, guard_bucket};
use llmq_schemas::{ModelName, Subjects, Tenant, Tier};

use crate::config::JetStreamConfig;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot create or update stream {stream}: {message}{hint}", hint = placement_hint(message))]
    Stream { stream: String, message: String },
    #[error("cannot create or update key-value bucket {bucket}: {message}{hint}", hint = placement_hint(message))]
    Bucket { bucket: String, message: String },
    #[error("cannot create or update consumer {consumer}: {message}{hint}", hint = placement_hint(message))]
    Consumer { consumer: String, message: String },
    /// JetStream's API does not answer: not enabled, or (a cluster) no meta leader yet.
    #[error("JetStream does not answer: {message}{hint}", hint = jetstream_hint(message))]
    JetStream { message: String },
}

impl SetupError {
    /// What the server said.
    pub fn message(&self) -> &str {
        match self {
            SetupError::Stream { message, .. }
            | SetupError::Bucket { message, .. }
            | SetupError::Consumer { message, .. }
            | SetupError::JetStream { message } => message,
        }
    }

    /// Whether waiting can cure it: a cluster still electing its meta leader (requests
    /// unanswered, "temporarily unavailable"), or still missing the servers that replicas
    /// need (they may be starting too). A stream that exists with the wrong settings, or
    /// replicas asked of a server that is not clustered, never gets better.
    pub fn is_transient(&self) -> bool {
        is_transient(self.message())
    }

    /// The stream or bucket it is about.
    pub fn subject(&self) -> &str {
        match self {
            SetupError::Stream { stream: name, .. }
            | SetupError::Bucket { bucket: name, .. }
            | SetupError::Consumer { consumer: name, .. } => name,
            SetupError::JetStream { .. } => "$JS.API",
        }
    }
}

/// Waits for nothing: asks JetStream for this account's info once. In a cluster only the
/// meta leader answers it, so an answer means streams can be created now; during an
/// election the request goes unanswered (give `js` a short timeout).
pub async fn probe(js: &Context) -> Result<(), SetupError> {
    js.query_account()
        .await
        .map(drop)
        .map_err(|err| SetupError::JetStream {
            message: err.to_string(),
        })
}

fn jetstream_hint(message: &str) -> &'static str {
    if message.contains("no responders") {
        " (JetStream is not enabled on this NATS server: start nats-server with -js, or add \
         `jetstream {}` to its config)"
    } else {
        ""
    }
}

/// How the server's transient answers read (async-nats prints the JetStream error code).
const TRANSIENT: [&str; 4] = [
    "timed out",
    "error code 10008", // JetStream system temporarily unavailable (no meta leader)
    "error code 10023", // insufficient resources (too few servers for the replicas)
    "error code 10005", // no suitable peers for placement
];

fn is_transient(message: &str) -> bool {
    TRANSIENT.iter().any(|sign| message.contains(sign))
}

/// What to do when replicas cannot be placed.
fn placement_hint(message: &str) -> &'static str {
    const PLACEMENT: [&str; 3] = ["error code 10023", "error code 10005", "error code 10074"];
    if PLACEMENT.iter().any(|sign| message.contains(sign)) {
        " (jetstream.replicas asks for more JetStream servers than the NATS cluster has \
         running: start them, or lower jetstream.replicas; 1 for a single server)"
    } else {
        ""
    }
}

/// Handles to what [`ensure`] set up.
#[derive(Debug, Clone)]
pub struct Setup {
    pub jobs: stream::Stream,
    pub results: stream::Stream,
    pub usage: stream::Stream,
    pub dlq: stream::Stream,
    pub catalog: kv::Store,
    pub cancels: kv::Store,
    /// Batch records (see `llmq_schemas::batch`): written and read by tenants only.
    pub batches: kv::Store,
    /// Batches made over HTTP, until an edge has run each (the edges' batch runners).
    pub batch_runs: stream::Stream,
    /// The tenant registry, read by every worker (see `llmq_runtime::tenants`).
    pub tenants: kv::Store,
    /// The fleet-wide limits' shared state (see `llmq_runtime::limits`); budget
    /// reservations live there too.
    pub limits: kv::Store,
    /// Tenants' spend per UTC day and month, a counter stream (see `llmq_runtime::budget`).
    pub spend: stream::Stream,
    /// Chunks of requests too large for one message (see `llmq_runtime::blob`).
    pub blobs: stream::Stream,
}

/// Streams and buckets; consumers are made per model with [`ensure_consumer`].
pub async fn ensure(
    js: &Context,
    subjects: &Subjects,
    config: &JetStreamConfig,
) -> Result<Setup, SetupError> {
    let streams = StreamConfigs { subjects, config };
    let tenants = llmq_runtime::tenants::bucket_config(subjects, config.replicas);
    let limits = llmq_runtime::limits::bucket_config(subjects, config.replicas);
    let spend = llmq_runtime::budget::spend_stream_config(
        subjects,
        config.replicas,
        config.duplicate_window,
    );
    // Each set-up boxed: ten of them inline made this future's poll frame a quarter of a
    // MiB in a debug build (a thread's stack is 2 MiB).
    let stream = |config| Box::pin(ensure_stream(js, config));
    let bucket = |config, guards| Box::pin(ensure_bucket(js, config, guards));
    // Files uploaded over HTTP and batches' results files (the edges' `/v1/files`).
    Box::pin(ensure_object_store(js, streams.files())).await?;
    Ok(Setup {
        jobs: stream(streams.jobs()).await?,
        results: stream(streams.results()).await?,
        usage: stream(streams.usage()).await?,
        dlq: stream(streams.dlq()).await?,
        catalog: bucket(streams.catalog(), streams.readers()).await?,
        cancels: bucket(streams.cancels(), TENANT_WRITABLE).await?,
        batches: bucket(streams.batches(), streams.tenant_readable_writable()).await?,
        batch_runs: stream(streams.batch_runs()).await?,
        tenants: bucket(tenants, Guards::default()).await?,
        limits: bucket(limits, Guards::default()).await?,
        spend: stream(spend).await?,
        blobs: stream(streams.blobs()).await?,
    })
}

/// The largest cancel request a tenant may store (one is about 200 bytes, its reason
/// included).
const CANCEL_MAX_VALUE: i32 = 16 * 1024;

/// A bucket tenants publish to (their cancels): no rollups, no purges.
const TENANT_WRITABLE: Guards = Guards {
    tenant_writable: true,
    readers: None,
};

/// The largest batch record (one is about 1 KiB, its metadata included).
const BATCH_MAX_VALUE: i32 = 64 * 1024;

/// What the batch records take at most, every tenant's together.
const BATCHES_MAX_BYTES: i64 = 1 << 30;

/// The configuration of each stream and bucket llmq uses.
struct StreamConfigs<'a> {
    subjects: &'a Subjects,
    config: &'a JetStreamConfig,
}

impl StreamConfigs<'_> {
    /// For the streams tenants read through consumers of their own (results, usage, the
    /// catalog): how many they hold, and how long an idle one lives.
    fn readers(&self) -> Guards {
        Guards {
            tenant_writable: false,
            readers: Some(ReaderLimits {
                inactive_threshold: self.config.reader_inactive_threshold,
                max_consumers: self.config.reader_max_consumers,
            }),
        }
    }

    /// What every stream shares: file storage, replicas, direct gets.
    fn file(&self, name: String, subjects: Vec<String>, max_age: Duration) -> stream::Config {
        stream::Config {
            name,
            subjects,
            storage: StorageType::File,
            num_replicas: self.config.replicas,
            max_age,
            duplicate_window: self.config.duplicate_window.min(max_age),
            allow_direct: true,
            ..Default::default()
        }
    }

    /// The queue. Tenants publish here, so it refuses rollups (the default) and, per job
    /// subject (model, tier, tenant), more than `jobs_max_per_subject` jobs: one tenant's
    /// backlog for a model cannot fill the queue for everyone.
    fn jobs(&self) -> stream::Config {
        let (subjects, config) = (self.subjects, self.config);
        stream::Config {
            retention: RetentionPolicy::WorkQueue,
            discard: DiscardPolicy::New,
            max_messages: config.jobs_max_msgs,
            max_bytes: config.jobs_max_bytes,
            max_messages_per_subject: config.jobs_max_per_subject,
            discard_new_per_subject: config.jobs_max_per_subject > 0,
            description: Some(
                "llmq jobs: one message per job, removed when its outcome is stored".into(),
            ),
            ..self.file(
                subjects.jobs_stream(),
                subjects.jobs_stream_subjects(),
                config.jobs_max_age,
            )
        }
    }

    /// One outcome per job, enforced by the server: a second publish to a job's result
    /// subject is refused, whichever worker makes it.
    fn results(&self) -> stream::Config {
        let mut config = stream::Config {
            max_messages_per_subject: 1,
            discard: DiscardPolicy::New,
            discard_new_per_subject: true,
            description: Some("llmq outcomes: exactly one per job".into()),
            ..self.file(
                self.subjects.results_stream(),
                self.subjects.results_stream_subjects(),
                self.config.results_max_age,
            )
        };
        self.readers().apply(&mut config);
        config
    }

    /// Request blobs: written by tenants under their own subjects, read by workers,
    /// deleted once the job's outcome is stored. A chunk cannot be replaced (one message
    /// per subject, discard new), the whole is bounded (`blobs_max_bytes`, discard new:
    /// a full stream refuses new large requests at submit) and kept at most as long as a
    /// job may wait. Answers too large for one message go beside their outcome in the
    /// results stream instead, where no tenant may write, so a tenant filling this stream
    /// cannot stop another tenant's answer from being stored.
    fn blobs(&self) -> stream::Config {
        stream::Config {
            max_messages_per_subject: 1,
            discard: DiscardPolicy::New,
            discard_new_per_subject: true,
            max_bytes: self.config.blobs_max_bytes,
            description: Some(
                "llmq request blobs: chunks of requests too large for one message".into(),
            ),
            ..self.file(
                self.subjects.blobs_stream(),
                self.subjects.blobs_stream_subjects(),
                self.config.jobs_max_age,
            )
        }
    }

    fn usage(&self) -> stream::Config {
        let mut config = stream::Config {
            description: Some("llmq usage events: one per processing of a job".into()),
            ..self.file(
                self.subjects.usage_stream(),
                self.subjects.usage_stream_subjects(),
                self.config.usage_max_age,
            )
        };
        self.readers().apply(&mut config);
        config
    }

    fn dlq(&self) -> stream::Config {
        stream::Config {
            description: Some(
                "llmq dead letters: original bytes and headers, reason in headers".into(),
            ),
            ..self.file(
                self.subjects.dlq_stream(),
                self.subjects.dlq_stream_subjects(),
                self.config.dlq_max_age,
            )
        }
    }

    fn catalog(&self) -> kv::Config {
        kv::Config {
            bucket: self.subjects.catalog_bucket(),
            description: "llmq live workers and the models they serve".into(),
            history: 1,
            // An entry not refreshed for three heartbeats is a dead worker's.
            max_age: self.config.catalog_heartbeat * 3,
            storage: StorageType::File,
            num_replicas: self.config.replicas,
            ..Default::default()
        }
    }

    /// Tenants write here directly: its size is bounded (`cancel_max_bytes`, a cancel
    /// request at most [`CANCEL_MAX_VALUE`]), and it refuses rollups ([`TENANT_WRITABLE`]).
    fn cancels(&self) -> kv::Config {
        kv::Config {
            bucket: self.subjects.cancel_bucket(),
            description: "llmq cancel requests, key <tenant>.<job id>".into(),
            history: 1,
            max_age: self.config.cancel_ttl,
            max_bytes: self.config.cancel_max_bytes,
            max_value_size: CANCEL_MAX_VALUE,
            storage: StorageType::File,
            num_replicas: self.config.replicas,
            ..Default::default()
        }
    }
}

impl StreamConfigs<'_> {
    /// Tenants write their batch records here and list them through consumers: bounded
    /// in size, no rollups ([`TENANT_WRITABLE`]), readers capped. A record lives as long
    /// as its batch's outcomes.
    fn batches(&self) -> kv::Config {
        kv::Config {
            bucket: self.subjects.batches_bucket(),
            description: "llmq batch records, key <tenant>.<batch id>".into(),
            history: 1,
            max_age: self.config.results_max_age,
            max_bytes: BATCHES_MAX_BYTES,
            max_value_size: BATCH_MAX_VALUE,
            storage: StorageType::File,
            num_replicas: self.config.replicas,
            ..Default::default()
        }
    }

    /// Only edges write here (tenants reach files through the edge's API): files live as
    /// long as outcomes, unless deleted first.
    fn files(&self) -> object_store::Config {
        object_store::Config {
            bucket: self.subjects.files_bucket(),
            description: Some("llmq files: batch inputs and results, <tenant>.<file id>".into()),
            max_age: self.config.results_max_age,
            storage: StorageType::File,
            num_replicas: self.config.replicas,
            ..Default::default()
        }
    }

    /// One message per batch made over HTTP, removed when an edge has run it.
    fn batch_runs(&self) -> stream::Config {
        stream::Config {
            retention: RetentionPolicy::WorkQueue,
            description: Some("llmq batches made over HTTP, until run".into()),
            ..self.file(
                self.subjects.batch_runs_stream(),
                self.subjects.batch_runs_stream_subjects(),
                self.config.results_max_age,
            )
        }
    }

    fn tenant_readable_writable(&self) -> Guards {
        Guards {
            tenant_writable: true,
            ..self.readers()
        }
    }
}

async fn ensure_stream(js: &Context, config: stream::Config) -> Result<stream::Stream, SetupError> {
    let name = config.name.clone();
    if let Some(stream) = already_as_wanted(js, &config).await {
        return Ok(stream);
    }
    let err = |message: String| SetupError::Stream {
        stream: name.clone(),
        message,
    };
    // Two workers creating at once: one may lose the race with "already in use"; the
    // second round finds the stream and updates it.
    let mut last = String::new();
    for _ in 0..3 {
        match js.create_or_update_stream(config.clone()).await {
            Ok(info) => {
                check_immutable(&info.config, &config).map_err(&err)?;
                return js.get_stream(&name).await.map_err(|e| err(e.to_string()));
            }
            Err(e) => last = e.to_string(),
        }
        if is_transient(&last) {
            break; // the caller waits it out
        }
    }
    Err(err(last))
}

/// The stream, when it exists with every setting llmq sets. Reading a stream is answered
/// by its leader at once; creating or updating one is a proposal to the whole cluster,
/// and identical proposals from workers starting together go unanswered until the
/// request times out (measured: 10 s per stream and worker). So most starts write nothing.
async fn already_as_wanted(js: &Context, wanted: &stream::Config) -> Option<stream::Stream> {
    let stream = js.get_stream(&wanted.name).await.ok()?;
    let found = serde_json::to_value(&stream.cached_info().config).ok()?;
    let wanted = serde_json::to_value(wanted).ok()?;
    has_every_setting(&found, &wanted).then_some(stream)
}

/// The bucket, when its stream has the settings llmq gives it (replicas, history, age,
/// description, its guards); else `None`, and the bucket is created or updated.
async fn bucket_as_wanted(js: &Context, wanted: &kv::Config, guards: Guards) -> Option<kv::Store> {
    let stream = js.get_stream(format!("KV_{}", wanted.bucket)).await.ok()?;
    let found = &stream.cached_info().config;
    let same = found.num_replicas == wanted.num_replicas.max(1)
        && found.max_messages_per_subject == wanted.history.max(1)
        && found.max_age == wanted.max_age
        && found.storage == wanted.storage
        && found.description.as_deref().unwrap_or_default() == wanted.description
        && same_limit(found.max_bytes, wanted.max_bytes)
        && same_limit(found.max_message_size.into(), wanted.max_value_size.into())
        && guards.hold(found);
    if !same {
        return None;
    }
    js.get_key_value(&wanted.bucket).await.ok()
}

/// Whether every field of `wanted` (a serialized stream config) has the same value in
/// `found`. The server writes "unlimited" as -1 where a config left at default says 0.
fn has_every_setting(found: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    let (Some(found), Some(wanted)) = (found.as_object(), wanted.as_object()) else {
        return false;
    };
    wanted.iter().all(|(key, value)| {
        let there = found.get(key).unwrap_or(&serde_json::Value::Null);
        there == value || (is_unlimited(there) && is_unlimited(value))
    })
}

fn is_unlimited(value: &serde_json::Value) -> bool {
    matches!(value.as_i64(), Some(0 | -1))
}

/// A limit as the server shows it (-1 for none) against one as configured (0 or -1).
fn same_limit(found: i64, wanted: i64) -> bool {
    found == wanted || (found <= 0 && wanted <= 0)
}

fn check_immutable(found: &stream::Config, wanted: &stream::Config) -> Result<(), String> {
    if found.retention != wanted.retention || found.storage != wanted.storage {
        return Err(format!(
            "it exists with retention {:?} and storage {:?}, llmq needs {:?} and {:?}: \
             delete it or use another jetstream.prefix",
            found.retention, found.storage, wanted.retention, wanted.storage
        ));
    }
    Ok(())
}

/// Creates or updates the bucket, then gives its stream `guards` (a bucket is created
/// with rollups allowed and no consumer limits: `kv::Config` has no say in them).
/// The object store, made if missing (its stream's settings are few and fixed).
async fn ensure_object_store(js: &Context, config: object_store::Config) -> Result<(), SetupError> {
    if js.get_object_store(&config.bucket).await.is_ok() {
        return Ok(());
    }
    let bucket = config.bucket.clone();
    match js.create_object_store(config).await {
        Ok(_) => Ok(()),
        // Another worker made it meanwhile.
        Err(err) => match js.get_object_store(&bucket).await {
            Ok(_) => Ok(()),
            Err(_) => Err(SetupError::Bucket {
                bucket,
                message: err.to_string(),
            }),
        },
    }
}

async fn ensure_bucket(
    js: &Context,
    config: kv::Config,
    guards: Guards,
) -> Result<kv::Store, SetupError> {
    let mut last = String::new();
    for _ in 0..3 {
        // Looked at every round: another worker starting at the same instant may have set
        // the bucket up meanwhile.
        if let Some(store) = bucket_as_wanted(js, &config, guards).await {
            return Ok(store);
        }
        match put_bucket(js, &config, guards).await {
            Ok(store) => return Ok(store),
            Err(e) => last = e,
        }
        // A worker starting at the same instant may have made it as wanted meanwhile: its
        // guards then refuse this update's defaults ("can not cancel deny purge").
        if let Some(store) = bucket_as_wanted(js, &config, guards).await {
            return Ok(store);
        }
        if is_transient(&last) {
            break;
        }
    }
    Err(SetupError::Bucket {
        bucket: config.bucket,
        message: last,
    })
}

/// Creates the bucket with its guards, or updates the one there in place. Not the KV
/// create-or-update: it sends the KV defaults (rollups and purges allowed), and the server
/// refuses to take a guard back.
async fn put_bucket(
    js: &Context,
    config: &kv::Config,
    guards: Guards,
) -> Result<kv::Store, String> {
    let Ok(stream) = js.get_stream(format!("KV_{}", config.bucket)).await else {
        js.create_key_value(config.clone())
            .await
            .map_err(|e| e.to_string())?;
        guard_bucket(js, &config.bucket, guards)
            .await
            .map_err(|e| e.message)?;
        return js
            .get_key_value(&config.bucket)
            .await
            .map_err(|e| e.to_string());
    };
    let mut wanted = stream.cached_info().config.clone();
    wanted.num_replicas = config.num_replicas.max(1);
    wanted.max_messages_per_subject = config.history.max(1);
    wanted.max_age = config.max_age;
    wanted.description = Some(config.description.clone());
    wanted.max_bytes = config.max_bytes;
    wanted.max_message_size = config.max_value_size;
    guards.apply(&mut wanted);
    js.update_stream(wanted).await.map_err(|e| e.to_string())?;
    js.get_key_value(&config.bucket)
        .await
        .map_err(|e| e.to_string())
}

/// The durable pull consumer for one (model, tier), shared by every worker.
pub fn consumer_config(
    subjects: &Subjects,
    model: &ModelName,
    tier: Tier,
    config: &JetStreamConfig,
) -> pull::Config {
    pull::Config {
        description: Some(format!("llmq {tier} jobs for model {model}")),
        filter_subject: subjects.jobs_filter(model, tier),
        ..durable_config(Subjects::consumer_name(model, tier), config)
    }
}

/// The durable pull consumer of one tenant's jobs for one (model, tier), shared by every
/// worker (the batch tier's, see `fair_share`). The server removes it after
/// `consumer_inactive_threshold` without pulls; the next job recreates it.
pub fn tenant_consumer_config(
    subjects: &Subjects,
    model: &ModelName,
    tier: Tier,
    tenant: &Tenant,
    config: &JetStreamConfig,
) -> pull::Config {
    pull::Config {
        description: Some(format!(
            "llmq {tier} jobs of tenant {tenant} for model {model}"
        )),
        filter_subject: subjects.tenant_jobs_filter(model, tier, tenant),
        ..durable_config(Subjects::tenant_consumer_name(model, tier, tenant), config)
    }
}

/// What every durable job consumer has in common: its name, explicit acks, the
/// redelivery settings.
fn durable_config(name: String, config: &JetStreamConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(name.clone()),
        name: Some(name),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        // One more than the worker's own limit: the worker sees the last delivery and
        // dead-letters it itself; the server's advisory is the backstop.
        max_deliver: config.max_deliver + 1,
        max_ack_pending: config.max_ack_pending,
        inactive_threshold: config.consumer_inactive_threshold,
        num_replicas: config.replicas,
        ..Default::default()
    }
}

pub async fn ensure_consumer(
    stream: &stream::Stream,
    config: pull::Config,
) -> Result<jetstream::consumer::PullConsumer, SetupError> {
    let name = config.durable_name.clone().unwrap_or_default();
    let mut last = String::new();
    for _ in 0..3 {
        match stream.create_consumer(config.clone()).await {
            Ok(consumer) => return Ok(consumer),
            Err(e) => last = e.to_string(),
        }
    }
    Err(SetupError::Consumer {
        consumer: name,
        message: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_stream_is_as_wanted_only_when_every_setting_llmq_sets_matches() {
        let found = json!({"name": "LLMQ_JOBS", "max_msgs": -1, "num_replicas": 3,
                           "max_age": 10, "sealed": false, "first_seq": 1});
        assert!(has_every_setting(
            &found,
            &json!({"name": "LLMQ_JOBS", "max_msgs": 0, "num_replicas": 3, "max_age": 10})
        ));
        // One replica more, another age, a setting the server does not show: update.
        for wanted in [
            json!({"name": "LLMQ_JOBS", "num_replicas": 5}),
            json!({"name": "LLMQ_JOBS", "max_age": 11}),
            json!({"name": "LLMQ_JOBS", "allow_msg_counter": true}),
        ] {
            assert!(!has_every_setting(&found, &wanted), "{wanted}");
        }
    }

    #[test]
    fn waiting_cures_elections_and_missing_servers_not_wrong_settings() {
        let error = |message: &str| SetupError::Stream {
            stream: "LLMQ_JOBS".into(),
            message: message.into(),
        };
        assert!(error("jetstream request timed out").is_transient());
        assert!(error("insufficient resources (code 503, error code 10023)").is_transient());
        assert!(
            !error("replicas > 1 not supported in non-clustered mode (error code 10074)")
                .is_transient()
        );
        assert!(
            error("replicas > 1 not supported in non-clustered mode (error code 10074)")
                .to_string()
                .contains("lower jetstream.replicas")
        );
        assert!(!error("stream name already in use with a different configuration").is_transient());
    }
}
