//! `bench`: llmq's benchmark harness (see `llmq_tests::bench` and BENCHMARKS.md).
//!
//! ```text
//! cargo run --release -p llmq-tests --bin bench -- all --json-out bench.json --chart e2e.svg
//! cargo run --release -p llmq-tests --bin bench -- e2e --concurrency 1,64 --rates 1000,4000
//! target/debug/bench all --quick        # smoke run: works end to end, asserts no speed
//! ```
//!
//! Exit codes: 0 every job succeeded; 1 a scenario failed functionally or could not run;
//! 2 usage error. Timings never fail a run. The hidden `__worker`, `__mock` and `__edge`
//! subcommands are this binary re-executed as a worker, mock or HTTP edge process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use llmq_tests::bench::child::{self, MockArgs};
use llmq_tests::bench::{self, Options, Scenario};

/// Benchmarks llmq on this machine: JetStream's raw limit, the upstream's own limit, jobs
/// end to end, streaming overhead, the HTTP edge, 10,000 in-flight jobs, one vs two workers, the tenant
/// policy's and the limits' cost.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish + consume + ack of ~1 KiB job messages through a WorkQueue stream.
    JetstreamRaw(Flags),
    /// The chat request straight to the mock (pooled reqwest client).
    Direct(Flags),
    /// Jobs end to end: closed loop per concurrency, open loop per arrival rate.
    E2e(Flags),
    /// Streaming: first-token and inter-token overhead against the mock's own clock.
    Stream(Flags),
    /// The HTTP edge against the mock called directly: req/s, added latency, first-token
    /// overhead, CPU per request, RSS (`--edge-hold 2000`: many open streams' RSS).
    Edge(Flags),
    /// Many slow jobs at once on one worker: completion time and peak RSS.
    Inflight(Flags),
    /// One vs two worker processes with an upstream-bound load.
    Scale(Flags),
    /// The tenant policy's cost per job: a worker in mode open vs one enforcing a registry.
    Policy(Flags),
    /// Fleet-wide limits: none, generous, reached (1 and 3 workers); the broker while
    /// 10,000 jobs wait on a used-up limit.
    Limits(Flags),
    /// What each broker guarantee costs: one server (default fsync), one server with
    /// `sync_interval: always`, three clustered servers with replicas = 3.
    Durability(Flags),
    /// What a request over one message costs (2 MiB vs 1 KiB, on a 1 MiB server), and a
    /// 4 MiB claim check by chunk size.
    Sizes(Flags),
    /// Interactive jobs' queue wait and latency, idle and under a batch backlog on the
    /// same model.
    Priority(Flags),
    /// The batch tier shared between tenants: a small batch behind a large one against
    /// its fair share; throughput and idle CPU with many tenants.
    Fairness(Flags),
    /// A large batch file through `submitter batch submit --wait` (the release
    /// `submitter` binary beside this one): submit and completion rate against the
    /// library, the CLI's peak RSS at the file's size and a tenth of it, the results file.
    BatchFile(Flags),
    /// Every scenario, then the ratios, one JSON file and the chart.
    All(Flags),
    #[command(name = "__worker", hide = true)]
    Worker {
        #[arg(long)]
        config: PathBuf,
    },
    #[command(name = "__edge", hide = true)]
    EdgeChild {
        #[arg(long)]
        nats: String,
    },
    #[command(name = "__mock", hide = true)]
    Mock {
        #[arg(long, default_value_t = 0)]
        first_token_us: u64,
        #[arg(long, default_value_t = 0)]
        token_interval_us: u64,
        #[arg(long, default_value_t = 12)]
        tokens: usize,
    },
}

#[derive(Debug, Args)]
struct Flags {
    /// Smoke run: tiny counts and durations (a few seconds in all); asserts no speed.
    #[arg(long)]
    quick: bool,
    /// Measured time per step, e.g. `5s`, `500ms`.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Discarded warm-up before each step.
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// Closed-loop concurrencies, comma-separated.
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Open-loop arrival rates per second, comma-separated.
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<f64>>,
    /// Runs per step; the median is reported.
    #[arg(long)]
    repeat: Option<usize>,
    /// Messages per jetstream-raw run.
    #[arg(long)]
    raw_msgs: Option<usize>,
    /// Closed-loop concurrencies of the stream scenario.
    #[arg(long, value_delimiter = ',')]
    stream_concurrency: Option<Vec<usize>>,
    /// Jobs the inflight scenario submits at once.
    #[arg(long)]
    inflight_jobs: Option<usize>,
    /// Upstream latency of the inflight scenario.
    #[arg(long, value_parser = humantime::parse_duration)]
    inflight_latency: Option<Duration>,
    /// Upstream latency of the scale scenario.
    #[arg(long, value_parser = humantime::parse_duration)]
    scale_latency: Option<Duration>,
    /// Each worker's provider max_concurrency in the scale scenario.
    #[arg(long)]
    scale_concurrency: Option<usize>,
    /// The workers' fetch_batch.
    #[arg(long)]
    fetch_batch: Option<usize>,
    /// Closed-loop concurrencies of the edge scenario, comma-separated.
    #[arg(long, value_delimiter = ',')]
    edge_concurrency: Option<Vec<usize>>,
    /// Streaming requests the edge scenario holds open at once on one edge (0: skip).
    #[arg(long)]
    edge_hold: Option<usize>,
    /// The mock's wait before the first token of those held streams.
    #[arg(long, value_parser = humantime::parse_duration)]
    edge_hold_delay: Option<Duration>,
    /// Closed-loop concurrencies of the policy scenario, comma-separated.
    #[arg(long, value_delimiter = ',')]
    policy_concurrency: Option<Vec<usize>>,
    /// Closed-loop concurrencies of the limits scenario, comma-separated.
    #[arg(long, value_delimiter = ',')]
    limits_concurrency: Option<Vec<usize>>,
    /// Worker processes per limits variant, comma-separated.
    #[arg(long, value_delimiter = ',')]
    limits_workers: Option<Vec<usize>>,
    /// Alternated rounds of the policy and limits comparisons; the median is reported.
    #[arg(long)]
    rounds: Option<usize>,
    /// Batch jobs the limits scenario leaves waiting on a used-up limit.
    #[arg(long)]
    wait_jobs: Option<usize>,
    /// How long the limits scenario samples CPU while those jobs wait.
    #[arg(long, value_parser = humantime::parse_duration)]
    wait_sample: Option<Duration>,
    /// Lines of the batch-file scenario's large file (the small one has a tenth).
    #[arg(long)]
    batch_lines: Option<usize>,
    /// Bytes of filler added to each batch-file line's prompt (a 2 GB file from fewer,
    /// larger lines).
    #[arg(long)]
    batch_line_pad: Option<usize>,
    /// Write the results as JSON here (`all` defaults to target/bench/all.json).
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Write the latency-vs-load SVG here (`all` defaults to target/bench/e2e-latency.svg).
    #[arg(long)]
    chart: Option<PathBuf>,
}

impl Flags {
    fn options(self) -> Options {
        let mut o = if self.quick {
            Options::quick()
        } else {
            Options::full()
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { o.$field = v; } )* };
        }
        set!(
            duration,
            warmup,
            concurrency,
            rates,
            repeat,
            raw_msgs,
            stream_concurrency,
            inflight_jobs,
            inflight_latency,
            scale_latency,
            scale_concurrency,
            fetch_batch,
            edge_concurrency,
            edge_hold,
            edge_hold_delay,
            policy_concurrency,
            limits_concurrency,
            limits_workers,
            rounds,
            wait_jobs,
            wait_sample,
            batch_lines,
            batch_line_pad
        );
        o.json_out = self.json_out;
        o.chart = self.chart;
        o
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (scenario, flags) = match cli.command {
        Command::Worker { config } => return child::worker_main(&config),
        Command::EdgeChild { nats } => return child::edge_main(&nats),
        Command::Mock {
            first_token_us,
            token_interval_us,
            tokens,
        } => {
            return child::mock_main(MockArgs {
                first_token_delay: Duration::from_micros(first_token_us),
                token_interval: Duration::from_micros(token_interval_us),
                tokens,
            });
        }
        Command::JetstreamRaw(f) => (Scenario::JetstreamRaw, f),
        Command::Direct(f) => (Scenario::Direct, f),
        Command::E2e(f) => (Scenario::E2e, f),
        Command::Stream(f) => (Scenario::Stream, f),
        Command::Edge(f) => (Scenario::Edge, f),
        Command::Inflight(f) => (Scenario::Inflight, f),
        Command::Scale(f) => (Scenario::Scale, f),
        Command::Policy(f) => (Scenario::Policy, f),
        Command::Limits(f) => (Scenario::Limits, f),
        Command::Durability(f) => (Scenario::Durability, f),
        Command::Sizes(f) => (Scenario::Sizes, f),
        Command::Priority(f) => (Scenario::Priority, f),
        Command::Fairness(f) => (Scenario::Fairness, f),
        Command::BatchFile(f) => (Scenario::BatchFile, f),
        Command::All(f) => (Scenario::All, f),
    };
    let options = flags.options();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("bench: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let ran: &[Scenario] = match scenario {
        Scenario::All => &Scenario::EACH,
        _ => std::slice::from_ref(&scenario),
    };
    let (passed, failed) = match runtime.block_on(bench::run(scenario, &options)) {
        Ok(report) => {
            if !report.failures.is_empty() {
                eprintln!("bench: {} functional failure(s):", report.failures.len());
                for failure in &report.failures {
                    eprintln!("  - {failure}");
                }
            }
            report.verdict(ran)
        }
        Err(err) => {
            eprintln!("bench {}: {err:#}", scenario.name());
            (0, ran.len())
        }
    };
    // A test runner's closing line: scenarios that worked end to end, and that did not.
    println!("bench: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
