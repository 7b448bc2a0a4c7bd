//! Admission: whether the fleet's limits let a job, then each of its calls, go ahead.
//!
//! Two levels, each held for as long as what it admits: the tenant's own limits (jobs in
//! flight, jobs and tokens per window, for the tenant and for its use of the model) for
//! the whole job, until its outcome is stored; the provider's and the deployment's for one
//! call. Both wait as the job's tier may (an interactive job its limit wait, a batch job
//! up to its deadline) and reserve tokens as [`reservation`] estimates, reconciled with
//! the real usage afterwards. A deployment the provider's headers said is used up is
//! paused fleet-wide ([`pause`]), and an interactive job does not sit out a pause that
//! ends after it would have given up anyway.
//!
//! Nothing here decides the job's outcome: a job not admitted says why ([`NotAdmitted`]),
//! and the caller turns that into its ending.

use llmq_runtime::limits::{Admission, Demand, LimitError, Scope};
use llmq_schemas::{ChatRequest, ErrorType, JobError, Timestamp};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::millis;
use super::processing::{JobSpec, Processing};
use crate::context::WorkerContext;
use crate::metrics;
use crate::providers::estimate::estimate;
use crate::providers::retry_hint::UpstreamExhausted;
use crate::routing::{Candidate, ModelRoute};

/// Why a job, or one of its calls, was not admitted.
#[derive(Debug)]
pub enum NotAdmitted {
    /// The job was cancelled while it waited.
    Cancelled,
    /// Its deadline passed while it waited.
    Expired,
    /// It waited as long as it may (or would have, for a pause): `rate_limited`, with
    /// when to try again.
    RateLimited(JobError),
}

/// The tenant's own fleet-wide limits, held for the whole job (`None`: it has none).
pub async fn tenant(
    ctx: &WorkerContext,
    processing: &Processing,
    model: &ModelRoute,
    deadline_at: Timestamp,
    cancel: &CancellationToken,
) -> Result<Option<Admission>, NotAdmitted> {
    let limits = processing.tenant_limits();
    if limits.is_empty() {
        return Ok(None);
    }
    let limit_wait = processing.limit_wait(&ctx.config.limits);
    let deadline = Instant::now() + deadline_at.remaining();
    let until = limit_wait.map_or(deadline, |wait| (Instant::now() + wait).min(deadline));
    let demand = Demand {
        tokens: reservation(&processing.job.request, model.default_max_tokens),
    };
    let started = Instant::now();
    tokio::select! {
        admitted = ctx.limiter.admit(&limits, demand, Some(until)) => match admitted {
            Ok(admission) => Ok(Some(counted(admission))),
            Err(err) => {
                gave_up(&err, started);
                Err(if deadline_at.has_passed() {
                    NotAdmitted::Expired
                } else {
                    NotAdmitted::RateLimited(rate_limited(&err))
                })
            }
        },
        () = cancel.cancelled() => Err(NotAdmitted::Cancelled),
    }
}

/// The provider's and the deployment's fleet-wide limits, for one call: waits for
/// capacity (or a pause from the provider's headers to end) up to the job's limit wait
/// (or its deadline), and not at all for a pause that ends later than that; `None` when
/// neither has a limit nor is paused.
pub async fn call(
    ctx: &WorkerContext,
    job: &JobSpec<'_>,
    candidate: &Candidate,
    cancel: &CancellationToken,
) -> Result<Option<Admission>, NotAdmitted> {
    let deployment = &candidate.deployment;
    let limits = [
        (
            Scope::Provider(deployment.provider.name.clone()),
            deployment.provider.limits,
        ),
        (deployment_scope(candidate), deployment.limits),
    ];
    let limiter = &ctx.limiter;
    if limits.iter().all(|(_, spec)| spec.is_empty())
        && !limiter.is_paused(limits.iter().map(|(scope, _)| scope))
    {
        return Ok(None);
    }
    let demand = Demand {
        tokens: reservation(job.request, candidate.model.default_max_tokens),
    };
    let until = job.limit_until();
    let started = Instant::now();
    // An interactive job does not sit out a pause it would give up on anyway.
    if job.limit_wait.is_some()
        && let Some(paused) = limiter.paused(&limits)
        && started + paused.retry_after > until
    {
        let err = LimitError::Exhausted(paused);
        gave_up(&err, started);
        return Err(NotAdmitted::RateLimited(rate_limited(&err)));
    }
    tokio::select! {
        admitted = limiter.admit(&limits, demand, Some(until)) => match admitted {
            Ok(admission) => Ok(Some(counted(admission))),
            Err(err) => {
                gave_up(&err, started);
                Err(if Instant::now() >= job.deadline {
                    NotAdmitted::Expired
                } else {
                    NotAdmitted::RateLimited(rate_limited(&err))
                })
            }
        },
        () = cancel.cancelled() => Err(NotAdmitted::Cancelled),
    }
}

/// The provider said the deployment has nothing left until a reset: the fleet stops
/// calling it until then (calls already in flight elsewhere may still meet a 429).
pub async fn pause(ctx: &WorkerContext, candidate: &Candidate, exhausted: &UpstreamExhausted) {
    let deployment = &candidate.deployment;
    let scope = deployment_scope(candidate);
    let reason = format!("{} remaining 0", exhausted.limit);
    match ctx
        .limiter
        .pause(&scope, exhausted.resets_in, &reason)
        .await
    {
        Ok(extended) => {
            if extended {
                metrics::limit_paused(&deployment.provider.name, &deployment.upstream_model);
            }
            tracing::info!(
                deployment = %deployment.label(),
                limit = %exhausted.limit,
                resets_in = ?exhausted.resets_in,
                extended,
                "upstream limit used up; deployment paused fleet-wide"
            );
        }
        Err(err) => {
            tracing::warn!(deployment = %deployment.label(), error = %err, "upstream pause not shared with the fleet");
        }
    }
}

/// What a call reserves of token limits: the prompt's estimated tokens and the most the
/// answer may take (the job's cap, else the model's default, else 1,024), reconciled
/// with the real usage afterwards.
pub fn reservation(request: &ChatRequest, default_max_tokens: Option<u32>) -> u64 {
    const UNCAPPED: u32 = 1_024;
    let prompt = estimate(request, 0).prompt_tokens;
    let cap = request
        .max_output_tokens()
        .or(default_max_tokens)
        .unwrap_or(UNCAPPED);
    prompt + u64::from(cap)
}

/// The scope of a candidate's deployment: its provider and upstream model.
fn deployment_scope(candidate: &Candidate) -> Scope {
    Scope::Deployment {
        provider: candidate.deployment.provider.name.clone(),
        model: candidate.deployment.upstream_model.clone(),
    }
}

/// An admission, its wait (if it waited) counted.
fn counted(admission: Admission) -> Admission {
    if let Some(waited) = admission.waited() {
        metrics::limit_waited(&waited.scope, true, waited.time.as_secs_f64());
    }
    admission
}

/// Counts an admission that waited and gave up (its wait or the deadline ran out).
fn gave_up(err: &LimitError, started: Instant) {
    if let LimitError::Exhausted(exhausted) = err {
        metrics::limit_waited(&exhausted.scope, false, started.elapsed().as_secs_f64());
    }
}

/// The error of a job that waited for a limit as long as it may: `rate_limited`, with
/// when to try again.
fn rate_limited(err: &LimitError) -> JobError {
    let (message, retry_after) = match err {
        LimitError::Exhausted(exhausted) => (
            format!("waited for a limit llmq holds: {exhausted}"),
            Some(exhausted.retry_after),
        ),
        LimitError::Nats { .. } => (format!("the fleet's limits could not be read: {err}"), None),
    };
    let mut error = JobError::new(ErrorType::RateLimited, message);
    error.retry_after_ms = retry_after.map(millis);
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> ChatRequest {
        serde_json::from_value(json).unwrap()
    }

    /// README's figures: the estimate is 4 bytes per token plus 3 per message, which the
    /// mock counts exactly; on the recorded Anthropic stream it is under by 4 tokens, and
    /// the reservation still covers everything the call used.
    #[test]
    fn a_reservation_is_the_prompt_estimate_plus_the_cap() {
        let hello = request(serde_json::json!({
            "messages": [{"role": "user", "content": "Say hello there!"}],
            "max_tokens": 1024
        }));
        assert_eq!(estimate(&hello, 0).prompt_tokens, 7);
        assert_eq!(reservation(&hello, None), 7 + 1024);
        // tests/fixtures/anthropic/basic_response.txt reports 11 input and 6 output tokens.
        let fixture = include_str!("../../tests/fixtures/anthropic/basic_response.txt");
        assert!(fixture.contains("\"input_tokens\":11") && fixture.contains("\"output_tokens\":6"));
        assert!(reservation(&hello, None) >= 11 + 6);

        let uncapped = request(serde_json::json!({
            "messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "hi"}]
        }));
        assert_eq!(reservation(&uncapped, Some(256)), (2 + 3) + (1 + 3) + 256);
        assert_eq!(reservation(&uncapped, None), 9 + 1024);
    }
}
