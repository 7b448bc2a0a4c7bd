//! A job whose HTTP client went away is cancelled: nobody will read its answer, and the
//! provider call it would make costs money.
//!
//! A client disconnect drops the handler's future, and with it this guard. Dropping
//! cannot wait, so the cancel runs as a task on the edge's tracker: a stopping edge
//! waits for it, and a job cut off by the edge's own shutdown is cancelled too.

use llmq_schemas::JobId;
use llmq_submitter::Client;
use tokio_util::task::TaskTracker;

/// Cancels the job when dropped, unless disarmed first (its answer went out).
pub(super) struct CancelOnDrop {
    armed: Option<(Client, JobId, TaskTracker)>,
}

impl CancelOnDrop {
    pub(super) fn new(client: Client, job_id: JobId, tasks: TaskTracker) -> Self {
        Self {
            armed: Some((client, job_id, tasks)),
        }
    }

    pub(super) fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some((client, job_id, tasks)) = self.armed.take() {
            tasks.spawn(async move {
                let reason = Some("the HTTP client went away".to_owned());
                if let Err(err) = client.cancel(job_id, reason).await {
                    tracing::warn!(%job_id, error = %err, "could not cancel the job of a closed request");
                }
            });
        }
    }
}
