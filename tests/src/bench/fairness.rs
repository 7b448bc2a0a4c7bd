//! `fairness`: the batch tier shared between tenants, and what sharing it costs.
//!
//! One worker, a mock that answers at once (so the worker's own work is what is measured).
//! - A small batch of tenant B alone; then behind tenant A's large backlog on the same
//!   model. B's fair share is half of what the worker completes meanwhile, so its ideal
//!   time is `lines / (rate / 2)`, with `rate` the jobs (A's and B's) completed while B
//!   ran, counted in the same run.
//! - Throughput: the same number of jobs through the one shared consumer of the
//!   interactive tier (the path the batch tier took before it had a consumer per tenant),
//!   through the batch tier from one tenant, and spread over many tenants.
//! - Idle CPU of the broker and the worker before any batch job, and after the many
//!   tenants' batches, while their consumers still exist.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use llmq_schemas::Tier;
use llmq_submitter::{Client, SubmitError};
use serde::Serialize;

use super::Options;
use super::load::Failures;
use super::print_setup;
use super::procstat::{Meter, ProcUsage, Watched};
use super::report::{Facts, Report, Table, cores, rate};
use super::setup::{Env, Llmq, MockSpec, PROMPT, batch_stack, job, jobs_in_stream};

/// B's batch behind A's backlog.
#[derive(Debug, Clone, Serialize)]
pub struct ShareStep {
    pub backlog: usize,
    pub lines: usize,
    pub alone_s: f64,
    pub behind_s: f64,
    /// Jobs per second the worker completed (both tenants) while B ran.
    pub rate: f64,
    pub ideal_s: f64,
    /// `behind_s / ideal_s` (goal: at most 1.5).
    pub ratio: f64,
}

/// One way through: jobs per second from the first submit to the empty queue.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputStep {
    pub path: String,
    pub tenants: usize,
    pub jobs: usize,
    pub jobs_per_sec: f64,
}

#[derive(Debug, Serialize)]
pub struct FairnessReport {
    pub setup: Facts,
    pub share: ShareStep,
    pub throughput: Vec<ThroughputStep>,
    pub idle_before: Vec<ProcUsage>,
    pub idle_after: Vec<ProcUsage>,
    pub failures: Failures,
}

impl FairnessReport {
    pub fn tables(&self) -> Vec<Table> {
        let s = &self.share;
        let mut share = Table::new(
            "fairness: tenant B's batch alone and behind tenant A's backlog, same model",
            &[
                "B lines",
                "A backlog",
                "B alone s",
                "B behind s",
                "jobs/s then",
                "ideal s",
                "x ideal",
            ],
        );
        share.row(vec![
            s.lines.to_string(),
            s.backlog.to_string(),
            format!("{:.2}", s.alone_s),
            format!("{:.2}", s.behind_s),
            rate(s.rate),
            format!("{:.2}", s.ideal_s),
            format!("{:.2}", s.ratio),
        ]);
        share.note("goal: B behind A within 1.5 x its fair-share ideal (before: 11.8 x)");
        let mut through = Table::new(
            "fairness: throughput, instant mock",
            &["path", "tenants", "jobs", "jobs/s"],
        );
        for t in &self.throughput {
            through.row(vec![
                t.path.clone(),
                t.tenants.to_string(),
                t.jobs.to_string(),
                rate(t.jobs_per_sec),
            ]);
        }
        let mut idle = Table::new(
            "fairness: idle CPU (cores)",
            &["when", "nats-server", "worker"],
        );
        for (when, procs) in [
            ("before any batch job", &self.idle_before),
            (
                "after the tenants' batches (their consumers kept)",
                &self.idle_after,
            ),
        ] {
            idle.row(vec![
                when.into(),
                find(procs, "nats"),
                find(procs, "worker"),
            ]);
        }
        vec![share, through, idle]
    }
}

fn find(procs: &[ProcUsage], name: &str) -> String {
    procs
        .iter()
        .find(|p| p.name.starts_with(name))
        .map_or_else(|| "-".into(), |p| cores(p.cores))
}

/// The scenario's sizes: full or quick.
struct Sizes {
    backlog: usize,
    lines: usize,
    volume: usize,
    tenants: usize,
    idle_span: Duration,
}

pub async fn run(options: &Options, env: &mut Env, report: &mut Report) -> anyhow::Result<()> {
    let sizes = if options.quick {
        Sizes {
            backlog: 2_000,
            lines: 100,
            volume: 1_000,
            tenants: 10,
            idle_span: Duration::from_secs(2),
        }
    } else {
        Sizes {
            backlog: 50_000,
            lines: 500,
            volume: 20_000,
            tenants: 100,
            idle_span: Duration::from_secs(10),
        }
    };
    let (mock, llmq, spec) = batch_stack(MockSpec::instant(), options.fetch_batch, env).await?;
    let mut facts = Facts::default();
    facts
        .add("mock", MockSpec::instant().describe())
        .add("worker", format!("{}, batch_share 0.5", spec.describe()))
        .add(
            "load",
            format!(
                "B {} lines alone, then behind A's {}; {} jobs per throughput step, {} tenants",
                sizes.lines, sizes.backlog, sizes.volume, sizes.tenants
            ),
        );
    print_setup("fairness", env, &facts);
    llmq.warm_up(20, false).await?;
    let watched = llmq.watched()?;
    let idle_before = idle(&watched, sizes.idle_span).await;
    let mut failures = Failures::default();
    let share = share(&llmq, &sizes, &mut failures).await?;
    let mut throughput = Vec::new();
    for (path, tier, tenants) in [
        (
            "one shared consumer (interactive tier)",
            Tier::Interactive,
            1,
        ),
        ("per-tenant consumers (batch tier)", Tier::Batch, 1),
        (
            "per-tenant consumers (batch tier)",
            Tier::Batch,
            sizes.tenants,
        ),
    ] {
        let step = drain_rate(&llmq, path, tier, tenants, sizes.volume, &mut failures).await?;
        println!(
            "  {path}, {tenants} tenants: {} jobs/s",
            rate(step.jobs_per_sec)
        );
        throughput.push(step);
    }
    let idle_after = idle(&watched, sizes.idle_span).await;
    llmq.stop().await?;
    mock.stop().await;
    let result = FairnessReport {
        setup: facts,
        share,
        throughput,
        idle_before,
        idle_after,
        failures,
    };
    for table in result.tables() {
        println!("{table}");
    }
    report.fail("fairness", "jobs", &result.failures);
    report.fairness = Some(result);
    Ok(())
}

/// B's batch alone, then behind A's backlog.
async fn share(llmq: &Llmq, sizes: &Sizes, failures: &mut Failures) -> anyhow::Result<ShareStep> {
    let js = jetstream::new(llmq.world.nats.client().await);
    let a = llmq.world.client_for(Some("tenant-a")).await?;
    let b = llmq.world.client_for(Some("tenant-b")).await?;
    let alone = run_batch(&b, sizes.lines, failures).await;
    submit_detached(
        std::slice::from_ref(&a),
        Tier::Batch,
        sizes.backlog,
        failures,
    )
    .await;
    // A's backlog is running when B queues behind it.
    while jobs_in_stream(&js).await + 2_000.min(sizes.backlog / 2) as u64 > sizes.backlog as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left_before = jobs_in_stream(&js).await;
    let behind = run_batch(&b, sizes.lines, failures).await;
    let left_after = jobs_in_stream(&js).await;
    let completed = (left_before + sizes.lines as u64).saturating_sub(left_after);
    let rate = completed as f64 / behind.as_secs_f64().max(1e-9);
    let ideal = sizes.lines as f64 / (rate / 2.0).max(1e-9);
    println!(
        "  B alone {:.2} s, behind A {:.2} s, ideal {ideal:.2} s ({} A lines left after)",
        alone.as_secs_f64(),
        behind.as_secs_f64(),
        left_after
    );
    drained(&js).await;
    Ok(ShareStep {
        backlog: sizes.backlog,
        lines: sizes.lines,
        alone_s: alone.as_secs_f64(),
        behind_s: behind.as_secs_f64(),
        rate,
        ideal_s: ideal,
        ratio: behind.as_secs_f64() / ideal,
    })
}

/// Submits `lines` batch jobs, 64 publishes in flight as a batch tool does, and waits for
/// all their outcomes: from the first submit to the last outcome.
async fn run_batch(client: &Client, lines: usize, failures: &mut Failures) -> Duration {
    let started = Instant::now();
    let submitted: Vec<_> = futures::stream::iter(0..lines)
        .map(|n| async move {
            let mut job = job(&format!("{PROMPT} {n}"), false);
            job.tier = Tier::Batch;
            client.submit(job).await
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut handles = Vec::with_capacity(lines);
    for result in submitted {
        match result {
            Ok(handle) => handles.push(handle),
            Err(err) => failures.add(format!("submit: {err}")),
        }
    }
    let outcomes = futures::future::join_all(handles.into_iter().map(|h| h.outcome())).await;
    for err in outcomes.into_iter().filter_map(Result::err) {
        failures.add(format!("outcome: {err}"));
    }
    started.elapsed()
}

/// Publishes `count` jobs without waiting for them, 256 at a time, the clients' in turn
/// (as many tenants' producers publishing at once do).
pub(super) async fn submit_detached(
    clients: &[Client],
    tier: Tier,
    count: usize,
    failures: &mut Failures,
) {
    let refused: Vec<String> = futures::stream::iter(0..count)
        .map(|n| {
            let client = &clients[n % clients.len()];
            async move {
                let mut job = job(PROMPT, false);
                job.tier = tier;
                // A full queue waits for room, as `submitter batch submit` does.
                loop {
                    match client.submit_detached(job.clone()).await {
                        Err(SubmitError::TenantQueueFull { .. }) => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        done => return done.err().map(|err| err.to_string()),
                    }
                }
            }
        })
        .buffer_unordered(256)
        .filter_map(std::future::ready)
        .collect()
        .await;
    for err in refused {
        failures.add(format!("submit: {err}"));
    }
}

/// `jobs` jobs of `tier` spread over `tenants` tenants, from the first submit until the
/// queue is empty.
async fn drain_rate(
    llmq: &Llmq,
    path: &str,
    tier: Tier,
    tenants: usize,
    jobs: usize,
    failures: &mut Failures,
) -> anyhow::Result<ThroughputStep> {
    let mut clients = Vec::with_capacity(tenants);
    for n in 0..tenants {
        clients.push(
            llmq.world
                .client_for(Some(&format!("tenant-{n:03}")))
                .await?,
        );
    }
    let js = jetstream::new(llmq.world.nats.client().await);
    let started = Instant::now();
    submit_detached(&clients, tier, jobs, failures).await;
    drained(&js).await;
    Ok(ThroughputStep {
        path: path.to_owned(),
        tenants,
        jobs,
        jobs_per_sec: jobs as f64 / started.elapsed().as_secs_f64(),
    })
}

/// The broker's and the worker's CPU over `span`, nothing submitted.
async fn idle(watched: &[Watched], span: Duration) -> Vec<ProcUsage> {
    let meter = Meter::start(watched);
    tokio::time::sleep(span).await;
    meter.finish()
}

/// Waits until the jobs stream is empty.
pub(super) async fn drained(js: &jetstream::Context) {
    while jobs_in_stream(js).await > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
