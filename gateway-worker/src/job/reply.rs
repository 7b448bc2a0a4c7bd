//! Events to the producer's reply subject, over core NATS.
//!
//! Core NATS, not JetStream: deltas are many, small and worthless a second later, and
//! the durable copy of what matters (the outcome) is in the results stream. A publish
//! error here never fails a job.

use async_trait::async_trait;
use bytes::Bytes;
use llmq_schemas::{
    Delta, ErrorType, JobId, Outcome, PROTOCOL_VERSION, ReplyEvent, Restart, Started,
};

use crate::providers::{DeltaPart, DeltaSink};

#[derive(Debug)]
pub struct ReplySink {
    nats: async_nats::Client,
    reply_to: Option<async_nats::Subject>,
    job_id: JobId,
    delivery: u32,
    processing: uuid::Uuid,
    stream: bool,
    seq: u64,
    attempt: u32,
    /// The `seq` the current attempt's first delta has (or will have).
    attempt_first_seq: u64,
}

impl ReplySink {
    pub fn new(
        nats: async_nats::Client,
        reply_to: Option<&str>,
        job_id: JobId,
        delivery: u32,
        processing: uuid::Uuid,
        stream: bool,
    ) -> Self {
        Self {
            nats,
            reply_to: reply_to.map(async_nats::Subject::from),
            job_id,
            delivery,
            processing,
            stream,
            seq: 0,
            attempt: 0,
            attempt_first_seq: 1,
        }
    }

    pub async fn started(
        &mut self,
        attempt: u32,
        provider: &str,
        upstream_model: &str,
        model: &str,
    ) {
        self.attempt = attempt;
        self.attempt_first_seq = self.seq + 1;
        if !self.stream {
            // Only streaming producers follow attempts; everyone gets the final.
            return;
        }
        self.send(&ReplyEvent::Started(Started {
            v: PROTOCOL_VERSION,
            job_id: self.job_id,
            delivery: self.delivery,
            processing: Some(self.processing),
            attempt,
            first_seq: self.attempt_first_seq,
            provider: provider.to_owned(),
            upstream_model: upstream_model.to_owned(),
            model: model.to_owned(),
        }))
        .await;
    }

    pub async fn restart(&mut self, attempt: u32, reason: ErrorType, message: &str) {
        self.send(&ReplyEvent::Restart(Restart {
            v: PROTOCOL_VERSION,
            job_id: self.job_id,
            delivery: self.delivery,
            processing: Some(self.processing),
            attempt,
            reason,
            message: message.to_owned(),
        }))
        .await;
    }

    /// The `seq` of the last delta sent, for streaming jobs.
    pub fn last_seq(&self) -> Option<u64> {
        self.stream.then_some(self.seq)
    }

    /// The `seq` of the last attempt's first delta, for streaming jobs: with
    /// [`last_seq`](Self::last_seq), the exact range of deltas that streamed its output.
    pub fn first_seq(&self) -> Option<u64> {
        self.stream.then_some(self.attempt_first_seq)
    }

    pub async fn finished(&mut self, outcome: &Outcome) {
        match serde_json::to_vec(outcome) {
            Ok(json) => self.finished_json(&json).await,
            Err(err) => tracing::warn!(error = %err, "cannot encode the final event"),
        }
    }

    /// The final event from the outcome's JSON as stored: the same object with
    /// `"type":"final"` first, without encoding the outcome again.
    pub async fn finished_json(&mut self, outcome_json: &[u8]) {
        let Some(subject) = &self.reply_to else {
            return;
        };
        let Some(event) = final_event(outcome_json) else {
            return;
        };
        if let Err(err) = self.nats.publish(subject.clone(), Bytes::from(event)).await {
            tracing::debug!(error = %err, "final event not sent");
        }
    }

    async fn send(&self, event: &ReplyEvent) {
        let Some(subject) = &self.reply_to else {
            return;
        };
        match serde_json::to_vec(event) {
            Ok(bytes) => {
                if let Err(err) = self.nats.publish(subject.clone(), Bytes::from(bytes)).await {
                    tracing::debug!(error = %err, "reply event not sent");
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot encode a reply event"),
        }
    }
}

#[async_trait]
impl DeltaSink for ReplySink {
    async fn delta(&mut self, part: DeltaPart) {
        if !self.stream {
            return;
        }
        self.seq += 1;
        let event = ReplyEvent::Delta(Delta {
            v: PROTOCOL_VERSION,
            job_id: self.job_id,
            delivery: self.delivery,
            processing: Some(self.processing),
            seq: self.seq,
            attempt: self.attempt,
            content: part.content,
            reasoning: part.reasoning,
            tool_calls: (!part.tool_calls.is_empty()).then_some(part.tool_calls),
        });
        self.send(&event).await;
    }
}

/// `{"type":"final",<the outcome's fields>}` from the outcome's JSON object.
fn final_event(outcome_json: &[u8]) -> Option<Vec<u8>> {
    let fields = outcome_json.strip_prefix(b"{")?;
    let mut event = Vec::with_capacity(outcome_json.len() + 16);
    event.extend_from_slice(b"{\"type\":\"final\",");
    event.extend_from_slice(fields);
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmq_schemas::{OutcomeStatus, Tier, Timestamp, Timings};

    #[test]
    fn the_final_event_is_the_stored_outcome_tagged() {
        let outcome = Outcome {
            v: PROTOCOL_VERSION,
            job_id: uuid::Uuid::now_v7(),
            status: OutcomeStatus::Succeeded,
            model: "m".into(),
            tenant: "t".into(),
            tier: Tier::Batch,
            custom_id: Some("c".into()),
            metadata: None,
            batch: None,
            response: None,
            error: None,
            partial: None,
            body_blob: None,
            attempts: vec![],
            usage: None,
            cost: None,
            timings: Timings {
                queued_ms: Some(3),
                ttft_ms: None,
                total_ms: 9,
                started_at: Timestamp::now(),
                finished_at: Timestamp::now(),
            },
            worker_id: "w".into(),
            delivery: 2,
            last_seq: Some(7),
            first_seq: Some(3),
            processing: Some(uuid::Uuid::now_v7()),
            labels: Default::default(),
            clamped: None,
        };
        let json = serde_json::to_vec(&outcome).unwrap();
        let event: ReplyEvent = serde_json::from_slice(&final_event(&json).unwrap()).unwrap();
        assert_eq!(event, ReplyEvent::Final(Box::new(outcome)));
        assert_eq!(final_event(b"[]"), None);
    }
}
