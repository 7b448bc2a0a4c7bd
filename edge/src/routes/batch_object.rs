//! A batch record as OpenAI's batch object.

use llmq_schemas::openai::batch::{BatchErrorData, BatchErrors, BatchObject, RequestCounts};
use llmq_schemas::{BatchRecord, BatchStatus, Timestamp};

pub(crate) fn batch_object(record: &BatchRecord) -> BatchObject {
    let http = record.http.clone().unwrap_or_default();
    let c = &record.counts;
    let at = |time: Option<Timestamp>| time.map(|t| t.unix_millis() / 1000);
    let finished = |status: BatchStatus| {
        (record.status == status)
            .then_some(record.finished_at)
            .flatten()
    };
    BatchObject {
        id: record.id.to_string(),
        object: "batch".into(),
        endpoint: if http.endpoint.is_empty() {
            "/v1/chat/completions".into()
        } else {
            http.endpoint.clone()
        },
        errors: errors(record),
        input_file_id: if http.input_file_id.is_empty() {
            record.input_file.clone()
        } else {
            http.input_file_id.clone()
        },
        completion_window: if http.completion_window.is_empty() {
            "24h".into()
        } else {
            http.completion_window.clone()
        },
        status: record.status.as_str().into(),
        output_file_id: http.output_file_id.clone(),
        error_file_id: http.error_file_id.clone(),
        created_at: record.created_at.unix_millis() / 1000,
        in_progress_at: at(http.in_progress_at),
        expires_at: at(Some(record.expires_at)),
        finalizing_at: at(http.finalizing_at),
        completed_at: at(finished(BatchStatus::Completed)),
        failed_at: at(finished(BatchStatus::Failed)),
        expired_at: at(finished(BatchStatus::Expired)),
        cancelling_at: at(record.cancelled_at),
        cancelled_at: at(finished(BatchStatus::Cancelled)),
        request_counts: RequestCounts {
            total: c.total,
            completed: c.succeeded,
            failed: c.failed + c.expired + c.cancelled,
        },
        metadata: record.metadata.clone(),
    }
}

fn errors(record: &BatchRecord) -> Option<BatchErrors> {
    (!record.errors.is_empty()).then(|| BatchErrors {
        object: "list".into(),
        data: record
            .errors
            .iter()
            .map(|e| BatchErrorData {
                code: e.code.clone(),
                message: e.message.clone(),
                param: None,
                line: e.line,
            })
            .collect(),
    })
}
