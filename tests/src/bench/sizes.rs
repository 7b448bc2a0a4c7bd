//! `sizes`: what a request over one NATS message costs.
//!
//! On a nats-server with its default `max_payload` (1 MiB), one job at a time, submit to
//! outcome of a job with a 1 KiB request against one with a 2 MiB request (a base64
//! image), which goes as a claim check: its chunks are published first, the worker reads
//! them back, and deletes them after the outcome. Then the claim check alone: a 4 MiB
//! blob written and read back, by chunk size, which is how the chunk size was chosen.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use llmq_runtime::Budget;
use llmq_runtime::blob::{self, MISSING_CHUNK_WAIT, Sizes, WriteOptions};
use llmq_schemas::{ChatRequest, Content, ContentPart, ImageUrl, Job, Message, Role};
use llmq_submitter::{Client, ClientOptions, NatsOptions as ClientNats};
use serde::Serialize;

use super::e2e::worker_spec;
use super::load::Failures;
use super::report::{Facts, Report, Table, ms};
use super::setup::{Env, MODEL, MockChild, MockSpec, WorkerChild, run_job, worker_setup_at};
use super::stats::{Latencies, Summary};
use super::{Options, print_setup};
use crate::nats::{NatsOptions, TestNats};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Submit to outcome for one request size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeStep {
    pub request_bytes: usize,
    pub latency: Summary,
    pub failures: Failures,
}

/// A blob written and read back, for one chunk size.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkStep {
    pub chunk_bytes: usize,
    pub blob_bytes: usize,
    pub write: Summary,
    pub read: Summary,
}

#[derive(Debug, Serialize)]
pub struct SizesReport {
    pub setup: Facts,
    pub steps: Vec<SizeStep>,
    pub chunks: Vec<ChunkStep>,
}

impl SizesReport {
    pub fn tables(&self) -> Vec<Table> {
        let mut jobs = Table::new(
            "sizes: one job at a time, submit to outcome, on a 1 MiB server",
            &["request", "jobs", "p50 ms", "p90 ms", "max ms", "failed"],
        );
        for s in &self.steps {
            jobs.row(vec![
                bytes(s.request_bytes),
                s.latency.count.to_string(),
                ms(s.latency.p50_us),
                ms(s.latency.p90_us),
                ms(s.latency.max_us),
                s.failures.count.to_string(),
            ]);
        }
        let mut chunks = Table::new(
            "sizes: a blob written then read back, by chunk size",
            &["blob", "chunk", "write p50 ms", "read p50 ms"],
        );
        for c in &self.chunks {
            chunks.row(vec![
                bytes(c.blob_bytes),
                bytes(c.chunk_bytes),
                ms(c.write.p50_us),
                ms(c.read.p50_us),
            ]);
        }
        vec![jobs, chunks]
    }
}

fn bytes(n: usize) -> String {
    if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else {
        format!("{} KiB", n / KIB)
    }
}

pub async fn run(options: &Options, env: &mut Env, report: &mut Report) -> anyhow::Result<()> {
    let nats = TestNats::start_with(NatsOptions::default_max_payload()).await;
    let mock = MockChild::spawn(MockSpec::instant()).await?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let setup = worker_setup_at(dir.path(), &nats.url(), &mock.url, worker_spec(options));
    let worker = WorkerChild::spawn(&setup, dir.path(), "worker").await?;
    let runs = if options.quick { 5 } else { 50 };
    let mut facts = Facts::default();
    facts
        .add("broker", "one nats-server, max_payload 1 MiB (its default)")
        .add("mock", MockSpec::instant().describe())
        .add("load", format!("{runs} jobs per size, one at a time"));
    print_setup("sizes", env, &facts);
    let client = Client::connect(ClientOptions {
        nats: ClientNats::with_url(nats.url()),
        ..ClientOptions::default()
    })
    .await
    .context("producer cannot connect")?;
    let mut steps = Vec::new();
    for request_bytes in [KIB, 2 * MIB] {
        steps.push(jobs_of(&client, request_bytes, runs).await);
    }
    let chunks = chunk_sizes(&nats, runs).await?;
    worker.stop().await?;
    mock.stop().await;
    let result = SizesReport {
        setup: facts,
        steps,
        chunks,
    };
    for table in result.tables() {
        println!("{table}");
    }
    for s in &result.steps {
        report.fail("sizes", &bytes(s.request_bytes), &s.failures);
    }
    report.sizes = Some(result);
    Ok(())
}

/// `runs` jobs of a request of `request_bytes` bytes, one at a time, after two unmeasured.
async fn jobs_of(client: &Client, request_bytes: usize, runs: usize) -> SizeStep {
    let mut latency = Latencies::new();
    let mut failures = Failures::default();
    for n in 0..runs + 2 {
        let started = Instant::now();
        match run_job(client, Job::new(MODEL, request_of(request_bytes))).await {
            Ok(_) if n >= 2 => latency.record(started.elapsed()),
            Ok(_) => {}
            Err(err) => failures.add(err),
        }
    }
    println!(
        "  {} request: p50 {}",
        bytes(request_bytes),
        ms(latency.summary().p50_us)
    );
    SizeStep {
        request_bytes,
        latency: latency.summary(),
        failures,
    }
}

/// A request of about `bytes` bytes: a question and a base64 image padding the rest.
fn request_of(bytes: usize) -> ChatRequest {
    let image = format!(
        "data:image/png;base64,{}",
        "A".repeat(bytes.saturating_sub(200))
    );
    let parts = vec![
        ContentPart::Text {
            text: "What is in this picture?".into(),
        },
        ContentPart::ImageUrl {
            image_url: ImageUrl {
                url: image,
                detail: None,
            },
        },
    ];
    ChatRequest {
        messages: vec![Message {
            content: Some(Content::Parts(parts)),
            ..Message::text(Role::User, "")
        }],
        max_completion_tokens: Some(16),
        ..ChatRequest::default()
    }
}

/// A 4 MiB blob written and read back `runs` times per chunk size.
async fn chunk_sizes(nats: &TestNats, runs: usize) -> anyhow::Result<Vec<ChunkStep>> {
    let js = async_nats::jetstream::new(nats.client().await);
    let blob_bytes = 4 * MIB;
    let data = Bytes::from(vec![b'x'; blob_bytes]);
    let largest = Sizes::for_max_payload(MIB).chunk;
    let options = WriteOptions {
        budget: Budget::Attempts(3),
        missing_stream_is_transient: false,
        missing_stream_grace: Duration::from_secs(5),
        on_retry: None,
    };
    let mut steps = Vec::new();
    for chunk in [256 * KIB, 512 * KIB, largest] {
        let (mut write, mut read) = (Latencies::new(), Latencies::new());
        for _ in 0..runs {
            let started = Instant::now();
            let written =
                blob::write(&js, "llmq.blobs.bench", data.clone(), chunk, options).await?;
            write.record(started.elapsed());
            let started = Instant::now();
            blob::read(
                &js,
                "LLMQ_BLOBS",
                "llmq.blobs.bench",
                &written,
                MISSING_CHUNK_WAIT,
            )
            .await?;
            read.record(started.elapsed());
            blob::delete(&js, "LLMQ_BLOBS", "llmq.blobs.bench", &written.id).await?;
        }
        println!(
            "  4 MiB blob, {} chunks: write p50 {}, read p50 {}",
            bytes(chunk),
            ms(write.summary().p50_us),
            ms(read.summary().p50_us)
        );
        steps.push(ChunkStep {
            chunk_bytes: chunk,
            blob_bytes,
            write: write.summary(),
            read: read.summary(),
        });
    }
    Ok(steps)
}
