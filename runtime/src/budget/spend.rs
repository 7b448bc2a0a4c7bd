//! Spend totals in a JetStream counter stream, one subject per tenant and period.
//!
//! `<PREFIX>_SPEND` has `allow_msg_counter` (nats-server 2.12+): a message with header
//! `Nats-Incr: +N` and no body adds N to its subject's total, and the PubAck carries the
//! new total. Each usage event's cost is added with `Nats-Msg-Id` = `<event id>.<period>`,
//! so a second publish of the same event (a retried publish, a replay) inside the
//! duplicate window is dropped by the server, not by a worker. After a broker restart the
//! server rebuilds its duplicate map from the stored increments, which is why the stream
//! keeps them (up to [`MAX_INCREMENTS_PER_SUBJECT`] per subject) and not only the totals.
//!
//! Totals are integers: nano-dollars (10⁻⁹ USD), so a cost rounds by at most half a
//! nano-dollar per event and 64 bits hold up to 18 billion dollars.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use llmq_schemas::{BudgetPeriod, Subjects, Tenant};

use super::BudgetError;
use super::period::Periods;
use crate::publish::{Budget, Durable, publish_durable};

/// Increments kept per tenant and period: the duplicate map survives a broker restart for
/// a tenant spending up to this many events within one duplicate window.
pub const MAX_INCREMENTS_PER_SUBJECT: i64 = 100_000;
/// Increments are kept this long: a month's total outlives the month.
const KEEP: Duration = Duration::from_secs(62 * 24 * 3600);

/// The counter stream.
pub fn spend_stream_config(
    subjects: &Subjects,
    replicas: usize,
    duplicate_window: Duration,
) -> stream::Config {
    stream::Config {
        name: format!("{}_SPEND", subjects.prefix().to_ascii_uppercase()),
        subjects: vec![format!("{}.spend.>", subjects.prefix())],
        description: Some(
            "llmq spend per tenant and UTC day/month: counters, one increment per usage event"
                .into(),
        ),
        storage: StorageType::File,
        num_replicas: replicas,
        allow_message_counter: true,
        max_messages_per_subject: MAX_INCREMENTS_PER_SUBJECT,
        max_age: KEEP,
        duplicate_window: duplicate_window.min(KEEP),
        // A tenant reads its own totals by direct get, which a permission can pin.
        allow_direct: true,
        ..Default::default()
    }
}

/// `<prefix>.spend.<tenant>.<period key>` (`llmq.spend.acme.d20261201`).
pub fn spend_subject(subjects: &Subjects, tenant: &Tenant, key: &str) -> String {
    format!("{}.spend.{tenant}.{key}", subjects.prefix())
}

/// A tenant's totals, in nano-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    pub day: u64,
    pub month: u64,
}

impl Spend {
    pub fn get(&self, period: BudgetPeriod) -> u64 {
        match period {
            BudgetPeriod::Day => self.day,
            BudgetPeriod::Month => self.month,
        }
    }
}

/// US dollars as nano-dollars (negative and non-finite amounts count as nothing).
pub fn nano_usd(usd: f64) -> u64 {
    let nano = (usd * 1e9).round();
    if nano.is_finite() && nano > 0.0 {
        nano as u64
    } else {
        0
    }
}

pub fn usd(nano: u64) -> f64 {
    nano as f64 / 1e9
}

/// The tenant's totals for the periods `periods` names, read from the stream leader (a
/// direct get may be answered by a lagging replica).
pub async fn read_spend(
    stream: &stream::Stream,
    subjects: &Subjects,
    tenant: &Tenant,
    periods: &Periods,
) -> Result<Spend, BudgetError> {
    let day = spend_subject(subjects, tenant, &periods.day);
    let month = spend_subject(subjects, tenant, &periods.month);
    let (day, month) = tokio::join!(read_total(stream, &day), read_total(stream, &month));
    Ok(Spend {
        day: day?,
        month: month?,
    })
}

async fn read_total(stream: &stream::Stream, subject: &str) -> Result<u64, BudgetError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => parse_total(subject, &message.payload),
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(err) => Err(BudgetError::nats("reading", subject, err)),
    }
}

/// A counter message's body: `{"val":"123"}`.
pub(crate) fn parse_total(subject: &str, payload: &[u8]) -> Result<u64, BudgetError> {
    #[derive(serde::Deserialize)]
    struct Counter {
        val: String,
    }
    let corrupt = || BudgetError::Corrupt {
        key: subject.to_owned(),
        value: String::from_utf8_lossy(payload).into_owned(),
    };
    let counter: Counter = serde_json::from_slice(payload).map_err(|_| corrupt())?;
    counter.val.parse().map_err(|_| corrupt())
}

/// One usage event's cost, added to the tenant's day and month totals.
#[derive(Debug, Clone, Copy)]
pub struct Increment<'a> {
    pub tenant: &'a Tenant,
    /// The usage event's id: the increments' message ids derive from it.
    pub event_id: uuid::Uuid,
    pub nano_usd: u64,
    pub periods: &'a Periods,
}

/// Adds an event's cost to both totals (pipelined) and returns the totals after it. A
/// duplicate (the event was counted already) returns the totals as they are now.
pub(crate) async fn add(
    js: &Context,
    stream: &stream::Stream,
    subjects: &Subjects,
    increment: Increment<'_>,
    budget: Budget,
) -> Result<Spend, BudgetError> {
    let (day, month) = tokio::join!(
        add_one(js, stream, subjects, increment, BudgetPeriod::Day, budget),
        add_one(js, stream, subjects, increment, BudgetPeriod::Month, budget),
    );
    Ok(Spend {
        day: day?,
        month: month?,
    })
}

async fn add_one(
    js: &jetstream::Context,
    stream: &stream::Stream,
    subjects: &Subjects,
    increment: Increment<'_>,
    period: BudgetPeriod,
    budget: Budget,
) -> Result<u64, BudgetError> {
    let subject = spend_subject(subjects, increment.tenant, increment.periods.key(period));
    let msg_id = format!("{}.{period}", increment.event_id);
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Incr", format!("+{}", increment.nano_usd).as_str());
    let empty = Bytes::new();
    let durable = Durable {
        subject: &subject,
        msg_id: &msg_id,
        headers: Some(&headers),
        payload: &empty,
        budget,
        missing_stream_is_transient: true,
        missing_stream_grace: std::time::Duration::ZERO,
        on_retry: None,
    };
    let ack = publish_durable(js, durable)
        .await
        .map_err(|err| BudgetError::nats("adding to", &subject, err))?;
    match ack.value {
        Some(value) => value.parse().map_err(|_| BudgetError::Corrupt {
            key: subject.clone(),
            value,
        }),
        // A duplicate's ack carries no total: read it.
        None => read_total(stream, &subject).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_round_to_nano_dollars_and_counters_parse() {
        assert_eq!(nano_usd(0.002), 2_000_000);
        assert_eq!(nano_usd(2.5e-10), 0);
        assert_eq!(nano_usd(-1.0), 0);
        assert_eq!(nano_usd(f64::NAN), 0);
        assert_eq!(parse_total("s", br#"{"val":"325"}"#).unwrap(), 325);
        assert!(parse_total("s", b"325").is_err());
        let subjects = Subjects::default();
        let tenant = Tenant::parse("acme").unwrap();
        assert_eq!(
            spend_subject(&subjects, &tenant, "d20261201"),
            "llmq.spend.acme.d20261201"
        );
    }
}
