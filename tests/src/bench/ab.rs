//! A/B runs: the same closed-loop load against variants of llmq that run side by side.
//!
//! A difference of a few microseconds per job is smaller than what this shared 2-core
//! machine drifts by in a minute, so variants measured one after the other would compare
//! the machine's moods. Instead every variant is up at once (its own nats-server and
//! workers, one shared mock) and the steps alternate round by round, in ABBA order, so
//! drift and order effects fall on every variant alike; per variant and concurrency the
//! median round (by jobs/s) is reported. A variant that is not being measured idles.

use llmq_schemas::Outcome;
use serde::Serialize;

use super::load::{Failures, Window, closed_loop};
use super::median_run;
use super::procstat::{Meter, ProcUsage, Watched};
use super::report::{Table, cores, ms, pct, rate};
use super::setup::{Llmq, PROMPT, job, run_job};
use super::stats::Summary;

/// What a variant's outcomes must show besides `succeeded` (that its setting applied).
pub type Check = fn(&Outcome) -> Result<(), String>;

/// Accepts every succeeded outcome.
pub fn any_outcome(_: &Outcome) -> Result<(), String> {
    Ok(())
}

/// One variant of llmq, running.
#[derive(Debug)]
pub struct Arm {
    pub name: &'static str,
    pub llmq: Llmq,
    pub watched: Vec<Watched>,
    pub check: Check,
}

impl Arm {
    /// Watches `llmq`'s processes and the mock's.
    pub fn new(name: &'static str, llmq: Llmq, mock_pid: u32, check: Check) -> anyhow::Result<Arm> {
        let mut watched = llmq.watched()?;
        watched.push(Watched::new("mock", mock_pid));
        Ok(Arm {
            name,
            llmq,
            watched,
            check,
        })
    }
}

/// One variant at one concurrency: the median round.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub variant: &'static str,
    pub workers: usize,
    pub concurrency: usize,
    pub jobs_per_sec: f64,
    pub latency: Summary,
    pub processes: Vec<ProcUsage>,
    /// Every round's failures.
    pub failures: Failures,
    pub rounds: usize,
}

impl Step {
    /// Cores of every process whose name starts with `name` (all workers together).
    pub fn cores(&self, name: &str) -> f64 {
        self.processes
            .iter()
            .filter(|p| p.name.starts_with(name))
            .map(|p| p.cores)
            .sum()
    }

    /// CPU time per job of the processes named `name*`, in microseconds.
    pub fn cpu_us_per_job(&self, name: &str) -> f64 {
        if self.jobs_per_sec > 0.0 {
            self.cores(name) * 1e6 / self.jobs_per_sec
        } else {
            0.0
        }
    }
}

/// Measures one closed-loop step of `arm`.
pub async fn measure(arm: &Arm, concurrency: usize, window: Window) -> Step {
    let client = arm.llmq.client.clone();
    let check = arm.check;
    let meter = Meter::start(&arm.watched);
    let run = closed_loop(concurrency, window, move || {
        let client = client.clone();
        async move {
            let outcome = run_job(&client, job(PROMPT, false)).await?;
            check(&outcome).map_err(|err| format!("job {}: {err}", outcome.job_id))
        }
    })
    .await;
    Step {
        variant: arm.name,
        workers: arm.llmq.workers.len(),
        concurrency,
        jobs_per_sec: run.throughput(),
        latency: run.latency.summary(),
        processes: meter.finish(),
        failures: run.failures,
        rounds: 1,
    }
}

/// Every arm at every concurrency, `rounds` times alternated (ABBA); the median round
/// of each, in the order of `concurrencies` then `arms`.
pub async fn alternate(
    arms: &[Arm],
    concurrencies: &[usize],
    rounds: usize,
    window: Window,
) -> Vec<Step> {
    let mut runs: Vec<Vec<Step>> = vec![Vec::new(); concurrencies.len() * arms.len()];
    for round in 0..rounds.max(1) {
        for (ci, &concurrency) in concurrencies.iter().enumerate() {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..arms.len()).collect()
            } else {
                (0..arms.len()).rev().collect()
            };
            for ai in order {
                let step = measure(&arms[ai], concurrency, window).await;
                println!(
                    "  round {}: {} ({} worker(s)) c={concurrency}: {} jobs/s, p50 {} ms",
                    round + 1,
                    step.variant,
                    step.workers,
                    rate(step.jobs_per_sec),
                    ms(step.latency.p50_us)
                );
                runs[ci * arms.len() + ai].push(step);
            }
        }
    }
    runs.into_iter()
        .filter(|r| !r.is_empty())
        .map(median_of_rounds)
        .collect()
}

/// The median round, carrying every round's failures.
fn median_of_rounds(rounds: Vec<Step>) -> Step {
    let count = rounds.len();
    let mut failures = Failures::default();
    for step in &rounds {
        failures.merge(step.failures.clone());
    }
    let mut chosen = median_run(rounds, |s| s.jobs_per_sec);
    chosen.failures = failures;
    chosen.rounds = count;
    chosen
}

/// What a variant costs over a base at the same concurrency and worker count.
#[derive(Debug, Clone, Serialize)]
pub struct Delta {
    pub base: &'static str,
    pub variant: &'static str,
    pub workers: usize,
    pub concurrency: usize,
    /// Variant jobs/s over base jobs/s.
    pub throughput_ratio: f64,
    pub added_p50_us: i64,
    pub added_p99_us: i64,
    /// The machine's time per job, from throughput: 1/jobs/s of the variant minus the base's.
    pub added_us_per_job: f64,
    /// CPU per job of the workers (all summed) and of nats-server, variant minus base.
    pub added_worker_cpu_us: f64,
    pub added_nats_cpu_us: f64,
}

impl Delta {
    pub fn between(base: &Step, variant: &Step) -> Delta {
        let per_job = |s: &Step| {
            if s.jobs_per_sec > 0.0 {
                1e6 / s.jobs_per_sec
            } else {
                0.0
            }
        };
        Delta {
            base: base.variant,
            variant: variant.variant,
            workers: variant.workers,
            concurrency: variant.concurrency,
            throughput_ratio: if base.jobs_per_sec > 0.0 {
                variant.jobs_per_sec / base.jobs_per_sec
            } else {
                0.0
            },
            added_p50_us: variant.latency.p50_us - base.latency.p50_us,
            added_p99_us: variant.latency.p99_us - base.latency.p99_us,
            added_us_per_job: per_job(variant) - per_job(base),
            added_worker_cpu_us: variant.cpu_us_per_job("worker") - base.cpu_us_per_job("worker"),
            added_nats_cpu_us: variant.cpu_us_per_job("nats") - base.cpu_us_per_job("nats"),
        }
    }
}

/// Steps as a table: one row per variant, worker count and concurrency.
pub fn steps_table(title: &str, steps: &[Step]) -> Table {
    let mut t = Table::new(
        title,
        &[
            "variant",
            "workers",
            "concurrency",
            "jobs/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "worker cores",
            "worker µs/job",
            "nats cores",
            "nats µs/job",
            "rounds",
            "failed",
        ],
    );
    for s in steps {
        t.row(vec![
            s.variant.to_owned(),
            s.workers.to_string(),
            s.concurrency.to_string(),
            rate(s.jobs_per_sec),
            pct(&s.latency, |s| s.p50_us),
            pct(&s.latency, |s| s.p90_us),
            pct(&s.latency, |s| s.p99_us),
            cores(s.cores("worker")),
            format!("{:.0}", s.cpu_us_per_job("worker")),
            cores(s.cores("nats")),
            format!("{:.0}", s.cpu_us_per_job("nats")),
            s.rounds.to_string(),
            s.failures.count.to_string(),
        ]);
    }
    t.note("median round by jobs/s; worker columns sum every worker process");
    t
}

/// Deltas as a table.
pub fn deltas_table(title: &str, deltas: &[Delta]) -> Table {
    let mut t = Table::new(
        title,
        &[
            "variant vs base",
            "workers",
            "concurrency",
            "jobs/s ratio",
            "added p50 µs",
            "added p99 µs",
            "µs/job (1/jobs/s)",
            "worker CPU µs/job",
            "nats CPU µs/job",
        ],
    );
    for d in deltas {
        t.row(vec![
            format!("{} vs {}", d.variant, d.base),
            d.workers.to_string(),
            d.concurrency.to_string(),
            format!("{:.3}", d.throughput_ratio),
            format!("{:+}", d.added_p50_us),
            format!("{:+}", d.added_p99_us),
            format!("{:+.1}", d.added_us_per_job),
            format!("{:+.1}", d.added_worker_cpu_us),
            format!("{:+.1}", d.added_nats_cpu_us),
        ]);
    }
    t
}

/// Stops every arm's workers; each unclean stop is a message.
pub async fn stop(arms: Vec<Arm>, scenario: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for arm in arms {
        let name = arm.name;
        if let Err(err) = arm.llmq.stop().await {
            failures.push(format!("{scenario}: stopping {name}: {err:#}"));
        }
    }
    failures
}
