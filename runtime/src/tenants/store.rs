//! Reading and writing the registry bucket: the admin commands (apply, list, show, diff,
//! remove) and a producer's read of its own entry.
//!
//! A producer reads its entry with one direct get on its own key, a subject NATS
//! permissions can pin to the tenant (`$JS.API.DIRECT.GET.<bucket stream>.$KV.<bucket>.<id>`),
//! so it needs no right to list or watch the registry.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::stream::DirectGetErrorKind;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::TryStreamExt;
use llmq_schemas::{Subjects, Tenant, TenantEntry, Timestamp};

/// Why a registry read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{operation} on the tenant registry {bucket} failed: {message}")]
    Nats {
        operation: &'static str,
        bucket: String,
        message: String,
    },
    #[error("cannot encode the entry of tenant {id}: {source}")]
    Encode {
        id: String,
        #[source]
        source: serde_json::Error,
    },
}

/// How a registry entry differs from a file's.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Add(Box<TenantEntry>),
    Update {
        live: Box<TenantEntry>,
        file: Box<TenantEntry>,
    },
    /// In the registry, not in the file.
    Remove(String),
}

impl Change {
    pub fn tenant(&self) -> &str {
        match self {
            Change::Add(entry) | Change::Update { file: entry, .. } => &entry.id,
            Change::Remove(id) => id,
        }
    }
}

/// What an entry read from the registry holds: an entry, or why it cannot be read.
pub type LiveEntry = Result<TenantEntry, String>;

/// The registry bucket as it is, or created if missing (an admin may apply before a worker
/// runs) with `replicas` (0: as many as the job stream has). See [`crate::buckets`].
pub async fn bucket(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
) -> Result<kv::Store, StoreError> {
    crate::buckets::open_or_create(js, subjects, config(subjects, replicas))
        .await
        .map_err(|err| nats_error("opening", subjects, err))
}

/// The bucket's configuration: every worker and the admin command create it alike.
pub fn config(subjects: &Subjects, replicas: usize) -> kv::Config {
    kv::Config {
        bucket: subjects.tenants_bucket(),
        description: "llmq tenant registry, key = tenant id".into(),
        history: 5,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

fn nats_error(
    operation: &'static str,
    subjects: &Subjects,
    err: impl std::fmt::Display,
) -> StoreError {
    StoreError::Nats {
        operation,
        bucket: subjects.tenants_bucket(),
        message: err.to_string(),
    }
}

/// Every entry in the registry, by tenant id.
pub async fn list(
    bucket: &kv::Store,
    subjects: &Subjects,
) -> Result<BTreeMap<String, LiveEntry>, StoreError> {
    let keys: Vec<String> = bucket
        .keys()
        .await
        .map_err(|err| nats_error("listing", subjects, err))?
        .try_collect()
        .await
        .map_err(|err| nats_error("listing", subjects, err))?;
    let mut entries = BTreeMap::new();
    for key in keys {
        let Some(value) = bucket
            .get(&key)
            .await
            .map_err(|err| nats_error("reading", subjects, err))?
        else {
            continue; // removed since the listing
        };
        entries.insert(key.clone(), decode(&key, &value));
    }
    Ok(entries)
}

fn decode(key: &str, value: &[u8]) -> LiveEntry {
    serde_json::from_slice::<TenantEntry>(value)
        .map_err(|err| format!("not a tenant entry: {err}"))
        .and_then(|entry| {
            if entry.id == key {
                Ok(entry)
            } else {
                Err(format!("the entry names tenant {:?}", entry.id))
            }
        })
}

/// What applying `file` to `live` changes; `prune` also removes tenants not in the file.
pub fn diff(live: &BTreeMap<String, LiveEntry>, file: &[TenantEntry], prune: bool) -> Vec<Change> {
    let mut changes = Vec::new();
    for entry in file {
        match live.get(&entry.id) {
            None => changes.push(Change::Add(Box::new(entry.clone()))),
            Some(Ok(current)) if same(current, entry) => {}
            Some(Ok(current)) => changes.push(Change::Update {
                live: Box::new(current.clone()),
                file: Box::new(entry.clone()),
            }),
            // An unreadable entry is replaced by the file's.
            Some(Err(_)) => changes.push(Change::Add(Box::new(entry.clone()))),
        }
    }
    if prune {
        for id in live.keys() {
            if !file.iter().any(|entry| &entry.id == id) {
                changes.push(Change::Remove(id.clone()));
            }
        }
    }
    changes
}

/// Equal but for when they were applied.
fn same(a: &TenantEntry, b: &TenantEntry) -> bool {
    TenantEntry {
        updated_at: None,
        ..a.clone()
    } == TenantEntry {
        updated_at: None,
        ..b.clone()
    }
}

/// Writes `changes` (already validated); returns how many were made.
pub async fn apply(
    bucket: &kv::Store,
    subjects: &Subjects,
    changes: &[Change],
) -> Result<usize, StoreError> {
    for change in changes {
        match change {
            Change::Add(entry) | Change::Update { file: entry, .. } => {
                put(bucket, subjects, entry).await?;
            }
            Change::Remove(id) => remove(bucket, subjects, id).await?,
        }
    }
    Ok(changes.len())
}

async fn put(
    bucket: &kv::Store,
    subjects: &Subjects,
    entry: &TenantEntry,
) -> Result<(), StoreError> {
    let entry = TenantEntry {
        updated_at: Some(Timestamp::now()),
        ..entry.clone()
    };
    let value = serde_json::to_vec(&entry).map_err(|source| StoreError::Encode {
        id: entry.id.clone(),
        source,
    })?;
    bucket
        .put(&entry.id, Bytes::from(value))
        .await
        .map(|_| ())
        .map_err(|err| nats_error("writing", subjects, err))
}

pub async fn remove(bucket: &kv::Store, subjects: &Subjects, id: &str) -> Result<(), StoreError> {
    bucket
        .delete(id)
        .await
        .map_err(|err| nats_error("removing", subjects, err))
}

/// A producer's read of its own entry (`None`: not in the registry, or no registry).
pub async fn read_own(
    js: &jetstream::Context,
    subjects: &Subjects,
    tenant: &Tenant,
    timeout: Duration,
) -> Result<Option<LiveEntry>, StoreError> {
    let stream = js
        .get_stream_no_info(format!("KV_{}", subjects.tenants_bucket()))
        .await
        .map_err(|err| nats_error("opening", subjects, err))?;
    let key = format!("$KV.{}.{}", subjects.tenants_bucket(), tenant.as_str());
    let got = tokio::time::timeout(timeout, stream.direct_get_last_for_subject(key)).await;
    let message = match got {
        Err(_) => return Err(nats_error("reading", subjects, "timed out")),
        Ok(Ok(message)) => message,
        Ok(Err(err)) if err.kind() == DirectGetErrorKind::NotFound => return Ok(None),
        Ok(Err(err)) => return Err(nats_error("reading", subjects, err)),
    };
    let deleted = message
        .headers
        .get("KV-Operation")
        .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
    if deleted {
        return Ok(None);
    }
    Ok(Some(decode(tenant.as_str(), &message.payload)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmq_schemas::PROTOCOL_VERSION;

    fn entry(id: &str, models: &[&str]) -> TenantEntry {
        TenantEntry {
            v: PROTOCOL_VERSION,
            id: id.into(),
            name: String::new(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            tiers: llmq_schemas::Tier::ALL.to_vec(),
            max_tokens: None,
            over_max_tokens: Default::default(),
            max_request_bytes: None,
            labels: BTreeMap::new(),
            reply_prefixes: Vec::new(),
            limits: Default::default(),
            model_limits: Default::default(),
            max_wait: None,
            batch_weight: None,
            budget: Default::default(),
            updated_at: None,
        }
    }

    #[test]
    fn diff_adds_updates_keeps_and_prunes_only_when_asked() {
        let mut applied = entry("same", &["a"]);
        applied.updated_at = Some(Timestamp::now());
        let live = BTreeMap::from([
            ("same".to_owned(), Ok(applied)),
            ("old".to_owned(), Ok(entry("old", &["a"]))),
            ("changed".to_owned(), Ok(entry("changed", &["a"]))),
            ("broken".to_owned(), Err("not a tenant entry".to_owned())),
        ]);
        let file = vec![
            entry("same", &["a"]),
            entry("changed", &["b"]),
            entry("new", &["a"]),
            entry("broken", &["a"]),
        ];
        let changes = diff(&live, &file, false);
        let tenants: Vec<&str> = changes.iter().map(Change::tenant).collect();
        assert_eq!(tenants, ["changed", "new", "broken"]);
        assert!(matches!(changes[0], Change::Update { .. }));
        let pruned = diff(&live, &file, true);
        assert_eq!(pruned.last(), Some(&Change::Remove("old".into())));
    }
}
