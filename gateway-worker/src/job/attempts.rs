//! The attempts for one processing of a job: retries, fallbacks, cooldowns.
//!
//! Order of business, as LiteLLM users expect it: retry the same deployment on transient
//! errors (its budget per error class), then the model's other deployments, then its
//! `fallbacks` models; a context-window error switches to `context_window_fallbacks`, a
//! content-filter error to `content_policy_fallbacks`. A rate-limited deployment is left
//! for another one at once when there is one. Deployments cooling down are skipped; if
//! that leaves nothing, a batch job waits in the worker for the first to come back, as it
//! waits for a limit: up to its deadline, then it ends `expired`. It is not handed back to
//! the queue, because every hand-back would use one of its deliveries and an outage of a
//! few cooldowns would dead-letter a whole batch; each wait starts a new round of
//! `max_attempts`. An interactive job waits for the first to come back, or for a fleet-wide pause
//! to end, at most as long as it would wait for a limit (`limit_wait`): when that is
//! further away it ends at once with `retry_after_ms` (`unavailable` for a cooldown,
//! `rate_limited` for a pause), rather than hold its caller for the whole cooldown (an
//! HTTP client would see nothing for 30 s and then retry into the same wait). Every wait
//! stops at the job's deadline, and a cancel aborts the upstream request.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use llmq_schemas::{Attempt, AttemptRoute, Cost, ErrorType, JobError, Partial, Usage, UsageSource};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::admit::{self, NotAdmitted};
use super::millis;
use super::processing::JobSpec;
use super::reply::ReplySink;
use crate::context::WorkerContext;
use crate::metrics;
use crate::providers::AttemptReport;
use crate::providers::call::Upstream;
use crate::providers::{self, CallSpec, Completion, ProviderError};
use crate::retry::RetryDecision;
use crate::routing::{Candidate, ModelRoute, ProviderHandle};

/// How the attempts ended.
#[derive(Debug)]
pub enum AttemptsEnd {
    Succeeded(Box<Completion>),
    Failed {
        error: JobError,
        partial: Option<Partial>,
    },
    Cancelled,
    /// The deadline came first.
    Expired {
        error: JobError,
    },
}

/// One provider call's contribution to billing.
#[derive(Debug, Clone)]
pub struct CallUsage {
    pub attempt: u32,
    pub provider: String,
    pub upstream_model: String,
    pub usage: Usage,
    pub source: UsageSource,
    pub cost: Cost,
}

/// What the attempts did: how they ended, each attempt, each call's usage.
#[derive(Debug)]
pub struct AttemptsReport {
    pub end: AttemptsEnd,
    pub attempts: Vec<Attempt>,
    pub usage: Vec<CallUsage>,
    /// From pick-up to the first token of the attempt that succeeded.
    pub ttft: Option<Duration>,
}

/// Tries the model's deployments, then its fallbacks, until one answers or the job ends.
pub async fn try_deployments(
    ctx: &WorkerContext,
    job: JobSpec<'_>,
    model: &Arc<ModelRoute>,
    cancel: &CancellationToken,
    reply: &mut ReplySink,
) -> AttemptsReport {
    let mut attempts = AttemptLoop {
        ctx,
        job,
        cancel,
        attempts: Vec::new(),
        usage: Vec::new(),
        ttft: None,
        last_error: None,
        last_partial: None,
        waited: Duration::ZERO,
        round_start: 0,
    };
    let end = attempts.until_done(model, reply).await;
    AttemptsReport {
        end,
        attempts: attempts.attempts,
        usage: attempts.usage,
        ttft: attempts.ttft,
    }
}

/// The attempt loop's state: what it tried and learned so far.
struct AttemptLoop<'a> {
    ctx: &'a WorkerContext,
    job: JobSpec<'a>,
    cancel: &'a CancellationToken,
    attempts: Vec<Attempt>,
    usage: Vec<CallUsage>,
    ttft: Option<Duration>,
    last_error: Option<ProviderError>,
    last_partial: Option<Partial>,
    /// Time spent waiting in the worker for cooldowns to end.
    waited: Duration,
    /// The attempts made before the current round (a batch job starts a new round after
    /// each wait for a cooldown).
    round_start: usize,
}

/// The job's model and which special fallback lists it has used (each is used once).
struct Fallbacks<'a> {
    model: &'a Arc<ModelRoute>,
    used_context: &'a mut bool,
    used_policy: &'a mut bool,
}

/// Where to go after an attempt failed.
enum Next {
    SameDeployment,
    OtherCandidate,
    Replan(Vec<Candidate>),
    End(AttemptsEnd),
}

impl AttemptLoop<'_> {
    /// Tries the plan's candidates in turn, retrying and falling back as the errors say,
    /// until one answers or the job ends.
    async fn until_done(&mut self, model: &Arc<ModelRoute>, reply: &mut ReplySink) -> AttemptsEnd {
        let router = &self.ctx.router;
        let mut plan: VecDeque<Candidate> = router.plan(model, &mut rand::rng()).into();
        let mut used_context_fallbacks = false;
        let mut used_policy_fallbacks = false;
        loop {
            let mut shortest_cooldown: Option<Duration> = None;
            while let Some(candidate) = plan.pop_front() {
                if let Some(left) = self.ctx.cooldowns.remaining(candidate.deployment.index) {
                    shortest_cooldown = Some(shortest_cooldown.map_or(left, |s| s.min(left)));
                    continue;
                }
                let mut route = candidate.route;
                // Retries made on this deployment, per error class: each class has its own
                // budget (`[retry.per_class]`).
                let mut retries: HashMap<ErrorType, u32> = HashMap::new();
                loop {
                    if self.round_attempts() >= self.ctx.retry.max_attempts() {
                        return self.failed();
                    }
                    if let Some(end) = self.attempt(&candidate, route, reply).await {
                        return end;
                    }
                    let fallbacks = Fallbacks {
                        model,
                        used_context: &mut used_context_fallbacks,
                        used_policy: &mut used_policy_fallbacks,
                    };
                    match self
                        .after_failure(&candidate, &plan, &retries, fallbacks)
                        .await
                    {
                        Next::SameDeployment => {
                            if let Some(class) = self.last_error.as_ref().map(|e| e.class) {
                                *retries.entry(class).or_default() += 1;
                            }
                            route = AttemptRoute::Retry;
                        }
                        Next::OtherCandidate => break,
                        Next::Replan(candidates) => {
                            plan = candidates.into();
                            break;
                        }
                        Next::End(end) => return end,
                    }
                }
            }
            // The plan ran out. If deployments were skipped for cooling down (or a batch
            // job's failures just cooled them), wait for the first to come back;
            // otherwise the last error stands.
            let Some(wait) = shortest_cooldown.or_else(|| self.batch_cooling(model)) else {
                return self.failed();
            };
            if let Some(end) = self.cannot_wait(wait) {
                return end;
            }
            match self.sleep(wait).await {
                Ok(()) => self.waited_out(wait),
                Err(end) => return end,
            }
            plan = router.plan(model, &mut rand::rng()).into();
            used_context_fallbacks = false;
            used_policy_fallbacks = false;
        }
    }

    /// Attempts made in the current round.
    fn round_attempts(&self) -> u32 {
        (self.attempts.len() - self.round_start) as u32
    }

    /// After a wait for a cooldown: a batch job starts a new round of attempts (its
    /// failures were the outage's, not its own).
    fn waited_out(&mut self, wait: Duration) {
        self.waited += wait;
        if self.job.limit_wait.is_none() {
            self.round_start = self.attempts.len();
        }
    }

    /// For a batch job, the shortest cooldown among the model's deployments now: its own
    /// failures may have cooled the deployments it tried, and it waits for them rather
    /// than fail for an outage.
    fn batch_cooling(&self, model: &Arc<ModelRoute>) -> Option<Duration> {
        if self.job.limit_wait.is_some() {
            return None;
        }
        let plan = self.ctx.router.plan(model, &mut rand::rng());
        plan.iter()
            .filter_map(|c| self.ctx.cooldowns.remaining(c.deployment.index))
            .min()
    }

    /// `None` if the job may wait `wait` in the worker for a deployment to come back, else
    /// how it ends. A batch job always may (its sleep ends at its deadline, `expired`); an
    /// interactive job, which waits at most its `limit_wait` in all and never past its
    /// deadline, ends now.
    fn cannot_wait(&mut self, wait: Duration) -> Option<AttemptsEnd> {
        let limit_wait = self.job.limit_wait?;
        let budget = limit_wait.saturating_sub(self.waited);
        if wait > budget || Instant::now() + wait > self.job.deadline {
            return Some(self.unusable(wait));
        }
        None
    }

    /// An interactive job no deployment can serve within its wait: `unavailable` when no
    /// provider was called, else the last provider error; either way with when a
    /// deployment may be usable again. The job ends here: no delivery is used up.
    fn unusable(&mut self, wait: Duration) -> AttemptsEnd {
        let mut end = if self.last_error.is_some() {
            self.failed()
        } else {
            let message = format!(
                "no deployment of the model can be called for another {:.1} s (cooling down \
                 after failures), longer than the job may wait; retry after that",
                wait.as_secs_f64()
            );
            AttemptsEnd::Failed {
                error: JobError::new(ErrorType::Unavailable, message),
                partial: None,
            }
        };
        if let AttemptsEnd::Failed { error, .. } = &mut end {
            error.retry_after_ms = Some(millis(wait).max(1));
        }
        end
    }

    /// One provider call. `Some` ends the job (success, cancel, deadline); `None` says the
    /// attempt failed (see `last_error`) and the caller decides where to go next.
    async fn attempt(
        &mut self,
        candidate: &Candidate,
        route: AttemptRoute,
        reply: &mut ReplySink,
    ) -> Option<AttemptsEnd> {
        let provider = &candidate.deployment.provider;
        let permit = match self.permit(provider).await {
            Ok(permit) => permit,
            Err(end) => return Some(end),
        };
        let admission = match admit::call(self.ctx, &self.job, candidate, self.cancel).await {
            Ok(admission) => admission,
            Err(not_admitted) => return Some(self.not_admitted(not_admitted)),
        };
        let n = self.attempts.len() as u32 + 1;
        if route != AttemptRoute::Primary && route != AttemptRoute::Retry {
            metrics::fallback(route_label(route));
        }
        let report = self.call(candidate, n, reply).await;
        drop(permit);
        let Some(report) = report else {
            return Some(self.aborted(candidate, route, n));
        };
        if let Some(exhausted) = &report.exhausted {
            admit::pause(self.ctx, candidate, exhausted).await;
        }
        if let Some(admission) = admission {
            admission.reconcile(report.usage.map_or(0, |(usage, _)| usage.total_tokens));
        }
        self.record(candidate, route, n, &report);
        match report.result {
            Ok(completion) => {
                Some(self.succeeded(candidate, completion, report.latency, report.ttft))
            }
            Err(err) => {
                let partial = report.partial.map(|(content, tool_calls)| Partial {
                    attempt: n,
                    content,
                    tool_calls,
                });
                self.failed_attempt(candidate, n, err, partial, report.deltas_sent, reply)
                    .await;
                None
            }
        }
    }

    /// Counts attempt `n`, bills what it used, and adds it to the outcome's attempts.
    fn record(
        &mut self,
        candidate: &Candidate,
        route: AttemptRoute,
        n: u32,
        report: &AttemptReport,
    ) {
        let error = report.result.as_ref().err();
        metrics::attempt(
            &candidate.deployment.provider.name,
            error.map(|e| e.class),
            report.latency.as_secs_f64(),
            report.ttft.map(|t| t.as_secs_f64()),
        );
        self.bill(candidate, n, report);
        self.attempts.push(Attempt {
            error: error.map(|e| e.class),
            error_message: error.map(|e| e.message.clone()),
            http_status: report.http_status,
            latency_ms: millis(report.latency),
            ttft_ms: report.ttft.map(millis),
            usage: report.usage.map(|(usage, _)| usage),
            warnings: report.warnings.clone(),
            ..attempt_record(candidate, route, n)
        });
    }

    /// A request slot at the provider, unless the job is cancelled or expires first.
    async fn permit(&self, provider: &ProviderHandle) -> Result<OwnedSemaphorePermit, AttemptsEnd> {
        tokio::select! {
            permit = Arc::clone(&provider.permits).acquire_owned() => {
                permit.map_err(|_| self.internal("provider semaphore closed"))
            }
            () = self.cancel.cancelled() => Err(AttemptsEnd::Cancelled),
            () = tokio::time::sleep_until(self.job.deadline) => Err(self.expired()),
        }
    }

    /// Sends attempt `n` to the candidate; `None` if a cancel or the deadline dropped it
    /// mid-flight (which closes the connection, so the provider stops generating).
    async fn call(
        &self,
        candidate: &Candidate,
        n: u32,
        reply: &mut ReplySink,
    ) -> Option<AttemptReport> {
        let provider = &candidate.deployment.provider;
        let upstream_model = &candidate.deployment.upstream_model;
        let model_name = candidate.model.name.as_str();
        reply
            .started(n, &provider.name, upstream_model, model_name)
            .await;
        let upstream = Upstream {
            client: &provider.client,
            adapter: provider.adapter.as_ref(),
            timeouts: &provider.timeouts,
            max_response_bytes: self.ctx.config.worker.max_response_bytes,
        };
        // Taken once: a key rotated while this call runs is the next attempt's.
        let key = provider.key.current();
        let spec = CallSpec {
            request: self.job.request,
            upstream_model,
            stream: self.job.stream,
            default_max_tokens: candidate.model.default_max_tokens,
            invalid_tool_arguments: candidate.model.invalid_tool_arguments,
            key: key.as_deref(),
        };
        metrics::provider_in_flight(&provider.name, 1.0);
        let report = tokio::select! {
            report = providers::call(upstream, spec, reply) => Some(report),
            () = self.cancel.cancelled() => None,
            () = tokio::time::sleep_until(self.job.deadline) => None,
        };
        metrics::provider_in_flight(&provider.name, -1.0);
        report
    }

    /// An attempt dropped mid-flight: recorded as cancelled or expired, and it ends the job.
    fn aborted(&mut self, candidate: &Candidate, route: AttemptRoute, n: u32) -> AttemptsEnd {
        let cancelled = self.cancel.is_cancelled();
        let (error, message) = if cancelled {
            (ErrorType::Cancelled, "aborted: cancelled")
        } else {
            (ErrorType::DeadlineExceeded, "aborted: deadline")
        };
        self.attempts.push(Attempt {
            error: Some(error),
            error_message: Some(message.into()),
            ..attempt_record(candidate, route, n)
        });
        if cancelled {
            AttemptsEnd::Cancelled
        } else {
            self.expired()
        }
    }

    /// Prices what attempt `n` used (whatever its outcome: a refusal is charged too) and
    /// adds it to the processing's bill and the metrics.
    fn bill(&mut self, candidate: &Candidate, n: u32, report: &AttemptReport) {
        let Some((usage, source)) = report.usage else {
            return;
        };
        let provider = &candidate.deployment.provider;
        let upstream_model = &candidate.deployment.upstream_model;
        let cost = self
            .ctx
            .prices
            .cost(&provider.name, provider.kind, upstream_model, &usage);
        let model = candidate.model.name.as_str();
        metrics::tokens(
            &provider.name,
            model,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_prompt_tokens,
        );
        if let Some(usd) = cost.total_usd() {
            metrics::cost(&provider.name, model, usd);
        }
        self.usage.push(CallUsage {
            attempt: n,
            provider: provider.name.clone(),
            upstream_model: upstream_model.clone(),
            usage,
            source,
            cost,
        });
    }

    fn succeeded(
        &mut self,
        candidate: &Candidate,
        completion: Completion,
        latency: Duration,
        ttft: Option<Duration>,
    ) -> AttemptsEnd {
        self.ctx
            .cooldowns
            .record_success(candidate.deployment.index);
        // Time to first token of the job, not of the attempt.
        self.ttft = ttft.map(|ttft| self.job.picked_at.elapsed().saturating_sub(latency) + ttft);
        AttemptsEnd::Succeeded(Box::new(completion))
    }

    /// Records why attempt `n` failed: a `restart` for a producer that saw its deltas,
    /// the deployment's cooldown, and what the next decision needs.
    async fn failed_attempt(
        &mut self,
        candidate: &Candidate,
        n: u32,
        err: ProviderError,
        partial: Option<Partial>,
        deltas_sent: bool,
        reply: &mut ReplySink,
    ) {
        let deployment = &candidate.deployment;
        tracing::info!(
            attempt = n,
            provider = %deployment.provider.name,
            upstream_model = %deployment.upstream_model,
            error = %err,
            "attempt failed"
        );
        if deltas_sent {
            reply.restart(n, err.class, &err.message).await;
        }
        if let Some(cooldown) = self.ctx.cooldowns.record_failure(deployment.index, &err) {
            metrics::cooldown(&deployment.provider.name, err.class);
            tracing::info!(deployment = %deployment.label(), ?cooldown, "deployment cooling down");
        }
        self.last_partial = partial;
        self.last_error = Some(err);
    }

    /// Decides where the job goes after a failed attempt.
    async fn after_failure(
        &mut self,
        candidate: &Candidate,
        plan: &VecDeque<Candidate>,
        retries: &HashMap<ErrorType, u32>,
        fallbacks: Fallbacks<'_>,
    ) -> Next {
        let Some(err) = self.last_error.clone() else {
            return Next::OtherCandidate;
        };
        if let Some(next) = self.special_fallback(candidate, &err, fallbacks) {
            return next;
        }
        let done = retries.get(&err.class).copied().unwrap_or(0);
        match self.ctx.retry.decide(&err, done, rand::random::<f64>()) {
            RetryDecision::Stop => Next::End(self.failed()),
            RetryDecision::NextDeployment => Next::OtherCandidate,
            RetryDecision::SameAfter(delay) => {
                self.retry_or_move(candidate, plan, &err, delay).await
            }
        }
    }

    /// A context-window or content-filter error switches to the model's list for it (once
    /// each), or ends the job: no other deployment of the same model would do better.
    fn special_fallback(
        &mut self,
        candidate: &Candidate,
        err: &ProviderError,
        fallbacks: Fallbacks<'_>,
    ) -> Option<Next> {
        let (used, list, route) = match err.class {
            ErrorType::ContextWindowExceeded => (
                fallbacks.used_context,
                &candidate.model.context_window_fallbacks,
                AttemptRoute::ContextWindowFallback,
            ),
            ErrorType::ContentFiltered => (
                fallbacks.used_policy,
                &candidate.model.content_policy_fallbacks,
                AttemptRoute::ContentPolicyFallback,
            ),
            _ => return None,
        };
        let has_list = match err.class {
            ErrorType::ContextWindowExceeded => {
                !fallbacks.model.context_window_fallbacks.is_empty()
            }
            _ => !fallbacks.model.content_policy_fallbacks.is_empty(),
        };
        if *used || !has_list {
            return Some(Next::End(self.failed()));
        }
        *used = true;
        let router = &self.ctx.router;
        Some(Next::Replan(router.plan_for(list, route, &mut rand::rng())))
    }

    /// A retryable error: wait and retry the same deployment, or move on when another
    /// deployment can take the job now (a rate limit or a cooldown is better left
    /// alone). A batch job leaves a deployment that is cooling down, to wait for the
    /// cooldown with the plan; an interactive job waits up to its `limit_wait`, else ends
    /// now.
    async fn retry_or_move(
        &mut self,
        candidate: &Candidate,
        plan: &VecDeque<Candidate>,
        err: &ProviderError,
        delay: Duration,
    ) -> Next {
        let cooldowns = &self.ctx.cooldowns;
        let elsewhere = plan
            .iter()
            .any(|c| cooldowns.remaining(c.deployment.index).is_none());
        let here_cooling = cooldowns.remaining(candidate.deployment.index).is_some();
        let batch = self.job.limit_wait.is_none();
        if (elsewhere || batch) && here_cooling || elsewhere && err.class == ErrorType::RateLimited
        {
            return Next::OtherCandidate;
        }
        if delay > self.ctx.retry.max_in_worker_wait() {
            if elsewhere {
                return Next::OtherCandidate;
            }
            if let Some(end) = self.cannot_wait(delay) {
                return Next::End(end);
            }
            self.waited += delay;
        }
        match self.sleep(delay).await {
            Ok(()) => Next::SameDeployment,
            Err(end) => Next::End(end),
        }
    }

    /// Waits unless the deadline or a cancel comes first.
    async fn sleep(&self, delay: Duration) -> Result<(), AttemptsEnd> {
        if Instant::now() + delay > self.job.deadline {
            return Err(self.expired());
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.cancel.cancelled() => Err(AttemptsEnd::Cancelled),
        }
    }

    /// A call the limits did not admit ends the job.
    fn not_admitted(&self, not_admitted: NotAdmitted) -> AttemptsEnd {
        match not_admitted {
            NotAdmitted::Cancelled => AttemptsEnd::Cancelled,
            NotAdmitted::Expired => self.expired(),
            NotAdmitted::RateLimited(error) => AttemptsEnd::Failed {
                error,
                partial: None,
            },
        }
    }

    fn failed(&mut self) -> AttemptsEnd {
        match self.last_error.take() {
            Some(err) => AttemptsEnd::Failed {
                error: job_error(&err, self.attempts.last()),
                partial: self.last_partial.take(),
            },
            None => self.internal("no deployment could be tried"),
        }
    }

    fn expired(&self) -> AttemptsEnd {
        let message = match &self.last_error {
            Some(err) => format!("the job's deadline passed while retrying; last error: {err}"),
            None => "the job's deadline passed before it could finish".to_owned(),
        };
        AttemptsEnd::Expired {
            error: JobError::new(ErrorType::DeadlineExceeded, message),
        }
    }

    fn internal(&self, message: &str) -> AttemptsEnd {
        AttemptsEnd::Failed {
            error: JobError::new(ErrorType::Internal, message),
            partial: None,
        }
    }
}

/// Attempt `n` on `candidate`, with nothing known of its result yet.
fn attempt_record(candidate: &Candidate, route: AttemptRoute, n: u32) -> Attempt {
    Attempt {
        n,
        route,
        model: candidate.model.name.to_string(),
        provider: candidate.deployment.provider.name.clone(),
        upstream_model: candidate.deployment.upstream_model.clone(),
        error: None,
        error_message: None,
        http_status: None,
        latency_ms: 0,
        ttft_ms: None,
        usage: None,
        warnings: Vec::new(),
    }
}

fn job_error(err: &ProviderError, attempt: Option<&Attempt>) -> JobError {
    JobError {
        kind: err.class,
        message: err.message.clone(),
        provider: attempt.map(|a| a.provider.clone()),
        provider_status: err.status,
        provider_code: err.code.clone(),
        rule: None,
        retry_after_ms: None,
    }
}

fn route_label(route: AttemptRoute) -> &'static str {
    match route {
        AttemptRoute::Primary => "primary",
        AttemptRoute::Retry => "retry",
        AttemptRoute::DeploymentFallback => "deployment_fallback",
        AttemptRoute::ModelFallback => "model_fallback",
        AttemptRoute::ContextWindowFallback => "context_window_fallback",
        AttemptRoute::ContentPolicyFallback => "content_policy_fallback",
    }
}
