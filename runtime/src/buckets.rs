//! Buckets a producer-side process (the CLI, the HTTP edge) opens: it never changes one
//! that exists.
//!
//! The workers own the settings of llmq's streams and buckets (`jetstream.replicas`) and
//! create-or-update them at start-up. A CLI or an edge doing the same with settings of its
//! own would turn a cluster's 3 replicas into 1 each time it ran, and the next worker would
//! turn them back. So these open what exists and create only what is missing, with as many
//! replicas as the job stream has (the fleet's setting), or 1 before any worker ran.

use async_nats::jetstream::{self, kv};
use llmq_schemas::Subjects;

/// `config.num_replicas == 0`: as many replicas as the job stream has, if it must be made.
pub async fn open_or_create(
    js: &jetstream::Context,
    subjects: &Subjects,
    mut config: kv::Config,
) -> Result<kv::Store, jetstream::context::CreateKeyValueError> {
    if let Ok(store) = js.get_key_value(&config.bucket).await {
        return Ok(store);
    }
    if config.num_replicas == 0 {
        config.num_replicas = fleet_replicas(js, subjects).await;
    }
    js.create_key_value(config).await
}

/// The job stream's replicas: what the workers' `jetstream.replicas` made it; 1 if no
/// worker has run yet.
pub async fn fleet_replicas(js: &jetstream::Context, subjects: &Subjects) -> usize {
    match js.get_stream(subjects.jobs_stream()).await {
        Ok(stream) => stream.cached_info().config.num_replicas.max(1),
        Err(_) => 1,
    }
}
