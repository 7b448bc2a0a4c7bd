//! What a batch command can fail with.

use llmq_schemas::{BatchId, BatchStatus};

use super::input::LineProblem;
use crate::error::{ClientError, SubmitError};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Some lines are wrong; nothing was published.
    #[error("{count} of the input's lines cannot run (nothing was published):\n{}{more}",
        list(problems),
        more = more(*count, problems.len()))]
    InvalidInput {
        problems: Vec<LineProblem>,
        /// Every problem, listed or not.
        count: u64,
    },
    #[error("the input has no requests")]
    EmptyInput,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file changed between the check and the publish.
    #[error("{0} changed while it was read; run the command again")]
    InputChanged(String),
    #[error("no batch {0} for this tenant")]
    NotFound(BatchId),
    #[error("batch {id} is {status}: {what}")]
    Ended {
        id: BatchId,
        status: BatchStatus,
        what: &'static str,
    },
    /// Lines that should have an outcome have none (results asked before the end).
    #[error("batch {id} is not finished: {pending} lines have no outcome yet")]
    NotFinished { id: BatchId, pending: u64 },
    #[error("the batch record of {id} is not readable: {message}")]
    BadRecord { id: BatchId, message: String },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

fn list(problems: &[LineProblem]) -> String {
    problems.iter().map(|p| format!("  {p}\n")).collect()
}

fn more(count: u64, listed: usize) -> String {
    match count.saturating_sub(listed as u64) {
        0 => String::new(),
        rest => format!("  ... and {rest} more\n"),
    }
}
