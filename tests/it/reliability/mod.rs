//! Reliability: every accepted job ends with exactly one outcome, whatever the providers,
//! the workers or the broker do. Faults are injected, not hoped for.

mod backpressure;
mod broker;
mod cancel_deadline;
mod dead_letters;
mod fallback;
mod outage;
mod redelivery;
mod streams;
