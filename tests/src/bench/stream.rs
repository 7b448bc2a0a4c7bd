//! `stream`: what llmq adds to a streamed token's way from the provider to the producer.
//!
//! The mock runs in this process (not as a child) with `record_token_times`, so the
//! instant it wrote each content chunk and the instant the producer received the matching
//! delta come from the same `Instant` clock. Each job has a unique prompt, which is how a
//! mock recording is matched to a producer's trace. Per job:
//! - first-token overhead = first delta's arrival - the mock's first chunk write;
//! - inter-token overhead = producer inter-arrival - mock inter-write, per later token
//!   (negative when a delta caught up with its predecessor).
//!
//! The worker is its own process (`bench __worker`); the mock shares this process's
//! runtime with the producer, which the setup printout says.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use llmq_schemas::{OutcomeStatus, ReplyEvent};
use serde::Serialize;

use super::Options;
use super::load::{Failures, Window, closed_loop};
use super::procstat::{Meter, ProcUsage};
use super::report::{Facts, Report, Table, cores, ms};
use super::setup::{Env, Llmq, MockSpec, OUTCOME_TIMEOUT, PROMPT, WorkerSpec, job, job_payload};
use super::stats::Summary;
use crate::mock::{MockOptions, MockProvider};

#[derive(Debug, Clone, Serialize)]
pub struct StreamStep {
    pub concurrency: usize,
    pub jobs: u64,
    pub first_token_overhead: Summary,
    pub inter_token_overhead: Summary,
    /// Producer's submit call to first delta (includes the mock's first-token delay).
    pub time_to_first_token: Summary,
    /// Jobs whose delta count differed from the mock's chunk count (not used).
    pub unmatched: u64,
    pub processes: Vec<ProcUsage>,
    pub failures: Failures,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub setup: Facts,
    pub mock: MockSpec,
    pub steps: Vec<StreamStep>,
}

impl StreamReport {
    pub fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            "stream: overhead per token (producer arrival vs mock write, same clock)",
            &[
                "concurrency",
                "jobs",
                "first-token p50 ms",
                "first-token p99 ms",
                "inter-token p50 ms",
                "inter-token p99 ms",
                "TTFT p50 ms",
                "worker cores",
                "unmatched",
                "failed",
            ],
        );
        for s in &self.steps {
            let worker = s
                .processes
                .iter()
                .find(|p| p.name.starts_with("worker"))
                .map_or_else(|| "-".into(), |p| cores(p.cores));
            t.row(vec![
                s.concurrency.to_string(),
                s.jobs.to_string(),
                ms(s.first_token_overhead.p50_us),
                ms(s.first_token_overhead.p99_us),
                ms(s.inter_token_overhead.p50_us),
                ms(s.inter_token_overhead.p99_us),
                ms(s.time_to_first_token.p50_us),
                worker,
                s.unmatched.to_string(),
                s.failures.count.to_string(),
            ]);
        }
        t.note(format!("mock: {}", self.mock.describe()));
        vec![t]
    }
}

/// What the producer saw of one streamed job.
#[derive(Debug)]
struct Trace {
    prompt: String,
    submitted: Instant,
    arrivals: Vec<Instant>,
}

pub fn mock_spec(options: &Options) -> MockSpec {
    if options.quick {
        MockSpec {
            first_token_delay: Duration::from_millis(5),
            token_interval: Duration::from_millis(1),
            tokens: 5,
        }
    } else {
        MockSpec {
            first_token_delay: Duration::from_millis(10),
            token_interval: Duration::from_millis(2),
            tokens: 20,
        }
    }
}

pub async fn run(options: &Options, env: &mut Env, report: &mut Report) -> anyhow::Result<()> {
    let spec = mock_spec(options);
    let mock = MockProvider::start(MockOptions {
        first_token_delay: spec.first_token_delay,
        token_interval: spec.token_interval,
        tokens_per_reply: spec.tokens,
        lean: true,
        record_token_times: true,
        ..MockOptions::default()
    })
    .await;
    let max = options
        .stream_concurrency
        .iter()
        .copied()
        .max()
        .unwrap_or(1);
    let worker = WorkerSpec {
        max_inflight: max.max(64) * 2,
        fetch_batch: options.fetch_batch,
        max_concurrency: max.max(64) * 2,
    };
    let llmq = Llmq::start(&mock.base_url(), worker, 1).await?;
    env.nats_server = llmq.world.nats_version().await;
    let mut setup = Facts::default();
    setup
        .add(
            "mock",
            format!("{} (lean, records chunk write instants)", spec.describe()),
        )
        .add("payload", format!("{} bytes per job", job_payload().len()))
        .add("worker", worker.describe())
        .add(
            "concurrency",
            format!("{:?} (closed loop)", options.stream_concurrency),
        )
        .add(
            "duration",
            format!(
                "{:?} per step after {:?} warm-up",
                options.duration, options.warmup
            ),
        )
        .add(
            "processes",
            "worker: own process (bench __worker); mock: in this process (same Instant clock as \
             the producer, shares its runtime); nats-server: own process",
        );
    super::print_setup("stream", env, &setup);

    llmq.warm_up(if options.quick { 2 } else { 20 }, true)
        .await?;
    let watched = llmq.watched()?;
    let window = Window {
        warmup: options.warmup,
        duration: options.duration,
    };
    let counter = Arc::new(AtomicU64::new(0));
    let mut steps = Vec::new();
    for &concurrency in &options.stream_concurrency {
        mock.wait_for_in_flight(0, Duration::from_secs(10)).await;
        mock.reset_stats();
        let (client, counter) = (llmq.client.clone(), Arc::clone(&counter));
        let meter = Meter::start(&watched);
        let run = closed_loop(concurrency, window, move || {
            let client = client.clone();
            let n = counter.fetch_add(1, Ordering::Relaxed);
            async move { stream_job(&client, format!("[job {n}] {PROMPT}")).await }
        })
        .await;
        let processes = meter.finish();
        mock.wait_for_in_flight(0, Duration::from_secs(10)).await;
        let writes: HashMap<String, Vec<Instant>> = mock.token_times().into_iter().collect();
        let step = overheads(concurrency, &run.outputs, &writes);
        steps.push(StreamStep {
            processes,
            failures: run.failures,
            ..step
        });
    }
    let stopped = llmq.stop().await;
    let result = StreamReport {
        setup,
        mock: spec,
        steps,
    };
    for table in result.tables() {
        println!("{table}");
    }
    for s in &result.steps {
        report.fail(
            "stream",
            &format!("concurrency {}", s.concurrency),
            &s.failures,
        );
        if s.jobs == 0 {
            report.failures.push(format!(
                "stream: concurrency {}: no job could be matched to the mock's recording",
                s.concurrency
            ));
        }
    }
    if let Err(err) = stopped {
        report.failures.push(format!("stream: {err:#}"));
    }
    report.stream = Some(result);
    Ok(())
}

async fn stream_job(client: &llmq_submitter::Client, prompt: String) -> Result<Trace, String> {
    let job = job(&prompt, true);
    let submitted = Instant::now();
    let mut handle = client
        .submit(job)
        .await
        .map_err(|e| format!("submit: {e}"))?;
    let mut arrivals = Vec::new();
    loop {
        let event = tokio::time::timeout(OUTCOME_TIMEOUT, handle.next_event())
            .await
            .map_err(|_| format!("no event within {OUTCOME_TIMEOUT:?}"))?;
        match event {
            Some(Ok(ReplyEvent::Delta(_))) => arrivals.push(Instant::now()),
            Some(Ok(ReplyEvent::Final(outcome))) => {
                if outcome.status != OutcomeStatus::Succeeded {
                    return Err(format!(
                        "streamed job ended {}: {:?}",
                        outcome.status, outcome.error
                    ));
                }
                return Ok(Trace {
                    prompt,
                    submitted,
                    arrivals,
                });
            }
            Some(Ok(ReplyEvent::Restart(restart))) => {
                return Err(format!("stream restarted: {}", restart.message));
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(format!("event: {err}")),
            None => return Err("events ended without an outcome".into()),
        }
    }
}

fn signed_us(later: Instant, earlier: Instant) -> i64 {
    if later >= earlier {
        (later - earlier).as_micros() as i64
    } else {
        -((earlier - later).as_micros() as i64)
    }
}

/// Matches each trace to the mock's recording of the same prompt.
fn overheads(
    concurrency: usize,
    traces: &[Trace],
    writes: &HashMap<String, Vec<Instant>>,
) -> StreamStep {
    let (mut first, mut inter, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
    let (mut jobs, mut unmatched) = (0, 0);
    for trace in traces {
        let Some(written) = writes.get(&trace.prompt) else {
            unmatched += 1;
            continue;
        };
        if written.len() != trace.arrivals.len() || written.is_empty() {
            unmatched += 1;
            continue;
        }
        jobs += 1;
        first.push(signed_us(trace.arrivals[0], written[0]));
        ttft.push(signed_us(trace.arrivals[0], trace.submitted));
        for i in 1..written.len() {
            let produced = signed_us(trace.arrivals[i], trace.arrivals[i - 1]);
            let mocked = signed_us(written[i], written[i - 1]);
            inter.push(produced - mocked);
        }
    }
    StreamStep {
        concurrency,
        jobs,
        first_token_overhead: Summary::of_signed(first),
        inter_token_overhead: Summary::of_signed(inter),
        time_to_first_token: Summary::of_signed(ttft),
        unmatched,
        processes: Vec::new(),
        failures: Failures::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overheads_match_traces_to_recordings_by_prompt() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let writes = HashMap::from([
            ("a".to_owned(), vec![at(10), at(20), at(30)]),
            ("b".to_owned(), vec![at(10)]),
        ]);
        let traces = [
            Trace {
                prompt: "a".into(),
                submitted: t0,
                arrivals: vec![at(11), at(23), at(32)],
            },
            Trace {
                prompt: "b".into(),
                submitted: t0,
                arrivals: vec![at(11), at(12)],
            },
            Trace {
                prompt: "c".into(),
                submitted: t0,
                arrivals: vec![at(1)],
            },
        ];
        let step = overheads(1, &traces, &writes);
        assert_eq!((step.jobs, step.unmatched), (1, 2));
        assert_eq!(step.first_token_overhead.p50_us, 1000);
        // inter-token: (12 - 10) and (9 - 10) ms
        assert_eq!(step.inter_token_overhead.count, 2);
        assert_eq!(step.inter_token_overhead.max_us, 2000);
        assert_eq!(step.inter_token_overhead.p50_us, -1000);
        assert_eq!(step.time_to_first_token.p50_us, 11_000);
    }
}
