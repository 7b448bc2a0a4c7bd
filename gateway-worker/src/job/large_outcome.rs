//! An outcome too large for one message: its body moved into a blob beside it.
//!
//! An answer of a few hundred thousand tokens does not fit in one NATS message, and an
//! outcome that cannot be stored is handed back and run again: the provider paid again,
//! the stream sent again, until the job is dead-lettered. So when the encoded outcome is
//! over the server's limit, its `response`, `partial` and `metadata` go into a blob under
//! the outcome's own subject (`<prefix>.results.<tenant>.<job id>.<blob id>.<n>`, in the
//! results stream: kept exactly as long as outcomes, and no tenant may write there), and
//! the stored outcome names it in `body_blob`. Small outcomes are stored byte for byte as
//! before.

use bytes::Bytes;
use llmq_runtime::Budget;
use llmq_runtime::blob::{self, BlobError, Sizes, WriteOptions};
use llmq_schemas::{Outcome, OutcomeBody};

use super::processing::Processing;
use crate::context::WorkerContext;
use crate::metrics;

/// Why a large outcome could not be made to fit.
#[derive(Debug, thiserror::Error)]
pub enum NotFitted {
    #[error("cannot encode the outcome: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot store the outcome's body: {0}")]
    Blob(#[from] BlobError),
}

/// `outcome` and its JSON as they are when they fit in one message; otherwise with the
/// body in a blob (written and acknowledged) and the JSON of what is left.
pub async fn fit(
    ctx: &WorkerContext,
    processing: &Processing,
    mut outcome: Outcome,
    json: Bytes,
) -> Result<(Outcome, Bytes), NotFitted> {
    let sizes = Sizes::of(&ctx.nats);
    if json.len() <= sizes.inline_max {
        return Ok((outcome, json));
    }
    let body = OutcomeBody {
        response: outcome.response.take(),
        partial: outcome.partial.take(),
        metadata: outcome.metadata.take(),
    };
    let bytes = Bytes::from(serde_json::to_vec(&body)?);
    let base = ctx
        .subjects
        .outcome_blobs(&processing.tenant, processing.job.id);
    let written = blob::write(&ctx.js, &base, bytes, sizes.chunk, writes(ctx)).await?;
    tracing::info!(
        outcome_bytes = json.len(),
        body_bytes = written.bytes,
        chunks = written.chunks,
        "outcome over one message; its body is stored as a blob"
    );
    outcome.body_blob = Some(written);
    let json = Bytes::from(serde_json::to_vec(&outcome)?);
    Ok((outcome, json))
}

/// Chunks are stored as the outcome is: retried for the worker's publish window.
fn writes(ctx: &WorkerContext) -> WriteOptions<'static> {
    WriteOptions {
        budget: Budget::Time(ctx.publish_window()),
        missing_stream_is_transient: true,
        missing_stream_grace: std::time::Duration::ZERO,
        on_retry: Some(&count_retry),
    }
}

fn count_retry(_: &async_nats::jetstream::context::PublishError) {
    metrics::publish_retry("results");
}

/// Deletes the body blob of an outcome that was not stored (another processing's was):
/// nothing refers to it.
pub async fn discard(ctx: &WorkerContext, processing: &Processing, outcome: &Outcome) {
    let Some(body) = &outcome.body_blob else {
        return;
    };
    let base = ctx
        .subjects
        .outcome_blobs(&processing.tenant, processing.job.id);
    let stream = ctx.subjects.results_stream();
    if let Err(err) = blob::delete(&ctx.js, &stream, &base, &body.id).await {
        tracing::debug!(error = %err, "unused outcome body blob not deleted");
    }
}
