//! Dead letters: jobs that cannot run, kept with their reason instead of lost.
//!
//! The copy keeps the original payload bytes as its body and the original headers, plus
//! `Llmq-Dlq-*` headers saying why, so an operator can read it and `submitter dlq replay`
//! can republish exactly what the producer sent. The copy is made before the original is
//! terminated (a terminated WorkQueue message is gone) and carries a `Nats-Msg-Id` derived
//! from the original's stream sequence, so a worker that crashes in between and gets the
//! job again does not dead-letter it twice.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::Message;
use bytes::Bytes;
use futures::StreamExt;
use llmq_runtime::policy;
use llmq_schemas::dlq::{
    HEADER_AT, HEADER_DELIVERIES, HEADER_DETAIL, HEADER_JOB_ID, HEADER_REASON, HEADER_STREAM_SEQ,
    HEADER_SUBJECT, HEADER_WORKER,
};
use llmq_schemas::{DeadLettered, DlqReason, JobId, PROTOCOL_VERSION, ReplyEvent, Timestamp};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;
use crate::metrics;
use crate::nats::{PublishFailure, Store};

/// What is known about the message being dead-lettered.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    pub subject: &'a str,
    pub headers: Option<&'a HeaderMap>,
    pub payload: &'a Bytes,
    pub stream_sequence: u64,
    pub deliveries: u64,
    pub reason: DlqReason,
    pub detail: String,
    pub job_id: Option<JobId>,
}

/// Copies a message to the dead-letter stream. The caller removes the original after.
pub async fn dead_letter(
    ctx: &WorkerContext,
    letter: DeadLetter<'_>,
) -> Result<(), PublishFailure> {
    let mut headers = HeaderMap::new();
    if let Some(original) = letter.headers {
        for (name, values) in original.iter() {
            // The job's own msg id would make the DLQ drop letters of a job id that was
            // dead-lettered before (a replayed job failing again).
            if AsRef::<str>::as_ref(name) == llmq_schemas::HEADER_MSG_ID {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    headers.insert(HEADER_REASON, letter.reason.as_str());
    headers.insert(HEADER_DETAIL, truncate(&letter.detail, 1000).as_str());
    headers.insert(HEADER_SUBJECT, letter.subject);
    headers.insert(
        HEADER_STREAM_SEQ,
        letter.stream_sequence.to_string().as_str(),
    );
    headers.insert(HEADER_DELIVERIES, letter.deliveries.to_string().as_str());
    headers.insert(HEADER_AT, Timestamp::now().to_string().as_str());
    headers.insert(HEADER_WORKER, ctx.worker_id.as_str());
    if let Some(job_id) = letter.job_id {
        headers.insert(HEADER_JOB_ID, job_id.to_string().as_str());
    }
    let token = ctx
        .subjects
        .parse_job_subject(letter.subject)
        .map(|s| s.model_token)
        .unwrap_or_else(|_| "_".to_owned());
    let msg_id = format!(
        "dlq-{}-{}",
        ctx.subjects.jobs_stream(),
        letter.stream_sequence
    );
    ctx.store(Store {
        stream: "dlq",
        subject: &ctx.subjects.dlq(&token),
        msg_id: &msg_id,
        headers: Some(&headers),
        payload: letter.payload,
    })
    .await?;
    metrics::dead_letter(letter.reason.as_str());
    tracing::warn!(
        subject = letter.subject,
        reason = %letter.reason,
        detail = %letter.detail,
        deliveries = letter.deliveries,
        "job dead-lettered"
    );
    Ok(())
}

/// Tells the producer, when the payload names a reply subject the job's tenant may be
/// answered on (`policy::may_reply_to`, the rule for every event), where its job went.
/// The tenant is the job subject's: a payload that cannot even be decoded still cannot
/// make the worker write into another tenant's inbox.
pub async fn notify_producer(
    ctx: &WorkerContext,
    subject: &str,
    payload: &[u8],
    reason: DlqReason,
    detail: &str,
) {
    let envelope = llmq_schemas::job::Envelope::sniff(payload);
    let (Some(job_id), Some(reply_to)) = (envelope.id, envelope.reply_to) else {
        return;
    };
    let Ok(tenant) = ctx
        .subjects
        .parse_job_subject(subject)
        .and_then(|s| s.tenant)
    else {
        return;
    };
    let lookup = ctx.registry.lookup(&tenant);
    if !policy::may_reply_to(&ctx.subjects, &lookup, &tenant, &reply_to) {
        tracing::info!(%job_id, tenant = %tenant, "dead-lettered job names a reply subject outside its tenant's inboxes; not notified");
        return;
    }
    let event = ReplyEvent::DeadLettered(DeadLettered {
        v: PROTOCOL_VERSION,
        job_id,
        reason,
        message: detail.to_owned(),
    });
    if let Ok(bytes) = serde_json::to_vec(&event) {
        let _ = ctx.nats.publish(reply_to, Bytes::from(bytes)).await;
    }
}

/// Dead-letters a delivered job message; returns whether the copy was stored.
pub async fn dead_letter_message(
    ctx: &WorkerContext,
    message: &Message,
    reason: DlqReason,
    detail: String,
    job_id: Option<JobId>,
) -> bool {
    let (stream_sequence, delivered) = message
        .info()
        .map(|info| (info.stream_sequence, info.delivered.max(0) as u64))
        .unwrap_or_default();
    let deliveries = counted_deliveries(reason, delivered);
    let letter = DeadLetter {
        subject: message.subject.as_str(),
        headers: message.headers.as_ref(),
        payload: &message.payload,
        stream_sequence,
        deliveries,
        reason,
        detail: detail.clone(),
        job_id: job_id.or_else(|| llmq_schemas::job::Envelope::sniff(&message.payload).id),
    };
    match dead_letter(ctx, letter).await {
        Ok(()) => {
            notify_producer(ctx, &message.subject, &message.payload, reason, &detail).await;
            true
        }
        Err(err) => {
            tracing::error!(error = %err, subject = %message.subject, "dead letter not stored; the job stays queued");
            false
        }
    }
}

#[derive(Debug, Deserialize)]
struct MaxDeliveriesAdvisory {
    stream_seq: u64,
    deliveries: u64,
}

/// The backstop for jobs the server stopped delivering: its max-deliveries advisory
/// leaves the message in the stream, unconsumable. One worker of the fleet (a queue
/// group) moves each to the dead-letter stream and deletes it.
pub async fn watch_max_deliveries(ctx: Arc<WorkerContext>, stop: CancellationToken) {
    let subject = format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
        ctx.subjects.jobs_stream()
    );
    let group = format!("{}-max-deliveries", ctx.subjects.prefix());
    let mut subscription = match ctx.nats.queue_subscribe(subject, group).await {
        Ok(subscription) => subscription,
        Err(err) => {
            tracing::error!(error = %err, "cannot subscribe to max-deliveries advisories");
            return;
        }
    };
    loop {
        let advisory = tokio::select! {
            advisory = subscription.next() => advisory,
            () = stop.cancelled() => break,
        };
        let Some(advisory) = advisory else { break };
        let Ok(advisory) = serde_json::from_slice::<MaxDeliveriesAdvisory>(&advisory.payload)
        else {
            continue;
        };
        let original = match ctx.setup.jobs.get_raw_message(advisory.stream_seq).await {
            Ok(original) => original,
            Err(err) => {
                tracing::debug!(error = %err, seq = advisory.stream_seq, "advisory for a message already gone");
                continue;
            }
        };
        let job_id = llmq_schemas::job::Envelope::sniff(&original.payload).id;
        let letter = DeadLetter {
            subject: original.subject.as_str(),
            headers: Some(&original.headers),
            payload: &original.payload,
            stream_sequence: advisory.stream_seq,
            deliveries: counted_deliveries(DlqReason::MaxDeliveries, advisory.deliveries),
            reason: DlqReason::MaxDeliveries,
            detail: max_deliveries_detail(ctx.config.jetstream.max_deliver),
            job_id,
        };
        if dead_letter(&ctx, letter).await.is_ok() {
            notify_producer(
                &ctx,
                &original.subject,
                &original.payload,
                DlqReason::MaxDeliveries,
                "delivered too many times without an outcome",
            )
            .await;
            if let Err(err) = ctx.setup.jobs.delete_message(advisory.stream_seq).await {
                tracing::warn!(error = %err, seq = advisory.stream_seq, "dead-lettered job not deleted from the queue");
            }
        }
    }
}

/// Deliveries that count against `jetstream.max_deliver`, as the letter reports them.
///
/// The consumer's own `max_deliver` is one more than the configured value, so that the
/// delivery after the last allowed one reaches a worker (which has the message in hand
/// and moves it) instead of only the server's advisory. That extra delivery is never
/// processed and is not counted: a job with `max_deliver = 2` is reported as delivered 2
/// times, as it was processed.
fn counted_deliveries(reason: DlqReason, delivered: u64) -> u64 {
    match reason {
        DlqReason::MaxDeliveries => delivered.saturating_sub(1),
        _ => delivered,
    }
}

/// Why a job went over its delivery limit, in the letter's detail.
pub fn max_deliveries_detail(max_deliver: i64) -> String {
    format!(
        "processed {max_deliver} times without an outcome (jetstream.max_deliver = {max_deliver})"
    )
}

fn truncate(text: &str, max: usize) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if cleaned.len() <= max {
        return cleaned;
    }
    let mut end = max;
    while !cleaned.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &cleaned[..end])
}
