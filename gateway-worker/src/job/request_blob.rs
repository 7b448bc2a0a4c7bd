//! A job whose request came as a claim check: its blob read before anything looks at the
//! request.
//!
//! The blob is read under the tenant of the job's *subject* (`<prefix>.blobs.<tenant>.`),
//! never under anything the body says, so a job can only ever name its own tenant's
//! bytes. A blob that cannot be read for good (missing, corrupt, too large, not a request)
//! makes the job `invalid_job`; one the broker cannot serve right now hands the job back.

use std::time::Duration;

use llmq_runtime::blob::{self, BlobError, MISSING_CHUNK_WAIT};
use llmq_runtime::tenants::Lookup;
use llmq_schemas::{BlobRef, ChatRequest};

use super::decode::Ready;
use super::disposition::Disposition;
use super::processing::Processing;
use crate::context::WorkerContext;

/// Puts the request of `ready`'s blob in its job, or says in `ready.problem` why it
/// cannot; `Err` when the job should be handed back and tried later.
pub async fn resolve(ctx: &WorkerContext, ready: &mut Ready) -> Result<(), Disposition> {
    let Some(blob) = ready.job.request_blob.clone() else {
        return Ok(());
    };
    ready.payload_bytes = ready
        .payload_bytes
        .saturating_add(usize::try_from(blob.bytes).unwrap_or(usize::MAX));
    match skip_reading(ctx, ready, &blob) {
        Some(Skip::Invalid(problem)) => {
            ready.problem.get_or_insert(problem);
            return Ok(());
        }
        // The policy check refuses it, with the tenant's rule.
        Some(Skip::OverTenantLimit) => return Ok(()),
        None => {}
    }
    match read(ctx, ready, &blob).await {
        Ok(request) => ready.job.request = request,
        Err(err) if err.is_transient() => {
            tracing::warn!(job_id = %ready.job.id, error = %err, "request blob unreadable for now; handing the job back");
            return Err(Disposition::Requeue {
                delay: Some(Duration::from_secs(1)),
                reason: "request_blob_unavailable",
            });
        }
        Err(err) => {
            ready
                .problem
                .get_or_insert_with(|| format!("the job's request blob cannot be used: {err}"));
        }
    }
    Ok(())
}

/// Why a blob is not read at all.
enum Skip {
    /// The job is invalid whatever the blob holds.
    Invalid(String),
    /// Larger than its tenant may send.
    OverTenantLimit,
}

/// Whether to leave the blob unread: the job also has an inline request, the blob is
/// larger than workers read, or larger than its tenant may send.
fn skip_reading(ctx: &WorkerContext, ready: &Ready, blob: &BlobRef) -> Option<Skip> {
    if ready.job.request != ChatRequest::default() {
        let problem = "the job has both `request` and `request_blob`; send one";
        return Some(Skip::Invalid(problem.into()));
    }
    let most = ctx.config.worker.max_request_bytes;
    if blob.bytes > most {
        return Some(Skip::Invalid(format!(
            "the request blob is {} bytes; workers read at most {most} (worker.max_request_bytes)",
            blob.bytes
        )));
    }
    let tenant_most = match ctx.registry.lookup(&ready.tenant) {
        Lookup::Known(policy) => policy.entry.max_request_bytes,
        _ => None,
    };
    let over = tenant_most.is_some_and(|most| ready.payload_bytes as u64 > most);
    over.then_some(Skip::OverTenantLimit)
}

async fn read(
    ctx: &WorkerContext,
    ready: &Ready,
    blob: &BlobRef,
) -> Result<ChatRequest, BlobError> {
    // Chunks are stored before the job is published: on a first delivery a missing one
    // is a replica catching up; on a later one it may be gone with the stored outcome.
    let wait = if ready.delivery <= 1 {
        MISSING_CHUNK_WAIT
    } else {
        Duration::ZERO
    };
    let base = ctx.subjects.request_blobs(&ready.tenant);
    let stream = ctx.subjects.blobs_stream();
    let bytes = blob::read(&ctx.js, &stream, &base, blob, wait).await?;
    serde_json::from_slice(&bytes).map_err(|err| BlobError::Corrupt {
        id: blob.id.clone(),
        reason: format!("not a chat-completions request: {err}"),
    })
}

/// Deletes the job's request blob once its outcome is stored (best effort: the blob
/// stream's age removes what this misses).
pub async fn delete(ctx: &WorkerContext, processing: &Processing) {
    let Some(blob) = &processing.job.request_blob else {
        return;
    };
    let base = ctx.subjects.request_blobs(&processing.tenant);
    let stream = ctx.subjects.blobs_stream();
    if let Err(err) = blob::delete(&ctx.js, &stream, &base, &blob.id).await {
        tracing::debug!(job_id = %processing.job.id, error = %err, "request blob not deleted; it expires with the stream's age");
    }
}
