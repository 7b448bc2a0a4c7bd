//! The benchmark harness behind `cargo run --release -p llmq-tests --bin bench`.
//!
//! It measures, it never asserts a speed: the goals in BENCHMARKS.md are reported
//! against, and a run fails only when something fails functionally (a job that did not
//! succeed, a worker that did not stop cleanly). Each scenario isolates one layer so the
//! numbers can be compared within one run on one machine:
//!
//! | scenario        | what it measures                                                  |
//! |-----------------|-------------------------------------------------------------------|
//! | `jetstream-raw` | one job = one JetStream message, no llmq code: the physical limit |
//! | `direct`        | the mock upstream called directly: its own limit and latency      |
//! | `e2e`           | jobs through llmq end to end: jobs/s, latency, overhead, CPU, RSS  |
//! | `stream`        | per-token overhead of streamed jobs, against the mock's own clock |
//! | `edge`          | OpenAI HTTP clients through the edge vs straight to the mock:     |
//! |                 | req/s, added latency, first-token overhead, CPU/request, RSS     |
//! | `inflight`      | 10,000 slow jobs on one worker: completion time and memory        |
//! | `scale`         | one vs two worker processes on an upstream-bound load             |
//! | `policy`        | cost per job of the tenant policy check: open vs enforced         |
//! | `limits`        | cost of fleet-wide limits (none, generous, reached; 1 and 3       |
//! |                 | workers), and broker CPU while 10,000 jobs wait on a used-up one  |
//! | `priority`      | interactive jobs' queue wait, idle and under a batch backlog      |
//! | `fairness`      | a small batch behind another tenant's large one, against its fair |
//! |                 | share; throughput and idle CPU with 100 tenants                   |
//! | `batch-file`    | a 100,000-line file through `submitter batch submit --wait`:     |
//! |                 | submit and completion rate (against the library), CLI peak RSS,  |
//! |                 | the results file checked                                          |
//!
//! `policy` and `limits` compare variants of llmq running side by side, alternated round
//! by round ([`ab`]), because the differences they measure are smaller than the
//! machine's drift.
//!
//! Workers, the mock and the HTTP edge run as child processes of this binary ([`child`])
//! so that the CPU and memory of each are measured separately ([`procstat`]).

pub mod ab;
pub mod all;
pub mod batch_file;
pub mod chart;
pub mod child;
pub mod direct;
pub mod durability;
pub mod e2e;
pub mod edge;
pub mod fairness;
pub mod inflight;
pub mod jetstream_raw;
pub mod limits;
pub mod load;
pub mod policy;
pub mod priority;
pub mod procstat;
pub mod report;
pub mod scale;
pub mod setup;
pub mod sizes;
pub mod stats;
pub mod stream;

use std::path::PathBuf;
use std::time::Duration;

use report::{Facts, Report};
use setup::Env;

/// One scenario, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    JetstreamRaw,
    Direct,
    E2e,
    Stream,
    Edge,
    Inflight,
    Scale,
    Policy,
    Limits,
    Durability,
    Sizes,
    Priority,
    Fairness,
    BatchFile,
    All,
}

impl Scenario {
    /// Every single scenario, in the order `all` runs them (`direct` before `e2e`, whose
    /// overhead is computed against it).
    pub const EACH: [Scenario; 14] = [
        Scenario::JetstreamRaw,
        Scenario::Direct,
        Scenario::E2e,
        Scenario::Stream,
        Scenario::Edge,
        Scenario::Inflight,
        Scenario::Scale,
        Scenario::Policy,
        Scenario::Limits,
        Scenario::Durability,
        Scenario::Sizes,
        Scenario::Priority,
        Scenario::Fairness,
        Scenario::BatchFile,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Scenario::JetstreamRaw => "jetstream-raw",
            Scenario::Direct => "direct",
            Scenario::E2e => "e2e",
            Scenario::Stream => "stream",
            Scenario::Edge => "edge",
            Scenario::Inflight => "inflight",
            Scenario::Scale => "scale",
            Scenario::Policy => "policy",
            Scenario::Limits => "limits",
            Scenario::Durability => "durability",
            Scenario::Sizes => "sizes",
            Scenario::Priority => "priority",
            Scenario::Fairness => "fairness",
            Scenario::BatchFile => "batch-file",
            Scenario::All => "all",
        }
    }
}

/// Everything a run can be told. [`Options::full`] and [`Options::quick`] are the two
/// starting points; flags override single values.
#[derive(Debug, Clone)]
pub struct Options {
    /// Smoke run: tiny counts and durations, checks the harness works.
    pub quick: bool,
    /// Measured time per step.
    pub duration: Duration,
    /// Discarded time before each step's measurement.
    pub warmup: Duration,
    /// How long an open loop waits for jobs still in flight after it stops.
    pub drain: Duration,
    /// Closed-loop concurrencies (`direct`, `e2e`).
    pub concurrency: Vec<usize>,
    /// Open-loop arrival rates, per second (`e2e`).
    pub rates: Vec<f64>,
    /// Runs per step; the median run is reported (`jetstream-raw` runs at least 3).
    pub repeat: usize,
    /// Messages per `jetstream-raw` run.
    pub raw_msgs: usize,
    /// Closed-loop concurrencies of `stream`.
    pub stream_concurrency: Vec<usize>,
    /// Jobs submitted at once by `inflight`, and its upstream latency.
    pub inflight_jobs: usize,
    pub inflight_latency: Duration,
    /// `scale`: upstream latency and each worker's `max_concurrency`.
    pub scale_latency: Duration,
    pub scale_concurrency: usize,
    /// The workers' `fetch_batch`.
    pub fetch_batch: usize,
    /// Closed-loop concurrencies of `edge` (each non-streaming and streaming).
    pub edge_concurrency: Vec<usize>,
    /// `edge`: streams held open at once on one edge (0: the step is skipped), and the
    /// mock's wait before their first token.
    pub edge_hold: usize,
    pub edge_hold_delay: Duration,
    /// Closed-loop concurrencies of `policy` and of `limits`.
    pub policy_concurrency: Vec<usize>,
    pub limits_concurrency: Vec<usize>,
    /// Worker processes per `limits` variant, one measurement each.
    pub limits_workers: Vec<usize>,
    /// Alternated rounds of the side-by-side comparisons (`policy`, `limits`).
    pub rounds: usize,
    /// `limits` (d): batch jobs left waiting on a used-up limit, and how long the CPU is
    /// sampled while they wait.
    pub wait_jobs: usize,
    pub wait_sample: Duration,
    /// Lines of `batch-file`'s large file (its small one has a tenth).
    pub batch_lines: usize,
    /// Filler bytes added to each of those lines' prompt.
    pub batch_line_pad: usize,
    pub json_out: Option<PathBuf>,
    pub chart: Option<PathBuf>,
}

impl Options {
    /// A measurement run (about three minutes for `all`).
    pub fn full() -> Options {
        Options {
            quick: false,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            drain: Duration::from_secs(60),
            concurrency: vec![1, 16, 64, 256],
            rates: vec![500.0, 2000.0, 5000.0, 10_000.0],
            repeat: 1,
            raw_msgs: 200_000,
            stream_concurrency: vec![1, 16],
            inflight_jobs: 10_000,
            inflight_latency: Duration::from_secs(2),
            scale_latency: Duration::from_millis(20),
            scale_concurrency: 8,
            fetch_batch: 64,
            edge_concurrency: vec![1, 16, 64, 256],
            edge_hold: 0,
            edge_hold_delay: Duration::from_secs(5),
            policy_concurrency: vec![1, 32],
            limits_concurrency: vec![1, 32],
            limits_workers: vec![1, 3],
            rounds: 3,
            wait_jobs: 10_000,
            wait_sample: Duration::from_secs(5),
            batch_lines: 100_000,
            batch_line_pad: 0,
            json_out: None,
            chart: None,
        }
    }

    /// A smoke run of a few seconds, debug builds included.
    pub fn quick() -> Options {
        Options {
            quick: true,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(100),
            drain: Duration::from_secs(30),
            concurrency: vec![1, 8],
            rates: vec![100.0],
            repeat: 1,
            raw_msgs: 2000,
            stream_concurrency: vec![2],
            inflight_jobs: 300,
            inflight_latency: Duration::from_millis(200),
            scale_latency: Duration::from_millis(20),
            scale_concurrency: 4,
            edge_concurrency: vec![1, 8],
            policy_concurrency: vec![1, 4],
            limits_concurrency: vec![1, 4],
            rounds: 1,
            wait_jobs: 300,
            wait_sample: Duration::from_secs(1),
            batch_lines: 1_000,
            batch_line_pad: 0,
            ..Options::full()
        }
    }

    pub fn facts(&self) -> Facts {
        let mut facts = Facts::default();
        facts
            .add("quick", self.quick)
            .add("duration", format!("{:?}", self.duration))
            .add("warmup", format!("{:?}", self.warmup))
            .add("concurrency", format!("{:?}", self.concurrency))
            .add("rates", format!("{:?}", self.rates))
            .add("repeat", self.repeat)
            .add("raw_msgs", self.raw_msgs)
            .add(
                "stream_concurrency",
                format!("{:?}", self.stream_concurrency),
            )
            .add("inflight_jobs", self.inflight_jobs)
            .add("inflight_latency", format!("{:?}", self.inflight_latency))
            .add("scale_latency", format!("{:?}", self.scale_latency))
            .add("scale_concurrency", self.scale_concurrency)
            .add("fetch_batch", self.fetch_batch)
            .add("edge_concurrency", format!("{:?}", self.edge_concurrency))
            .add("edge_hold", self.edge_hold)
            .add("edge_hold_delay", format!("{:?}", self.edge_hold_delay))
            .add(
                "policy_concurrency",
                format!("{:?}", self.policy_concurrency),
            )
            .add(
                "limits_concurrency",
                format!("{:?}", self.limits_concurrency),
            )
            .add("limits_workers", format!("{:?}", self.limits_workers))
            .add("rounds", self.rounds)
            .add("wait_jobs", self.wait_jobs)
            .add("wait_sample", format!("{:?}", self.wait_sample))
            .add("batch_lines", self.batch_lines)
            .add("batch_line_pad", self.batch_line_pad);
        facts
    }
}

/// Runs `scenario` and returns what it measured; the caller prints nothing more than
/// the failures and decides the exit code. Writes `--json-out` (and for `all`, the chart).
pub async fn run(scenario: Scenario, options: &Options) -> anyhow::Result<Report> {
    // reqwest (the `direct` client) needs a process-wide rustls provider, as the worker.
    gateway_worker::providers::http_client::install_crypto_provider();
    let mut env = Env::probe();
    let mut report = Report::new(env.clone(), options.facts());
    let mut json_out = options.json_out.clone();
    match scenario {
        Scenario::All => {
            all::run(options, &mut env, &mut report).await?;
            json_out.get_or_insert_with(|| all::default_output("all.json"));
        }
        single => {
            run_one(single, options, &mut env, &mut report).await?;
            if single == Scenario::E2e
                && let (Some(path), Some(e2e)) = (&options.chart, &report.e2e)
            {
                chart::latency_vs_load(e2e, &env, path)?;
                println!("chart: {}", path.display());
            }
        }
    }
    report.env = env;
    if let Some(path) = json_out {
        report.write_json(&path)?;
        println!("json: {}", path.display());
    }
    Ok(report)
}

/// One single scenario (`all` is [`all::run`]).
pub async fn run_one(
    scenario: Scenario,
    options: &Options,
    env: &mut Env,
    report: &mut Report,
) -> anyhow::Result<()> {
    match scenario {
        Scenario::JetstreamRaw => jetstream_raw::run(options, env, report).await,
        Scenario::Direct => direct::run(options, env, report).await,
        Scenario::E2e => e2e::run(options, env, report).await,
        Scenario::Stream => stream::run(options, env, report).await,
        Scenario::Edge => edge::run(options, env, report).await,
        Scenario::Inflight => inflight::run(options, env, report).await,
        Scenario::Scale => scale::run(options, env, report).await,
        Scenario::Policy => policy::run(options, env, report).await,
        Scenario::Limits => limits::run(options, env, report).await,
        Scenario::Durability => durability::run(options, env, report).await,
        Scenario::Sizes => sizes::run(options, env, report).await,
        Scenario::Priority => priority::run(options, env, report).await,
        Scenario::Fairness => fairness::run(options, env, report).await,
        Scenario::BatchFile => batch_file::run(options, env, report).await,
        Scenario::All => anyhow::bail!("`all` is not a single scenario"),
    }
}

/// Prints the machine and the scenario's setup before its results.
pub fn print_setup(scenario: &str, env: &Env, setup: &Facts) {
    println!("==== {scenario} ====");
    let mut facts = Facts(env.facts());
    facts.0.extend(setup.0.iter().cloned());
    facts.print("setup");
}

/// Of several runs of one step, the one whose `key` is the median.
pub fn median_run<T>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| {
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let middle = runs.len().saturating_sub(1) / 2;
    runs.swap_remove(middle)
}
