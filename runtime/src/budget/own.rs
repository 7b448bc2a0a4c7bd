//! One tenant's budget state, read the way a tenant's credentials may read it: by direct
//! gets whose subjects name the tenant (`auth` grants each tenant its own spend counters
//! and its own reservations key, nothing of another tenant's). What `submitter usage`
//! shows under its table, for a tenant and for an admin alike.
//!
//! A direct get may be answered by any replica, so a figure can lag the stream leader's
//! by a moment: right for a report, not for admission, which reads through the leader
//! (`reserve.rs`).

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use bytes::Bytes;
use llmq_schemas::{Subjects, Tenant};

use super::BudgetError;
use super::period::Periods;
use super::reserve::{Budgets, Reservations};
use super::spend::{Spend, parse_total, spend_stream_config, spend_subject};
use crate::limits::{bucket_config, now_ms};

/// `tenant`'s spend this day and month, and the nano-dollars its jobs in flight reserve.
pub async fn read_own_state(
    js: &jetstream::Context,
    subjects: &Subjects,
    tenant: &Tenant,
    periods: &Periods,
) -> Result<(Spend, u64), BudgetError> {
    let spend_stream = spend_stream_config(subjects, 1, Default::default()).name;
    let day = spend_subject(subjects, tenant, &periods.day);
    let month = spend_subject(subjects, tenant, &periods.month);
    let bucket = bucket_config(subjects, 1).bucket;
    let (kv_stream, key) = (
        format!("KV_{bucket}"),
        format!("$KV.{bucket}.{}", Budgets::key(tenant)),
    );
    let (day_total, month_total, held) = tokio::join!(
        last(js, &spend_stream, &day),
        last(js, &spend_stream, &month),
        last(js, &kv_stream, &key),
    );
    let total = |subject: &str, payload: Option<Bytes>| {
        payload.map_or(Ok(0), |payload| parse_total(subject, &payload))
    };
    let spend = Spend {
        day: total(&day, day_total?)?,
        month: total(&month, month_total?)?,
    };
    let reserved = held?
        .and_then(|payload| serde_json::from_slice::<Reservations>(&payload).ok())
        .map_or(0, |held| held.live(now_ms()));
    Ok((spend, reserved))
}

/// The last message's body on `subject` (`None`: none, or a KV delete marker).
async fn last(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> Result<Option<Bytes>, BudgetError> {
    let handle = js
        .get_stream_no_info(stream)
        .await
        .map_err(|err| BudgetError::nats("reading", subject, err))?;
    match handle.direct_get_last_for_subject(subject).await {
        Ok(message) if message.headers.get("KV-Operation").is_some() => Ok(None),
        Ok(message) => Ok(Some(message.payload)),
        Err(err) if err.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(err) => Err(BudgetError::nats("reading", subject, err)),
    }
}
