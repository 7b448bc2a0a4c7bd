//! Cancelling a batch: one key in the cancel bucket ends every line not yet running,
//! whichever worker picks it up (no request per line); lines running finish.

use std::time::Duration;

use bytes::Bytes;
use llmq_schemas::{BatchId, BatchRecord, Subjects, Timestamp};

use super::error::BatchError;
use crate::Client;

/// How long a cancel waits for a running submit to see it and stop, before it takes
/// that no submit is running.
const SUBMIT_STOP_WAIT: Duration = Duration::from_secs(3);

impl Client {
    /// Cancels the batch: its queued lines end `cancelled` without provider calls, a
    /// submit still publishing stops at its next checkpoint. Returns the record as it
    /// then stands (`cancelling` until the queued lines have ended).
    pub async fn batch_cancel(&self, id: &BatchId) -> Result<BatchRecord, BatchError> {
        let record = self
            .batch_record(id)
            .await?
            .ok_or_else(|| BatchError::NotFound(id.clone()))?;
        if record.status.is_final() {
            return Err(BatchError::Ended {
                id: id.clone(),
                status: record.status,
                what: "nothing to cancel",
            });
        }
        self.put_batch_cancel(id).await?;
        self.update_record(id, |record| {
            record.cancelled_at.get_or_insert_with(Timestamp::now);
            true
        })
        .await?;
        self.await_submit_stop(id).await?;
        self.batch_status(id).await
    }

    async fn put_batch_cancel(&self, id: &BatchId) -> Result<(), BatchError> {
        let key = Subjects::batch_cancel_key(self.tenant(), id);
        let value = serde_json::json!({"v": 1, "batch": id, "tenant": self.tenant().as_str(),
            "requested_at": Timestamp::now()});
        self.put_cancel(&key, id.as_str(), Bytes::from(value.to_string()))
            .await?;
        Ok(())
    }

    /// Waits a little for a running submit to stop; then takes it that none runs.
    async fn await_submit_stop(&self, id: &BatchId) -> Result<(), BatchError> {
        let until = tokio::time::Instant::now() + SUBMIT_STOP_WAIT;
        while tokio::time::Instant::now() < until {
            if self.batch_record(id).await?.is_some_and(|r| r.submit_done) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.update_record(id, |record| {
            record.submit_done = true;
            true
        })
        .await?;
        Ok(())
    }
}
