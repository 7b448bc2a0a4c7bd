//! Every metric the worker exports, declared once, with bounded labels only.
//!
//! Labels are models and providers from the config, tiers, outcome statuses and error
//! classes: all finite sets. Never a job id or error text, and never a model name as a
//! job spells it: a model this worker does not serve is [`OTHER_MODEL`]. The limit
//! metrics' scopes ([`scope_labels`]) are bounded the same way: a provider and a
//! deployment (upstream model) come from this worker's config, a tenant and a tenant's
//! model from the tenant registry, which is a finite set an admin configures (a job
//! cannot name a tenant or model into existence: tenant limits exist only for registry
//! entries, and a tenant's model limit only for models its entry lists).
//! A tenant label appears also on the budget metrics (at the end), and only for tenants
//! in the registry: a finite set someone configured, never a tenant a job names.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use llmq_runtime::limits::{GateView, Limiter, Scope};
use llmq_schemas::{ErrorType, OutcomeStatus, Tier};
use metrics::{
    Label, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

pub const JOBS_RECEIVED: &str = "llmq_jobs_received_total";
pub const JOBS_FINISHED: &str = "llmq_jobs_finished_total";
pub const JOB_DURATION: &str = "llmq_job_duration_seconds";
pub const QUEUE_WAIT: &str = "llmq_job_queue_wait_seconds";
pub const JOBS_IN_FLIGHT: &str = "llmq_jobs_in_flight";
pub const REDELIVERIES: &str = "llmq_job_redeliveries_total";
pub const OUTCOMES_RESENT: &str = "llmq_outcomes_resent_total";
pub const DEAD_LETTERS: &str = "llmq_dead_letters_total";
pub const REQUEUES: &str = "llmq_jobs_requeued_total";
pub const ATTEMPTS: &str = "llmq_provider_attempts_total";
pub const PROVIDER_LATENCY: &str = "llmq_provider_latency_seconds";
pub const PROVIDER_TTFT: &str = "llmq_provider_ttft_seconds";
pub const PROVIDER_IN_FLIGHT: &str = "llmq_provider_requests_in_flight";
pub const FALLBACKS: &str = "llmq_fallbacks_total";
pub const COOLDOWNS: &str = "llmq_deployment_cooldowns_total";
pub const TOKENS: &str = "llmq_tokens_total";
pub const COST: &str = "llmq_cost_microusd_total";
pub const PUBLISH_RETRIES: &str = "llmq_publish_retries_total";
pub const POLICY_DENIALS: &str = "llmq_policy_denials_total";
pub const CONFIG_RELOADS: &str = "llmq_config_reloads_total";
pub const LIMIT_PERMITS_IN_USE: &str = "llmq_limit_permits_in_use";
pub const LIMIT_PERMITS_HELD: &str = "llmq_limit_permits_held";
pub const LIMIT_MAX: &str = "llmq_limit_max";
pub const LIMIT_JOBS_WAITING: &str = "llmq_limit_jobs_waiting";
pub const LIMIT_WAITS: &str = "llmq_limit_waits_total";
pub const LIMIT_WAIT: &str = "llmq_limit_wait_seconds";
pub const LIMIT_PAUSES: &str = "llmq_limit_pauses_total";
pub const TENANT_JOBS_HELD: &str = "llmq_tenant_jobs_held";
pub const QUEUE_PENDING: &str = "llmq_queue_jobs_pending";
pub const QUEUE_UNACKED: &str = "llmq_queue_jobs_unacked";
pub const QUEUE_OLDEST_AGE: &str = "llmq_queue_oldest_job_age_seconds";
pub const MODEL_SERVED: &str = "llmq_worker_model_served";
pub const BATCH_WINDOW: &str = "llmq_worker_batch_window";

/// How often the limit gauges are read from the limiter.
const LIMIT_SAMPLE: Duration = Duration::from_millis(250);

/// The `model` label of every model not in this worker's config (see
/// `WorkerContext::model_label`).
pub const OTHER_MODEL: &str = "_other";

/// Installs the Prometheus recorder once per process (tests run several workers in one
/// process; they share it) and returns the handle `/metrics` renders.
/// Why the metrics recorder could not be installed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetricsError {
    #[error("invalid histogram buckets: {0}")]
    Buckets(String),
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
}

pub fn install() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, MetricsError>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency_buckets = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                300.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)
                .map_err(|err| MetricsError::Buckets(err.to_string()))?
                .install_recorder()
                .map_err(|err| MetricsError::Recorder(err.to_string()))?;
            describe();
            Ok(handle)
        })
        .clone()
}

fn describe() {
    describe_budgets();
    describe_queue();
    describe_reloads();
    describe_counter!(
        JOBS_RECEIVED,
        Unit::Count,
        "Job deliveries received, per model and tier."
    );
    describe_counter!(
        JOBS_FINISHED,
        Unit::Count,
        "Jobs that reached a final outcome, per model, tier and status."
    );
    describe_histogram!(
        JOB_DURATION,
        Unit::Seconds,
        "From pick-up to outcome, per model and status."
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "From submission to pick-up, per model and tier."
    );
    describe_gauge!(JOBS_IN_FLIGHT, Unit::Count, "Jobs this worker holds now.");
    describe_gauge!(
        BATCH_WINDOW,
        Unit::Count,
        "Batch jobs this worker may run at once now: its batch share, narrowed while interactive jobs wait."
    );
    describe_counter!(
        REDELIVERIES,
        Unit::Count,
        "Deliveries of a job that had been delivered before."
    );
    describe_counter!(
        OUTCOMES_RESENT,
        Unit::Count,
        "Redelivered jobs answered from the stored outcome without a provider call."
    );
    describe_counter!(
        DEAD_LETTERS,
        Unit::Count,
        "Messages moved to the dead-letter stream, per reason."
    );
    describe_counter!(
        REQUEUES,
        Unit::Count,
        "Jobs handed back to the queue (nak), per reason."
    );
    describe_counter!(
        ATTEMPTS,
        Unit::Count,
        "Provider calls, per provider and result (ok or error class)."
    );
    describe_histogram!(
        PROVIDER_LATENCY,
        Unit::Seconds,
        "Provider call duration, per provider."
    );
    describe_histogram!(
        PROVIDER_TTFT,
        Unit::Seconds,
        "Streaming: time to first token, per provider."
    );
    describe_gauge!(
        PROVIDER_IN_FLIGHT,
        Unit::Count,
        "Provider requests in flight, per provider."
    );
    describe_counter!(
        FALLBACKS,
        Unit::Count,
        "Attempts routed away from the primary deployment, per route."
    );
    describe_counter!(
        COOLDOWNS,
        Unit::Count,
        "Deployment cooldowns started, per provider and cause."
    );
    describe_counter!(
        TOKENS,
        Unit::Count,
        "Tokens, per provider, model and kind (prompt, completion, cached)."
    );
    describe_counter!(
        COST,
        Unit::Count,
        "Cost of priced usage in millionths of a US dollar, per provider and model."
    );
    describe_counter!(
        POLICY_DENIALS,
        Unit::Count,
        "Jobs the tenant registry refused, per rule (a fixed set)."
    );
    describe_limits();
    describe_counter!(
        PUBLISH_RETRIES,
        Unit::Count,
        "Durable publishes retried after a timeout, per stream."
    );
}

pub fn job_received(model: &str, tier: Tier, redelivered: bool) {
    counter!(JOBS_RECEIVED, "model" => model.to_owned(), "tier" => tier.as_str()).increment(1);
    if redelivered {
        counter!(REDELIVERIES, "model" => model.to_owned()).increment(1);
    }
}

pub fn job_finished(model: &str, tier: Tier, status: OutcomeStatus, seconds: f64) {
    counter!(JOBS_FINISHED, "model" => model.to_owned(), "tier" => tier.as_str(), "status" => status.as_str())
        .increment(1);
    histogram!(JOB_DURATION, "model" => model.to_owned(), "status" => status.as_str())
        .record(seconds);
}

pub fn queue_wait(model: &str, tier: Tier, seconds: f64) {
    histogram!(QUEUE_WAIT, "model" => model.to_owned(), "tier" => tier.as_str()).record(seconds);
}

pub fn jobs_in_flight(delta: f64) {
    gauge!(JOBS_IN_FLIGHT).increment(delta);
}

pub fn batch_window(window: usize) {
    gauge!(BATCH_WINDOW).set(window as f64);
}

pub fn outcome_resent() {
    counter!(OUTCOMES_RESENT).increment(1);
}

pub fn dead_letter(reason: &'static str) {
    counter!(DEAD_LETTERS, "reason" => reason).increment(1);
}

pub fn requeued(reason: &'static str) {
    counter!(REQUEUES, "reason" => reason).increment(1);
}

pub fn attempt(provider: &str, error: Option<ErrorType>, seconds: f64, ttft: Option<f64>) {
    let result = error.map_or("ok", |e| e.as_str());
    counter!(ATTEMPTS, "provider" => provider.to_owned(), "result" => result).increment(1);
    histogram!(PROVIDER_LATENCY, "provider" => provider.to_owned()).record(seconds);
    if let Some(ttft) = ttft {
        histogram!(PROVIDER_TTFT, "provider" => provider.to_owned()).record(ttft);
    }
}

pub fn provider_in_flight(provider: &str, delta: f64) {
    gauge!(PROVIDER_IN_FLIGHT, "provider" => provider.to_owned()).increment(delta);
}

pub fn fallback(route: &'static str) {
    counter!(FALLBACKS, "route" => route).increment(1);
}

pub fn cooldown(provider: &str, cause: ErrorType) {
    counter!(COOLDOWNS, "provider" => provider.to_owned(), "cause" => cause.as_str()).increment(1);
}

/// `model`: the configured model whose deployment was called (a fallback's own name).
pub fn tokens(provider: &str, model: &str, prompt: u64, completion: u64, cached: u64) {
    for (kind, n) in [
        ("prompt", prompt),
        ("completion", completion),
        ("cached", cached),
    ] {
        counter!(TOKENS, "provider" => provider.to_owned(), "model" => model.to_owned(), "kind" => kind)
            .increment(n);
    }
}

pub fn cost(provider: &str, model: &str, usd: f64) {
    // Counters are integers: count millionths of a dollar.
    let micro = (usd * 1e6).round();
    if micro.is_finite() && micro > 0.0 {
        counter!(COST, "provider" => provider.to_owned(), "model" => model.to_owned())
            .increment(micro as u64);
    }
}

fn describe_reloads() {
    describe_counter!(
        CONFIG_RELOADS,
        Unit::Count,
        "Config reloads (SIGHUP or a changed file), per result: applied or rejected (the running config stayed)."
    );
    // Both series exist from start-up on, so an alert on `rejected` sees its first one.
    for result in ["applied", "rejected"] {
        counter!(CONFIG_RELOADS, "result" => result).increment(0);
    }
}

/// A config reload, `applied` or `rejected`.
pub fn config_reload(result: &'static str) {
    counter!(CONFIG_RELOADS, "result" => result).increment(1);
}

pub fn policy_denied(rule: llmq_schemas::PolicyRule) {
    counter!(POLICY_DENIALS, "rule" => rule.as_str()).increment(1);
}

pub fn publish_retry(stream: &'static str) {
    counter!(PUBLISH_RETRIES, "stream" => stream).increment(1);
}

fn describe_limits() {
    describe_gauge!(
        LIMIT_PERMITS_IN_USE,
        Unit::Count,
        "Concurrency permits of a fleet-wide limit this worker's calls or jobs use now, per scope."
    );
    describe_gauge!(
        LIMIT_PERMITS_HELD,
        Unit::Count,
        "Concurrency permits of a fleet-wide limit this worker holds (in use or lingering), per scope."
    );
    describe_gauge!(
        LIMIT_MAX,
        Unit::Count,
        "A fleet-wide limit as configured, per scope and limit (concurrency, requests or tokens per window)."
    );
    describe_gauge!(
        LIMIT_JOBS_WAITING,
        Unit::Count,
        "Jobs of this worker waiting for a fleet-wide limit (or an upstream pause), per scope holding them."
    );
    describe_counter!(
        LIMIT_WAITS,
        Unit::Count,
        "Admissions that had to wait for a fleet-wide limit, per scope (the first that held them back) and result (admitted, gave_up)."
    );
    describe_histogram!(
        LIMIT_WAIT,
        Unit::Seconds,
        "Time an admission waited for a fleet-wide limit, per scope."
    );
    describe_counter!(
        LIMIT_PAUSES,
        Unit::Count,
        "Fleet-wide pauses of a deployment started from the provider's rate-limit headers (remaining 0)."
    );
    describe_gauge!(
        TENANT_JOBS_HELD,
        Unit::Count,
        "Jobs of this worker held by their tenant's limits (tenant or tenant x model), per tenant."
    );
}

/// A limit scope's labels: `scope` (its kind) and its names, all from configuration or
/// the registry (see the module docs).
pub fn scope_labels(scope: &Scope) -> Vec<Label> {
    let mut labels = vec![Label::from_static_parts("scope", scope.kind())];
    let mut add = |key: &'static str, value: &str| labels.push(Label::new(key, value.to_owned()));
    match scope {
        Scope::Provider(provider) => add("provider", provider),
        Scope::Deployment { provider, model } => {
            add("provider", provider);
            add("deployment", model);
        }
        Scope::Tenant(tenant) => add("tenant", tenant),
        Scope::TenantModel { tenant, model } => {
            add("tenant", tenant);
            add("model", model);
        }
        // Workers never admit against a key's scope (the edge does); the id is an admin's.
        Scope::ApiKey(id) => add("api_key", id),
    }
    labels
}

/// An admission that waited for `scope`: admitted in the end, or not.
pub fn limit_waited(scope: &Scope, admitted: bool, seconds: f64) {
    let mut labels = scope_labels(scope);
    histogram!(LIMIT_WAIT, labels.clone()).record(seconds);
    let result = if admitted { "admitted" } else { "gave_up" };
    labels.push(Label::from_static_parts("result", result));
    counter!(LIMIT_WAITS, labels).increment(1);
}

/// A deployment paused fleet-wide from its provider's headers.
pub fn limit_paused(provider: &str, deployment: &str) {
    counter!(LIMIT_PAUSES, "provider" => provider.to_owned(), "deployment" => deployment.to_owned())
        .increment(1);
}

/// Keeps the limit gauges current from the limiter's gates, until `stop`.
pub async fn follow_limits(limiter: Arc<Limiter>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(LIMIT_SAMPLE);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = HashSet::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        sample_limits(&limiter.gates(), &mut seen);
    }
}

/// Sets every gauge from `gates`; scopes seen before and gone now read 0.
fn sample_limits(gates: &[GateView], seen: &mut HashSet<Scope>) {
    let mut held_by_tenant: BTreeMap<String, usize> = BTreeMap::new();
    let mut now = HashSet::new();
    for gate in gates {
        let labels = scope_labels(&gate.scope);
        gauge!(LIMIT_PERMITS_IN_USE, labels.clone()).set(f64::from(gate.in_use));
        gauge!(LIMIT_PERMITS_HELD, labels.clone()).set(f64::from(gate.held));
        gauge!(LIMIT_JOBS_WAITING, labels.clone()).set(gate.waiting as f64);
        let maxima = [
            ("concurrency", gate.spec.concurrency().map(u64::from)),
            ("requests", gate.spec.requests()),
            ("tokens", gate.spec.tokens()),
        ];
        for (limit, value) in maxima {
            if let Some(value) = value {
                let mut labels = labels.clone();
                labels.push(Label::from_static_parts("limit", limit));
                gauge!(LIMIT_MAX, labels).set(value as f64);
            }
        }
        if let Scope::Tenant(tenant) | Scope::TenantModel { tenant, .. } = &gate.scope {
            *held_by_tenant.entry(tenant.clone()).or_default() += gate.waiting;
        }
        now.insert(gate.scope.clone());
    }
    for gone in seen.difference(&now) {
        gauge!(LIMIT_JOBS_WAITING, scope_labels(gone)).set(0.0);
        if let Scope::Tenant(tenant) | Scope::TenantModel { tenant, .. } = gone {
            held_by_tenant.entry(tenant.clone()).or_default();
        }
    }
    for (tenant, held) in held_by_tenant {
        gauge!(TENANT_JOBS_HELD, "tenant" => tenant).set(held as f64);
    }
    seen.extend(now);
}

// --- the queue, sampled from consumer info (see `queue_gauges`): per model and tier ---

fn describe_queue() {
    describe_gauge!(
        QUEUE_PENDING,
        Unit::Count,
        "Jobs stored and not yet delivered, per model and tier (the consumer's pending count; every worker serving the model reports it: aggregate with max)."
    );
    describe_gauge!(
        QUEUE_UNACKED,
        Unit::Count,
        "Jobs delivered and not yet acknowledged (running or held in a worker), per model and tier."
    );
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest job not yet acknowledged, per model and tier (0 when none waits)."
    );
    describe_gauge!(
        MODEL_SERVED,
        Unit::Count,
        "1 for each model this worker consumes, 0 for one it stopped serving."
    );
}

/// One consumer's state at a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueSample {
    pub pending: u64,
    pub unacked: u64,
    pub oldest_age: Duration,
}

pub fn queue_sampled(model: &str, tier: Tier, sample: QueueSample) {
    let labels = [
        ("model", model.to_owned()),
        ("tier", tier.as_str().to_owned()),
    ];
    gauge!(QUEUE_PENDING, &labels).set(sample.pending as f64);
    gauge!(QUEUE_UNACKED, &labels).set(sample.unacked as f64);
    gauge!(QUEUE_OLDEST_AGE, &labels).set(sample.oldest_age.as_secs_f64());
}

pub fn model_served(model: &str, served: bool) {
    gauge!(MODEL_SERVED, "model" => model.to_owned()).set(if served { 1.0 } else { 0.0 });
}

// --- budgets: per tenant (registry tenants only: a finite, configured set) and period ---

pub const BUDGET_SPEND: &str = "llmq_budget_spend_usd";
pub const BUDGET_LIMIT: &str = "llmq_budget_limit_usd";
pub const BUDGET_REMAINING: &str = "llmq_budget_remaining_usd";
pub const BUDGET_OVER: &str = "llmq_budget_over";
pub const BUDGET_REFUSALS: &str = "llmq_budget_refusals_total";
pub const BUDGET_OVER_EVENTS: &str = "llmq_budget_over_events_total";

fn describe_budgets() {
    describe_gauge!(
        BUDGET_SPEND,
        "Tenant spend in US dollars this UTC day or month (the fleet's total, as this worker last read it), per tenant and period."
    );
    describe_gauge!(
        BUDGET_LIMIT,
        "Tenant budget in US dollars, per tenant and period."
    );
    describe_gauge!(
        BUDGET_REMAINING,
        "Budget minus spend in US dollars (negative: over), per tenant and period."
    );
    describe_gauge!(
        BUDGET_OVER,
        "1 when the tenant's spend has reached its budget for the period (hard or soft), else 0."
    );
    describe_counter!(
        BUDGET_REFUSALS,
        Unit::Count,
        "Jobs refused budget_exceeded by a hard budget, per tenant and period."
    );
    describe_counter!(
        BUDGET_OVER_EVENTS,
        Unit::Count,
        "Usage events flagged over_budget (the job ran: soft budget, or its cost crossed a hard one), per tenant and period."
    );
}

/// A tenant's spend against one period's budget (`budget_usd`: `None` without one).
pub fn budget_state(tenant: &str, period: &'static str, spend_usd: f64, budget_usd: Option<f64>) {
    let labels = [("tenant", tenant.to_owned()), ("period", period.to_owned())];
    gauge!(BUDGET_SPEND, &labels).set(spend_usd);
    if let Some(budget) = budget_usd {
        gauge!(BUDGET_LIMIT, &labels).set(budget);
        gauge!(BUDGET_REMAINING, &labels).set(budget - spend_usd);
        gauge!(BUDGET_OVER, &labels).set(if spend_usd >= budget { 1.0 } else { 0.0 });
    }
}

pub fn budget_refused(tenant: &str, period: &'static str) {
    counter!(BUDGET_REFUSALS, "tenant" => tenant.to_owned(), "period" => period).increment(1);
}

pub fn budget_over_event(tenant: &str, period: &'static str) {
    counter!(BUDGET_OVER_EVENTS, "tenant" => tenant.to_owned(), "period" => period).increment(1);
}
