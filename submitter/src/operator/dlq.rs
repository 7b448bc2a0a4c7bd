//! Inspecting and replaying dead letters.
//!
//! A dead letter is the job exactly as the producer published it (body and headers), plus
//! `Llmq-Dlq-*` headers saying why and where it came from. A replay publishes the same
//! bytes to the original subject, so the job runs as if newly submitted: the dead-letter
//! headers are dropped, and the message id is new, because the original id may still be
//! inside the jobs stream's duplicate window and the publish would be dropped as a copy.
//! The dead letter is deleted only after the jobs stream acknowledged the copy.

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::{
    DeleteMessageErrorKind, LastRawMessageErrorKind, RawMessageError, Stream,
};
use bytes::Bytes;
use llmq_schemas::{DlqReason, HEADER_MSG_ID, JobId, Timestamp, dlq};
use serde::Serialize;

use super::Operator;
use crate::error::{ClientError, is_stream_not_found};
use crate::read_stream::ReadRange;
use llmq_runtime::PublishFailure;

/// One message in the dead-letter stream.
#[derive(Debug, Clone, Serialize)]
pub struct DlqEntry {
    /// Sequence in the dead-letter stream: what `dlq_replay` takes.
    pub seq: u64,
    /// The dead-letter subject (`<prefix>.dlq.<model token>`).
    pub subject: String,
    /// When the dead letter was stored.
    pub stored_at: Timestamp,
    /// The reason as written (see [`DlqEntry::reason_kind`]).
    pub reason: Option<String>,
    pub detail: Option<String>,
    /// The subject the job was published to; a replay publishes there.
    pub original_subject: Option<String>,
    /// The job's sequence in the jobs stream.
    pub original_seq: Option<u64>,
    pub job_id: Option<JobId>,
    pub deliveries: Option<u64>,
    /// When it was dead-lettered, as the worker wrote it.
    pub at: Option<Timestamp>,
    pub worker: Option<String>,
    /// The original payload, as UTF-8 (lossy) in JSON output.
    #[serde(serialize_with = "serialize_lossy")]
    pub payload: Bytes,
    #[serde(skip)]
    pub headers: HeaderMap,
}

impl DlqEntry {
    /// The reason, if it is one this version knows.
    pub fn reason_kind(&self) -> Option<DlqReason> {
        self.reason.as_deref().and_then(DlqReason::parse)
    }

    fn from_parts(
        seq: u64,
        subject: String,
        stored_at: Timestamp,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> DlqEntry {
        let headers = headers.unwrap_or_default();
        let text = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        DlqEntry {
            seq,
            subject,
            stored_at,
            reason: text(dlq::HEADER_REASON),
            detail: text(dlq::HEADER_DETAIL),
            original_subject: text(dlq::HEADER_SUBJECT),
            original_seq: text(dlq::HEADER_STREAM_SEQ).and_then(|v| v.parse().ok()),
            job_id: text(dlq::HEADER_JOB_ID).and_then(|v| v.parse().ok()),
            deliveries: text(dlq::HEADER_DELIVERIES).and_then(|v| v.parse().ok()),
            at: text(dlq::HEADER_AT).and_then(|v| Timestamp::parse(&v).ok()),
            worker: text(dlq::HEADER_WORKER),
            payload,
            headers,
        }
    }
}

/// A dead letter put back on the jobs stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayResult {
    pub dlq_seq: u64,
    pub job_id: Option<JobId>,
    /// Where it was published.
    pub subject: String,
    /// Its new sequence in the jobs stream.
    pub jobs_seq: u64,
    /// The message id it was published with.
    pub msg_id: String,
}

impl Operator {
    /// Every dead letter, oldest first.
    pub async fn dlq_list(&self) -> Result<Vec<DlqEntry>, ClientError> {
        let subjects = self.session.subjects();
        let mut entries = Vec::new();
        // No filter: the stream holds only dead letters.
        let range = ReadRange {
            filter_subject: String::new(),
            deliver_policy: DeliverPolicy::All,
            until: None,
        };
        self.session
            .read_stream(&subjects.dlq_stream(), range, |stored| {
                entries.push(DlqEntry::from_parts(
                    stored.sequence,
                    stored.message.subject.to_string(),
                    Timestamp::from(stored.published),
                    stored.message.headers,
                    stored.message.payload,
                ));
            })
            .await?;
        Ok(entries)
    }

    /// Publishes dead letter `seq` back to its original subject and deletes it from the
    /// dead-letter stream.
    pub async fn dlq_replay(&self, seq: u64) -> Result<ReplayResult, ClientError> {
        let stream = self
            .session
            .js()
            .get_stream_no_info(self.session.subjects().dlq_stream())
            .await
            .map_err(|err| ClientError::nats("opening the dead-letter stream", err))?;
        let message = stream
            .get_raw_message(seq)
            .await
            .map_err(|err| self.raw_get_error(err, seq))?;
        let entry = DlqEntry::from_parts(
            message.sequence,
            message.subject.to_string(),
            Timestamp::from(message.time),
            Some(message.headers),
            message.payload,
        );
        let subject = self.replay_subject(&entry)?;
        let msg_id = replay_msg_id(entry.job_id, seq);
        let headers = replay_headers(&entry.headers);
        let ack = self
            .session
            .publish(&subject, &msg_id, Some(&headers), &entry.payload)
            .await
            .map_err(|failure| self.replay_error(failure))?;
        delete_replayed(&stream, seq).await?;
        Ok(ReplayResult {
            dlq_seq: seq,
            job_id: entry.job_id,
            subject,
            jobs_seq: ack.sequence,
            msg_id,
        })
    }

    /// Where a replay publishes `entry`: its original subject, if that is a job subject.
    fn replay_subject(&self, entry: &DlqEntry) -> Result<String, ClientError> {
        let seq = entry.seq;
        let subject =
            entry
                .original_subject
                .clone()
                .ok_or_else(|| ClientError::InvalidDlqEntry {
                    seq,
                    reason: format!("no {} header", dlq::HEADER_SUBJECT),
                })?;
        match self.session.subjects().parse_job_subject(&subject) {
            Ok(_) => Ok(subject),
            Err(err) => Err(ClientError::InvalidDlqEntry {
                seq,
                reason: format!("its original subject is not a job subject: {err}"),
            }),
        }
    }

    /// Replays every dead letter, oldest first. Dead letters that cannot be replayed (no
    /// original subject) are left in place and skipped; any other error stops the run.
    pub async fn dlq_replay_all(&self) -> Result<Vec<ReplayResult>, ClientError> {
        let mut replayed = Vec::new();
        for entry in self.dlq_list().await? {
            match self.dlq_replay(entry.seq).await {
                Ok(result) => replayed.push(result),
                Err(ClientError::InvalidDlqEntry { seq, reason }) => {
                    tracing::warn!(seq, reason, "dead letter left in place");
                }
                Err(ClientError::NotFound { .. }) => {} // replayed by someone else meanwhile
                Err(err) => return Err(err),
            }
        }
        Ok(replayed)
    }

    fn raw_get_error(&self, err: RawMessageError, seq: u64) -> ClientError {
        match err.kind() {
            LastRawMessageErrorKind::NoMessageFound => ClientError::NotFound {
                what: format!("dead letter {seq}"),
            },
            LastRawMessageErrorKind::JetStream(api) if is_stream_not_found(&api) => {
                ClientError::not_set_up(
                    self.session.subjects().prefix(),
                    format!("stream {}", self.session.subjects().dlq_stream()),
                )
            }
            LastRawMessageErrorKind::JetStream(api)
                if api.error_code() == async_nats::jetstream::ErrorCode::NO_MESSAGE_FOUND =>
            {
                ClientError::NotFound {
                    what: format!("dead letter {seq}"),
                }
            }
            _ => ClientError::nats("reading a dead letter", err),
        }
    }

    fn replay_error(&self, failure: PublishFailure) -> ClientError {
        let subjects = self.session.subjects();
        match failure {
            PublishFailure::NoStream => ClientError::not_set_up(
                subjects.prefix(),
                format!("stream {}", subjects.jobs_stream()),
            ),
            PublishFailure::Full { detail } | PublishFailure::SubjectFull { detail } => {
                ClientError::QueueFull {
                    stream: subjects.jobs_stream(),
                    detail,
                }
            }
            PublishFailure::TooLarge { detail } => ClientError::Rejected {
                code: 0,
                description: detail,
            },
            PublishFailure::Rejected { code, description } => {
                ClientError::Rejected { code, description }
            }
            PublishFailure::Timeout { attempts } => ClientError::PublishTimeout { attempts },
            PublishFailure::Connection { source, .. } => {
                ClientError::nats("republishing a dead letter", source)
            }
        }
    }
}

/// Deletes a replayed dead letter; one replayed concurrently by someone else, who deleted
/// it first, is left to them.
async fn delete_replayed(stream: &Stream<()>, seq: u64) -> Result<(), ClientError> {
    match stream.delete_message(seq).await {
        Ok(_) => Ok(()),
        Err(err) if matches!(err.kind(), DeleteMessageErrorKind::JetStream(_)) => {
            tracing::warn!(seq, error = %err, "dead letter was replayed but could not be deleted");
            Ok(())
        }
        Err(err) => Err(ClientError::nats("deleting the replayed dead letter", err)),
    }
}

/// `<job id>-replay-<dlq seq>.<private digits>`, or `dlq-<seq>-replay-<seq>.<...>` for a
/// job without a readable id: unguessable, so that no tenant can publish it first and make
/// the replay a dropped duplicate (after which the dead letter would be deleted).
fn replay_msg_id(job_id: Option<JobId>, seq: u64) -> String {
    llmq_runtime::private_msg_id(&match job_id {
        Some(id) => format!("{id}-replay-{seq}"),
        None => format!("dlq-{seq}-replay-{seq}"),
    })
}

/// The original headers without the dead-letter ones and the old message id (the replay
/// gets its own).
fn replay_headers(original: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, values) in original.iter() {
        let name: &str = name.as_ref();
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("llmq-dlq-")
            || lower == HEADER_MSG_ID.to_ascii_lowercase()
            || lower.starts_with("nats-expected-")
        {
            continue;
        }
        for value in values {
            headers.append(name, value.as_str());
        }
    }
    headers
}

fn serialize_lossy<S: serde::Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&String::from_utf8_lossy(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_headers_drop_dead_letter_headers_and_renew_the_id() {
        let mut original = HeaderMap::new();
        original.insert("Nats-Msg-Id", "job-1");
        original.insert("Traceparent", "00-abc-def-01");
        original.insert(dlq::HEADER_REASON, "max_deliveries");
        original.insert(dlq::HEADER_SUBJECT, "llmq.jobs.m.batch.t");
        original.insert("Nats-Expected-Stream", "LLMQ_JOBS");
        let headers = replay_headers(&original);
        assert!(headers.get("Nats-Msg-Id").is_none());
        assert_eq!(
            headers.get("Traceparent").unwrap().as_str(),
            "00-abc-def-01"
        );
        assert!(headers.get(dlq::HEADER_REASON).is_none());
        assert!(headers.get(dlq::HEADER_SUBJECT).is_none());
        assert!(headers.get("Nats-Expected-Stream").is_none());
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn replay_ids_are_unique_per_dead_letter() {
        let id = uuid::Uuid::now_v7();
        let with_id = replay_msg_id(Some(id), 7);
        assert!(with_id.starts_with(&format!("{id}-replay-7.")), "{with_id}");
        assert!(replay_msg_id(None, 7).starts_with("dlq-7-replay-7."));
        assert_ne!(replay_msg_id(Some(id), 8), with_id);
    }

    #[test]
    fn entry_reads_every_header() {
        let id = uuid::Uuid::now_v7();
        let mut headers = HeaderMap::new();
        headers.insert(dlq::HEADER_REASON, "undecodable");
        headers.insert(dlq::HEADER_DETAIL, "expected value at line 1");
        headers.insert(dlq::HEADER_SUBJECT, "llmq.jobs.m.batch.t");
        headers.insert(dlq::HEADER_STREAM_SEQ, "42");
        headers.insert(dlq::HEADER_DELIVERIES, "5");
        headers.insert(dlq::HEADER_JOB_ID, id.to_string());
        headers.insert(dlq::HEADER_AT, "2026-11-24T10:00:00Z");
        headers.insert(dlq::HEADER_WORKER, "w1");
        let entry = DlqEntry::from_parts(
            3,
            "llmq.dlq.m".into(),
            Timestamp::now(),
            Some(headers),
            Bytes::from_static(b"{not json"),
        );
        assert_eq!(entry.reason_kind(), Some(DlqReason::Undecodable));
        assert_eq!(entry.original_seq, Some(42));
        assert_eq!(entry.deliveries, Some(5));
        assert_eq!(entry.job_id, Some(id));
        assert_eq!(entry.worker.as_deref(), Some("w1"));
        assert!(entry.at.is_some());
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["payload"], "{not json");
    }
}
