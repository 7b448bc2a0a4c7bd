//! `direct`: the upstream's own limit, without llmq.
//!
//! The same chat request the worker sends, straight to the mock with a pooled reqwest
//! client (as the worker's provider client is pooled), in a closed loop at each
//! concurrency. This is the baseline llmq's overhead is measured against: `e2e` at
//! concurrency N minus `direct` at N is what the queue hop and the worker add. The mock
//! reports its own service time in `x-mock-service-us`, so the upstream's share is
//! known too.

use std::sync::Arc;

use anyhow::Context;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::Serialize;

use super::load::{Failures, Window, closed_loop};
use super::procstat::{Meter, ProcUsage, Watched};
use super::report::{Facts, Report, Table, cores, ms, rate};
use super::setup::{Env, MockChild, MockSpec, upstream_body};
use super::stats::{Latencies, Summary};
use super::{Options, median_run};
use crate::worker::TEST_KEY;

#[derive(Debug, Clone, Serialize)]
pub struct DirectRun {
    pub concurrency: usize,
    pub requests_per_sec: f64,
    /// Request sent to body read, at the client.
    pub latency: Summary,
    /// The mock's own time per request (`x-mock-service-us`).
    pub service: Summary,
    pub processes: Vec<ProcUsage>,
    pub failures: Failures,
}

#[derive(Debug, Clone, Serialize)]
pub struct DirectReport {
    pub setup: Facts,
    pub runs: Vec<DirectRun>,
}

impl DirectReport {
    pub fn at(&self, concurrency: usize) -> Option<&DirectRun> {
        self.runs.iter().find(|r| r.concurrency == concurrency)
    }

    pub fn best(&self) -> Option<f64> {
        self.runs
            .iter()
            .map(|r| r.requests_per_sec)
            .reduce(f64::max)
    }

    pub fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            "direct: the chat request straight to the mock (pooled reqwest client, closed loop)",
            &[
                "concurrency",
                "req/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "mock service p50 ms",
                "mock cores",
                "bench cores",
                "failed",
            ],
        );
        for r in &self.runs {
            let cpu = |name: &str| {
                r.processes
                    .iter()
                    .find(|p| p.name.starts_with(name))
                    .map_or_else(|| "-".into(), |p| cores(p.cores))
            };
            t.row(vec![
                r.concurrency.to_string(),
                rate(r.requests_per_sec),
                ms(r.latency.p50_us),
                ms(r.latency.p90_us),
                ms(r.latency.p99_us),
                ms(r.latency.max_us),
                ms(r.service.p50_us),
                cpu("mock"),
                cpu("bench"),
                r.failures.count.to_string(),
            ]);
        }
        vec![t]
    }
}

pub async fn run(options: &Options, env: &mut Env, report: &mut Report) -> anyhow::Result<()> {
    let spec = MockSpec::instant();
    let mut mock = MockChild::spawn(spec).await?;
    let setup = facts(options, spec);
    super::print_setup("direct", env, &setup);
    let runs = measure(&mut mock, &options.concurrency, options).await?;
    mock.stop().await;
    let result = DirectReport { setup, runs };
    for table in result.tables() {
        println!("{table}");
    }
    for r in &result.runs {
        report.fail(
            "direct",
            &format!("concurrency {}", r.concurrency),
            &r.failures,
        );
    }
    report.direct = Some(result);
    Ok(())
}

pub fn facts(options: &Options, spec: MockSpec) -> Facts {
    let mut setup = Facts::default();
    setup
        .add(
            "payload",
            format!(
                "{} bytes (the OpenAI body the worker sends)",
                upstream_body().len()
            ),
        )
        .add("mock", format!("{} (lean mode)", spec.describe()))
        .add("concurrency", format!("{:?}", options.concurrency))
        .add(
            "duration",
            format!(
                "{:?} per step after {:?} warm-up",
                options.duration, options.warmup
            ),
        )
        .add(
            "repeats",
            format!("{} per step (median run by req/s)", options.repeat),
        )
        .add(
            "processes",
            "mock: own process (bench __mock); client: this process",
        );
    setup
}

/// Closed loops against `mock` at each concurrency.
pub async fn measure(
    mock: &mut MockChild,
    concurrencies: &[usize],
    options: &Options,
) -> anyhow::Result<Vec<DirectRun>> {
    let max = concurrencies.iter().copied().max().unwrap_or(1);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(max)
        .tcp_nodelay(true)
        .build()
        .context("build the HTTP client")?;
    let url = Arc::new(format!("{}/v1/chat/completions", mock.url));
    let body = upstream_body();
    let window = Window {
        warmup: options.warmup,
        duration: options.duration,
    };
    let watched = [Watched::new("mock", mock.pid), Watched::this_process()];
    let mut runs = Vec::new();
    for &concurrency in concurrencies {
        let mut repeats = Vec::new();
        for _ in 0..options.repeat.max(1) {
            let (http, url, body) = (http.clone(), Arc::clone(&url), body.clone());
            let meter = Meter::start(&watched);
            let run = closed_loop(concurrency, window, move || {
                let request = http
                    .post(url.as_str())
                    .header(AUTHORIZATION, format!("Bearer {TEST_KEY}"))
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
                async move {
                    let response = request.send().await.map_err(|e| format!("request: {e}"))?;
                    let status = response.status();
                    let service = response
                        .headers()
                        .get("x-mock-service-us")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                    response.bytes().await.map_err(|e| format!("body: {e}"))?;
                    if !status.is_success() {
                        return Err(format!("status {status}"));
                    }
                    Ok(service)
                }
            })
            .await;
            let processes = meter.finish();
            let mut service = Latencies::new();
            for &us in &run.outputs {
                service.record_us(us);
            }
            repeats.push(DirectRun {
                concurrency,
                requests_per_sec: run.throughput(),
                latency: run.latency.summary(),
                service: service.summary(),
                processes,
                failures: run.failures,
            });
        }
        let mut failures = Failures::default();
        for r in &repeats {
            failures.merge(r.failures.clone());
        }
        let mut chosen = median_run(repeats, |r| r.requests_per_sec);
        chosen.failures = failures;
        runs.push(chosen);
    }
    mock.reset().await?;
    Ok(runs)
}
