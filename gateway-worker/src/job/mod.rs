//! One job, from delivery to ack.
//!
//! [`process()`] is the whole life of a delivery: checks that need no provider (dead
//! letters, stored outcomes, cancels, deadlines, unknown models), the attempts
//! ([`execute()`]), the outcome (`finalize`), and the one [`Disposition`] that decides
//! ack, nak or term.

mod disposition;
mod execute;
mod finalize;
mod process;
mod reply;

pub use disposition::{Disposition, apply};
pub use execute::{Execution, ExecutionReport, execute};
pub use process::process;
pub use reply::ReplySink;
