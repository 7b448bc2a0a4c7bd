//! `jetstream-raw`: the physical limit of "one job = one message" on this machine.
//!
//! The same ~1 KiB job JSON llmq publishes, through a WorkQueue file stream on the same
//! kind of nats-server, with no llmq code in the path: async publishes with pipelined
//! PubAcks (what a producer could reach at best), then one pull consumer draining the
//! stream with plain acks (the cheapest consume), then again with `double_ack` (what the
//! worker does, kept concurrent as the worker's jobs are). One synchronous publish at a
//! time gives the latency floor of a submit. Every message carries a unique
//! `Nats-Msg-Id`, as jobs do, so deduplication costs what it costs llmq.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{Context as JetStream, PublishError};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{Config as StreamConfig, RetentionPolicy, StorageType};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;

use super::Options;
use super::report::{Facts, Report, Table, ms, rate};
use super::setup::{Env, World, job_payload};
use super::stats::{Latencies, Summary, median};

const STREAM: &str = "BENCH_RAW";
const SUBJECT: &str = "bench.raw.job";
/// PubAcks outstanding at once while publishing asynchronously.
const PUBLISH_WINDOW: usize = 4096;
/// Double acks outstanding at once (the worker's jobs ack concurrently).
const DOUBLE_ACK_WINDOW: usize = 256;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RawRun {
    pub msgs: u64,
    pub publish_per_sec: f64,
    pub consume_ack_per_sec: f64,
    pub consume_double_ack_per_sec: f64,
    /// One publish at a time, awaiting its PubAck.
    pub sync_publish: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct RawReport {
    pub setup: Facts,
    pub runs: Vec<RawRun>,
    /// Per column, the median over the runs.
    pub median: RawRun,
}

impl RawReport {
    pub fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            "jetstream-raw: one ~1 KiB job = one JetStream message (WorkQueue, file)",
            &[
                "run",
                "msgs",
                "publish msg/s",
                "consume+ack msg/s",
                "consume+double_ack msg/s",
                "sync publish p50 ms",
                "p99 ms",
            ],
        );
        let row = |label: String, r: &RawRun| {
            vec![
                label,
                r.msgs.to_string(),
                rate(r.publish_per_sec),
                rate(r.consume_ack_per_sec),
                rate(r.consume_double_ack_per_sec),
                ms(r.sync_publish.p50_us),
                ms(r.sync_publish.p99_us),
            ]
        };
        for (i, run) in self.runs.iter().enumerate() {
            t.row(row(format!("#{}", i + 1), run));
        }
        if self.runs.len() > 1 {
            t.row(row("median".into(), &self.median));
        }
        vec![t]
    }
}

pub async fn run(options: &Options, env: &mut Env, report: &mut Report) -> anyhow::Result<()> {
    let world = World::start().await?;
    env.nats_server = world.nats_version().await;
    let payload = job_payload();
    let repeats = if options.quick {
        1
    } else {
        options.repeat.max(3)
    };
    let mut setup = Facts::default();
    setup
        .add(
            "payload",
            format!(
                "{} bytes (a job as the submitter publishes it)",
                payload.len()
            ),
        )
        .add(
            "stream",
            format!("{STREAM}: WorkQueue, file storage, 1 replica"),
        )
        .add("messages per run", options.raw_msgs)
        .add("runs", format!("{repeats} (median reported)"))
        .add(
            "publish",
            format!("async, up to {PUBLISH_WINDOW} PubAcks outstanding, unique Nats-Msg-Id"),
        )
        .add(
            "consume",
            "one pull consumer, continuous pull (batches of 1000), ack per message",
        )
        .add(
            "double_ack",
            format!("up to {DOUBLE_ACK_WINDOW} outstanding, as concurrent worker jobs"),
        )
        .add(
            "processes",
            "nats-server (own process); producer and consumer in this process",
        );
    super::print_setup("jetstream-raw", env, &setup);

    let client = world.nats.client().await;
    let js = async_nats::jetstream::new(client);
    let mut runs = Vec::new();
    for run in 0..repeats {
        runs.push(one_run(&js, &payload, options.raw_msgs as u64, run).await?);
    }
    let pick =
        |f: fn(&RawRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0);
    let sync_median = median_summary(&runs);
    let result = RawReport {
        setup,
        median: RawRun {
            msgs: options.raw_msgs as u64,
            publish_per_sec: pick(|r| r.publish_per_sec),
            consume_ack_per_sec: pick(|r| r.consume_ack_per_sec),
            consume_double_ack_per_sec: pick(|r| r.consume_double_ack_per_sec),
            sync_publish: sync_median,
        },
        runs,
    };
    for table in result.tables() {
        println!("{table}");
    }
    report.jetstream_raw = Some(result);
    Ok(())
}

/// The run whose sync-publish p50 is the median.
fn median_summary(runs: &[RawRun]) -> Summary {
    let mut sorted: Vec<Summary> = runs.iter().map(|r| r.sync_publish).collect();
    sorted.sort_by_key(|s| s.p50_us);
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

async fn one_run(js: &JetStream, payload: &Bytes, msgs: u64, run: usize) -> anyhow::Result<RawRun> {
    let _ = js.delete_stream(STREAM).await;
    let stream = js
        .create_stream(StreamConfig {
            name: STREAM.into(),
            subjects: vec!["bench.raw.>".into()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            ..StreamConfig::default()
        })
        .await
        .context("create the raw stream")?;
    let consumer: PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: AckPolicy::Explicit,
            max_ack_pending: 20_000,
            ack_wait: Duration::from_secs(30),
            ..pull::Config::default()
        })
        .await
        .context("create the raw consumer")?;

    // Warm-up (connection, stream files), then the synchronous publish latency.
    let warmup = (msgs / 20).clamp(100, 5000);
    publish_async(js, payload, warmup, &format!("w{run}")).await?;
    consume(&consumer, warmup, false).await?;
    let sync_count = (msgs / 20).clamp(100, 2000);
    let mut sync = Latencies::new();
    for i in 0..sync_count {
        let started = Instant::now();
        js.send_publish(SUBJECT, message(payload, &format!("s{run}-{i}")))
            .await?
            .await?;
        sync.record(started.elapsed());
    }
    consume(&consumer, sync_count, false).await?;

    let publish = publish_async(js, payload, msgs, &format!("p{run}")).await?;
    let consume_ack = consume(&consumer, msgs, false).await?;
    publish_async(js, payload, msgs, &format!("d{run}")).await?;
    let consume_double = consume(&consumer, msgs, true).await?;
    let _ = js.delete_stream(STREAM).await;
    let per_sec = |d: Duration| msgs as f64 / d.as_secs_f64().max(1e-9);
    Ok(RawRun {
        msgs,
        publish_per_sec: per_sec(publish),
        consume_ack_per_sec: per_sec(consume_ack),
        consume_double_ack_per_sec: per_sec(consume_double),
        sync_publish: sync.summary(),
    })
}

fn message(payload: &Bytes, id: &str) -> PublishMessage {
    let mut headers = HeaderMap::new();
    headers.insert(llmq_schemas::HEADER_MSG_ID, id);
    PublishMessage::build()
        .payload(payload.clone())
        .headers(headers)
}

/// Publishes `n` messages with pipelined PubAcks; the time until the last ack.
async fn publish_async(
    js: &JetStream,
    payload: &Bytes,
    n: u64,
    tag: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    for i in 0..n {
        if acks.len() >= PUBLISH_WINDOW
            && let Some(ack) = acks.next().await
        {
            acked(ack)?;
        }
        let ack = js
            .send_publish(SUBJECT, message(payload, &format!("{tag}-{i}")))
            .await?;
        acks.push(ack.into_future());
    }
    while let Some(ack) = acks.next().await {
        acked(ack)?;
    }
    Ok(started.elapsed())
}

fn acked(ack: Result<PublishAck, PublishError>) -> anyhow::Result<()> {
    ack.map(drop).map_err(|err| anyhow!("PubAck: {err}"))
}

/// Consumes and acknowledges `n` messages; the time until the last ack.
async fn consume(consumer: &PullConsumer, n: u64, double: bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await
        .context("start pulling")?;
    let mut acks = FuturesUnordered::new();
    let mut received = 0;
    while received < n {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .map_err(|_| anyhow!("no message within 30 s after {received} of {n}"))?
            .ok_or_else(|| anyhow!("the pull stream ended after {received} of {n}"))?
            .map_err(|err| anyhow!("pull: {err}"))?;
        received += 1;
        if double {
            if acks.len() >= DOUBLE_ACK_WINDOW
                && let Some(acked) = acks.next().await
            {
                acked?;
            }
            acks.push(async move {
                message
                    .double_ack()
                    .await
                    .map_err(|err| anyhow!("double ack: {err}"))
            });
        } else {
            message.ack().await.map_err(|err| anyhow!("ack: {err}"))?;
        }
    }
    while let Some(acked) = acks.next().await {
        acked?;
    }
    Ok(started.elapsed())
}
