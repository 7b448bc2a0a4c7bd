//! Subjects, stream names and the model-name encoding, in one place for every party.
//!
//! A NATS subject token cannot hold `.`, `*`, `>` or whitespace, yet models are called
//! `gpt-4.1`. Model names therefore go through one reversible encoding: ASCII letters,
//! digits and `-` stand for themselves; every other byte of the UTF-8 name becomes `_`
//! and two lowercase hex digits (`gpt-4.1` -> `gpt-4_2e1`). The encoding is canonical
//! (one token per name, one name per token), and its alphabet is also valid in consumer
//! and KV key names.
//!
//! The tenant is the last token of a job subject so that NATS permissions can pin a
//! tenant's user to `<prefix>.jobs.*.*.<tenant>`; workers read the tenant from the
//! subject, never from the body.

use std::fmt;

use crate::batch::BatchId;
use crate::job::{JobId, Tier};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("model name must not be empty")]
    EmptyModel,
    #[error("model name {0:?} is longer than 200 bytes")]
    ModelTooLong(String),
    #[error("model name {0:?} contains a control character")]
    ModelControlChar(String),
    #[error("{0:?} is not a valid model token")]
    BadModelToken(String),
    #[error("tenant {0:?} must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")]
    BadTenant(String),
    #[error("subject prefix {0:?} must be 1-32 characters of A-Z, a-z, 0-9, '_' or '-'")]
    BadPrefix(String),
    #[error("{subject:?} is not a job subject under {prefix:?}")]
    NotAJobSubject { subject: String, prefix: String },
}

/// A logical model name, validated: non-empty, at most 200 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName(String);

impl ModelName {
    pub fn parse(name: &str) -> Result<Self, SubjectError> {
        if name.is_empty() {
            return Err(SubjectError::EmptyModel);
        }
        if name.len() > 200 {
            return Err(SubjectError::ModelTooLong(name.to_owned()));
        }
        if name.chars().any(char::is_control) {
            return Err(SubjectError::ModelControlChar(name.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    /// Decodes a subject token back into the model name.
    pub fn from_token(token: &str) -> Result<Self, SubjectError> {
        let bad = || SubjectError::BadModelToken(token.to_owned());
        let mut bytes = Vec::with_capacity(token.len());
        let mut iter = token.bytes();
        while let Some(b) = iter.next() {
            if is_literal(b) {
                bytes.push(b);
            } else if b == b'_' {
                let hi = iter.next().and_then(lower_hex).ok_or_else(bad)?;
                let lo = iter.next().and_then(lower_hex).ok_or_else(bad)?;
                let decoded = hi << 4 | lo;
                if is_literal(decoded) {
                    return Err(bad()); // non-canonical: would have been written literally
                }
                bytes.push(decoded);
            } else {
                return Err(bad());
            }
        }
        let name = String::from_utf8(bytes).map_err(|_| bad())?;
        Self::parse(&name).map_err(|_| bad())
    }

    /// The subject token for this name.
    pub fn token(&self) -> String {
        let mut token = String::with_capacity(self.0.len());
        for b in self.0.bytes() {
            if is_literal(b) {
                token.push(char::from(b));
            } else {
                token.push('_');
                token.push(char::from(HEX[usize::from(b >> 4)]));
                token.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        token
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn is_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

fn lower_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn is_name_token(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A tenant id: a subject token as is (1-64 of `A-Za-z0-9_-`), so NATS permissions can
/// name it literally.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(String);

impl Tenant {
    /// The tenant when NATS auth is off.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(text: &str) -> Result<Self, SubjectError> {
        if is_name_token(text, 64) {
            Ok(Self(text.to_owned()))
        } else {
            Err(SubjectError::BadTenant(text.to_owned()))
        }
    }

    pub fn default_tenant() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a job subject says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSubject {
    /// The raw model token (kept even when it does not decode, for the DLQ subject).
    pub model_token: String,
    pub model: Result<ModelName, SubjectError>,
    pub tier: Tier,
    pub tenant: Result<Tenant, SubjectError>,
}

/// Every subject and stream name, derived from one prefix so that two llmq deployments
/// can share a NATS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
    upper: String,
}

impl Subjects {
    pub const DEFAULT_PREFIX: &'static str = "llmq";

    pub fn new(prefix: &str) -> Result<Self, SubjectError> {
        if !is_name_token(prefix, 32) {
            return Err(SubjectError::BadPrefix(prefix.to_owned()));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            upper: prefix.to_ascii_uppercase().replace('-', "_"),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    // --- streams and buckets ---

    /// WorkQueue stream of jobs: `LLMQ_JOBS` for prefix `llmq`.
    pub fn jobs_stream(&self) -> String {
        format!("{}_JOBS", self.upper)
    }
    pub fn results_stream(&self) -> String {
        format!("{}_RESULTS", self.upper)
    }
    pub fn usage_stream(&self) -> String {
        format!("{}_USAGE", self.upper)
    }
    pub fn dlq_stream(&self) -> String {
        format!("{}_DLQ", self.upper)
    }
    /// KV bucket of live workers and the models they serve.
    pub fn catalog_bucket(&self) -> String {
        format!("{}_CATALOG", self.upper)
    }
    /// KV bucket of cancel requests.
    pub fn cancel_bucket(&self) -> String {
        format!("{}_CANCEL", self.upper)
    }
    /// KV bucket of the tenant registry, key = tenant id.
    pub fn tenants_bucket(&self) -> String {
        format!("{}_TENANTS", self.upper)
    }

    /// Chunks of large requests (claim checks), `<prefix>.blobs.<tenant>.<id>.<n>`.
    pub fn blobs_stream(&self) -> String {
        format!("{}_BLOBS", self.upper)
    }

    /// The HTTP edge's API keys (hashes only).
    pub fn keys_bucket(&self) -> String {
        format!("{}_KEYS", self.upper)
    }

    /// KV bucket of batch records, key `<tenant>.<batch id>`.
    pub fn batches_bucket(&self) -> String {
        format!("{}_BATCHES", self.upper)
    }

    /// Object store of files uploaded over HTTP (`POST /v1/files`) and batches' results
    /// files, object name `<tenant>.<file id>`.
    pub fn files_bucket(&self) -> String {
        format!("{}_FILES", self.upper)
    }

    /// A file's object name in the files bucket.
    pub fn file_object(tenant: &Tenant, file_id: &str) -> String {
        format!("{tenant}.{file_id}")
    }

    /// Work queue of batches made over HTTP, one message per batch until it is finished:
    /// whichever edge holds the message runs the batch; another takes it over when that
    /// edge dies.
    pub fn batch_runs_stream(&self) -> String {
        format!("{}_BATCH_RUNS", self.upper)
    }

    /// `<prefix>.batchruns.<tenant>`: the message that a batch is to be run.
    pub fn batch_run(&self, tenant: &Tenant) -> String {
        format!("{}.batchruns.{tenant}", self.prefix)
    }

    pub fn batch_runs_stream_subjects(&self) -> Vec<String> {
        vec![format!("{}.batchruns.*", self.prefix)]
    }

    /// The one durable consumer every edge runs batches from.
    pub const BATCH_RUNNERS: &'static str = "batch-runners";

    /// A batch record's key in the batches bucket.
    pub fn batch_key(tenant: &Tenant, batch: &BatchId) -> String {
        format!("{tenant}.{batch}")
    }

    /// The inbox prefix a tenant's producers use by default, and the only one its jobs may
    /// name as `reply_to` when the registry is enforced (besides the prefixes its entry
    /// grants): `_INBOX_llmq.<tenant>`. NATS permissions grant a tenant's user this prefix.
    pub fn tenant_inbox(tenant: &Tenant) -> String {
        format!("{}.{}", Self::INBOX_ROOT, tenant.as_str())
    }

    // --- jobs ---

    /// Subjects the jobs stream captures: only the two valid tiers, so a job with a
    /// made-up tier is refused at publish time instead of sitting unconsumed.
    pub fn jobs_stream_subjects(&self) -> Vec<String> {
        Tier::ALL
            .iter()
            .map(|tier| format!("{}.jobs.*.{}.*", self.prefix, tier.as_str()))
            .collect()
    }

    pub fn job(&self, model: &ModelName, tier: Tier, tenant: &Tenant) -> String {
        format!(
            "{}.jobs.{}.{}.{}",
            self.prefix,
            model.token(),
            tier.as_str(),
            tenant
        )
    }

    /// The filter of the durable consumer for one (model, tier).
    pub fn jobs_filter(&self, model: &ModelName, tier: Tier) -> String {
        format!("{}.jobs.{}.{}.*", self.prefix, model.token(), tier.as_str())
    }

    /// All jobs of one model token, any tier and tenant.
    pub fn jobs_filter_for_token(&self, model_token: &str) -> String {
        format!("{}.jobs.{}.*.*", self.prefix, model_token)
    }

    /// The durable consumer name for one (model, tier), shared by every worker.
    pub fn consumer_name(model: &ModelName, tier: Tier) -> String {
        format!("{}-{}", tier.as_str(), model.token())
    }

    /// The durable consumer of one tenant's jobs of one (model, tier), shared by every
    /// worker: the batch tier has one per tenant, so workers can take turns between
    /// tenants. `~` is in neither a model token nor a tenant id, so names cannot collide.
    pub fn tenant_consumer_name(model: &ModelName, tier: Tier, tenant: &Tenant) -> String {
        format!("{}-{}~{}", tier.as_str(), model.token(), tenant)
    }

    /// The filter of one tenant's consumer for one (model, tier).
    pub fn tenant_jobs_filter(&self, model: &ModelName, tier: Tier, tenant: &Tenant) -> String {
        self.job(model, tier, tenant)
    }

    /// The tenant a job subject of this prefix names, if it is one.
    pub fn tenant_of_job_subject(&self, subject: &str) -> Option<Tenant> {
        self.parse_job_subject(subject).ok()?.tenant.ok()
    }

    pub fn parse_job_subject(&self, subject: &str) -> Result<JobSubject, SubjectError> {
        let not_job = || SubjectError::NotAJobSubject {
            subject: subject.to_owned(),
            prefix: self.prefix.clone(),
        };
        let mut parts = subject.split('.');
        let (Some(prefix), Some("jobs"), Some(token), Some(tier), Some(tenant), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(not_job());
        };
        if prefix != self.prefix {
            return Err(not_job());
        }
        let tier = Tier::parse(tier).ok_or_else(not_job)?;
        Ok(JobSubject {
            model_token: token.to_owned(),
            model: ModelName::from_token(token),
            tier,
            tenant: Tenant::parse(tenant),
        })
    }

    // --- results, usage, dead letters ---

    /// Outcomes, and the chunks of outcomes too large for one message
    /// (`<prefix>.results.<tenant>.<job id>.<blob id>.<n>`), which so live exactly as long
    /// as outcomes, where no tenant may write.
    pub fn results_stream_subjects(&self) -> Vec<String> {
        vec![
            format!("{}.results.*.*", self.prefix),
            format!("{}.results.*.*.*", self.prefix),
            format!("{}.results.*.*.*.*", self.prefix),
        ]
    }

    pub fn result(&self, tenant: &Tenant, job_id: JobId) -> String {
        format!("{}.results.{}.{}", self.prefix, tenant, job_id)
    }

    /// Where a job's outcome is stored: under its batch when it is a batch's line.
    pub fn outcome(&self, tenant: &Tenant, job_id: JobId, batch: Option<&BatchId>) -> String {
        match batch {
            Some(batch) => format!("{}.results.{}.{}.{}", self.prefix, tenant, batch, job_id),
            None => self.result(tenant, job_id),
        }
    }

    /// A batch line's outcome, whichever batch it is in.
    pub fn any_batch_result(&self, tenant: &Tenant, job_id: JobId) -> String {
        format!("{}.results.{}.*.{}", self.prefix, tenant, job_id)
    }

    /// Every outcome of a batch's lines.
    pub fn batch_outcomes_filter(&self, tenant: &Tenant, batch: &BatchId) -> String {
        format!("{}.results.{}.{}.*", self.prefix, tenant, batch)
    }

    pub fn usage_stream_subjects(&self) -> Vec<String> {
        vec![format!("{}.usage.*.*", self.prefix)]
    }

    pub fn usage(&self, tenant: &Tenant, model: &ModelName) -> String {
        format!("{}.usage.{}.{}", self.prefix, tenant, model.token())
    }

    /// Usage of one tenant (or every tenant with `None`).
    pub fn usage_filter(&self, tenant: Option<&Tenant>) -> String {
        match tenant {
            Some(tenant) => format!("{}.usage.{}.*", self.prefix, tenant),
            None => format!("{}.usage.*.*", self.prefix),
        }
    }

    // --- blobs (claim checks) ---

    pub fn blobs_stream_subjects(&self) -> Vec<String> {
        vec![format!("{}.blobs.*.*.*", self.prefix)]
    }

    /// Where a tenant's request blobs live: chunk `n` of blob `id` is `<base>.<id>.<n>`.
    /// Tenants may publish under their own; a worker reads a job's blob under the tenant
    /// of the job's subject only.
    pub fn request_blobs(&self, tenant: &Tenant) -> String {
        format!("{}.blobs.{}", self.prefix, tenant)
    }

    /// Where the blob of a job's outcome lives: beside the outcome, in the results stream.
    pub fn outcome_blobs(&self, tenant: &Tenant, job_id: JobId) -> String {
        format!("{}.results.{}.{}", self.prefix, tenant, job_id)
    }

    /// Chunk `n` of blob `id` under `base` ([`request_blobs`](Self::request_blobs) or
    /// [`outcome_blobs`](Self::outcome_blobs)).
    pub fn blob_chunk(base: &str, id: &str, n: u32) -> String {
        format!("{base}.{id}.{n}")
    }

    pub fn dlq_stream_subjects(&self) -> Vec<String> {
        vec![format!("{}.dlq.*", self.prefix)]
    }

    /// Dead letters of one model token (the raw token: it may not decode).
    pub fn dlq(&self, model_token: &str) -> String {
        format!("{}.dlq.{}", self.prefix, model_token)
    }

    /// Key of a cancel request in the cancel bucket.
    pub fn cancel_key(tenant: &Tenant, job_id: JobId) -> String {
        format!("{tenant}.{job_id}")
    }

    /// Key of a whole batch's cancel in the cancel bucket: its lines not yet running end
    /// `cancelled` when a worker picks them up. (A batch id is never a job id: `batch_`.)
    pub fn batch_cancel_key(tenant: &Tenant, batch: &BatchId) -> String {
        format!("{tenant}.{batch}")
    }

    /// Whether a producer-given reply subject is safe to publish to: a literal subject
    /// (no wildcards, no empty tokens, no whitespace) outside llmq's own subjects and
    /// the `$` system namespaces, so a job cannot make a worker publish into a stream.
    pub fn is_safe_reply_to(&self, subject: &str) -> bool {
        let well_formed = !subject.is_empty()
            && subject.len() <= 1024
            && subject.split('.').all(|token| {
                !token.is_empty()
                    && token != "*"
                    && token != ">"
                    && !token
                        .bytes()
                        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            });
        let reserved = subject.starts_with('$')
            || subject == self.prefix
            || subject
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.starts_with('.'));
        well_formed && !reserved
    }
}

impl Subjects {
    /// The root of every tenant's inbox prefix.
    pub const INBOX_ROOT: &'static str = "_INBOX_llmq";
}

impl Default for Subjects {
    fn default() -> Self {
        Self {
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            upper: Self::DEFAULT_PREFIX.to_ascii_uppercase(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str) -> ModelName {
        ModelName::parse(name).unwrap()
    }

    #[test]
    fn model_tokens_are_subject_safe_and_reversible() {
        for name in [
            "gpt-4.1",
            "chat-fast",
            "claude 3.5 sonnet",
            "a_b",
            "org/model:latest",
            "*>.",
            "modèle-é",
            "x_2e1",
        ] {
            let token = model(name).token();
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{token}"
            );
            assert_eq!(ModelName::from_token(&token).unwrap().as_str(), name);
        }
        assert_eq!(model("gpt-4.1").token(), "gpt-4_2e1");
        assert_eq!(model("a_b").token(), "a_5fb");
    }

    #[test]
    fn distinct_names_never_share_a_token() {
        let names = ["gpt-4.1", "gpt-4_1", "gpt-4_2e1", "gpt-4-1", "gpt-41"];
        let tokens: std::collections::HashSet<String> =
            names.iter().map(|n| model(n).token()).collect();
        assert_eq!(tokens.len(), names.len());
    }

    #[test]
    fn non_canonical_and_broken_tokens_are_rejected() {
        for token in [
            "gpt_41", "gpt_2E1", "gpt_2", "gpt_zz", "a.b", "a b", "", "_ff",
        ] {
            assert!(ModelName::from_token(token).is_err(), "{token:?}");
        }
    }

    #[test]
    fn model_names_are_validated() {
        assert_eq!(ModelName::parse(""), Err(SubjectError::EmptyModel));
        assert!(ModelName::parse("a\nb").is_err());
        assert!(ModelName::parse(&"m".repeat(201)).is_err());
    }

    #[test]
    fn job_subjects_round_trip() {
        let subjects = Subjects::new("llmq").unwrap();
        let tenant = Tenant::parse("acme").unwrap();
        let subject = subjects.job(&model("gpt-4.1"), Tier::Batch, &tenant);
        assert_eq!(subject, "llmq.jobs.gpt-4_2e1.batch.acme");
        let parsed = subjects.parse_job_subject(&subject).unwrap();
        assert_eq!(parsed.model.unwrap().as_str(), "gpt-4.1");
        assert_eq!(parsed.tier, Tier::Batch);
        assert_eq!(parsed.tenant.unwrap(), tenant);
        assert!(subjects.parse_job_subject("other.jobs.m.batch.t").is_err());
        assert!(subjects.parse_job_subject("llmq.jobs.m.urgent.t").is_err());
        assert!(subjects.parse_job_subject("llmq.jobs.m.batch").is_err());
        assert!(
            subjects
                .parse_job_subject("llmq.jobs.gpt_zz.batch.t")
                .unwrap()
                .model
                .is_err()
        );
    }

    #[test]
    fn stream_names_follow_the_prefix() {
        let subjects = Subjects::new("team-a").unwrap();
        assert_eq!(subjects.jobs_stream(), "TEAM_A_JOBS");
        assert_eq!(subjects.cancel_bucket(), "TEAM_A_CANCEL");
        assert_eq!(subjects.blobs_stream(), "TEAM_A_BLOBS");
        assert_eq!(
            subjects.jobs_stream_subjects(),
            vec!["team-a.jobs.*.interactive.*", "team-a.jobs.*.batch.*"]
        );
        assert!(Subjects::new("a.b").is_err());
        assert!(Subjects::new("").is_err());
    }

    #[test]
    fn tenants_are_plain_tokens() {
        assert!(Tenant::parse("acme_prod-1").is_ok());
        for bad in ["", "a.b", "a*", "a b", &"t".repeat(65)] {
            assert!(Tenant::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reply_subjects_cannot_point_into_llmq_or_system_subjects() {
        let subjects = Subjects::new("llmq").unwrap();
        assert!(subjects.is_safe_reply_to("_INBOX.llmq.acme.abc.123"));
        assert!(subjects.is_safe_reply_to("llmqx.replies"));
        for bad in [
            "llmq.jobs.m.batch.t",
            "llmq.results.t.x",
            "llmq",
            "$JS.API.STREAM.DELETE.LLMQ_JOBS",
            "$KV.x.y",
            "a.*.b",
            "a.>",
            "a..b",
            "a b",
            "",
        ] {
            assert!(!subjects.is_safe_reply_to(bad), "{bad:?}");
        }
    }
}
