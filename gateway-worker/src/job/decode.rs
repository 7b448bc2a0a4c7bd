//! A delivered message, decoded once: a job ready to run, or the reason it cannot run.
//!
//! As mini-redis turns a frame into a `Command` before applying it, every check that
//! needs nothing but the message happens here, and its answer is a value: whatever the
//! reason a message is not a job (delivered too often, not a job subject, not a job, a
//! newer protocol), it goes to the dead-letter stream from one place.

use async_nats::jetstream::Message;
use llmq_schemas::job::{DecodeError, Envelope};
use llmq_schemas::{
    DlqReason, Job, JobId, ModelName, SubjectError, Subjects, Tenant, Tier, Timestamp,
};

/// What a delivery is.
#[derive(Debug)]
pub enum Decoded {
    Ready(Box<Ready>),
    Rejected(Rejection),
}

/// A decoded job and what its delivery says about it.
#[derive(Debug)]
pub struct Ready {
    pub job: Job,
    pub tenant: Tenant,
    pub tier: Tier,
    /// What makes a job that decodes unrunnable (its model is not its subject's, its
    /// request blob cannot be read): answered `invalid_job`, not dead-lettered.
    pub problem: Option<String>,
    /// Which delivery of the message this is (1 = first).
    pub delivery: u32,
    /// When the message was stored in the queue.
    pub published: Option<Timestamp>,
    /// The job's size as published, its request blob's included (a tenant's
    /// `max_request_bytes` applies to it).
    pub payload_bytes: usize,
}

/// Why a delivery goes to the dead-letter stream instead of running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: DlqReason,
    pub detail: String,
    /// When the payload still names one.
    pub job_id: Option<JobId>,
}

impl Rejection {
    fn new(reason: DlqReason, detail: impl Into<String>, job_id: Option<JobId>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            job_id,
        }
    }
}

/// What the decoding reads of a delivered message.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub subject: &'a str,
    pub payload: &'a [u8],
    /// Which delivery this is, from 1.
    pub delivered: u64,
    pub published: Option<Timestamp>,
}

impl<'a> Delivery<'a> {
    pub fn of(message: &'a Message) -> Self {
        let (delivered, published) = match message.info() {
            Ok(info) => (
                info.delivered.max(1) as u64,
                Some(Timestamp::from(info.published)),
            ),
            Err(_) => (1, None),
        };
        Delivery {
            subject: message.subject.as_str(),
            payload: &message.payload,
            delivered,
            published,
        }
    }
}

/// Decodes one delivery of a message of the jobs stream. `max_deliver` is the configured
/// limit (the consumer's own is one more: see `dlq`).
pub fn decode(subjects: &Subjects, max_deliver: i64, delivery: Delivery<'_>) -> Decoded {
    let Delivery {
        delivered,
        published,
        ..
    } = delivery;
    match decode_parts(subjects, max_deliver, delivery) {
        Ok((job, tenant, tier, subject_model)) => Decoded::Ready(Box::new(Ready {
            problem: subject_problem(&job, subject_model),
            job,
            tenant,
            tier,
            delivery: u32::try_from(delivered).unwrap_or(u32::MAX),
            published,
            payload_bytes: delivery.payload.len(),
        })),
        Err(rejection) => Decoded::Rejected(rejection),
    }
}

type Parts = (Job, Tenant, Tier, Result<ModelName, SubjectError>);

fn subject_problem(job: &Job, subject_model: Result<ModelName, SubjectError>) -> Option<String> {
    match subject_model {
        Ok(model) if model.as_str() == job.model => None,
        Ok(model) => Some(format!(
            "the job's model {:?} does not match its subject's model {:?}",
            job.model,
            model.as_str()
        )),
        Err(err) => Some(format!("the subject's model token is invalid: {err}")),
    }
}

fn decode_parts(
    subjects: &Subjects,
    max_deliver: i64,
    delivery: Delivery<'_>,
) -> Result<Parts, Rejection> {
    if delivery.delivered > max_deliver.max(0) as u64 {
        let job_id = Envelope::sniff(delivery.payload).id;
        let detail = crate::dlq::max_deliveries_detail(max_deliver);
        return Err(Rejection::new(DlqReason::MaxDeliveries, detail, job_id));
    }
    let undecodable =
        |err: SubjectError| Rejection::new(DlqReason::Undecodable, err.to_string(), None);
    let subject = subjects
        .parse_job_subject(delivery.subject)
        .map_err(undecodable)?;
    let tenant = subject.tenant.map_err(undecodable)?;
    let job = Job::decode(delivery.payload).map_err(|err| {
        let reason = match err {
            DecodeError::UnsupportedVersion(_) => DlqReason::UnsupportedVersion,
            DecodeError::Malformed(_) => DlqReason::Undecodable,
        };
        Rejection::new(reason, err.to_string(), None)
    })?;
    Ok((job, tenant, subject.tier, subject.model))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBJECT: &str = "llmq.jobs.chat.batch.acme";

    fn delivery<'a>(subject: &'a str, payload: &'a [u8], delivered: u64) -> Delivery<'a> {
        Delivery {
            subject,
            payload,
            delivered,
            published: None,
        }
    }

    fn job() -> Vec<u8> {
        serde_json::to_vec(&Job::new("chat", llmq_schemas::ChatRequest::user("hi"))).unwrap()
    }

    fn rejected(decoded: Decoded) -> Rejection {
        match decoded {
            Decoded::Rejected(rejection) => rejection,
            Decoded::Ready(ready) => panic!("expected a rejection, got {ready:?}"),
        }
    }

    #[test]
    fn a_job_is_ready_with_what_its_subject_and_delivery_say() {
        let payload = job();
        let Decoded::Ready(ready) = decode(&Subjects::default(), 5, delivery(SUBJECT, &payload, 2))
        else {
            panic!("not ready")
        };
        assert_eq!(ready.tenant.as_str(), "acme");
        assert_eq!(ready.tier, Tier::Batch);
        assert_eq!(ready.delivery, 2);
        assert_eq!(ready.problem, None);
        let other = decode(
            &Subjects::default(),
            5,
            delivery("llmq.jobs.other.batch.acme", &payload, 1),
        );
        let Decoded::Ready(ready) = other else {
            panic!("a model mismatch is answered, not dead-lettered")
        };
        assert!(ready.problem.unwrap().contains("does not match"));
    }

    #[test]
    fn every_reason_not_to_run_is_a_rejection_with_its_dead_letter_reason() {
        let subjects = Subjects::default();
        let payload = job();
        let over = rejected(decode(&subjects, 2, delivery(SUBJECT, &payload, 3)));
        assert_eq!(over.reason, DlqReason::MaxDeliveries);
        assert!(over.detail.contains("processed 2 times"), "{}", over.detail);
        assert!(over.job_id.is_some(), "the id is read from the payload");
        for (subject, payload) in [
            ("llmq.jobs.chat.batch", payload.as_slice()),
            ("llmq.jobs.chat.batch.a_b!", payload.as_slice()),
            (SUBJECT, b"{not json".as_slice()),
        ] {
            let rejection = rejected(decode(&subjects, 5, delivery(subject, payload, 1)));
            assert_eq!(rejection.reason, DlqReason::Undecodable, "{subject}");
        }
        let newer = br#"{"v": 9, "id": "0193a3c2-6c2e-7cc3-9c1d-3f1d2c4b5a69"}"#;
        let rejection = rejected(decode(&subjects, 5, delivery(SUBJECT, newer, 1)));
        assert_eq!(rejection.reason, DlqReason::UnsupportedVersion);
    }
}
