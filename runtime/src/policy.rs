//! The tenant policy: whether a job may run, decided the same way by every worker (the
//! authority) and by every producer-side component before it publishes (so a producer
//! learns at once, not from an outcome).
//!
//! Pure: it reads a registry [`Lookup`] and the job, and says allowed (perhaps with its
//! completion-token cap lowered) or denied, naming the rule.

use std::collections::BTreeMap;

use llmq_schemas::{
    ChatRequest, Clamped, ErrorType, Job, JobError, OverMaxTokens, PolicyRule, Subjects, Tenant,
    Tier,
};

use crate::tenants::{Lookup, TenantPolicy};

/// What the policy looks at.
#[derive(Debug, Clone, Copy)]
pub struct JobFacts<'a> {
    pub tenant: &'a Tenant,
    pub tier: Tier,
    pub job: &'a Job,
    /// The job's payload size as published.
    pub payload_bytes: usize,
}

/// A job the policy lets run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Set when the job asked for more completion tokens than its tenant may: apply it
    /// with [`Allowed::apply`].
    pub clamped: Option<Clamped>,
    /// The tenant's ceiling, for a job that asked for no cap at all.
    pub default_cap: Option<u32>,
    /// The tenant's labels, for its outcome and usage event.
    pub labels: BTreeMap<String, String>,
}

impl Allowed {
    /// Lowers the request's completion-token cap to what the tenant may use.
    pub fn apply(&self, request: &mut ChatRequest) {
        if let Some(clamped) = self.clamped {
            cap(request, clamped.allowed);
        } else if let Some(ceiling) = self.default_cap
            && request.max_output_tokens().is_none()
        {
            request.max_completion_tokens = Some(ceiling);
        }
    }
}

/// Sets the cap in whichever of OpenAI's two fields the job used.
fn cap(request: &mut ChatRequest, allowed: u32) {
    if request.max_completion_tokens.is_some() {
        request.max_completion_tokens = Some(allowed);
    }
    if request.max_tokens.is_some() {
        request.max_tokens = Some(allowed);
    }
}

/// A job the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (rule {rule})")]
pub struct Denied {
    pub rule: PolicyRule,
    pub message: String,
}

impl Denied {
    fn new(rule: PolicyRule, message: impl Into<String>) -> Self {
        Self {
            rule,
            message: message.into(),
        }
    }

    /// The job's error: `policy_denied` naming the rule; a reply subject outside the
    /// tenant's inboxes is `invalid_job`, as any unsafe reply subject is.
    pub fn job_error(&self) -> JobError {
        let mut error = JobError::policy_denied(self.rule, self.to_string());
        if self.rule == PolicyRule::ReplySubject {
            error.kind = ErrorType::InvalidJob;
        }
        error
    }
}

/// Decides whether the job may run.
pub fn check(lookup: &Lookup, facts: JobFacts<'_>) -> Result<Allowed, Denied> {
    let tenant = facts.tenant.as_str();
    let policy = match lookup {
        Lookup::Open => return Ok(Allowed::default()),
        Lookup::Known(policy) => policy,
        Lookup::Unknown => {
            return Err(Denied::new(
                PolicyRule::UnknownTenant,
                format!("tenant {tenant:?} is not in the tenant registry"),
            ));
        }
        Lookup::Invalid(reason) => {
            return Err(Denied::new(
                PolicyRule::InvalidTenantEntry,
                format!("tenant {tenant:?} has a registry entry that cannot be read: {reason}"),
            ));
        }
    };
    model(policy, facts)?;
    tier(policy, facts)?;
    size(policy, facts)?;
    reply_to(policy, facts)?;
    Ok(Allowed {
        clamped: max_tokens(policy, facts)?,
        default_cap: policy.entry.max_tokens,
        labels: policy.entry.labels.clone(),
    })
}

fn model(policy: &TenantPolicy, facts: JobFacts<'_>) -> Result<(), Denied> {
    let model = &facts.job.model;
    if policy.allows_model(model) {
        return Ok(());
    }
    let allowed = if policy.entry.models.is_empty() {
        "none".to_owned()
    } else {
        policy.entry.models.join(", ")
    };
    Err(Denied::new(
        PolicyRule::ModelNotAllowed,
        format!(
            "tenant {:?} may not use model {model:?} (models allowed: {allowed})",
            facts.tenant.as_str()
        ),
    ))
}

fn tier(policy: &TenantPolicy, facts: JobFacts<'_>) -> Result<(), Denied> {
    if policy.entry.tiers.contains(&facts.tier) {
        return Ok(());
    }
    Err(Denied::new(
        PolicyRule::TierNotAllowed,
        format!(
            "tenant {:?} may not submit to tier {}",
            facts.tenant.as_str(),
            facts.tier
        ),
    ))
}

fn size(policy: &TenantPolicy, facts: JobFacts<'_>) -> Result<(), Denied> {
    let Some(max) = policy.entry.max_request_bytes else {
        return Ok(());
    };
    let bytes = facts.payload_bytes as u64;
    if bytes <= max {
        return Ok(());
    }
    Err(Denied::new(
        PolicyRule::RequestTooLarge,
        format!(
            "the job is {bytes} bytes; tenant {:?} may send at most {max}",
            facts.tenant.as_str()
        ),
    ))
}

/// Events go only to the tenant's own inboxes: a job cannot make a worker publish into
/// another tenant's.
fn reply_to(policy: &TenantPolicy, facts: JobFacts<'_>) -> Result<(), Denied> {
    let Some(reply_to) = facts.job.reply_to.as_deref() else {
        return Ok(());
    };
    if under_any(reply_to, &reply_prefixes(facts.tenant, policy)) {
        return Ok(());
    }
    Err(Denied::new(
        PolicyRule::ReplySubject,
        format!(
            "reply_to {reply_to:?} is not under tenant {:?}'s inbox prefix {}",
            facts.tenant.as_str(),
            Subjects::tenant_inbox(facts.tenant)
        ),
    ))
}

/// The prefixes a tenant's events may go to: its own inbox, and what its entry grants.
pub fn reply_prefixes(tenant: &Tenant, policy: &TenantPolicy) -> Vec<String> {
    let mut prefixes = vec![Subjects::tenant_inbox(tenant)];
    prefixes.extend(policy.entry.reply_prefixes.iter().cloned());
    prefixes
}

/// Whether `subject` lies under one of `prefixes`, by whole tokens.
fn under_any(subject: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|prefix| {
        subject
            .strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Whether a worker may send anything about a job of `tenant` (the tenant of the job's
/// subject) to `reply_to`: its events, its final outcome, a dead-letter notice, whatever
/// the job's fate. The one rule for every message a worker publishes to a subject a job
/// names: a safe reply subject (literal, outside llmq's prefix and the `$` namespaces)
/// and, where the registry is enforced, under the tenant's own inboxes (its entry's
/// `reply_prefixes` too; only its default inbox when it has no readable entry). So a job,
/// even one that cannot be decoded, cannot make a worker write into another tenant's inbox.
pub fn may_reply_to(subjects: &Subjects, lookup: &Lookup, tenant: &Tenant, reply_to: &str) -> bool {
    if !subjects.is_safe_reply_to(reply_to) {
        return false;
    }
    let prefixes = match lookup {
        Lookup::Open => return true,
        Lookup::Known(policy) => reply_prefixes(tenant, policy),
        Lookup::Unknown | Lookup::Invalid(_) => vec![Subjects::tenant_inbox(tenant)],
    };
    under_any(reply_to, &prefixes)
}

fn max_tokens(policy: &TenantPolicy, facts: JobFacts<'_>) -> Result<Option<Clamped>, Denied> {
    let (Some(ceiling), Some(requested)) = (
        policy.entry.max_tokens,
        facts.job.request.max_output_tokens(),
    ) else {
        return Ok(None);
    };
    if requested <= ceiling {
        return Ok(None);
    }
    match policy.entry.over_max_tokens {
        OverMaxTokens::Clamp => Ok(Some(Clamped {
            requested,
            allowed: ceiling,
        })),
        OverMaxTokens::Refuse => Err(Denied::new(
            PolicyRule::MaxTokens,
            format!(
                "the job asks for {requested} completion tokens; tenant {:?} may ask for at most {ceiling}",
                facts.tenant.as_str()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmq_schemas::{PROTOCOL_VERSION, TenantEntry};
    use std::sync::Arc;

    fn entry() -> TenantEntry {
        TenantEntry {
            v: PROTOCOL_VERSION,
            id: "acme".into(),
            name: String::new(),
            models: vec!["chat-*".into()],
            tiers: vec![Tier::Interactive],
            max_tokens: Some(100),
            over_max_tokens: OverMaxTokens::Clamp,
            max_request_bytes: Some(10_000),
            labels: BTreeMap::from([("team".into(), "search".into())]),
            reply_prefixes: vec!["_INBOX_legacy".into()],
            limits: Default::default(),
            model_limits: Default::default(),
            max_wait: None,
            batch_weight: None,
            budget: Default::default(),
            updated_at: None,
        }
    }

    fn known(entry: TenantEntry) -> Lookup {
        Lookup::Known(Arc::new(TenantPolicy::new(entry).unwrap()))
    }

    fn job(model: &str) -> Job {
        let mut job = Job::new(model, ChatRequest::user("hi"));
        job.reply_to = Some("_INBOX_llmq.acme.client.job".into());
        job
    }

    fn check_job(lookup: &Lookup, job: &Job, tier: Tier, bytes: usize) -> Result<Allowed, Denied> {
        let tenant = Tenant::parse("acme").unwrap();
        check(
            lookup,
            JobFacts {
                tenant: &tenant,
                tier,
                job,
                payload_bytes: bytes,
            },
        )
    }

    fn rule(result: Result<Allowed, Denied>) -> PolicyRule {
        result.expect_err("denied").rule
    }

    #[test]
    fn an_allowed_job_carries_the_labels_and_the_default_cap() {
        let allowed =
            check_job(&known(entry()), &job("chat-fast"), Tier::Interactive, 500).unwrap();
        assert_eq!(allowed.labels["team"], "search");
        assert_eq!(allowed.clamped, None);
        let mut request = ChatRequest::user("x");
        allowed.apply(&mut request);
        assert_eq!(
            request.max_completion_tokens,
            Some(100),
            "no cap asked: the ceiling"
        );
    }

    #[test]
    fn each_rule_refuses_on_its_own() {
        let lookup = known(entry());
        assert_eq!(
            rule(check_job(&lookup, &job("gpt-4.1"), Tier::Interactive, 1)),
            PolicyRule::ModelNotAllowed
        );
        assert_eq!(
            rule(check_job(&lookup, &job("chat-a"), Tier::Batch, 1)),
            PolicyRule::TierNotAllowed
        );
        assert_eq!(
            rule(check_job(
                &lookup,
                &job("chat-a"),
                Tier::Interactive,
                10_001
            )),
            PolicyRule::RequestTooLarge
        );
        let mut spy = job("chat-a");
        spy.reply_to = Some("_INBOX_llmq.beta.spy.x".into());
        let denied = check_job(&lookup, &spy, Tier::Interactive, 1).unwrap_err();
        assert_eq!(denied.rule, PolicyRule::ReplySubject);
        assert_eq!(denied.job_error().kind, ErrorType::InvalidJob);
        // A prefix is matched by whole tokens.
        spy.reply_to = Some("_INBOX_llmq.acmevil.x".into());
        assert!(check_job(&lookup, &spy, Tier::Interactive, 1).is_err());
        spy.reply_to = Some("_INBOX_legacy.mine".into());
        assert!(check_job(&lookup, &spy, Tier::Interactive, 1).is_ok());
        assert_eq!(
            rule(check_job(&Lookup::Unknown, &spy, Tier::Interactive, 1)),
            PolicyRule::UnknownTenant
        );
        assert_eq!(
            rule(check_job(
                &Lookup::Invalid("x".into()),
                &spy,
                Tier::Interactive,
                1
            )),
            PolicyRule::InvalidTenantEntry
        );
        assert!(check_job(&Lookup::Open, &job("anything"), Tier::Batch, usize::MAX).is_ok());
    }

    #[test]
    fn replies_go_only_to_safe_subjects_under_the_subject_tenants_inboxes() {
        let subjects = Subjects::new("llmq").unwrap();
        let acme = Tenant::parse("acme").unwrap();
        let may =
            |lookup: &Lookup, reply_to: &str| may_reply_to(&subjects, lookup, &acme, reply_to);
        let known = known(entry());
        assert!(may(&known, "_INBOX_llmq.acme.app.1"));
        assert!(may(&known, "_INBOX_legacy.x"), "the entry's reply_prefixes");
        assert!(!may(&known, "_INBOX_llmq.beta.app.1"));
        assert!(!may(&known, "_INBOX_llmq.acmevil.1"));
        assert!(
            !may(&known, "_INBOX_llmq.acme.*"),
            "a wildcard is never safe"
        );
        for lookup in [Lookup::Unknown, Lookup::Invalid("x".into())] {
            assert!(may(&lookup, "_INBOX_llmq.acme.app.1"));
            assert!(!may(&lookup, "_INBOX_legacy.x"));
            assert!(!may(&lookup, "_INBOX_llmq.beta.app.1"));
        }
        assert!(may(&Lookup::Open, "anything.safe"));
        assert!(!may(&Lookup::Open, "llmq.results.acme.x"));
        assert!(!may(&Lookup::Open, "$JS.API.STREAM.DELETE.X"));
    }

    #[test]
    fn max_tokens_above_the_ceiling_are_clamped_or_refused() {
        let mut big = job("chat-a");
        big.request.max_tokens = Some(500);
        big.request.max_completion_tokens = Some(400);
        let allowed = check_job(&known(entry()), &big, Tier::Interactive, 1).unwrap();
        assert_eq!(
            allowed.clamped,
            Some(Clamped {
                requested: 400,
                allowed: 100
            })
        );
        allowed.apply(&mut big.request);
        assert_eq!(
            (big.request.max_tokens, big.request.max_completion_tokens),
            (Some(100), Some(100))
        );
        let mut refuse = entry();
        refuse.over_max_tokens = OverMaxTokens::Refuse;
        let mut big = job("chat-a");
        big.request.max_completion_tokens = Some(101);
        let denied = check_job(&known(refuse), &big, Tier::Interactive, 1).unwrap_err();
        assert_eq!(denied.rule, PolicyRule::MaxTokens);
        assert_eq!(denied.job_error().kind, ErrorType::PolicyDenied);
        assert!(denied.to_string().contains("101"), "{denied}");
    }
}
