//! One job, from delivery to ack, one way.
//!
//! [`process()`] is the whole life of a delivery, in this order:
//! - `intake`: [`decode()`] (a job ready to run, or a rejection for the dead-letter
//!   stream), the request blob, the tenant's policy, the reply sink, a stored outcome
//!   re-sent to a redelivery;
//! - `process::handle`: the checks that need no provider (invalid, cancelled, expired,
//!   unknown model), the tenant's limits (`admit`), its budget (`budget`), the attempts
//!   (`attempts`, each call admitted by `admit` and made by `crate::providers::call`), and
//!   their cost; it returns how the processing ended (`ended::Ended`: finished with an
//!   outcome, or handed back) and stores nothing;
//! - `outcome::conclude`: the one place that builds and stores the outcome (or bills a
//!   hand-back);
//! - the one [`Disposition`] that decides ack, nak or term ([`apply`]).
//!
//! A processing (`processing::Processing`) is one delivery's attempt at the job: its id is
//! on every event, the usage event and the outcome it sends.

mod admit;
mod attempts;
mod budget;
mod decode;
mod disposition;
mod ended;
mod intake;
mod large_outcome;
mod outcome;
mod process;
mod processing;
mod reply;
mod request_blob;

use std::time::Duration;

pub use decode::{Decoded, Delivery, Ready, Rejection, decode};
pub use disposition::{Disposition, apply};
pub use process::process;
pub use reply::ReplySink;

/// A duration in whole milliseconds, as the wire types count them.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
