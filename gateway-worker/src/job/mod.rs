//! One job, from delivery to ack.
//!
//! [`process()`] is the whole life of a delivery: [`decode()`] (a job ready to run, or a
//! rejection for the dead-letter stream), the checks that need no provider (stored
//! outcomes, invalid jobs, cancels, deadlines, unknown models), the attempts
//! ([`execute()`]), the outcome (`finalize`), and the one [`Disposition`] that decides
//! ack, nak or term.

mod decode;
mod disposition;
mod execute;
mod finalize;
mod large_outcome;
mod process;
mod reply;
mod request_blob;
mod run;

pub use decode::{Decoded, Delivery, Ready, Rejection, decode};
pub use disposition::{Disposition, apply};
pub use execute::{CallUsage, Execution, ExecutionReport, execute, reservation};
pub use process::process;
pub use reply::ReplySink;
pub use run::JobRun;
