//! `inflight`: many slow jobs at once on one worker.
//!
//! 10,000 jobs submitted together against an upstream that takes 2 s per request, one
//! worker allowed to hold them all (`max_inflight` and the provider's `max_concurrency`
//! at the job count). If the worker really runs them concurrently, the last outcome
//! arrives about 2 s after the last submit; anything beyond is queueing in llmq. The
//! worker's peak RSS over the run is the memory cost of that many jobs in flight (goal:
//! ≤ 150 MB for 10,000), and the mock's peak concurrency shows how many upstream
//! requests were really open at once.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use super::Options;
use super::load::Failures;
use super::procstat::{self, Meter, ProcUsage, Watched};
use super::report::{Facts, Report, Table, cores, mib, ms};
use super::setup::{Env, Llmq, MockChild, MockSpec, PROMPT, WorkerSpec, job, job_payload};
use super::stats::{Latencies, Summary};

#[derive(Debug, Clone, Serialize)]
pub struct InflightReport {
    pub setup: Facts,
    pub jobs: usize,
    pub upstream_latency_ms: u64,
    /// First submit to last outcome.
    pub makespan_ms: u64,
    /// First submit to last PubAck.
    pub submit_span_ms: u64,
    /// The upstream latency: no system can finish sooner.
    pub ideal_ms: u64,
    /// Submit to outcome, per job.
    pub latency: Summary,
    /// Latency minus the upstream latency.
    pub overhead: Summary,
    pub mock_peak_concurrency: usize,
    pub worker_rss_before_mib: f64,
    pub worker_rss_peak_mib: f64,
    /// (peak - before) / jobs.
    pub worker_kib_per_job: f64,
    pub processes: Vec<ProcUsage>,
    pub failures: Failures,
}

impl InflightReport {
    pub fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            format!(
                "inflight: {} jobs at once, upstream latency {} ms, one worker",
                self.jobs, self.upstream_latency_ms
            ),
            &["measure", "value"],
        );
        let rows: [(&str, String); 11] = [
            (
                "completion time (first submit -> last outcome)",
                format!("{} ms", self.makespan_ms),
            ),
            ("ideal (upstream latency)", format!("{} ms", self.ideal_ms)),
            (
                "submit span (first submit -> last PubAck)",
                format!("{} ms", self.submit_span_ms),
            ),
            (
                "per-job latency p50 / p99 / max",
                format!(
                    "{} / {} / {} ms",
                    ms(self.latency.p50_us),
                    ms(self.latency.p99_us),
                    ms(self.latency.max_us)
                ),
            ),
            (
                "per-job overhead p50 / p99",
                format!(
                    "{} / {} ms",
                    ms(self.overhead.p50_us),
                    ms(self.overhead.p99_us)
                ),
            ),
            (
                "mock peak concurrency",
                self.mock_peak_concurrency.to_string(),
            ),
            (
                "worker RSS before",
                format!("{} MiB", mib(self.worker_rss_before_mib)),
            ),
            (
                "worker RSS peak",
                format!("{} MiB", mib(self.worker_rss_peak_mib)),
            ),
            (
                "worker memory per in-flight job",
                format!("{:.1} KiB", self.worker_kib_per_job),
            ),
            (
                "worker cores (average over the run)",
                self.processes
                    .iter()
                    .find(|p| p.name == "worker")
                    .map_or_else(|| "-".into(), |p| cores(p.cores)),
            ),
            ("failed", self.failures.count.to_string()),
        ];
        for (k, v) in rows {
            t.row(vec![k.to_owned(), v]);
        }
        vec![t]
    }
}

pub async fn run(options: &Options, env: &mut Env, report: &mut Report) -> anyhow::Result<()> {
    let jobs = options.inflight_jobs;
    let spec = MockSpec {
        first_token_delay: options.inflight_latency,
        token_interval: Duration::ZERO,
        tokens: 12,
    };
    let mut mock = MockChild::spawn(spec).await?;
    let worker = WorkerSpec {
        max_inflight: jobs,
        fetch_batch: options.fetch_batch,
        max_concurrency: jobs,
    };
    let llmq = Llmq::start(&mock.url, worker, 1).await?;
    env.nats_server = llmq.world.nats_version().await;
    let mut setup = Facts::default();
    setup
        .add(
            "jobs",
            format!("{jobs}, all submitted at once (one task each)"),
        )
        .add("mock", format!("{} (lean mode)", spec.describe()))
        .add("payload", format!("{} bytes per job", job_payload().len()))
        .add("worker", worker.describe())
        .add(
            "processes",
            "worker: own process; mock: own process; producer: this process",
        );
    super::print_setup("inflight", env, &setup);

    let worker_pid = llmq.workers.first().map_or(0, |w| w.pid);
    let before = procstat::sample(worker_pid).map_or(0.0, |s| s.rss_kib as f64 / 1024.0);
    let mut watched = llmq.watched()?;
    watched.push(Watched::new("mock", mock.pid));
    mock.reset().await?;
    let meter = Meter::start(&watched);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..jobs {
        let client = llmq.client.clone();
        tasks.spawn(async move {
            let submitted = Instant::now();
            let handle = client.submit(job(PROMPT, false)).await;
            let acked = Instant::now();
            let result = match handle {
                Ok(handle) => match handle.outcome_within(super::setup::OUTCOME_TIMEOUT).await {
                    Ok(o) if o.status == llmq_schemas::OutcomeStatus::Succeeded => Ok(()),
                    Ok(o) => Err(format!("job ended {}: {:?}", o.status, o.error)),
                    Err(err) => Err(format!("outcome: {err}")),
                },
                Err(err) => Err(format!("submit: {err}")),
            };
            (submitted, acked, Instant::now(), result)
        });
    }
    let (mut last_ack, mut last_done) = (start, start);
    let mut latency = Latencies::new();
    let mut failures = Failures::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((submitted, acked, done, result)) => {
                last_ack = last_ack.max(acked);
                last_done = last_done.max(done);
                match result {
                    Ok(()) => latency.record(done - submitted),
                    Err(err) => failures.add(err),
                }
            }
            Err(err) => failures.add(format!("task: {err}")),
        }
    }
    let processes = meter.finish();
    let stats = mock.stats().await?;
    let peak = processes
        .iter()
        .find(|p| p.name == "worker")
        .map_or(0.0, |p| p.rss_peak_mib);
    let stopped = llmq.stop().await;
    mock.stop().await;
    let latency = latency.summary();
    let upstream_us = options.inflight_latency.as_micros() as i64;
    let result = InflightReport {
        setup,
        jobs,
        upstream_latency_ms: options.inflight_latency.as_millis() as u64,
        makespan_ms: (last_done - start).as_millis() as u64,
        submit_span_ms: (last_ack - start).as_millis() as u64,
        ideal_ms: options.inflight_latency.as_millis() as u64,
        latency,
        overhead: latency.minus(upstream_us),
        mock_peak_concurrency: stats.peak_concurrency,
        worker_rss_before_mib: before,
        worker_rss_peak_mib: peak,
        worker_kib_per_job: (peak - before).max(0.0) * 1024.0 / jobs.max(1) as f64,
        processes,
        failures,
    };
    for table in result.tables() {
        println!("{table}");
    }
    report.fail("inflight", "jobs", &result.failures);
    if let Err(err) = stopped {
        report.failures.push(format!("inflight: {err:#}"));
    }
    report.inflight = Some(result);
    Ok(())
}
