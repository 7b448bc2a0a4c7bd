//! Reading the fleet's limits (`submitter limits`): what workers enforce, use and wait
//! for, from the limits bucket alone (see `llmq_runtime::limits::read_status`).

use llmq_runtime::limits::{self, FleetStatus};

use super::Operator;
use crate::error::ClientError;

impl Operator {
    /// Every limited scope live workers enforce (with holdings, the current window's
    /// counters and who waits) and every pause in force.
    pub async fn limits(&self) -> Result<FleetStatus, ClientError> {
        let name = limits::bucket_config(self.session.subjects(), 1).bucket;
        let bucket = self.session.bucket(&name).await?;
        limits::read_status(&bucket)
            .await
            .map_err(|err| ClientError::Nats {
                operation: "reading the fleet's limits",
                source: Box::new(err),
            })
    }
}
