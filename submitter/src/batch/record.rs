//! Batch records in the batches bucket: read by key, listed, and changed by
//! compare-and-set, so that a submit moving the checkpoint and a status writing counts
//! (two processes, maybe two machines) never undo each other's change.

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::DirectGetErrorKind;
use bytes::Bytes;
use llmq_runtime::PublishFailure;
use llmq_schemas::{BatchId, BatchRecord, Subjects};

use super::error::BatchError;
use crate::Client;
use crate::error::ClientError;
use crate::read_stream::ReadRange;

/// JetStream's "wrong last sequence": someone else changed the record first.
const WRONG_LAST_SEQUENCE: u64 = 10071;
/// Compare-and-set rounds before giving up (each lost to another writer).
const MAX_ROUNDS: u32 = 20;

/// A record and the revision it was read at.
#[derive(Debug, Clone)]
pub(crate) struct Revised {
    pub(crate) record: BatchRecord,
    pub(crate) revision: u64,
}

impl Client {
    /// The batch's record, if this tenant has one by that id.
    pub async fn batch_record(&self, id: &BatchId) -> Result<Option<BatchRecord>, BatchError> {
        Ok(self.read_record(id).await?.map(|revised| revised.record))
    }

    /// Every batch record of this tenant, newest first.
    pub async fn batch_list(&self) -> Result<Vec<BatchRecord>, BatchError> {
        let subjects = self.subjects();
        let bucket = subjects.batches_bucket();
        let range = ReadRange {
            filter_subject: format!("$KV.{bucket}.{}.>", self.tenant()),
            deliver_policy: DeliverPolicy::LastPerSubject,
            until: None,
        };
        let mut records = Vec::new();
        let stream = format!("KV_{bucket}");
        self.session()
            .read_stream(&stream, range, |stored| {
                if let Ok(record) = serde_json::from_slice(&stored.message.payload) {
                    records.push(record);
                }
            })
            .await?;
        records.sort_by_key(|r: &BatchRecord| std::cmp::Reverse(r.created_at.unix_millis()));
        Ok(records)
    }

    pub(crate) async fn read_record(&self, id: &BatchId) -> Result<Option<Revised>, BatchError> {
        let stream_name = format!("KV_{}", self.subjects().batches_bucket());
        let stream = self
            .session()
            .js()
            .get_stream_no_info(&stream_name)
            .await
            .map_err(|err| ClientError::nats("opening the batches bucket", err))?;
        let got = self
            .session()
            .unless_denied(
                &[&stream_name],
                stream.direct_get_last_for_subject(self.record_subject(id)),
            )
            .await
            .map_err(|denied| ClientError::PermissionDenied {
                operation: "reading a batch record",
                denied,
            })?;
        match got {
            Ok(message) => decode(id, &message.payload, message.sequence).map(Some),
            Err(err) if err.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(err) => Err(ClientError::nats("reading a batch record", err).into()),
        }
    }

    /// Stores a new record; `None` if one with its id exists already.
    pub(crate) async fn create_record(
        &self,
        record: &BatchRecord,
    ) -> Result<Option<Revised>, BatchError> {
        match self.write_record(record, 0).await {
            Ok(revision) => Ok(Some(Revised {
                record: record.clone(),
                revision,
            })),
            Err(WriteError::Conflict) => Ok(None),
            Err(WriteError::Failed(err)) => Err(err),
        }
    }

    /// Applies `change` to the stored record and stores it, again on a newer record if
    /// another writer came first. `change` returns false to leave the record as it is.
    pub(crate) async fn update_record(
        &self,
        id: &BatchId,
        mut change: impl FnMut(&mut BatchRecord) -> bool,
    ) -> Result<BatchRecord, BatchError> {
        for _ in 0..MAX_ROUNDS {
            let Some(mut current) = self.read_record(id).await? else {
                return Err(BatchError::NotFound(id.clone()));
            };
            if !change(&mut current.record) {
                return Ok(current.record);
            }
            match self.write_record(&current.record, current.revision).await {
                Ok(_) => return Ok(current.record),
                Err(WriteError::Conflict) => continue,
                Err(WriteError::Failed(err)) => return Err(err),
            }
        }
        Err(BatchError::BadRecord {
            id: id.clone(),
            message: format!("changed by others {MAX_ROUNDS} times while this change was made"),
        })
    }

    async fn write_record(&self, record: &BatchRecord, revision: u64) -> Result<u64, WriteError> {
        let payload = serde_json::to_vec(record).map(Bytes::from).map_err(|err| {
            WriteError::Failed(BatchError::BadRecord {
                id: record.id.clone(),
                message: err.to_string(),
            })
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            revision.to_string().as_str(),
        );
        let subject = self.record_subject(&record.id);
        let msg_id = uuid::Uuid::new_v4().to_string();
        let published = self
            .session()
            .publish(&subject, &msg_id, Some(&headers), &payload);
        let bucket = self.subjects().batches_bucket();
        match self.session().unless_denied(&[&bucket], published).await {
            Ok(Ok(ack)) => Ok(ack.sequence),
            Ok(Err(PublishFailure::Rejected {
                code: WRONG_LAST_SEQUENCE,
                ..
            })) => Err(WriteError::Conflict),
            Ok(Err(failure)) => Err(WriteError::Failed(self.record_error(failure).into())),
            Err(denied) => Err(WriteError::Failed(
                ClientError::PermissionDenied {
                    operation: "writing a batch record",
                    denied,
                }
                .into(),
            )),
        }
    }

    fn record_subject(&self, id: &BatchId) -> String {
        let key = Subjects::batch_key(self.tenant(), id);
        format!("$KV.{}.{key}", self.subjects().batches_bucket())
    }

    fn record_error(&self, failure: PublishFailure) -> ClientError {
        let bucket = self.subjects().batches_bucket();
        match failure {
            PublishFailure::NoStream => {
                ClientError::not_set_up(self.subjects().prefix(), format!("KV bucket {bucket}"))
            }
            PublishFailure::Full { detail }
            | PublishFailure::SubjectFull { detail }
            | PublishFailure::TooLarge { detail } => ClientError::QueueFull {
                stream: format!("KV_{bucket}"),
                detail,
            },
            PublishFailure::Rejected { code, description } => {
                ClientError::Rejected { code, description }
            }
            PublishFailure::Timeout { attempts } => ClientError::PublishTimeout { attempts },
            PublishFailure::Connection { source, .. } => {
                ClientError::nats("writing a batch record", source)
            }
        }
    }
}

enum WriteError {
    Conflict,
    Failed(BatchError),
}

fn decode(id: &BatchId, payload: &[u8], revision: u64) -> Result<Revised, BatchError> {
    serde_json::from_slice(payload)
        .map(|record| Revised { record, revision })
        .map_err(|err| BatchError::BadRecord {
            id: id.clone(),
            message: err.to_string(),
        })
}
