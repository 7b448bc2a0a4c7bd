//! `scale`: does a second worker process double what an upstream-bound fleet serves?
//!
//! The load is bounded by the upstream, not by this machine's CPU: the mock takes a fixed
//! time per request and each worker may hold only `max_concurrency` requests to it, so
//! one worker serves at most `max_concurrency / latency` jobs/s. A
//! closed loop with more jobs in flight than two workers can hold keeps both saturated.
//! Two workers sharing the durable consumers should serve about twice as much; the
//! ratio says how close they come.

use std::time::Duration;

use serde::Serialize;

use super::Options;
use super::e2e::{RESOURCE_HEADERS, resource_row};
use super::load::{Failures, Window, closed_loop};
use super::procstat::{Meter, ProcUsage, Watched};
use super::report::{Facts, Report, Table, ms, rate};
use super::setup::{Env, Llmq, MockChild, MockSpec, PROMPT, WorkerSpec, job, job_payload, run_job};
use super::stats::Summary;

#[derive(Debug, Clone, Serialize)]
pub struct ScaleStep {
    pub workers: usize,
    pub jobs_per_sec: f64,
    /// `workers * max_concurrency / upstream latency`.
    pub ideal_jobs_per_sec: f64,
    pub latency: Summary,
    pub processes: Vec<ProcUsage>,
    pub failures: Failures,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub setup: Facts,
    pub steps: Vec<ScaleStep>,
    /// Two workers' jobs/s over one worker's.
    pub ratio: Option<f64>,
}

impl ScaleReport {
    pub fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            "scale: one vs two worker processes, upstream-bound",
            &[
                "workers",
                "jobs/s",
                "ideal jobs/s",
                "p50 ms",
                "p99 ms",
                "failed",
            ],
        );
        for s in &self.steps {
            t.row(vec![
                s.workers.to_string(),
                rate(s.jobs_per_sec),
                rate(s.ideal_jobs_per_sec),
                ms(s.latency.p50_us),
                ms(s.latency.p99_us),
                s.failures.count.to_string(),
            ]);
        }
        if let Some(ratio) = self.ratio {
            t.note(format!(
                "throughput ratio 2 workers / 1 worker: {ratio:.2} (ideal 2.00)"
            ));
        }
        let mut cpu = Table::new(
            "scale resources (cores = CPU seconds per second; both workers summed)",
            &RESOURCE_HEADERS,
        );
        for s in &self.steps {
            // Both workers' CPU in one column: the sum is what the fleet used.
            let mut processes = s.processes.clone();
            let workers: Vec<&ProcUsage> = s
                .processes
                .iter()
                .filter(|p| p.name.starts_with("worker"))
                .collect();
            if workers.len() > 1 {
                let sum = ProcUsage {
                    name: "worker".into(),
                    cores: workers.iter().map(|p| p.cores).sum(),
                    rss_end_mib: workers.iter().map(|p| p.rss_end_mib).sum(),
                    rss_peak_mib: workers.iter().map(|p| p.rss_peak_mib).sum(),
                    peak_since_start: workers.iter().any(|p| p.peak_since_start),
                };
                processes.retain(|p| !p.name.starts_with("worker"));
                processes.insert(0, sum);
            }
            let label = format!("{} worker(s)", s.workers);
            cpu.row(resource_row(label, &processes, s.jobs_per_sec));
        }
        vec![t, cpu]
    }
}

pub async fn run(options: &Options, env: &mut Env, report: &mut Report) -> anyhow::Result<()> {
    let spec = MockSpec {
        first_token_delay: options.scale_latency,
        token_interval: Duration::ZERO,
        tokens: 12,
    };
    let per_worker = options.scale_concurrency;
    // Twice the upstream slots in job slots, as deployments have more (1024 by default):
    // the provider's max_concurrency is the bound, not the worker's job slots.
    let worker = WorkerSpec {
        max_inflight: per_worker * 2,
        fetch_batch: options.fetch_batch,
        max_concurrency: per_worker,
    };
    let load = per_worker * 8;
    let mut mock = MockChild::spawn(spec).await?;
    let mut setup = Facts::default();
    setup
        .add("mock", format!("{} (lean mode)", spec.describe()))
        .add("payload", format!("{} bytes per job", job_payload().len()))
        .add("worker", worker.describe())
        .add(
            "one worker's limit",
            format!(
                "{} jobs/s (max_concurrency / upstream latency)",
                rate(limit(per_worker, spec))
            ),
        )
        .add("load", format!("closed loop, {load} jobs in flight"))
        .add(
            "duration",
            format!(
                "{:?} per step after {:?} warm-up",
                options.duration, options.warmup
            ),
        )
        .add(
            "processes",
            "each worker: own process; mock: own process; producer: this process",
        );
    super::print_setup("scale", env, &setup);

    let window = Window {
        warmup: options.warmup,
        duration: options.duration,
    };
    let mut steps = Vec::new();
    let mut failures = Vec::new();
    for workers in [1, 2] {
        let llmq = Llmq::start(&mock.url, worker, workers).await?;
        env.nats_server = llmq.world.nats_version().await;
        llmq.warm_up(2, false).await?;
        let mut watched = llmq.watched()?;
        watched.push(Watched::new("mock", mock.pid));
        let client = llmq.client.clone();
        let meter = Meter::start(&watched);
        let run = closed_loop(load, window, move || {
            let client = client.clone();
            async move { run_job(&client, job(PROMPT, false)).await.map(drop) }
        })
        .await;
        let processes = meter.finish();
        if let Err(err) = llmq.stop().await {
            failures.push(format!("scale: {workers} worker(s): {err:#}"));
        }
        mock.reset().await?;
        println!("  {workers} worker(s): {} jobs/s", rate(run.throughput()));
        steps.push(ScaleStep {
            workers,
            jobs_per_sec: run.throughput(),
            ideal_jobs_per_sec: workers as f64 * limit(per_worker, spec),
            latency: run.latency.summary(),
            processes,
            failures: run.failures,
        });
    }
    println!();
    mock.stop().await;
    let ratio = match steps.as_slice() {
        [one, two] if one.jobs_per_sec > 0.0 => Some(two.jobs_per_sec / one.jobs_per_sec),
        _ => None,
    };
    let result = ScaleReport {
        setup,
        steps,
        ratio,
    };
    for table in result.tables() {
        println!("{table}");
    }
    for s in &result.steps {
        report.fail("scale", &format!("{} worker(s)", s.workers), &s.failures);
    }
    report.failures.extend(failures);
    report.scale = Some(result);
    Ok(())
}

/// Jobs/s one worker can serve: its upstream slots over the upstream latency.
fn limit(max_concurrency: usize, spec: MockSpec) -> f64 {
    max_concurrency as f64 / spec.generation().as_secs_f64().max(1e-6)
}
