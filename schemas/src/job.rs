//! The job a producer publishes: one chat completion to run.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::batch::BatchLine;
use crate::blob::BlobRef;
use crate::openai::ChatRequest;
pub use crate::tier::Tier;
use crate::timestamp::Timestamp;

/// A job id: a UUID, v7 when the submitter makes it (time-ordered, so ids sort by
/// submission). It is also the publish's `Nats-Msg-Id`, which is what makes a retried
/// publish safe.
pub type JobId = Uuid;

/// A chat-completion job, published to `<prefix>.jobs.<model>.<tier>.<tenant>`.
///
/// The tenant is not in the body: the worker takes it from the subject, which NATS
/// permissions can enforce.
///
/// A job carries its request inline (`request`) or, when the job would not fit in one
/// NATS message, as a claim check (`request_blob`): exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("oneOf" = [{"required": ["request"]}, {"required": ["request_blob"]}]))]
pub struct Job {
    /// Protocol version; `1`.
    pub v: u32,
    /// Unique job id (UUID, v7 recommended); also the publish's `Nats-Msg-Id`.
    pub id: JobId,
    /// Logical model name (`chat-fast`, `gpt-4.1`); must match the subject's model token.
    pub model: String,
    #[serde(default)]
    pub tier: Tier,
    /// The OpenAI chat-completions request body. Absent when `request_blob` holds it.
    #[serde(default, skip_serializing_if = "crate::is_default")]
    pub request: ChatRequest,
    /// The request body's JSON in a blob under the job subject's tenant
    /// (`<prefix>.blobs.<tenant>.<id>.<n>`, chunks published before the job), for a
    /// request too large for one message. The worker reads it, checks its length and
    /// SHA-256, and runs the job as if `request` had held it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_blob: Option<BlobRef>,
    /// Stream deltas to `reply_to` as they are generated. `null` means `false`, as
    /// OpenAI's API reads it.
    #[serde(
        default,
        skip_serializing_if = "crate::is_default",
        deserialize_with = "null_is_false"
    )]
    #[schemars(with = "Option<bool>")]
    pub stream: bool,
    /// Core NATS subject for events (`started`, `delta`, `restart`, `final`). Optional:
    /// the final outcome is always stored in the results stream as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// After this instant the job ends `expired` instead of running or retrying. Absent:
    /// the worker's per-tier default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// When the producer submitted the job; gives the outcome's queue time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<Timestamp>,
    /// The producer's own id for the job (as in the OpenAI Batch API), echoed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// Free-form producer data, echoed back in the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// The batch and input line this job is, echoed back in the outcome, which is then
    /// stored under the batch (`<prefix>.results.<tenant>.<batch id>.<job id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchLine>,
    /// The person behind the request, when the producer knows one (the HTTP edge: the
    /// `sub` of a signed-in user's token). Recorded in the usage event, so spend can be
    /// reported per person; never sent to a provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl Job {
    /// A new interactive job with a fresh v7 id.
    pub fn new(model: impl Into<String>, request: ChatRequest) -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            id: Uuid::now_v7(),
            model: model.into(),
            tier: Tier::Interactive,
            request,
            request_blob: None,
            stream: false,
            reply_to: None,
            deadline: None,
            submitted_at: None,
            custom_id: None,
            user: None,
            metadata: None,
            batch: None,
        }
    }

    /// Decodes a job payload, telling a payload from a newer protocol apart from garbage.
    pub fn decode(bytes: &[u8]) -> Result<Job, DecodeError> {
        match serde_json::from_slice::<Job>(bytes) {
            Ok(job) if job.v > crate::PROTOCOL_VERSION => {
                Err(DecodeError::UnsupportedVersion(job.v))
            }
            Ok(job) => Ok(job),
            Err(err) => match serde_json::from_slice::<Envelope>(bytes) {
                Ok(envelope) if envelope.v > crate::PROTOCOL_VERSION => {
                    Err(DecodeError::UnsupportedVersion(envelope.v))
                }
                _ => Err(DecodeError::Malformed(err.to_string())),
            },
        }
    }
}

fn null_is_false<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Option::<bool>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// The few fields a worker can still read from a payload it cannot decode as a job, so it
/// can tell the producer (when there is a reply subject) where its job went.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub v: u32,
    #[serde(default)]
    pub id: Option<JobId>,
    #[serde(default)]
    pub reply_to: Option<String>,
}

impl Envelope {
    /// Best effort: an empty envelope when the bytes are not even a JSON object.
    pub fn sniff(bytes: &[u8]) -> Envelope {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("protocol version {0} is newer than this worker understands ({max})", max = crate::PROTOCOL_VERSION)]
    UnsupportedVersion(u32),
    #[error("not a valid job: {0}")]
    Malformed(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job_json(v: u32) -> Value {
        json!({
            "v": v,
            "id": "0193a3c2-6c2e-7cc3-9c1d-3f1d2c4b5a69",
            "model": "gpt-4.1",
            "request": {"messages": [{"role": "user", "content": "hi"}]}
        })
    }

    #[test]
    fn minimal_job_decodes_with_defaults() {
        let bytes = serde_json::to_vec(&job_json(1)).unwrap();
        let job = Job::decode(&bytes).unwrap();
        assert_eq!(job.tier, Tier::Interactive);
        assert!(!job.stream);
        assert_eq!(job.request.messages.len(), 1);
    }

    #[test]
    fn newer_version_is_told_apart_from_garbage() {
        let bytes = serde_json::to_vec(&job_json(2)).unwrap();
        assert_eq!(Job::decode(&bytes), Err(DecodeError::UnsupportedVersion(2)));
        let mut newer = job_json(7);
        newer["request"] = json!("a v7 request shape");
        let bytes = serde_json::to_vec(&newer).unwrap();
        assert_eq!(Job::decode(&bytes), Err(DecodeError::UnsupportedVersion(7)));
        assert!(matches!(
            Job::decode(b"{not json"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            Job::decode(b"{\"v\":1}"),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn a_job_carries_its_request_inline_as_before_or_as_a_claim_check() {
        let mut job = Job::new("m", ChatRequest::user("hi"));
        job.id = Uuid::nil();
        let inline = serde_json::to_string(&job).unwrap();
        assert_eq!(
            inline,
            r#"{"v":1,"id":"00000000-0000-0000-0000-000000000000","model":"m","tier":"interactive","request":{"messages":[{"role":"user","content":"hi"}]}}"#
        );
        job.request = ChatRequest::default();
        job.request_blob = Some(BlobRef {
            id: "b1".into(),
            bytes: 5,
            sha256: "0".repeat(64),
            chunks: 1,
        });
        let value = serde_json::to_value(&job).unwrap();
        assert!(value.get("request").is_none(), "{value}");
        let decoded = Job::decode(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(decoded, job);
    }

    #[test]
    fn envelope_reads_reply_subject_from_a_broken_job() {
        let envelope = Envelope::sniff(br#"{"v":1,"reply_to":"_INBOX.x.y","request":5}"#);
        assert_eq!(envelope.reply_to.as_deref(), Some("_INBOX.x.y"));
        assert!(Envelope::sniff(b"\xff\xfe").reply_to.is_none());
    }
}
