//! Batches: an OpenAI Batch input file in, one job per line, a results file out.
//!
//! Nothing of a batch lives only in the process that started it. Its record is in the
//! batches bucket, its lines' job ids and `Nats-Msg-Id`s are derived from the batch (so
//! the same line published by a rerun is the same job, and JetStream drops the copy
//! within its duplicate window), and its outcomes are stored under the batch, so that
//! counting them, waiting for them and writing the results file need only the batch id
//! and the tenant's credentials. A rerun of the same command finds the record by the id
//! (derived from the file's digest and the options) and publishes from the record's
//! checkpoint on; a line whose outcome is stored is never run again, because a worker
//! checks for a stored outcome before it calls a provider.

mod cancel;
mod error;
mod input;
mod plan;
mod record;
mod results;
mod submit;
mod tally;

pub use error::BatchError;
pub use input::{LineProblem, MAX_REPORTED};
pub use plan::{BatchOptions, Plan};
pub use results::{OutputOrder, ResultsSummary};
pub use submit::SubmitProgress;
pub use tally::{BatchCount, BatchProgress};
