//! `batch-file`: a large OpenAI Batch input file end to end through the `submitter` CLI
//! (issue 20, "Scale").
//!
//! A batch tool is judged as a whole process: how fast it gets a file's lines onto the
//! queue, whether it finishes as soon as the same jobs submitted from code do, how much
//! memory it needs (it must not grow with the file), and whether the results file holds
//! every line exactly once. So the real `submitter` binary runs as a child process, as an
//! operator runs it (`batch submit FILE --wait --json -o OUT --errors ERR`). Its phases are
//! timed from the JSON events it prints on stderr (`plan`, `submitted`, `finished`,
//! `results`); its peak RSS is its `VmHWM`, polled until it exits; the CPU of the CLI, the
//! worker, nats-server and the mock is read at each event, which tells where a phase's
//! time went. A file a tenth the size shows whether the peak is flat in the number of
//! lines. The same jobs then go through the library's `submit_detached` (256 in flight,
//! as `fairness` publishes them) until the queue is empty: the rate the CLI's completion
//! is held against.
//!
//! The lines carry the request every other scenario sends (system prompt and question,
//! about 1 KiB), so the worker's and the mock's cost per job is the same on both paths.
//! A CLI that fails or a wrong results file is a functional failure; timings never are.

mod check;
mod cli;
mod cpu;
mod figures;

pub use check::OutputCheck;
pub use cpu::PhaseCpu;
pub use figures::{BatchFileReport, CliRun, LibraryRun};

use std::path::Path;

use async_nats::jetstream;
use llmq_schemas::Tier;

use super::fairness::{drained, submit_detached};
use super::load::Failures;
use super::procstat::Watched;
use super::report::{Facts, Report, rate};
use super::setup::{Env, Llmq, MockChild, MockSpec, WorkerSpec, batch_stack};
use super::{Options, print_setup};
use crate::worker::workspace_binary;
use cli::cli_run;
use cpu::{Snapshot, phase_cpu, processes};

/// The CLI's goals: lines published per second, peak RSS in bytes.
const GOAL_SUBMIT_PER_SEC: f64 = 20_000.0;
const GOAL_PEAK_BYTES: f64 = 100e6;

pub async fn run(options: &Options, env: &mut Env, report: &mut Report) -> anyhow::Result<()> {
    let lines = options.batch_lines.max(10);
    let cli = workspace_binary("submitter");
    anyhow::ensure!(
        cli.is_file(),
        "no submitter binary at {} (build it with the same profile: cargo build [--release] -p llmq-submitter --bin submitter)",
        cli.display()
    );
    let (mock, llmq, spec) = batch_stack(MockSpec::instant(), options.fetch_batch, env).await?;
    let facts = setup_facts(lines, &spec, &cli);
    print_setup("batch-file", env, &facts);
    llmq.warm_up(20, false).await?;
    let load_before = load_average();
    let mut failures = Failures::default();
    let mut runs = Vec::new();
    for n in [lines / 10, lines] {
        let run = cli_run(&cli, &llmq, &mock, n, options.batch_line_pad).await?;
        for problem in &run.check.problems {
            failures.add(format!("{n} lines: {problem}"));
        }
        runs.push(run);
    }
    let library = library_run(&llmq, &mock, lines, &mut failures).await?;
    llmq.stop().await?;
    mock.stop().await;
    let result = BatchFileReport {
        setup: facts,
        cli: runs,
        library,
        load_before,
        load_after: load_average(),
        failures,
    };
    for table in result.tables() {
        println!("{table}");
    }
    report.fail("batch-file", "results", &result.failures);
    report.batch_file = Some(result);
    Ok(())
}

fn setup_facts(lines: usize, spec: &WorkerSpec, cli: &Path) -> Facts {
    let mut facts = Facts::default();
    facts
        .add("mock", MockSpec::instant().describe())
        .add(
            "worker",
            format!("one process, {}, batch_share 0.5", spec.describe()),
        )
        .add(
            "CLI",
            format!("{} (tenant default, tier batch)", cli.display()),
        )
        .add(
            "load",
            format!(
                "a {}-line file, then a {lines}-line one; then {lines} jobs through the library",
                lines / 10
            ),
        )
        .add(
            "line",
            "the benchmark request (system prompt + question, ~1 KiB)",
        );
    facts
}

/// The machine's load averages over 1, 5 and 15 minutes.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The `custom_id` of input line `index`.
fn custom_id(index: usize) -> String {
    format!("req-{index}")
}

/// The index of an input line's `custom_id`, if it is one.
fn line_index(custom_id: &str) -> Option<usize> {
    custom_id.strip_prefix("req-")?.parse().ok()
}

// ---- the library run ------------------------------------------------------------------

/// `jobs` batch-tier jobs through `submit_detached`, 256 in flight, until the queue is
/// empty.
async fn library_run(
    llmq: &Llmq,
    mock: &MockChild,
    jobs: usize,
    failures: &mut Failures,
) -> anyhow::Result<LibraryRun> {
    let js = jetstream::new(llmq.world.nats.client().await);
    drained(&js).await;
    let procs = processes(Watched::this_process(), llmq, mock)?;
    let start = Snapshot::take(&procs);
    submit_detached(
        std::slice::from_ref(&llmq.client),
        Tier::Batch,
        jobs,
        failures,
    )
    .await;
    let published = Snapshot::take(&procs);
    drained(&js).await;
    let done = Snapshot::take(&procs);
    let (publish_s, completion_s) = (published.secs_since(&start), done.secs_since(&start));
    let run = LibraryRun {
        jobs,
        publish_s,
        publish_per_sec: jobs as f64 / publish_s.max(1e-9),
        completion_s,
        completion_per_sec: jobs as f64 / completion_s.max(1e-9),
        cpu: vec![
            phase_cpu("publish", &procs, &start, &published),
            phase_cpu("drain", &procs, &published, &done),
        ],
    };
    println!(
        "  library: publish {} jobs/s, completion {} jobs/s",
        rate(run.publish_per_sec),
        rate(run.completion_per_sec)
    );
    Ok(run)
}
