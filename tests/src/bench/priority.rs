//! `priority`: interactive jobs under a batch backlog on the same model.
//!
//! One worker, a mock answering after a fixed delay. Interactive jobs one at a time, first
//! with nothing else queued, then while a backlog of batch jobs on the same model drains:
//! their queue wait (publish to pick-up, from the outcome's timings) and their submit to
//! outcome latency, against each other in the same run. The interactive tier has its own
//! consumer and slots the batch tier cannot take (`batch_share`), and the batch tier's
//! window narrows while interactive jobs wait ([`gateway_worker::batch_window`]). The
//! batch rate while giving way and once alone says what that costs the batch tier.

use std::time::{Duration, Instant};

use futures::StreamExt;
use gateway_worker::batch_window::QUIET;
use llmq_schemas::Tier;
use llmq_submitter::Client;
use serde::Serialize;

use super::load::Failures;
use super::report::{Facts, Report, Table, ms};
use super::setup::{Env, Llmq, MockSpec, batch_stack, job, jobs_in_stream, run_job};
use super::stats::{Latencies, Summary};
use super::{Options, print_setup};

/// One phase's interactive jobs.
#[derive(Debug, Clone, Serialize)]
pub struct PriorityStep {
    pub phase: String,
    pub queue_wait: Summary,
    pub latency: Summary,
    /// Batch jobs still queued when the phase's last interactive job ended.
    pub batch_queued_after: u64,
    /// Batch jobs done per second while the phase's interactive jobs ran: what giving
    /// way to them cost the batch tier.
    pub batch_rate: f64,
    pub failures: Failures,
}

#[derive(Debug, Serialize)]
pub struct PriorityReport {
    pub setup: Facts,
    pub steps: Vec<PriorityStep>,
    /// Batch jobs done per second once no interactive job came for the window's quiet
    /// spell: the batch tier at full share, to compare with the rate while giving way.
    pub batch_alone_rate: Option<f64>,
}

impl PriorityReport {
    pub fn tables(&self) -> Vec<Table> {
        let mut table = Table::new(
            "priority: interactive jobs one at a time, idle and under a batch backlog",
            &[
                "phase",
                "jobs",
                "wait p50 ms",
                "wait p99 ms",
                "e2e p50 ms",
                "e2e p99 ms",
                "batch left",
                "batch jobs/s meanwhile",
            ],
        );
        for s in &self.steps {
            table.row(vec![
                s.phase.clone(),
                s.latency.count.to_string(),
                ms(s.queue_wait.p50_us),
                ms(s.queue_wait.p99_us),
                ms(s.latency.p50_us),
                ms(s.latency.p99_us),
                s.batch_queued_after.to_string(),
                format!("{:.0}", s.batch_rate),
            ]);
        }
        if let [idle, busy] = self.steps.as_slice() {
            table.note(format!(
                "backlog adds: queue wait p99 {} ms, e2e p99 {} ms (goal: p99 at most 5 ms above idle)",
                ms(busy.queue_wait.p99_us - idle.queue_wait.p99_us),
                ms(busy.latency.p99_us - idle.latency.p99_us),
            ));
        }
        if let Some(rate) = self.batch_alone_rate {
            table.note(format!(
                "the rest of the backlog after {} s with no interactive job: {rate:.0} batch jobs/s",
                QUIET.as_secs()
            ));
        }
        vec![table]
    }
}

/// The mock's answer time: long enough that a backlog takes a while to drain.
fn mock_spec() -> MockSpec {
    MockSpec {
        first_token_delay: Duration::from_millis(20),
        token_interval: Duration::ZERO,
        tokens: 12,
    }
}

pub async fn run(options: &Options, env: &mut Env, report: &mut Report) -> anyhow::Result<()> {
    let (backlog, jobs) = if options.quick {
        (2_000, 20)
    } else {
        (50_000, 300)
    };
    let (mock, llmq, spec) = batch_stack(mock_spec(), options.fetch_batch, env).await?;
    let mut facts = Facts::default();
    facts
        .add("mock", mock_spec().describe())
        .add("worker", format!("{}, batch_share 0.5", spec.describe()))
        .add(
            "load",
            format!(
                "{jobs} interactive jobs one at a time; backlog {backlog} batch jobs, same model"
            ),
        );
    print_setup("priority", env, &facts);
    llmq.warm_up(20, false).await?;
    let idle = interactive(&llmq, "idle", jobs).await;
    submit_backlog(&llmq.client, backlog).await?;
    let busy = interactive(&llmq, &format!("{backlog} batch queued"), jobs).await;
    let batch_alone_rate = batch_alone(&llmq).await;
    llmq.stop().await?;
    mock.stop().await;
    let result = PriorityReport {
        setup: facts,
        steps: vec![idle, busy],
        batch_alone_rate,
    };
    for table in result.tables() {
        println!("{table}");
    }
    for s in &result.steps {
        report.fail("priority", &s.phase, &s.failures);
    }
    report.priority = Some(result);
    Ok(())
}

/// `count` interactive jobs one at a time.
async fn interactive(llmq: &Llmq, phase: &str, count: usize) -> PriorityStep {
    let js = async_nats::jetstream::new(llmq.world.nats.client().await);
    let batch_queued_before = jobs_in_stream(&js).await;
    let phase_started = Instant::now();
    let mut waits = Latencies::new();
    let mut latency = Latencies::new();
    let mut failures = Failures::default();
    for _ in 0..count {
        let started = Instant::now();
        match run_job(&llmq.client, job("interactive", false)).await {
            Ok(outcome) => {
                latency.record(started.elapsed());
                let wait = outcome.timings.queued_ms.unwrap_or_default();
                waits.record(Duration::from_millis(wait));
            }
            Err(err) => failures.add(err),
        }
    }
    let batch_queued_after = jobs_in_stream(&js).await;
    let batch_done = batch_queued_before.saturating_sub(batch_queued_after);
    let batch_rate = batch_done as f64 / phase_started.elapsed().as_secs_f64();
    println!(
        "  {phase}: e2e p99 {} ms, batch queued after: {batch_queued_after}, {batch_rate:.0} batch jobs/s meanwhile",
        ms(latency.summary().p99_us)
    );
    PriorityStep {
        phase: phase.to_owned(),
        queue_wait: waits.summary(),
        latency: latency.summary(),
        batch_queued_after,
        batch_rate,
        failures,
    }
}

/// The batch tier's rate on its own: waits out the window's quiet spell, then times the
/// rest of the backlog (at most 10 s of it). `None` if too little was left to time.
async fn batch_alone(llmq: &Llmq) -> Option<f64> {
    let js = async_nats::jetstream::new(llmq.world.nats.client().await);
    tokio::time::sleep(QUIET + Duration::from_millis(500)).await;
    let before = jobs_in_stream(&js).await;
    let started = Instant::now();
    let mut left = before;
    while left > 0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = jobs_in_stream(&js).await;
    }
    (before >= 1_000).then(|| (before - left) as f64 / started.elapsed().as_secs_f64())
}

/// Publishes `count` batch jobs (their outcomes are stored; nobody waits for them).
async fn submit_backlog(client: &Client, count: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let submitted = futures::stream::iter(0..count)
        .map(|n| async move {
            let mut job = job(&format!("batch line {n}"), false);
            job.tier = Tier::Batch;
            client.submit(job).await.map(drop)
        })
        .buffer_unordered(256)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    anyhow::ensure!(submitted == 0, "{submitted} batch jobs were not accepted");
    println!(
        "  backlog: {count} batch jobs published in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
