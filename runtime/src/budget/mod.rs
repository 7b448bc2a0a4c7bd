//! Tenant budgets across the fleet: what each tenant has spent this UTC day and month,
//! and what jobs in flight have reserved against it.
//!
//! Spend is a fact about the usage events, so it lives in NATS, not in any worker: a
//! JetStream counter stream (`<PREFIX>_SPEND`, `spend.rs`) holds one total per tenant and
//! period, and each usage event's cost is added with `Nats-Msg-Id` = the event's id, so
//! the server itself drops a second count of the same event. Reservations (`reserve.rs`)
//! keep the limits' shape: per tenant, which worker holds how much in flight, each with a
//! lease, in the limits bucket, changed by compare-and-set; a killed worker's share stops
//! counting when its lease ends.

mod own;
mod period;
mod reserve;
mod spend;

pub use own::read_own_state;

pub use period::{Periods, period_end};
pub use reserve::{
    BudgetStores, Budgets, Exceeded, Refusal, Reservation, Reservations, read_reserved,
};
pub use spend::{
    MAX_INCREMENTS_PER_SUBJECT, Spend, nano_usd, read_spend, spend_stream_config, spend_subject,
    usd,
};

/// Why budget state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("{operation} budget state {key} failed: {message}")]
    Nats {
        operation: &'static str,
        key: String,
        message: String,
    },
    /// The stored total is not a counter value.
    #[error("budget counter {key} holds {value:?}, not a total")]
    Corrupt { key: String, value: String },
}

impl BudgetError {
    pub(crate) fn nats(operation: &'static str, key: &str, err: impl std::fmt::Display) -> Self {
        BudgetError::Nats {
            operation,
            key: key.to_owned(),
            message: err.to_string(),
        }
    }
}

impl From<crate::limits::LimitError> for BudgetError {
    fn from(err: crate::limits::LimitError) -> Self {
        match err {
            crate::limits::LimitError::Nats {
                operation,
                key,
                message,
            } => BudgetError::Nats {
                operation,
                key,
                message,
            },
            other => BudgetError::Nats {
                operation: "reading",
                key: String::new(),
                message: other.to_string(),
            },
        }
    }
}
