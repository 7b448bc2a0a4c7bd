//! `e2e`: durable jobs through llmq, end to end, non-streaming.
//!
//! `llmq_submitter::Client::submit` -> LLMQ_JOBS -> the worker process -> the mock
//! process -> outcome stored in LLMQ_RESULTS and sent back -> `JobHandle::outcome`.
//! Latency is submit call to outcome in hand. Two ways to load it:
//! - closed loop at each concurrency: N jobs always in flight, each completion starts
//!   the next; gives jobs/s, and latency at one job in flight (the 0.5 ms p50 goal);
//! - open loop at fixed arrival rates: latency under a given load (the chart).
//!
//! Overhead is reported two ways: latency minus the upstream's service time (the mock's
//! deliberate delay, zero here, plus its own `x-mock-service-us` median from `direct`),
//! and latency minus `direct`'s latency at the same concurrency (what the queue hop and
//! the worker add over calling the upstream yourself). Per step, the CPU each process
//! used and the worker's peak RSS show where the machine's two cores went.

use serde::Serialize;

use super::direct::{self, DirectReport};
use super::load::{Failures, OpenRun, Window, closed_loop, open_loop};
use super::procstat::{Meter, ProcUsage, Watched};
use super::report::{Facts, Report, Table, cores, mib, ms, pct, rate};
use super::setup::{Env, Llmq, MockChild, MockSpec, PROMPT, WorkerSpec, job, job_payload, run_job};
use super::stats::Summary;
use super::{Options, median_run};

/// The most jobs an open loop keeps in flight before it skips arrivals.
const OPEN_LOOP_CAP: u64 = 50_000;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct VsDirect {
    pub direct_requests_per_sec: f64,
    pub direct_p50_us: i64,
    pub direct_p99_us: i64,
    pub added_p50_us: i64,
    pub added_p99_us: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClosedStep {
    pub concurrency: usize,
    pub jobs_per_sec: f64,
    pub latency: Summary,
    /// Latency minus the upstream's service time.
    pub overhead: Summary,
    pub vs_direct: Option<VsDirect>,
    pub processes: Vec<ProcUsage>,
    pub failures: Failures,
}

#[derive(Debug, Serialize)]
pub struct OpenStep {
    #[serde(flatten)]
    pub run: OpenRun,
    pub overhead: Summary,
    pub processes: Vec<ProcUsage>,
}

#[derive(Debug, Serialize)]
pub struct E2eReport {
    pub setup: Facts,
    /// The upstream's service time subtracted for `overhead`, in microseconds.
    pub service_us: i64,
    pub closed: Vec<ClosedStep>,
    pub open: Vec<OpenStep>,
    /// The direct runs this scenario measured itself (when `direct` was not run before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_baseline: Option<DirectReport>,
}

impl E2eReport {
    pub fn best(&self) -> Option<f64> {
        self.closed.iter().map(|s| s.jobs_per_sec).reduce(f64::max)
    }

    pub fn tables(&self) -> Vec<Table> {
        let mut closed = Table::new(
            "e2e closed loop: submit -> JetStream -> worker -> mock -> outcome (non-streaming)",
            &[
                "concurrency",
                "jobs/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "overhead p50",
                "overhead p99",
                "vs direct p50",
                "vs direct p99",
                "failed",
            ],
        );
        for s in &self.closed {
            let vs = |f: fn(&VsDirect) -> i64| {
                s.vs_direct
                    .as_ref()
                    .map_or_else(|| "-".into(), |v| ms(f(v)))
            };
            closed.row(vec![
                s.concurrency.to_string(),
                rate(s.jobs_per_sec),
                pct(&s.latency, |s| s.p50_us),
                pct(&s.latency, |s| s.p90_us),
                pct(&s.latency, |s| s.p99_us),
                pct(&s.latency, |s| s.max_us),
                pct(&s.overhead, |s| s.p50_us),
                pct(&s.overhead, |s| s.p99_us),
                vs(|v| v.added_p50_us),
                vs(|v| v.added_p99_us),
                s.failures.count.to_string(),
            ]);
        }
        closed.note(format!(
            "overhead = latency - upstream service time ({} ms); vs direct = e2e - direct at the same concurrency (ms)",
            ms(self.service_us)
        ));
        let mut open = Table::new(
            "e2e open loop: fixed arrival rate (latency from the submit call)",
            &[
                "offered/s",
                "achieved/s",
                "done/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "overhead p50",
                "overhead p99",
                "gen lag p99 ms",
                "backlog",
                "max in flight",
                "skipped",
                "failed",
            ],
        );
        for s in &self.open {
            let r = &s.run;
            open.row(vec![
                rate(r.offered_rate),
                rate(r.achieved_rate),
                rate(r.throughput),
                pct(&r.latency, |s| s.p50_us),
                pct(&r.latency, |s| s.p90_us),
                pct(&r.latency, |s| s.p99_us),
                pct(&r.latency, |s| s.max_us),
                pct(&s.overhead, |s| s.p50_us),
                pct(&s.overhead, |s| s.p99_us),
                pct(&r.generator_lag, |s| s.p99_us),
                r.backlog_at_end.to_string(),
                r.max_in_flight.to_string(),
                r.skipped.to_string(),
                r.failures.count.to_string(),
            ]);
        }
        open.note("backlog = jobs in flight when the generator stopped; gen lag = how late the generator started jobs");
        let mut cpu = Table::new(
            "e2e resources per step (cores = CPU seconds per second; µs/job = CPU per job; RSS peak within the step)",
            &RESOURCE_HEADERS,
        );
        for s in &self.closed {
            cpu.row(resource_row(
                format!("closed c={}", s.concurrency),
                &s.processes,
                s.jobs_per_sec,
            ));
        }
        for s in &self.open {
            let label = format!("open {}/s", rate(s.run.offered_rate));
            cpu.row(resource_row(label, &s.processes, s.run.throughput));
        }
        let mut tables = vec![closed, open, cpu];
        if let Some(direct) = &self.direct_baseline {
            tables.extend(direct.tables());
        }
        tables
    }
}

/// Headers of [`resource_row`]'s table.
pub const RESOURCE_HEADERS: [&str; 10] = [
    "step",
    "worker cores",
    "worker µs/job",
    "worker peak MiB",
    "nats cores",
    "nats µs/job",
    "nats peak MiB",
    "mock cores",
    "bench cores",
    "total cores",
];

/// One row of a resources table: cores per process, and CPU time per job (cores over
/// jobs/s) for the worker and nats-server, the two llmq is made of.
pub fn resource_row(label: String, processes: &[ProcUsage], jobs_per_sec: f64) -> Vec<String> {
    let find = |name: &str| processes.iter().find(|p| p.name.starts_with(name));
    let c = |name: &str| find(name).map_or_else(|| "-".into(), |p| cores(p.cores));
    let m = |name: &str| find(name).map_or_else(|| "-".into(), |p| mib(p.rss_peak_mib));
    let per_job = |name: &str| match find(name) {
        Some(p) if jobs_per_sec > 0.0 => format!("{:.0}", p.cores * 1e6 / jobs_per_sec),
        _ => "-".into(),
    };
    let total: f64 = processes.iter().map(|p| p.cores).sum();
    vec![
        label,
        c("worker"),
        per_job("worker"),
        m("worker"),
        c("nats"),
        per_job("nats"),
        m("nats"),
        c("mock"),
        c("bench"),
        cores(total),
    ]
}

pub fn worker_spec(options: &Options) -> WorkerSpec {
    WorkerSpec {
        max_inflight: 4096,
        fetch_batch: options.fetch_batch,
        max_concurrency: 4096,
    }
}

pub async fn run(options: &Options, env: &mut Env, report: &mut Report) -> anyhow::Result<()> {
    let spec = MockSpec::instant();
    let mut mock = MockChild::spawn(spec).await?;
    let worker = worker_spec(options);
    let llmq = Llmq::start(&mock.url, worker, 1).await?;
    env.nats_server = llmq.world.nats_version().await;
    let window = Window {
        warmup: options.warmup,
        duration: options.duration,
    };
    let mut setup = Facts::default();
    setup
        .add("payload", format!("{} bytes per job", job_payload().len()))
        .add("mock", format!("{} (lean mode)", spec.describe()))
        .add("worker", worker.describe())
        .add("closed loop", format!("concurrency {:?}", options.concurrency))
        .add("open loop", format!("rates {:?}/s, at most {OPEN_LOOP_CAP} in flight", options.rates))
        .add("duration", format!("{:?} per step after {:?} warm-up", options.duration, options.warmup))
        .add("repeats", format!("{} per closed-loop step (median run by jobs/s)", options.repeat))
        .add(
            "processes",
            "worker: own process (bench __worker); mock: own process (bench __mock); \
             nats-server: own process; producer (llmq_submitter::Client, one connection): this process",
        );
    super::print_setup("e2e", env, &setup);

    // The baseline: `direct` from this run if it ran, else measured here on the same mock.
    let baseline = match &report.direct {
        Some(_) => None,
        None => {
            println!("measuring the direct baseline first (same mock, same concurrencies)\n");
            let runs = direct::measure(&mut mock, &options.concurrency, options).await?;
            Some(DirectReport {
                setup: direct::facts(options, spec),
                runs,
            })
        }
    };
    let direct = baseline.as_ref().or(report.direct.as_ref());
    let service_us = spec.generation().as_micros() as i64
        + direct
            .and_then(|d| d.runs.first())
            .map_or(0, |r| r.service.p50_us);

    llmq.warm_up(if options.quick { 3 } else { 50 }, false)
        .await?;
    let mut watched = llmq.watched()?;
    watched.push(Watched::new("mock", mock.pid));

    let mut closed = Vec::new();
    for &concurrency in &options.concurrency {
        let mut repeats = Vec::new();
        for _ in 0..options.repeat.max(1) {
            let client = llmq.client.clone();
            let meter = Meter::start(&watched);
            let run = closed_loop(concurrency, window, move || {
                let client = client.clone();
                async move { run_job(&client, job(PROMPT, false)).await.map(drop) }
            })
            .await;
            let processes = meter.finish();
            let latency = run.latency.summary();
            let vs_direct = direct.and_then(|d| d.at(concurrency)).map(|d| VsDirect {
                direct_requests_per_sec: d.requests_per_sec,
                direct_p50_us: d.latency.p50_us,
                direct_p99_us: d.latency.p99_us,
                added_p50_us: latency.p50_us - d.latency.p50_us,
                added_p99_us: latency.p99_us - d.latency.p99_us,
            });
            repeats.push(ClosedStep {
                concurrency,
                jobs_per_sec: run.throughput(),
                latency,
                overhead: latency.minus(service_us),
                vs_direct,
                processes,
                failures: run.failures,
            });
        }
        let mut failures = Failures::default();
        for r in &repeats {
            failures.merge(r.failures.clone());
        }
        let mut chosen = median_run(repeats, |s| s.jobs_per_sec);
        chosen.failures = failures;
        println!(
            "  closed c={concurrency}: {} jobs/s, p50 {} ms",
            rate(chosen.jobs_per_sec),
            ms(chosen.latency.p50_us)
        );
        closed.push(chosen);
    }

    let mut open = Vec::new();
    for &offered in &options.rates {
        let client = llmq.client.clone();
        let meter = Meter::start(&watched);
        let run = open_loop(offered, window, OPEN_LOOP_CAP, options.drain, move || {
            let client = client.clone();
            async move { run_job(&client, job(PROMPT, false)).await.map(drop) }
        })
        .await;
        let processes = meter.finish();
        println!(
            "  open {}/s: achieved {}/s, p50 {} ms, p99 {} ms",
            rate(offered),
            rate(run.achieved_rate),
            ms(run.latency.p50_us),
            ms(run.latency.p99_us)
        );
        open.push(OpenStep {
            overhead: run.latency.minus(service_us),
            run,
            processes,
        });
    }
    println!();

    let stopped = llmq.stop().await;
    mock.stop().await;
    let result = E2eReport {
        setup,
        service_us,
        closed,
        open,
        direct_baseline: baseline,
    };
    for table in result.tables() {
        println!("{table}");
    }
    for s in &result.closed {
        report.fail(
            "e2e",
            &format!("closed loop c={}", s.concurrency),
            &s.failures,
        );
    }
    for s in &result.open {
        report.fail(
            "e2e",
            &format!("open loop {}/s", s.run.offered_rate),
            &s.run.failures,
        );
    }
    if let Err(err) = stopped {
        report.failures.push(format!("e2e: {err:#}"));
    }
    report.e2e = Some(result);
    Ok(())
}
