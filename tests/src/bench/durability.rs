//! `durability`: what each broker guarantee costs in jobs/s.
//!
//! The same llmq (one worker, the instant mock, the `e2e` load at one job in flight and
//! many) on three brokers, one after the other on the same machine:
//! - one server with JetStream's default fsync (every 2 minutes): a killed server can lose
//!   what it acknowledged in that window;
//! - one server with `sync_interval: always`: what it acknowledged is on its disk;
//! - three clustered servers with `jetstream.replicas = 3`: what it acknowledged is on a
//!   majority of the servers, so losing any one loses nothing.
//!
//! On a 2-core machine the three servers share the cores with the worker and the producer,
//! so the cluster's figure is a floor for one whose servers have machines of their own.

use std::path::Path;

use anyhow::Context;
use llmq_submitter::{Client, ClientOptions, NatsOptions as ClientNats};
use serde::Serialize;

use super::e2e::worker_spec;
use super::load::{Failures, Window, closed_loop};
use super::report::{Facts, Report, Table, ms, rate};
use super::setup::{
    Env, MockChild, MockSpec, PROMPT, WorkerChild, job, job_payload, run_job, worker_setup_at,
};
use super::stats::Summary;
use super::{Options, print_setup};
use crate::cluster::TestCluster;
use crate::nats::{NatsOptions, TestNats};

/// The brokers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Broker {
    OneServer,
    OneServerSyncAlways,
    ThreeServersReplicas3,
}

impl Broker {
    const ALL: [Broker; 3] = [
        Broker::OneServer,
        Broker::OneServerSyncAlways,
        Broker::ThreeServersReplicas3,
    ];

    fn describe(self) -> &'static str {
        match self {
            Broker::OneServer => "1 server, fsync every 2 min (default)",
            Broker::OneServerSyncAlways => "1 server, sync_interval: always",
            Broker::ThreeServersReplicas3 => "3 clustered servers, replicas = 3",
        }
    }

    fn replicas(self) -> usize {
        match self {
            Broker::ThreeServersReplicas3 => 3,
            _ => 1,
        }
    }
}

/// The running broker's servers (one, or a cluster's three), kept alive while measured.
struct Running {
    nodes: Vec<TestNats>,
}

impl Running {
    async fn start(broker: Broker) -> Running {
        let nodes = match broker {
            Broker::OneServer => vec![TestNats::start().await],
            Broker::OneServerSyncAlways => vec![
                TestNats::start_with(NatsOptions {
                    sync_always: true,
                    ..NatsOptions::default()
                })
                .await,
            ],
            Broker::ThreeServersReplicas3 => TestCluster::start().await.nodes,
        };
        Running { nodes }
    }

    fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(TestNats::url).collect();
        urls.join(",")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DurabilityStep {
    pub broker: Broker,
    pub concurrency: usize,
    pub jobs_per_sec: f64,
    pub latency: Summary,
    pub failures: Failures,
}

#[derive(Debug, Clone, Serialize)]
pub struct DurabilityReport {
    pub setup: Facts,
    pub steps: Vec<DurabilityStep>,
}

impl DurabilityReport {
    pub fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            "durability: jobs end to end on each broker (one worker, same machine)",
            &[
                "broker",
                "in flight",
                "jobs/s",
                "vs default",
                "p50 ms",
                "p99 ms",
                "failed",
            ],
        );
        for s in &self.steps {
            let ratio = self
                .baseline(s.concurrency)
                .filter(|base| *base > 0.0)
                .map_or("-".to_owned(), |base| {
                    format!("{:.2}", s.jobs_per_sec / base)
                });
            t.row(vec![
                s.broker.describe().to_owned(),
                s.concurrency.to_string(),
                rate(s.jobs_per_sec),
                ratio,
                ms(s.latency.p50_us),
                ms(s.latency.p99_us),
                s.failures.count.to_string(),
            ]);
        }
        vec![t]
    }

    /// The default broker's jobs/s at `concurrency`.
    fn baseline(&self, concurrency: usize) -> Option<f64> {
        self.steps
            .iter()
            .find(|s| s.broker == Broker::OneServer && s.concurrency == concurrency)
            .map(|s| s.jobs_per_sec)
    }
}

pub async fn run(options: &Options, env: &mut Env, report: &mut Report) -> anyhow::Result<()> {
    let mut mock = MockChild::spawn(MockSpec::instant()).await?;
    let concurrency = [1, *options.concurrency.iter().max().unwrap_or(&64)];
    let mut setup = Facts::default();
    setup
        .add("mock", MockSpec::instant().describe())
        .add("payload", format!("{} bytes per job", job_payload().len()))
        .add(
            "worker",
            format!("one, {}", worker_spec(options).describe()),
        )
        .add(
            "load",
            format!("closed loop at {concurrency:?} jobs in flight"),
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
            "every nats-server, the worker and the mock in their own processes, on the same cores",
        );
    print_setup("durability", env, &setup);
    let window = Window {
        warmup: options.warmup,
        duration: options.duration,
    };
    let mut steps = Vec::new();
    for broker in Broker::ALL {
        steps.extend(measure(broker, &concurrency, window, options, &mock.url).await?);
        mock.reset().await?;
    }
    println!();
    mock.stop().await;
    let result = DurabilityReport { setup, steps };
    for table in result.tables() {
        println!("{table}");
    }
    for s in &result.steps {
        let what = format!("{} c={}", s.broker.describe(), s.concurrency);
        report.fail("durability", &what, &s.failures);
    }
    report.durability = Some(result);
    Ok(())
}

/// One broker: started, one worker on it, each concurrency measured, all stopped.
async fn measure(
    broker: Broker,
    concurrency: &[usize],
    window: Window,
    options: &Options,
    mock_url: &str,
) -> anyhow::Result<Vec<DurabilityStep>> {
    let running = Running::start(broker).await;
    let dir = tempfile::tempdir().context("temp dir")?;
    let worker = start_worker(dir.path(), &running, broker, options, mock_url).await?;
    let client = Client::connect(ClientOptions {
        nats: ClientNats::with_url(running.urls()),
        check_catalog: true,
        ..ClientOptions::default()
    })
    .await
    .context("producer cannot connect")?;
    for _ in 0..2 {
        run_job(&client, job(PROMPT, false))
            .await
            .map_err(|err| anyhow::anyhow!("warm-up job failed: {err}"))?;
    }
    let mut steps = Vec::new();
    for &c in concurrency {
        let client = client.clone();
        let run = closed_loop(c, window, move || {
            let client = client.clone();
            async move { run_job(&client, job(PROMPT, false)).await.map(drop) }
        })
        .await;
        println!(
            "  {}, {c} in flight: {} jobs/s",
            broker.describe(),
            rate(run.throughput())
        );
        steps.push(DurabilityStep {
            broker,
            concurrency: c,
            jobs_per_sec: run.throughput(),
            latency: run.latency.summary(),
            failures: run.failures,
        });
    }
    worker.stop().await?;
    Ok(steps)
}

async fn start_worker(
    dir: &Path,
    running: &Running,
    broker: Broker,
    options: &Options,
    mock_url: &str,
) -> anyhow::Result<WorkerChild> {
    let mut setup = worker_setup_at(dir, &running.urls(), mock_url, worker_spec(options));
    setup.set("jetstream", "replicas", &broker.replicas().to_string());
    WorkerChild::spawn(&setup, dir, "worker").await
}
