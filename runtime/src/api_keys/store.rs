//! The keys bucket: written by the admin command, followed by every edge.

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use futures::TryStreamExt;
use llmq_schemas::{Subjects, Timestamp};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use super::key::{ApiKeyEntry, KeyRefusal, NewKey, parse_presented};
use crate::live::{LiveError, LiveMap};

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("{operation} the API keys bucket {bucket} failed: {message}")]
    Nats {
        operation: &'static str,
        bucket: String,
        message: String,
    },
    #[error("no API key {0}")]
    NotFound(String),
    #[error("API key {id}'s entry cannot be read: {message}")]
    Undecodable { id: String, message: String },
}

/// The bucket as it is, or created if missing (file storage, some history for audits) with
/// `replicas` (0: as many as the job stream has). See [`crate::buckets`].
pub async fn bucket(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
) -> Result<kv::Store, KeyStoreError> {
    let config = kv::Config {
        bucket: subjects.keys_bucket(),
        description: "llmq API keys, key = key id; SHA-256 of the secret only".into(),
        history: 5,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    crate::buckets::open_or_create(js, subjects, config)
        .await
        .map_err(|err| failed("opening", &subjects.keys_bucket(), err))
}

/// Stores a new key's entry (refused if its id exists: ids are random, so never).
pub async fn create(bucket: &kv::Store, key: &NewKey) -> Result<(), KeyStoreError> {
    let value = serde_json::to_vec(&key.entry).unwrap_or_default();
    bucket
        .create(&key.entry.id, value.into())
        .await
        .map_err(|err| failed("writing", &bucket.name, err))?;
    Ok(())
}

/// Every key's entry, sorted by tenant then id; unreadable entries as errors.
pub async fn list(bucket: &kv::Store) -> Result<Vec<Result<ApiKeyEntry, String>>, KeyStoreError> {
    let keys: Vec<String> = bucket
        .keys()
        .await
        .map_err(|err| failed("listing", &bucket.name, err))?
        .try_collect()
        .await
        .map_err(|err| failed("listing", &bucket.name, err))?;
    let mut entries = Vec::with_capacity(keys.len());
    for id in keys {
        if let Some(value) = bucket
            .get(&id)
            .await
            .map_err(|err| failed("reading", &bucket.name, err))?
        {
            entries.push(decode(&id, &value));
        }
    }
    entries.sort_by(|a, b| match (a, b) {
        (Ok(a), Ok(b)) => (&a.tenant, &a.id).cmp(&(&b.tenant, &b.id)),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(a), Err(b)) => a.cmp(b),
    });
    Ok(entries)
}

/// Marks a key revoked (kept, for the listing); every edge refuses it within the watch's
/// latency.
pub async fn revoke(bucket: &kv::Store, id: &str) -> Result<ApiKeyEntry, KeyStoreError> {
    let value = bucket
        .get(id)
        .await
        .map_err(|err| failed("reading", &bucket.name, err))?
        .ok_or_else(|| KeyStoreError::NotFound(id.to_owned()))?;
    let mut entry = decode(id, &value).map_err(|message| KeyStoreError::Undecodable {
        id: id.to_owned(),
        message,
    })?;
    entry.revoked_at.get_or_insert_with(Timestamp::now);
    bucket
        .put(id, serde_json::to_vec(&entry).unwrap_or_default().into())
        .await
        .map_err(|err| failed("writing", &bucket.name, err))?;
    Ok(entry)
}

fn decode(id: &str, value: &[u8]) -> Result<ApiKeyEntry, String> {
    let entry: ApiKeyEntry =
        serde_json::from_slice(value).map_err(|err| format!("not an API key entry: {err}"))?;
    if entry.id != id {
        return Err(format!("entry {id:?} names key {:?}", entry.id));
    }
    Ok(entry)
}

fn failed(operation: &'static str, bucket: &str, err: impl std::fmt::Display) -> KeyStoreError {
    KeyStoreError::Nats {
        operation,
        bucket: bucket.to_owned(),
        message: err.to_string(),
    }
}

/// Every key, as an edge sees it: in memory, kept current by a watch.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    keys: Arc<LiveMap<ApiKeyEntry>>,
}

impl ApiKeys {
    /// Reads the bucket, then follows it until `stop` (spawn the returned future).
    pub async fn start(
        bucket: kv::Store,
        stop: CancellationToken,
    ) -> Result<(Self, impl Future<Output = ()> + Send + 'static), LiveError> {
        let (keys, following) = LiveMap::start(bucket, "API keys", decode, stop).await?;
        Ok((Self { keys }, following))
    }

    /// The key's entry, if `presented` is a usable key.
    pub fn authenticate(&self, presented: &SecretString) -> Result<Arc<ApiKeyEntry>, KeyRefusal> {
        let (id, secret) = parse_presented(presented)?;
        let entry = match self.keys.get(&id) {
            None => return Err(KeyRefusal::Unknown),
            Some(Err(_)) => return Err(KeyRefusal::Unreadable),
            Some(Ok(entry)) => entry,
        };
        if !entry.matches(secret.expose_secret()) {
            return Err(KeyRefusal::Unknown);
        }
        entry.usable()?;
        Ok(entry)
    }
}
