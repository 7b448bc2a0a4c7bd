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
        self.send(&ReplyEvent::Started(Started {
            v: PROTOCOL_VERSION,
            job_id: self.job_id,
            delivery: self.delivery,
            processing: Some(self.processing),
            attempt,
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

    pub async fn finished(&mut self, outcome: &Outcome) {
        self.send(&ReplyEvent::Final(Box::new(outcome.clone())))
            .await;
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
