//! `limits`: what fleet-wide limits cost, and what waiting on one costs the broker.
//!
//! Every variant enforces the same tenant registry, so the only difference between them is
//! the limits:
//! - (a) `none`: no limit anywhere;
//! - (b) `generous`: provider, deployment and tenant limits (`concurrency`, `rpm`, `tpm`)
//!   far above the load, so every job takes permits and allotments and never waits;
//! - (c) limits being reached at the highest concurrency: `rate-reached` (the tenant's
//!   `rpm` per 1 s window well below what llmq serves) and `concurrency-reached` (the
//!   provider's `concurrency` an eighth of the jobs in flight, against a mock that takes
//!   5 ms, so that calls overlap and the limit, not the CPU, is what bounds them);
//!
//! each with one and with three worker processes sharing the limits. (a) and (b) run side
//! by side and alternate ([`super::ab`]): the goal is that generous limits cost at most 10 %
//! of throughput and 0.2 ms of p50 at one job in flight (reported, not asserted). In (c) the
//! upstream's peak concurrency must stay within the concurrency limit: that is what the
//! limit promises, across the fleet.
//!
//! (d) `waiting`: 10,000 batch jobs of a tenant whose `rpm = 1` per hour is used up. They
//! wait: the worker holds `fetch_batch` of them and pulls no more, the rest stay in the
//! queue. nats-server's and the worker's CPU over a few seconds of that waiting is compared
//! with the same llmq idle, and so is what the broker is asked meanwhile (JetStream API
//! requests and acks by kind, counted by a subscriber). The consumer's delivery counters
//! must not climb: more deliveries than jobs finished would be a nak loop.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use async_nats::jetstream;
use futures::StreamExt;
use llmq_schemas::{ModelName, Subjects, Tier};
use serde::Serialize;
use tokio::task::JoinSet;

use super::ab::{self, Arm, Delta, Step};
use super::e2e::worker_spec;
use super::load::{Failures, Window};
use super::procstat::{Meter, ProcUsage, Watched};
use super::report::{Facts, Report, Table, cores, rate};
use super::setup::{
    Env, Llmq, MODEL, MockChild, MockSpec, PROMPT, UPSTREAM_MODEL, Variant, WorkerSpec, job,
    job_payload, run_job,
};
use super::{Options, print_setup};
use crate::worker::{WorkerSetup, openai_mock_provider};

/// The producer's tenant in every variant.
const TENANT: &str = "bench-team";

/// The tenant with no limits: variants (a) and `concurrency-reached`.
const REGISTRY_NONE: &str = "[tenants.bench-team]\nmodels = [\"bench*\"]\nmax_wait = \"60s\"\n";

/// Limits no load on this machine comes near (per 60 s window).
const GENEROUS: &str = "concurrency = 1000000, rpm = 1000000000, tpm = 1000000000000";

/// The tenant's requests per 1 s window in `rate-reached`.
const REACHED_RPS: i64 = 300;

/// The upstream's latency in `concurrency-reached`.
const REACHED_LATENCY: Duration = Duration::from_millis(5);

/// Goals from the issue, reported against.
const GOAL_THROUGHPUT_RATIO: f64 = 0.90;
const GOAL_ADDED_P50_US: i64 = 200;

/// A variant's worker config and registry.
struct Limits {
    name: &'static str,
    provider: String,
    deployment: String,
    registry: String,
}

impl Limits {
    fn none() -> Limits {
        Limits {
            name: "none",
            provider: String::new(),
            deployment: String::new(),
            registry: REGISTRY_NONE.into(),
        }
    }

    fn generous() -> Limits {
        Limits {
            name: "generous",
            provider: GENEROUS.into(),
            deployment: GENEROUS.into(),
            registry: format!(
                "{REGISTRY_NONE}[tenants.bench-team.limits]\n{}\n",
                GENEROUS.replace(", ", "\n")
            ),
        }
    }

    fn rate_reached() -> Limits {
        Limits {
            name: "rate-reached",
            provider: String::new(),
            deployment: String::new(),
            registry: format!(
                "{REGISTRY_NONE}[tenants.bench-team.limits]\nrpm = {REACHED_RPS}\nwindow = \"1s\"\n"
            ),
        }
    }

    fn concurrency_reached(permits: usize) -> Limits {
        Limits {
            name: "concurrency-reached",
            provider: format!("concurrency = {permits}"),
            deployment: String::new(),
            registry: REGISTRY_NONE.into(),
        }
    }

    /// The providers and models of the worker config, with these limits.
    fn body(&self, spec: WorkerSpec) -> String {
        let mut provider = openai_mock_provider(spec.max_concurrency);
        if !self.provider.is_empty() {
            provider.push_str(&format!("limits = {{ {} }}\n", self.provider));
        }
        let deployment = if self.deployment.is_empty() {
            String::new()
        } else {
            format!(", limits = {{ {} }}", self.deployment)
        };
        format!(
            "{provider}\n[models.{MODEL}]\ndeployments = [{{ provider = \"mock\", model = \"{UPSTREAM_MODEL}\"{deployment} }}]\n"
        )
    }

    /// Starts this variant with `workers` worker processes.
    async fn start(
        &self,
        mock_url: &str,
        spec: WorkerSpec,
        workers: usize,
    ) -> anyhow::Result<Llmq> {
        let body = self.body(spec);
        let configure = |s: &mut WorkerSetup| {
            s.body = body.clone();
            s.set("tenants", "mode", "\"enforced\"")
                .set("limits", "interactive_max_wait", "\"60s\"")
                .set("worker", "shutdown_grace", "\"2s\"");
        };
        let variant = Variant {
            registry: Some(&self.registry),
            tenant: Some(TENANT),
            configure: Some(&configure),
        };
        Llmq::start_with(mock_url, spec, workers, &variant)
            .await
            .with_context(|| format!("start variant {}", self.name))
    }
}

/// A variant whose limit the load reaches.
#[derive(Debug, Clone, Serialize)]
pub struct ReachedStep {
    #[serde(flatten)]
    pub step: Step,
    pub limit: String,
    /// What the limit allows: the rate, or permits over the upstream's latency.
    pub ideal_jobs_per_sec: f64,
    /// The most requests the upstream saw at once (all workers together).
    pub upstream_peak: usize,
}

/// The consumer and the buckets at one moment of the waiting.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct QueueState {
    /// Deliveries so far (the consumer's delivered sequence).
    pub delivered: u64,
    pub ack_pending: usize,
    pub redelivered: usize,
    /// Jobs in the queue not yet delivered.
    pub pending: u64,
    /// Jobs in the stream (WorkQueue: not yet acknowledged).
    pub stream_jobs: u64,
    /// Writes to the limits bucket so far (its stream's last sequence).
    pub limits_writes: u64,
}

/// What the broker was asked during a sampled span, per second: JetStream API requests
/// by kind and acknowledgements by kind (`+ACK`, `-NAK`, `+WPI`, ...).
pub type Traffic = BTreeMap<String, f64>;

#[derive(Debug, Clone, Serialize)]
pub struct WaitReport {
    pub jobs: usize,
    pub sample_ms: u64,
    pub idle: Vec<ProcUsage>,
    pub waiting: Vec<ProcUsage>,
    pub idle_traffic: Traffic,
    pub waiting_traffic: Traffic,
    pub before: QueueState,
    pub after: QueueState,
    pub failures: Failures,
}

#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Serialize)]
pub struct LimitsReport {
    pub setup: Facts,
    pub steps: Vec<Step>,
    pub deltas: Vec<Delta>,
    pub reached: Vec<ReachedStep>,
    pub goals: Vec<Goal>,
    pub wait: Option<WaitReport>,
}

impl LimitsReport {
    pub fn tables(&self) -> Vec<Table> {
        let mut tables = vec![
            ab::steps_table("limits: none (a) vs generous (b)", &self.steps),
            ab::deltas_table(
                "limits: what limits cost per job (variant - none, same run)",
                &self.deltas,
            ),
            self.reached_table(),
            self.goals_table(),
        ];
        if let Some(wait) = &self.wait {
            tables.push(wait.table());
        }
        tables
    }

    fn reached_table(&self) -> Table {
        let mut t = Table::new(
            "limits: (c) limits being reached",
            &[
                "variant",
                "workers",
                "concurrency",
                "limit",
                "jobs/s",
                "ideal jobs/s",
                "of ideal",
                "p50 ms",
                "p99 ms",
                "upstream peak",
                "failed",
            ],
        );
        for r in &self.reached {
            let s = &r.step;
            t.row(vec![
                s.variant.to_owned(),
                s.workers.to_string(),
                s.concurrency.to_string(),
                r.limit.clone(),
                rate(s.jobs_per_sec),
                rate(r.ideal_jobs_per_sec),
                format!("{:.2}", s.jobs_per_sec / r.ideal_jobs_per_sec.max(1e-9)),
                super::report::pct(&s.latency, |s| s.p50_us),
                super::report::pct(&s.latency, |s| s.p99_us),
                r.upstream_peak.to_string(),
                s.failures.count.to_string(),
            ]);
        }
        t.note(format!(
            "concurrency-reached runs against its own mock taking {REACHED_LATENCY:?}; ideal = permits / latency"
        ));
        t.note("a rate limit's windows are clock-aligned: a measured span can hold parts of two windows");
        t
    }

    fn goals_table(&self) -> Table {
        let mut t = Table::new(
            "limits: goals (reported, not asserted)",
            &["goal", "target", "measured", "met"],
        );
        for g in &self.goals {
            t.row(vec![
                g.goal.clone(),
                g.target.clone(),
                g.measured.clone(),
                if g.met { "yes" } else { "no" }.into(),
            ]);
        }
        t
    }
}

impl WaitReport {
    fn table(&self) -> Table {
        let mut t = Table::new(
            format!(
                "limits: (d) {} batch jobs waiting on an exhausted rpm (1 per hour), {} ms spans",
                self.jobs, self.sample_ms
            ),
            &[
                "state",
                "nats cores",
                "worker cores",
                "delivered",
                "ack pending",
                "redelivered",
                "queued",
                "in stream",
                "limits KV writes",
            ],
        );
        let find = |procs: &[ProcUsage], name: &str| {
            procs
                .iter()
                .find(|p| p.name.starts_with(name))
                .map_or_else(|| "-".into(), |p| cores(p.cores))
        };
        t.row(vec![
            "idle (before submitting)".into(),
            find(&self.idle, "nats"),
            find(&self.idle, "worker"),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
        for (label, s, procs) in [
            ("waiting: start", &self.before, None),
            ("waiting: end", &self.after, Some(&self.waiting)),
        ] {
            t.row(vec![
                label.into(),
                procs.map_or_else(|| "".into(), |p| find(p, "nats")),
                procs.map_or_else(|| "".into(), |p| find(p, "worker")),
                s.delivered.to_string(),
                s.ack_pending.to_string(),
                s.redelivered.to_string(),
                s.pending.to_string(),
                s.stream_jobs.to_string(),
                s.limits_writes.to_string(),
            ]);
        }
        let finished = self
            .before
            .stream_jobs
            .saturating_sub(self.after.stream_jobs);
        // Between the two states: the CPU span and the counting span.
        let secs = (2.0 * self.sample_ms as f64 / 1000.0).max(1e-3);
        t.note(format!(
            "while waiting: {} deliveries, {finished} jobs finished, {:.1} limits KV writes/s; \
             cores over one span, the broker's requests counted over the next (counting costs \
             the broker a delivery each)",
            self.after.delivered.saturating_sub(self.before.delivered),
            self.after
                .limits_writes
                .saturating_sub(self.before.limits_writes) as f64
                / secs,
        ));
        let show = |traffic: &Traffic| {
            if traffic.is_empty() {
                return "nothing".to_owned();
            }
            traffic
                .iter()
                .map(|(kind, per_sec)| format!("{kind} {per_sec:.1}/s"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        t.note(format!("broker asked, idle: {}", show(&self.idle_traffic)));
        t.note(format!(
            "broker asked, waiting: {}",
            show(&self.waiting_traffic)
        ));
        t
    }
}

pub async fn run(options: &Options, env: &mut Env, report: &mut Report) -> anyhow::Result<()> {
    let spec = MockSpec::instant();
    let mut mock = MockChild::spawn(spec).await?;
    let mut slow = MockChild::spawn(MockSpec {
        first_token_delay: REACHED_LATENCY,
        ..spec
    })
    .await?;
    let worker = worker_spec(options);
    let top = options
        .limits_concurrency
        .iter()
        .copied()
        .max()
        .unwrap_or(1);
    let permits = (top / 8).max(1);
    let setup = facts(options, spec, worker, top, permits);
    print_setup("limits", env, &setup);

    let window = Window {
        warmup: options.warmup,
        duration: options.duration,
    };
    let mut steps = Vec::new();
    let mut reached = Vec::new();
    let mut failures = Vec::new();
    for &workers in &options.limits_workers {
        let pair = [Limits::none(), Limits::generous()];
        let arms = start_arms(&pair, &mock, worker, workers, options).await?;
        env.nats_server = arms[0].llmq.world.nats_version().await;
        steps.extend(
            ab::alternate(&arms, &options.limits_concurrency, options.rounds, window).await,
        );
        failures.extend(ab::stop(arms, "limits").await);

        let rated = start_arms(&[Limits::rate_reached()], &mock, worker, workers, options).await?;
        let step = reached_step(&rated[0], &mut mock, top, window).await?;
        reached.push(ReachedStep {
            limit: format!("tenant rpm {REACHED_RPS} per 1 s window"),
            ideal_jobs_per_sec: REACHED_RPS as f64,
            ..step
        });
        failures.extend(ab::stop(rated, "limits").await);

        let permitted = [Limits::concurrency_reached(permits)];
        let arms = start_arms(&permitted, &slow, worker, workers, options).await?;
        let step = reached_step(&arms[0], &mut slow, top, window).await?;
        if step.upstream_peak > permits {
            failures.push(format!(
                "limits: concurrency-reached with {workers} worker(s): the upstream saw {} \
                 requests at once, the limit is {permits}",
                step.upstream_peak
            ));
        }
        reached.push(ReachedStep {
            limit: format!("provider concurrency {permits}"),
            ideal_jobs_per_sec: permits as f64 / REACHED_LATENCY.as_secs_f64(),
            ..step
        });
        failures.extend(ab::stop(arms, "limits").await);
    }
    println!();
    let wait = match waiting(options, &mock.url, worker).await {
        Ok(wait) => Some(wait),
        Err(err) => {
            failures.push(format!("limits: waiting: {err:#}"));
            None
        }
    };
    mock.stop().await;
    slow.stop().await;

    let deltas = deltas(&steps);
    let goals = goals(&deltas, top);
    let result = LimitsReport {
        setup,
        steps,
        deltas,
        reached,
        goals,
        wait,
    };
    for table in result.tables() {
        println!("{table}");
    }
    record_failures(&result, report);
    report.failures.extend(failures);
    report.limits = Some(result);
    Ok(())
}

fn facts(
    options: &Options,
    spec: MockSpec,
    worker: WorkerSpec,
    top: usize,
    permits: usize,
) -> Facts {
    let mut setup = Facts::default();
    setup
        .add("payload", format!("{} bytes per job", job_payload().len()))
        .add("mock", format!("{} (lean mode)", spec.describe()))
        .add("worker", worker.describe())
        .add(
            "every variant",
            format!(
                "[tenants] mode = \"enforced\", tenant {TENANT} (models [\"bench*\"]), producer \
                 submits as it; [limits] lease 10 s (default), interactive_max_wait 60 s"
            ),
        )
        .add("(a) none", "no limits")
        .add(
            "(b) generous",
            format!("provider and deployment limits = {{ {GENEROUS} }}, the tenant's the same (60 s window)"),
        )
        .add(
            "(c) reached",
            format!(
                "at concurrency {top}: tenant rpm {REACHED_RPS} per 1 s window; provider \
                 concurrency {permits} against a second mock answering after {REACHED_LATENCY:?}"
            ),
        )
        .add(
            "(d) waiting",
            format!(
                "{} batch jobs, tenant rpm 1 per 1 h window used up first; 1 worker; CPU \
                 sampled {:?}, then the broker's requests counted as long",
                options.wait_jobs, options.wait_sample
            ),
        )
        .add("workers", format!("{:?} worker processes per variant", options.limits_workers))
        .add("closed loop", format!("concurrency {:?}", options.limits_concurrency))
        .add(
            "rounds",
            format!(
                "(a) and (b): {} per step, alternated (ABBA), median round by jobs/s; (c): 1",
                options.rounds
            ),
        )
        .add("duration", format!("{:?} per step after {:?} warm-up", options.duration, options.warmup))
        .add(
            "processes",
            "each variant: own nats-server and worker processes; one mock process; producer: this process",
        );
    setup
}

/// Starts `variants` side by side (each its own nats-server and `workers` workers),
/// warmed up.
async fn start_arms(
    variants: &[Limits],
    mock: &MockChild,
    spec: WorkerSpec,
    workers: usize,
    options: &Options,
) -> anyhow::Result<Vec<Arm>> {
    let mut arms = Vec::new();
    for variant in variants {
        let llmq = variant.start(&mock.url, spec, workers).await?;
        llmq.warm_up(if options.quick { 3 } else { 50 }, false)
            .await?;
        arms.push(Arm::new(variant.name, llmq, mock.pid, ab::any_outcome)?);
    }
    Ok(arms)
}

/// One step of a variant whose limit the load reaches, with the upstream's peak.
async fn reached_step(
    arm: &Arm,
    mock: &mut MockChild,
    load: usize,
    window: Window,
) -> anyhow::Result<ReachedStep> {
    mock.reset().await?;
    let step = ab::measure(arm, load, window).await;
    let upstream_peak = mock.stats().await?.peak_concurrency;
    println!(
        "  {} ({} worker(s)) c={load}: {} jobs/s, upstream peak {upstream_peak}",
        step.variant,
        step.workers,
        rate(step.jobs_per_sec)
    );
    Ok(ReachedStep {
        step,
        limit: String::new(),
        ideal_jobs_per_sec: 0.0,
        upstream_peak,
    })
}

/// Every generous step against `none` at the same worker count and concurrency.
fn deltas(steps: &[Step]) -> Vec<Delta> {
    let base = |s: &Step| {
        steps.iter().find(|b| {
            b.variant == "none" && b.workers == s.workers && b.concurrency == s.concurrency
        })
    };
    steps
        .iter()
        .filter(|s| s.variant != "none")
        .filter_map(|s| base(s).map(|b| Delta::between(b, s)))
        .collect()
}

/// The goals for generous limits, per worker count.
fn goals(deltas: &[Delta], top: usize) -> Vec<Goal> {
    let mut goals = Vec::new();
    for d in deltas.iter().filter(|d| d.variant == "generous") {
        if d.concurrency == top {
            goals.push(Goal {
                goal: format!(
                    "generous limits, throughput at {top} in flight, {} worker(s)",
                    d.workers
                ),
                target: format!("≥ {GOAL_THROUGHPUT_RATIO:.2} of none"),
                measured: format!("{:.3}", d.throughput_ratio),
                met: d.throughput_ratio >= GOAL_THROUGHPUT_RATIO,
            });
        }
        if d.concurrency == 1 {
            goals.push(Goal {
                goal: format!(
                    "generous limits, added p50 at 1 in flight, {} worker(s)",
                    d.workers
                ),
                target: format!("≤ {GOAL_ADDED_P50_US} µs"),
                measured: format!("{:+} µs", d.added_p50_us),
                met: d.added_p50_us <= GOAL_ADDED_P50_US,
            });
        }
    }
    goals
}

fn record_failures(result: &LimitsReport, report: &mut Report) {
    let steps = result
        .steps
        .iter()
        .chain(result.reached.iter().map(|r| &r.step));
    for s in steps {
        let what = format!(
            "{} with {} worker(s) c={}",
            s.variant, s.workers, s.concurrency
        );
        report.fail("limits", &what, &s.failures);
    }
    if let Some(wait) = &result.wait {
        report.fail("limits", "waiting", &wait.failures);
    }
}

// ---- (d) waiting on an exhausted limit ----------------------------------------------

/// How (d) is run: the tenant may make one request an hour, and has made it.
const REGISTRY_EXHAUSTED: &str = "[tenants.bench-team]\nmodels = [\"bench*\"]\n\
[tenants.bench-team.limits]\nrpm = 1\nwindow = \"1h\"\n";

async fn waiting(
    options: &Options,
    mock_url: &str,
    spec: WorkerSpec,
) -> anyhow::Result<WaitReport> {
    let variant = Limits {
        name: "waiting",
        provider: String::new(),
        deployment: String::new(),
        registry: REGISTRY_EXHAUSTED.into(),
    };
    let llmq = variant.start(mock_url, spec, 1).await?;
    let result = wait_on(&llmq, options).await;
    let stopped = llmq.stop().await;
    let report = result?;
    stopped?;
    Ok(report)
}

async fn wait_on(llmq: &Llmq, options: &Options) -> anyhow::Result<WaitReport> {
    // The hour's one request: from now on every job of the tenant waits.
    run_job(&llmq.client, job(PROMPT, false))
        .await
        .map_err(|err| anyhow!("the job using up the hour failed: {err}"))?;
    let watched = llmq.watched()?;
    let broker = llmq.world.nats.client().await;
    let (idle, idle_traffic) = observe(&watched, &broker, options.wait_sample).await?;

    let failures = submit_batch(llmq, options.wait_jobs).await;
    let queue = Queue::open(llmq).await?;
    let settled = queue.settled(options.wait_jobs as u64).await?;
    let (waiting, waiting_traffic) = observe(&watched, &broker, options.wait_sample).await?;
    let sample_ms = options.wait_sample.as_millis() as u64;
    let after = queue.state().await?;
    let mut failures = failures;
    let finished = settled.stream_jobs.saturating_sub(after.stream_jobs);
    let deliveries = after.delivered.saturating_sub(settled.delivered);
    if after.redelivered > settled.redelivered || deliveries > finished {
        failures.add(format!(
            "waiting jobs were delivered again: {deliveries} deliveries for {finished} jobs \
             finished, redelivered {} -> {}",
            settled.redelivered, after.redelivered
        ));
    }
    Ok(WaitReport {
        jobs: options.wait_jobs,
        sample_ms,
        idle,
        waiting,
        idle_traffic,
        waiting_traffic,
        before: settled,
        after,
        failures,
    })
}

/// The CPU of `watched` over `span`, then what the broker is asked over another `span`:
/// apart, because counting makes nats-server deliver every request once more, to the
/// counter, which would inflate its CPU.
async fn observe(
    watched: &[Watched],
    broker: &async_nats::Client,
    span: Duration,
) -> anyhow::Result<(Vec<ProcUsage>, Traffic)> {
    let meter = Meter::start(watched);
    tokio::time::sleep(span).await;
    let usage = meter.finish();
    let counter = Counter::start(broker).await?;
    tokio::time::sleep(span).await;
    Ok((usage, counter.finish().await))
}

/// Submits `n` batch jobs at once, without waiting for outcomes.
async fn submit_batch(llmq: &Llmq, n: usize) -> Failures {
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let client = llmq.client.clone();
        tasks.spawn(async move {
            let mut job = job(PROMPT, false);
            job.tier = Tier::Batch;
            client.submit_detached(job).await.map(drop)
        });
    }
    let mut failures = Failures::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(err)) => failures.add(format!("submit: {err}")),
            Err(err) => failures.add(format!("submit task: {err}")),
        }
    }
    failures
}

/// The batch consumer of the bench model (the producer's tenant's), its stream and the
/// limits bucket.
struct Queue {
    js: jetstream::Context,
    subjects: Subjects,
    consumer: String,
}

impl Queue {
    async fn open(llmq: &Llmq) -> anyhow::Result<Queue> {
        let model = ModelName::parse(MODEL).map_err(|err| anyhow!("model {MODEL}: {err}"))?;
        Ok(Queue {
            js: jetstream::new(llmq.world.nats.client().await),
            subjects: llmq.client.subjects().clone(),
            consumer: Subjects::tenant_consumer_name(&model, Tier::Batch, llmq.client.tenant()),
        })
    }

    async fn state(&self) -> anyhow::Result<QueueState> {
        let mut jobs = self.js.get_stream(self.subjects.jobs_stream()).await?;
        let info = jobs.consumer_info(&self.consumer).await?;
        let stream_jobs = jobs.info().await?.state.messages;
        let limits_writes = match self.js.get_stream("KV_LLMQ_LIMITS").await {
            Ok(mut stream) => stream.info().await?.state.last_sequence,
            Err(_) => 0,
        };
        Ok(QueueState {
            delivered: info.delivered.consumer_sequence,
            ack_pending: info.num_ack_pending,
            redelivered: info.num_redelivered,
            pending: info.num_pending,
            stream_jobs,
            limits_writes,
        })
    }

    /// Waits until every job is in the consumer and the worker has stopped pulling (its
    /// held jobs unchanged over a second); the state then.
    /// The state once the tenant's batch consumer exists: a worker makes it when it sees
    /// the tenant's first jobs.
    async fn first_state(&self, give_up: Instant) -> anyhow::Result<QueueState> {
        loop {
            match self.state().await {
                Ok(state) => return Ok(state),
                Err(err) if Instant::now() >= give_up => return Err(err),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn settled(&self, jobs: u64) -> anyhow::Result<QueueState> {
        let give_up = Instant::now() + Duration::from_secs(60);
        let mut last = self.first_state(give_up).await?;
        let mut steady_since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.state().await?;
            let all_in = now.pending + now.ack_pending as u64 >= jobs;
            if now.delivered != last.delivered || !all_in {
                steady_since = Instant::now();
            }
            last = now;
            if all_in && steady_since.elapsed() >= Duration::from_secs(1) {
                return Ok(now);
            }
            if Instant::now() >= give_up {
                anyhow::bail!("the waiting jobs did not settle within 60 s: {now:?}");
            }
        }
    }
}

/// Counts what the broker is asked: every JetStream API request (`$JS.API.>`, by kind)
/// and every acknowledgement (`$JS.ACK.>`, by its payload's kind), seen by a plain
/// subscriber alongside the server's own.
struct Counter {
    task: tokio::task::JoinHandle<BTreeMap<String, u64>>,
    stop: tokio_util::sync::CancellationToken,
    started: Instant,
}

impl Counter {
    async fn start(client: &async_nats::Client) -> anyhow::Result<Counter> {
        let mut api = client.subscribe("$JS.API.>").await?;
        let mut acks = client.subscribe("$JS.ACK.>").await?;
        client.flush().await?;
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let kind = tokio::select! {
                    Some(m) = api.next() => api_kind(&m.subject),
                    Some(m) = acks.next() => ack_kind(&m.payload),
                    () = stopped.cancelled() => break,
                };
                *counts.entry(kind).or_default() += 1;
            }
            counts
        });
        Ok(Counter {
            task,
            stop,
            started: Instant::now(),
        })
    }

    /// Per second since the start.
    async fn finish(self) -> Traffic {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        self.stop.cancel();
        let counts = self.task.await.unwrap_or_default();
        counts
            .into_iter()
            .map(|(kind, n)| (kind, n as f64 / secs))
            .collect()
    }
}

/// `$JS.API.DIRECT.GET.KV_LLMQ_LIMITS.…` -> `api DIRECT.GET KV_LLMQ_LIMITS`;
/// `$JS.API.CONSUMER.MSG.NEXT.LLMQ_JOBS.batch-bench` -> `api CONSUMER.MSG.NEXT`.
fn api_kind(subject: &str) -> String {
    let rest = subject.strip_prefix("$JS.API.").unwrap_or(subject);
    let tokens: Vec<&str> = rest.split('.').collect();
    let verb_len = match tokens.as_slice() {
        ["CONSUMER", "MSG", "NEXT", ..] => 3,
        ["DIRECT", "GET", stream, ..] if stream.starts_with("KV_") => {
            return format!("api DIRECT.GET {stream}");
        }
        ["STREAM", "MSG", "GET", stream, ..] if stream.starts_with("KV_") => {
            return format!("api STREAM.MSG.GET {stream}");
        }
        _ => 2,
    };
    format!("api {}", tokens[..tokens.len().min(verb_len)].join("."))
}

/// An ack's kind: `+ACK` (also an empty body), `-NAK`, `+WPI`, `+TERM`, `+NXT`.
fn ack_kind(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let kind = text.split([' ', '{']).next().unwrap_or_default().trim();
    format!("ack {}", if kind.is_empty() { "+ACK" } else { kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_broker_traffic() {
        assert_eq!(
            api_kind("$JS.API.DIRECT.GET.KV_LLMQ_LIMITS.$KV.LLMQ_LIMITS.rate.t.x.1"),
            "api DIRECT.GET KV_LLMQ_LIMITS"
        );
        assert_eq!(
            api_kind("$JS.API.CONSUMER.MSG.NEXT.LLMQ_JOBS.batch-bench"),
            "api CONSUMER.MSG.NEXT"
        );
        assert_eq!(api_kind("$JS.API.STREAM.INFO.LLMQ_JOBS"), "api STREAM.INFO");
        assert_eq!(ack_kind(b""), "ack +ACK");
        assert_eq!(ack_kind(b"-NAK {\"delay\": 5}"), "ack -NAK");
        assert_eq!(ack_kind(b"+WPI"), "ack +WPI");
    }

    #[test]
    fn variants_write_the_limits_where_the_config_and_the_registry_read_them() {
        let spec = WorkerSpec {
            max_inflight: 8,
            fetch_batch: 4,
            max_concurrency: 8,
        };
        let dir = tempfile::tempdir().unwrap();
        let body = Limits::generous().body(spec);
        let setup = WorkerSetup::new(dir.path(), "nats://127.0.0.1:4222", "http://x", &body);
        let config = setup.config();
        assert_eq!(config.providers["mock"].limits.concurrency, Some(1_000_000));
        let deployment = &config.models[MODEL].deployments[0];
        assert_eq!(deployment.limits.rpm, Some(1_000_000_000));
        let generous = llmq_runtime::tenants::parse_registry(&Limits::generous().registry).unwrap();
        assert_eq!(generous[0].limits.tpm, Some(1_000_000_000_000));
        let rated =
            llmq_runtime::tenants::parse_registry(&Limits::rate_reached().registry).unwrap();
        assert_eq!(rated[0].limits.rpm, Some(REACHED_RPS));
        assert!(llmq_runtime::tenants::parse_registry(REGISTRY_EXHAUSTED).is_ok());
    }
}
