//! A 3-node JetStream cluster under load: the node leading the job stream is SIGKILLed
//! and nothing is lost; workers started together with the cluster get ready as soon as
//! it can place their streams; replicas a broker cannot place fail with a clear message.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use llmq_schemas::{JobId, OutcomeStatus, ReplyEvent, Tier, UsageEvent};
use llmq_submitter::{Client, ClientOptions, NatsOptions, StreamText, SubmitError};
use llmq_tests::cluster::TestCluster;
use llmq_tests::mock::{MockOptions, MockProvider};
use llmq_tests::stack::chat_job;
use llmq_tests::worker::{WorkerProcess, WorkerSetup, openai_mock_provider};

const JOBS: usize = 3000;

/// The cluster tests run one at a time: each starts three servers and two workers and
/// loads them, and together they would starve each other (and the rest of the suite) of
/// the machine's two cores.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until `stream` holds at least `want` messages (usage events are written after
/// the outcome, and may wait out a leader election), then returns its count.
async fn at_least(js: &async_nats::jetstream::Context, stream: &str, want: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let count = messages(js, stream).await;
        if count >= want || tokio::time::Instant::now() >= deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A stream's message count, asked until some node answers (a stream whose leader is
/// being elected after a restart does not answer for a moment).
async fn messages(js: &async_nats::jetstream::Context, stream: &str) -> usize {
    llmq_tests::stack::eventually(Duration::from_secs(30), "the stream's info", || async {
        let mut handle = js.get_stream(stream).await.ok()?;
        let info = handle.info().await.ok()?;
        Some(info.state.messages as usize)
    })
    .await
}

async fn producer(url: String) -> Client {
    Client::connect(ClientOptions {
        nats: NatsOptions::with_url(url),
        check_catalog: false,
        ..ClientOptions::default()
    })
    .await
    .unwrap()
}

/// Streams jobs, 2 at a time, through `client` until `stop` is set: the whole time the
/// cluster is disturbed. Each must end with one succeeded outcome; a stream that lost no
/// delta (deltas travel on core NATS, and a node going away can drop some) must hold
/// exactly the outcome's text. Returns how many ran, and how many streams were complete.
async fn stream_jobs(client: Client, stop: Arc<AtomicBool>) -> (usize, usize) {
    let lanes = (0..2).map(|lane| {
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        async move {
            let (mut ran, mut complete) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                complete += usize::from(stream_one(&client, lane * 100_000 + ran).await);
                ran += 1;
            }
            (ran, complete)
        }
    });
    let counts = futures::future::join_all(lanes).await;
    let ran = counts.iter().map(|c| c.0).sum();
    let complete = counts.iter().map(|c| c.1).sum();
    println!("cluster: {ran} streamed jobs succeeded, {complete} streams complete");
    (ran, complete)
}

async fn stream_one(client: &Client, i: usize) -> bool {
    let mut job = chat_job("chat", &format!("streamed job {i}"));
    job.stream = true;
    let mut handle = loop {
        match client.submit(job.clone()).await {
            Ok(handle) => break handle,
            // A leader election: the same job again, deduplicated by its id. A stream with
            // no leader answers a publish with no responders, which the submitter reads as
            // a missing stream once its `missing_stream_grace` (10 s) is over; on a loaded
            // 2-core machine a node's restart has taken longer than that.
            Err(err) if err.is_retryable() || matches!(err, SubmitError::NotSetUp { .. }) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(err) => panic!("submit streamed job {i}: {err}"),
        }
    };
    let mut text = StreamText::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let event = tokio::time::timeout_at(deadline, handle.next_event())
            .await
            .unwrap_or_else(|_| panic!("streamed job {i}: no outcome within 120 s"));
        match event {
            Some(Ok(ReplyEvent::Final(outcome))) => {
                assert_eq!(
                    outcome.status,
                    OutcomeStatus::Succeeded,
                    "{:?}",
                    outcome.error
                );
                text.apply(&ReplyEvent::Final(outcome.clone()));
                if text.missed() > 0 {
                    return false;
                }
                assert_eq!(Some(text.text()), outcome.text(), "streamed job {i}");
                return true;
            }
            Some(Ok(event)) => {
                text.apply(&event);
            }
            Some(Err(err)) => panic!("streamed job {i}: {err}"),
            None => panic!("streamed job {i}: events ended without an outcome"),
        }
    }
}

/// Every usage event in `LLMQ_USAGE`, read through an ordered consumer.
async fn usage_events(js: &async_nats::jetstream::Context, count: usize) -> Vec<UsageEvent> {
    let stream = js.get_stream("LLMQ_USAGE").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap().take(count);
    let mut events = Vec::with_capacity(count);
    while let Some(message) = messages.next().await {
        events.push(serde_json::from_slice(&message.unwrap().payload).unwrap());
    }
    events
}

/// No usage event twice, and several for one job only from several processings (the
/// documented at-least-once case: a job redelivered after its worker's ack was lost is
/// processed, and paid for, again). Returns how many jobs were processed more than once.
fn check_usage(events: &[UsageEvent], jobs: usize) -> usize {
    let ids: HashSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), events.len(), "a usage event stored twice");
    let mut processings: std::collections::HashMap<JobId, HashSet<(String, u32)>> =
        std::collections::HashMap::new();
    for event in events {
        let seen = processings.entry(event.job_id).or_default();
        assert!(
            seen.insert((event.worker_id.clone(), event.delivery)),
            "two usage events for one processing of {}",
            event.job_id
        );
    }
    assert_eq!(processings.len(), jobs, "every job billed");
    processings.values().filter(|p| p.len() > 1).count()
}

/// The mock and two worker processes on `cluster`, with 3 replicas.
struct Fleet {
    _mock: MockProvider,
    _dir: tempfile::TempDir,
    workers: Vec<WorkerProcess>,
}

/// Two workers' setup for `urls` with 3 replicas, model `chat` at `mock`.
fn replicated_setup(dir: &std::path::Path, urls: &str, mock: &MockProvider) -> WorkerSetup {
    let mut setup = WorkerSetup::new(
        dir,
        urls,
        &mock.base_url(),
        &format!(
            "{}\n[models.chat]\ndeployments = [{{ provider = \"mock\", model = \"m\" }}]\n",
            openai_mock_provider(64)
        ),
    );
    setup.set("jetstream", "replicas", "3");
    setup
}

impl Fleet {
    async fn start(cluster: &TestCluster, name: &str) -> Fleet {
        let mock = MockProvider::start(MockOptions::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let setup = replicated_setup(dir.path(), &cluster.urls(), &mock);
        let mut workers = Vec::new();
        for i in 0..2 {
            let setup = setup.clone().with_id(&format!("{name}-{i}"));
            workers.push(WorkerProcess::spawn(&setup, &format!("{name}-{i}")).await);
        }
        Fleet {
            _mock: mock,
            _dir: dir,
            workers,
        }
    }

    /// SIGTERM: every worker drains and exits 0.
    async fn stop(self) {
        for mut worker in self.workers {
            assert_eq!(
                worker.terminate(Duration::from_secs(30)).await.code(),
                Some(0)
            );
        }
    }
}

/// The load both disturbance tests put on the cluster: batch jobs submitted one by one,
/// and streamed jobs from a producer of their own the whole time.
struct Load {
    submit: Client,
    ids: Vec<JobId>,
    stop_streams: Arc<AtomicBool>,
    streams: tokio::task::JoinHandle<(usize, usize)>,
}

impl Load {
    /// Producers know every node (as a real one would).
    async fn start(cluster: &TestCluster) -> Load {
        let stop_streams = Arc::new(AtomicBool::new(false));
        let streams = tokio::spawn(stream_jobs(
            producer(cluster.urls()).await,
            Arc::clone(&stop_streams),
        ));
        Load {
            submit: producer(cluster.urls()).await,
            ids: Vec::with_capacity(JOBS),
            stop_streams,
            streams,
        }
    }

    async fn submit_batch(&mut self, name: &str) {
        let mut job = chat_job("chat", &format!("{name} {}", self.ids.len()));
        job.tier = Tier::Batch;
        self.ids
            .push(self.submit.submit_detached(job).await.unwrap());
    }

    /// Every batch job's outcome read through `read` (each succeeded), then the streams
    /// stopped; returns how many streamed jobs ran.
    async fn finish(self, read: &Client) -> usize {
        let unique: HashSet<JobId> = self.ids.iter().copied().collect();
        assert_eq!(unique.len(), JOBS);
        for id in &self.ids {
            let outcome = read
                .wait_outcome(*id, Duration::from_secs(120))
                .await
                .unwrap();
            assert_eq!(
                outcome.status,
                OutcomeStatus::Succeeded,
                "{:?}",
                outcome.error
            );
        }
        self.stop_streams.store(true, Ordering::Relaxed);
        self.streams.await.unwrap().0
    }
}

/// Exactly one outcome per job, and every processing billed once, read through `js`.
async fn account(js: &async_nats::jetstream::Context, what: &str, streamed: usize) {
    let all = JOBS + streamed;
    let events = at_least(js, "LLMQ_USAGE", all).await;
    let outcomes = messages(js, "LLMQ_RESULTS").await;
    let reprocessed = check_usage(&usage_events(js, events).await, all);
    println!(
        "cluster: {what}: {JOBS} batch and {streamed} streamed jobs succeeded, {outcomes} \
         outcomes, {events} usage events ({reprocessed} jobs processed twice)"
    );
    assert_eq!(outcomes, all, "exactly one outcome per job");
}

#[tokio::test]
async fn killing_the_job_streams_leader_loses_no_job() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start().await;
    let fleet = Fleet::start(&cluster, "cluster").await;
    let mut load = Load::start(&cluster).await;
    let mut killed = None;
    for i in 0..JOBS {
        if i == JOBS / 3 {
            let leader = cluster.leader_of("LLMQ_JOBS").await;
            println!("cluster: SIGKILL n{leader}, the LLMQ_JOBS leader, after {i} jobs");
            cluster.nodes[leader].kill().await;
            killed = Some(leader);
        }
        load.submit_batch("cluster job").await;
    }
    let killed = killed.unwrap();
    // Read through a node that stayed up.
    let reader_node = (0..3).find(|n| *n != killed).unwrap();
    let streamed = load
        .finish(&producer(cluster.nodes[reader_node].url()).await)
        .await;
    cluster.nodes[killed].restart().await;
    let js = async_nats::jetstream::new(cluster.nodes[reader_node].client().await);
    account(&js, "leader killed", streamed).await;

    // The restarted node catches up: its replica of the job stream is current again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let info = match js.get_stream("LLMQ_JOBS").await {
            Ok(mut jobs) => jobs.info().await.ok().cloned(),
            Err(_) => None,
        };
        let replicas = info
            .and_then(|info| info.cluster.clone())
            .map(|c| c.replicas)
            .unwrap_or_default();
        let current = replicas.iter().filter(|r| r.current).count();
        if replicas.len() == 2 && current == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted node did not catch up: {replicas:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The ops view shows the leader and two current replicas.
    let status = std::process::Command::new(llmq_tests::worker::workspace_binary("submitter"))
        .args(["--url", &cluster.urls(), "status", "--json"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let jobs = status["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "LLMQ_JOBS")
        .unwrap()
        .clone();
    assert!(jobs["leader"].is_string(), "{jobs}");
    assert_eq!(jobs["replicas"].as_array().unwrap().len(), 2, "{jobs}");
    fleet.stop().await;
}

#[tokio::test]
async fn a_rolling_restart_of_every_node_loses_no_job() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start().await;
    let fleet = Fleet::start(&cluster, "rolling").await;
    let mut load = Load::start(&cluster).await;
    for i in 0..JOBS {
        // Each node in turn, a third of the way apart: restarted, then caught up.
        if i % (JOBS / 3) == JOBS / 6 {
            let node = i / (JOBS / 3);
            println!("cluster: restarting n{node} after {i} jobs");
            cluster.nodes[node].restart().await;
            cluster.wait_for_jetstream().await;
        }
        load.submit_batch("rolling job").await;
    }
    let streamed = load.finish(&producer(cluster.urls()).await).await;
    let js = async_nats::jetstream::new(cluster.nodes[0].client().await);
    account(&js, "rolling restart", streamed).await;
    fleet.stop().await;
}

/// The longest silence between two lines of a worker's JSON log before "worker started".
fn longest_silence_before_start(log: &str) -> Duration {
    let times: Vec<time::OffsetDateTime> = log
        .lines()
        .take_while(|line| !line.contains("worker started"))
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|line| {
            let at = line["timestamp"].as_str()?.to_owned();
            time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339).ok()
        })
        .collect();
    times
        .windows(2)
        .map(|pair| (pair[1] - pair[0]).unsigned_abs())
        .max()
        .unwrap_or_default()
}

/// As `docker compose up` starts them: the workers start while the cluster is still
/// electing its meta leader. Each becomes ready once the streams can be placed, says
/// what it waits for meanwhile, and serves.
#[tokio::test]
async fn workers_started_with_the_cluster_are_ready_once_it_can_place_streams() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let started = tokio::time::Instant::now();
    let cluster = TestCluster::start_forming().await;
    let fleet = Fleet::start(&cluster, "together").await;
    println!(
        "cluster: two workers started with a forming cluster were ready after {:?}",
        started.elapsed()
    );
    for worker in &fleet.workers {
        let log = worker.log();
        let silence = longest_silence_before_start(&log);
        // A wait is logged at once and every 5 s; each try is answered within 1 s.
        assert!(
            silence < Duration::from_secs(9),
            "the worker was silent for {silence:?} while starting:\n{log}"
        );
    }
    let client = producer(cluster.urls()).await;
    let outcome = client
        .submit(chat_job("chat", "formed"))
        .await
        .unwrap()
        .outcome_within(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        outcome.status,
        OutcomeStatus::Succeeded,
        "{:?}",
        outcome.error
    );
    fleet.stop().await;
}

/// Runs the worker binary on `setup` and returns its stderr, once it has exited 69
/// (NATS unusable) within `within`.
async fn worker_failing_to_start(
    setup: &WorkerSetup,
    dir: &std::path::Path,
    within: Duration,
) -> String {
    let config = dir.join("worker.toml");
    std::fs::write(&config, setup.toml()).unwrap();
    let output = tokio::process::Command::new(llmq_tests::worker::worker_binary())
        .arg("--config")
        .arg(&config)
        .output();
    let output = tokio::time::timeout(within, output)
        .await
        .unwrap_or_else(|_| panic!("the worker still runs after {within:?}"))
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(69), "{stderr}");
    stderr
}

/// `jetstream.replicas = 3` against one server can never be placed: the worker says so
/// (naming the setting) and exits 69 at once, without waiting out its start-up timeout.
#[tokio::test]
async fn replicas_a_single_server_cannot_place_fail_with_a_clear_message() {
    let nats = llmq_tests::nats::TestNats::start().await;
    let mock = MockProvider::start(MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut setup = replicated_setup(dir.path(), &nats.url(), &mock);
    setup.set("worker", "startup_timeout", "\"5m\"");
    // Exits instead of waiting for replicas that cannot be placed.
    let stderr = worker_failing_to_start(&setup, dir.path(), Duration::from_secs(60)).await;
    assert!(
        stderr.contains("not supported in non-clustered mode")
            && stderr.contains("jetstream.replicas"),
        "{stderr}"
    );
}

/// Two servers of a three-node cluster: three replicas cannot be placed. The worker
/// waits (the third may be starting), logs why, and gives up after
/// `worker.startup_timeout` naming the setting to change.
#[tokio::test]
async fn replicas_a_cluster_short_of_servers_cannot_place_fail_after_the_startup_timeout() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = TestCluster::start_two_of_three().await;
    let mock = MockProvider::start(MockOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut setup = replicated_setup(dir.path(), &cluster.urls(), &mock);
    setup.set("worker", "startup_timeout", "\"8s\"");
    let stderr = worker_failing_to_start(&setup, dir.path(), Duration::from_secs(90)).await;
    println!(
        "cluster: a worker asking 3 replicas of 2 servers: {}",
        stderr.lines().last().unwrap_or_default()
    );
    assert!(
        stderr.contains("waiting for JetStream to place"),
        "{stderr}"
    );
    assert!(
        stderr.contains("gave up after") && stderr.contains("lower jetstream.replicas"),
        "{stderr}"
    );
}

/// Runs `scripts/cluster down` on the state in `.0` if it is still up when dropped.
struct StopsOnDrop(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf);

impl Drop for StopsOnDrop {
    fn drop(&mut self) {
        if self.0.join("pids").exists() {
            let _ = std::process::Command::new("bash")
                .arg(&self.1)
                .arg("down")
                .env("LLMQ_CLUSTER_DIR", &self.0)
                .env("LLMQ_BIN_DIR", &self.2)
                .output();
        }
    }
}

/// `scripts/cluster up` (the compose topology from the built binaries), used as README
/// says: a job through the CLI and one through the edge on the printed environment, the
/// ops view showing three servers, then `down` stops every process it started.
#[tokio::test]
async fn scripts_cluster_runs_the_compose_topology_on_loopback() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("cluster");
    let script = llmq_tests::nats::workspace_root().join("scripts/cluster");
    let bin = llmq_tests::worker::workspace_binary("submitter");
    let bin_dir = bin.parent().unwrap().to_owned();
    let run = |args: &[&str]| {
        let output = std::process::Command::new("bash")
            .arg(&script)
            .args(args)
            .env("LLMQ_CLUSTER_DIR", &state)
            .env("LLMQ_BIN_DIR", &bin_dir)
            .env_remove("OPENAI_API_KEY")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "scripts/cluster {args:?}:\n{stdout}\n{stderr}"
        );
        stdout
    };
    let up = run(&["up"]);
    // A failing assertion below must not leave seven processes behind.
    let _down = StopsOnDrop(state.clone(), script.clone(), bin_dir.clone());
    assert!(up.contains("3-node cluster is up (2 worker(s)"), "{up}");
    let env = std::fs::read_to_string(state.join("env")).unwrap();
    let var = |name: &str| {
        env.lines()
            .find_map(|line| line.strip_prefix(&format!("export {name}=\"")))
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{name} missing from {env}"))
            .to_owned()
    };
    let chat = std::process::Command::new(&bin)
        .args(["chat", "--model", "chat", "--json", "-q", "Hello, cluster"])
        .env("LLMQ__NATS__URL", var("LLMQ__NATS__URL"))
        .output()
        .unwrap();
    assert!(chat.status.success(), "{chat:?}");
    let outcome: serde_json::Value = serde_json::from_slice(&chat.stdout).unwrap();
    assert_eq!(outcome["status"], "succeeded", "{outcome}");

    gateway_worker::providers::http_client::install_crypto_provider();
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", var("LLMQ_EDGE_URL")))
        .bearer_auth(var("LLMQ_API_KEY"))
        .json(&serde_json::json!({
            "model": "chat",
            "messages": [{"role": "user", "content": "Hello over HTTP"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );

    // The edge and `submitter keys create` opened the buckets the workers made with 3
    // replicas, and made the keys bucket with as many: none of them is down to one.
    let js = async_nats::jetstream::new(
        async_nats::connect(var("LLMQ__NATS__URL").split(',').next().unwrap())
            .await
            .unwrap(),
    );
    for bucket in [
        "KV_LLMQ_TENANTS",
        "KV_LLMQ_LIMITS",
        "KV_LLMQ_KEYS",
        "KV_LLMQ_CATALOG",
    ] {
        let mut stream = js.get_stream(bucket).await.unwrap();
        let replicas = stream.info().await.unwrap().config.num_replicas;
        assert_eq!(replicas, 3, "{bucket} has {replicas} replica(s)");
    }

    let status = run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let streams = status["streams"].as_array().unwrap();
    assert!(!streams.is_empty(), "{status}");
    for stream in streams {
        assert!(stream["leader"].is_string(), "{stream}");
        assert_eq!(stream["replicas"].as_array().unwrap().len(), 2, "{stream}");
    }
    assert_eq!(status["workers"].as_array().unwrap().len(), 2, "{status}");

    let pids: Vec<String> = std::fs::read_to_string(state.join("pids"))
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(
        pids.len(),
        7,
        "3 servers, the mock, 2 workers, the edge: {pids:?}"
    );
    run(&["down"]);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still runs after scripts/cluster down"
        );
    }
    assert!(!state.exists(), "the state directory is removed");
}
