//! The world a scenario measures: the machine's facts, a nats-server, the mock upstream
//! and workers as child processes of this very binary, the producer client, and the
//! benchmark job.
//!
//! Workers and the mock run as `bench __worker` / `bench __mock` children (see
//! [`super::child`]), so their RSS and CPU are theirs alone and no second binary has to
//! be built; the producer stays in this process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use llmq_schemas::{ChatRequest, Job, Message, Outcome, OutcomeStatus, Role, Timestamp};
use llmq_submitter::{Client, ClientOptions, NatsOptions, Operator};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::procstat::Watched;
use crate::nats::{TestNats, nats_server_path, workspace_root};
use crate::worker::{WorkerSetup, openai_mock_provider};

/// The logical model every benchmark job asks for.
pub const MODEL: &str = "bench";
/// The upstream model name the worker sends to the mock.
pub const UPSTREAM_MODEL: &str = "mock-model";
/// How long a producer waits for one outcome before counting the job as failed.
pub const OUTCOME_TIMEOUT: Duration = Duration::from_secs(60);

/// Facts about the machine and the build, printed before every scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Env {
    pub date_utc: String,
    pub cores: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub nats_server: String,
    pub llmq_commit: String,
    pub profile: &'static str,
    pub jetstream_fsync: &'static str,
}

impl Env {
    /// Reads the machine and the pinned nats-server's version.
    pub fn probe() -> Env {
        let date_utc = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Env {
            date_utc,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model: cpu_model(),
            mem_total_mib: mem_total_kib() / 1024,
            nats_server: nats_server_version(),
            llmq_commit: commit(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            jetstream_fsync: "default (every 2 min, not per message)",
        }
    }

    pub fn facts(&self) -> Vec<(String, String)> {
        vec![
            ("date (UTC)".into(), self.date_utc.clone()),
            ("cores".into(), self.cores.to_string()),
            ("cpu".into(), self.cpu_model.clone()),
            ("memory".into(), format!("{} MiB", self.mem_total_mib)),
            ("nats-server".into(), self.nats_server.clone()),
            ("llmq commit".into(), self.llmq_commit.clone()),
            ("build profile".into(), self.profile.into()),
            ("JetStream fsync".into(), self.jetstream_fsync.into()),
        ]
    }
}

/// `nats-server --version` of the binary the harness starts (`nats-server: v2.15.1`).
fn nats_server_version() -> String {
    std::process::Command::new(nats_server_path())
        .arg("--version")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .map(|text| {
            text.trim_start_matches("nats-server: ")
                .trim_start_matches('v')
                .to_owned()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("not found at {}", nats_server_path().display()))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// `git rev-parse --short HEAD`, marked `-dirty` when the tree has changes.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(workspace_root())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{head}-dirty") } else { head }
        }
        None => "unknown".into(),
    }
}

/// A nats-server and a temp dir for configs and logs.
#[derive(Debug)]
pub struct World {
    pub nats: TestNats,
    pub dir: tempfile::TempDir,
}

impl World {
    pub async fn start() -> anyhow::Result<World> {
        let nats = TestNats::start().await;
        let dir = tempfile::Builder::new()
            .prefix("llmq-bench-")
            .tempdir()
            .context("temp dir")?;
        Ok(World { nats, dir })
    }

    pub fn nats_pid(&self) -> anyhow::Result<u32> {
        self.nats
            .pid()
            .ok_or_else(|| anyhow!("nats-server has exited"))
    }

    pub async fn nats_version(&self) -> String {
        self.nats.client().await.server_info().version
    }

    /// A producer for tenant `default` that checks the live catalog, as applications do.
    pub async fn client(&self) -> anyhow::Result<Client> {
        self.client_for(None).await
    }

    /// A producer for `tenant` (`None`: `default`) that checks the live catalog.
    pub async fn client_for(&self, tenant: Option<&str>) -> anyhow::Result<Client> {
        let options = ClientOptions {
            nats: NatsOptions::with_url(self.nats.url()),
            check_catalog: true,
            ..tenant.map_or_else(ClientOptions::default, ClientOptions::for_tenant)
        };
        Client::connect(options)
            .await
            .context("producer cannot connect")
    }

    /// Applies a tenant registry file, as `submitter tenants apply --prune` does.
    pub async fn apply_registry(&self, text: &str) -> anyhow::Result<()> {
        let entries = llmq_runtime::tenants::parse_registry(text)
            .map_err(|problems| anyhow!("the bench's registry is invalid:\n{problems}"))?;
        let admin = Operator::connect(ClientOptions {
            nats: NatsOptions::with_url(self.nats.url()),
            ..ClientOptions::default()
        })
        .await
        .context("operator cannot connect")?;
        let changes = admin.tenants_diff(&entries, true).await?;
        admin.apply_tenants(&changes, 1).await?;
        Ok(())
    }
}

/// Jobs in the jobs stream, queued or running (0 if it cannot be read).
pub async fn jobs_in_stream(js: &async_nats::jetstream::Context) -> u64 {
    match js.get_stream("LLMQ_JOBS").await {
        Ok(stream) => stream.cached_info().state.messages,
        Err(_) => 0,
    }
}

// ---- the job --------------------------------------------------------------------------

/// A system prompt of the length real applications send (instructions plus context).
const SYSTEM_PROMPT: &str = "You are a support assistant for an internal developer platform. \
Answer in at most three sentences, cite the runbook section you used, and never invent \
commands. If the question is about credentials, refuse and point to the access portal. \
Context: the platform runs services on Kubernetes, deploys through a GitOps pipeline, \
stores secrets in a vault, and routes LLM calls through llmq, which queues jobs on NATS \
JetStream and retries rate-limited calls on other deployments. Runbook sections: 1. \
deploys, 2. rollbacks, 3. on-call, 4. quotas, 5. incident reviews.";

/// A chat request of realistic size: a system prompt, a user question, sampling options.
pub fn chat_request(prompt: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![
            Message::text(Role::System, SYSTEM_PROMPT),
            Message::text(Role::User, prompt),
        ],
        max_completion_tokens: Some(64),
        temperature: Some(0.2),
        ..ChatRequest::default()
    }
}

/// The user question of non-streaming jobs (all alike: the lean mock serves them from
/// its cache, so the mock costs as little as possible).
pub const PROMPT: &str = "Our canary deploy of the billing service is stuck at 20% and the \
rollout shows two pods failing their readiness probe. What should I check first, and how \
do I roll back safely if it stays stuck?";

/// A job as a producer builds it (the submitter sets `reply_to` and `submitted_at`).
pub fn job(prompt: &str, stream: bool) -> Job {
    let mut job = Job::new(MODEL, chat_request(prompt));
    job.stream = stream;
    job.custom_id = Some("bench-ticket-48213".into());
    job
}

/// A job's bytes exactly as the submitter publishes them.
pub fn job_payload() -> Bytes {
    let mut job = job(PROMPT, false);
    job.reply_to = Some(format!("_INBOX_llmq.default.0123456789abcdef.{}", job.id));
    job.submitted_at = Some(Timestamp::now());
    Bytes::from(serde_json::to_vec(&job).unwrap_or_default())
}

/// The OpenAI request body the worker sends upstream for a non-streaming job.
pub fn upstream_body() -> Bytes {
    let mut request = chat_request(PROMPT);
    request.model = Some(UPSTREAM_MODEL.into());
    request.stream = Some(false);
    Bytes::from(serde_json::to_vec(&request).unwrap_or_default())
}

/// Submits `job` and waits for its outcome; anything but `succeeded` is an error.
pub async fn run_job(client: &Client, job: Job) -> Result<Outcome, String> {
    let handle = client
        .submit(job)
        .await
        .map_err(|err| format!("submit: {err}"))?;
    let outcome = handle
        .outcome_within(OUTCOME_TIMEOUT)
        .await
        .map_err(|err| format!("outcome: {err}"))?;
    if outcome.status != OutcomeStatus::Succeeded {
        return Err(format!(
            "job {} ended {}: {:?}",
            outcome.job_id, outcome.status, outcome.error
        ));
    }
    Ok(outcome)
}

// ---- the mock upstream as a child process ---------------------------------------------

/// How the mock answers.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MockSpec {
    #[serde(rename = "first_token_delay_ms", serialize_with = "as_ms::serialize")]
    pub first_token_delay: Duration,
    #[serde(rename = "token_interval_ms", serialize_with = "as_ms::serialize")]
    pub token_interval: Duration,
    pub tokens: usize,
}

impl MockSpec {
    /// Zero latency: the upstream answers as fast as it can.
    pub fn instant() -> MockSpec {
        MockSpec {
            first_token_delay: Duration::ZERO,
            token_interval: Duration::ZERO,
            tokens: 12,
        }
    }

    /// The time the mock waits on purpose before a non-streaming body.
    pub fn generation(&self) -> Duration {
        self.first_token_delay + self.token_interval * self.tokens as u32
    }

    pub fn describe(&self) -> String {
        if self.generation().is_zero() {
            return format!("no delay (answers at once), {} tokens", self.tokens);
        }
        if self.token_interval.is_zero() {
            return format!(
                "answers after {:?} ({} tokens, no delay between them)",
                self.first_token_delay, self.tokens
            );
        }
        format!(
            "first token after {:?}, then {} tokens every {:?}",
            self.first_token_delay, self.tokens, self.token_interval
        )
    }
}

/// Durations as milliseconds (fractional) in the JSON report.
mod as_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
}

/// What the mock child reports on `stats`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct MockStats {
    pub requests: usize,
    pub peak_concurrency: usize,
    pub in_flight: usize,
    pub disconnects: usize,
}

/// `bench __mock`: the lean mock in its own process, controlled over stdin/stdout.
#[derive(Debug)]
pub struct MockChild {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    pub url: String,
    pub pid: u32,
}

impl MockChild {
    pub async fn spawn(spec: MockSpec) -> anyhow::Result<MockChild> {
        let exe = std::env::current_exe().context("path of the bench binary")?;
        let mut child = Command::new(exe)
            .arg("__mock")
            .arg("--first-token-us")
            .arg(spec.first_token_delay.as_micros().to_string())
            .arg("--token-interval-us")
            .arg(spec.token_interval.as_micros().to_string())
            .arg("--tokens")
            .arg(spec.tokens.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start the mock child (bench __mock)")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("mock child exited at once"))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("mock stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("mock stdout"))?;
        let mut stdout = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .context("mock child did not start within 30 s")??
            .ok_or_else(|| anyhow!("mock child exited before listening"))?;
        let url = first
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow!("unexpected first line from the mock child: {first:?}"))?
            .to_owned();
        Ok(MockChild {
            child,
            stdin,
            stdout,
            url,
            pid,
        })
    }

    async fn command(&mut self, command: &str) -> anyhow::Result<String> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        tokio::time::timeout(Duration::from_secs(10), self.stdout.next_line())
            .await
            .with_context(|| format!("mock child did not answer {command:?}"))??
            .ok_or_else(|| anyhow!("mock child exited"))
    }

    pub async fn stats(&mut self) -> anyhow::Result<MockStats> {
        let line = self.command("stats").await?;
        serde_json::from_str(&line).with_context(|| format!("mock stats line {line:?}"))
    }

    /// Forgets the counts; the peak restarts from what is in flight now.
    pub async fn reset(&mut self) -> anyhow::Result<()> {
        self.command("reset").await.map(drop)
    }

    /// Closes its stdin (it exits) and waits.
    pub async fn stop(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

// ---- the HTTP edge as a child process --------------------------------------------------

/// `bench __edge`: the HTTP edge (`llmq_edge`) in its own process, so its CPU
/// and RSS are its own.
#[derive(Debug)]
pub struct EdgeChild {
    child: Child,
    pub pid: u32,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    log_path: PathBuf,
}

impl EdgeChild {
    /// Starts the edge on `world`'s nats-server and waits until it listens.
    pub async fn spawn(world: &World, name: &str) -> anyhow::Result<EdgeChild> {
        let log_path = world.dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).context("create the edge log")?;
        let exe = std::env::current_exe().context("path of the bench binary")?;
        let mut child = Command::new(exe)
            .arg("__edge")
            .arg("--nats")
            .arg(world.nats.url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("start the edge child (bench __edge)")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("edge child exited at once"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("edge stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let url = match first {
            Ok(Ok(Some(line))) if line.starts_with("listening on ") => {
                line["listening on ".len()..].to_owned()
            }
            Ok(Ok(Some(line))) => {
                bail!("edge child said {line:?} instead of listening:\n{}", log())
            }
            Ok(_) => bail!("edge child exited before it listened:\n{}", log()),
            Err(_) => bail!("edge child not listening within 30 s:\n{}", log()),
        };
        Ok(EdgeChild {
            child,
            pid,
            url,
            log_path,
        })
    }

    /// What the edge logged (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM; an unclean exit, or none within 20 s, is an error.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!("the edge exited with {status}:\n{}", self.log()),
            Ok(Err(err)) => Err(err.into()),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("the edge did not stop within 20 s of SIGTERM")
            }
        }
    }
}

// ---- workers as child processes -------------------------------------------------------

/// How a benchmark worker is sized.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WorkerSpec {
    pub max_inflight: usize,
    pub fetch_batch: usize,
    /// The provider's `max_concurrency`.
    pub max_concurrency: usize,
}

impl WorkerSpec {
    pub fn describe(&self) -> String {
        format!(
            "max_inflight {}, fetch_batch {}, provider max_concurrency {}, log level warn",
            self.max_inflight, self.fetch_batch, self.max_concurrency
        )
    }
}

/// The worker's config: one OpenAI-format provider at the mock, model [`MODEL`]; the
/// shipped defaults for timing (heartbeat, sweeper, fetch expiry), not the tests' fast
/// ones, so background work costs what it costs in production.
pub fn worker_setup(world: &World, mock_url: &str, spec: WorkerSpec) -> WorkerSetup {
    worker_setup_at(world.dir.path(), &world.nats.url(), mock_url, spec)
}

/// [`worker_setup`] for any broker: its config and key file in `dir`, NATS at `nats_url`.
pub fn worker_setup_at(
    dir: &Path,
    nats_url: &str,
    mock_url: &str,
    spec: WorkerSpec,
) -> WorkerSetup {
    let body = format!(
        "{}\n[models.{MODEL}]\ndeployments = [{{ provider = \"mock\", model = \"{UPSTREAM_MODEL}\" }}]\n",
        openai_mock_provider(spec.max_concurrency)
    );
    let mut setup = WorkerSetup::new(dir, nats_url, mock_url, &body);
    setup
        .set("log", "level", "\"warn\"")
        .set("jetstream", "catalog_heartbeat", "\"5s\"")
        .set("worker", "sweep_interval", "\"5s\"")
        .set("worker", "fetch_expires", "\"1s\"")
        .set("worker", "max_inflight", &spec.max_inflight.to_string())
        .set("worker", "fetch_batch", &spec.fetch_batch.to_string());
    setup
}

/// `bench __worker --config FILE`: the real worker library in its own process.
#[derive(Debug)]
pub struct WorkerChild {
    child: Child,
    pub pid: u32,
    pub id: String,
    log_path: PathBuf,
}

impl WorkerChild {
    /// Writes the config, starts the child, waits until it is consuming.
    pub async fn spawn(setup: &WorkerSetup, dir: &Path, name: &str) -> anyhow::Result<Self> {
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, setup.toml()).context("write the worker config")?;
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).context("create the worker log")?;
        let exe = std::env::current_exe().context("path of the bench binary")?;
        let mut child = Command::new(exe)
            .arg("__worker")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("start the worker child (bench __worker)")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("worker child exited at once"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("worker stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        let tail = || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        };
        let id = match ready {
            Ok(Ok(Some(line))) if line.starts_with("ready ") => line["ready ".len()..].to_owned(),
            Ok(Ok(Some(line))) => bail!("worker child said {line:?} instead of ready:\n{}", tail()),
            Ok(_) => bail!("worker child exited before it was ready:\n{}", tail()),
            Err(_) => bail!("worker child not ready within 60 s:\n{}", tail()),
        };
        Ok(WorkerChild {
            child,
            pid,
            id,
            log_path,
        })
    }

    /// Warnings and errors the worker logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM, as an operator would; kills it if it has not exited within 20 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!("worker {} exited with {status}:\n{}", self.id, self.log()),
            Ok(Err(err)) => Err(err.into()),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("worker {} did not stop within 20 s of SIGTERM", self.id)
            }
        }
    }
}

/// llmq under test: a nats-server, `n` worker processes against `mock_url`, a producer.
#[derive(Debug)]
pub struct Llmq {
    pub world: World,
    pub workers: Vec<WorkerChild>,
    pub client: Client,
}

/// How a scenario's llmq differs from the standard one ([`worker_setup`], tenant
/// `default`, no registry).
#[derive(Default)]
pub struct Variant<'a> {
    /// A tenant registry file, applied before the workers start (an enforcing worker
    /// does not start without it).
    pub registry: Option<&'a str>,
    /// The producer's tenant (`None`: `default`).
    pub tenant: Option<&'a str>,
    /// Changes every worker's setup after [`worker_setup`] built it.
    pub configure: Option<&'a dyn Fn(&mut WorkerSetup)>,
}

impl std::fmt::Debug for Variant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variant")
            .field("registry", &self.registry)
            .field("tenant", &self.tenant)
            .field("configure", &self.configure.map(|_| "fn"))
            .finish()
    }
}

/// The stack of the batch-tier scenarios: a mock child answering as `mock` says and one
/// worker with room for a backlog (1,024 jobs, 4,096 upstream requests at once); `env`
/// learns the broker's version.
pub async fn batch_stack(
    mock: MockSpec,
    fetch_batch: usize,
    env: &mut Env,
) -> anyhow::Result<(MockChild, Llmq, WorkerSpec)> {
    let mock = MockChild::spawn(mock).await?;
    let spec = WorkerSpec {
        max_inflight: 1024,
        fetch_batch,
        max_concurrency: 4096,
    };
    let llmq = Llmq::start(&mock.url, spec, 1).await?;
    env.nats_server = llmq.world.nats_version().await;
    Ok((mock, llmq, spec))
}

impl Llmq {
    pub async fn start(mock_url: &str, spec: WorkerSpec, workers: usize) -> anyhow::Result<Llmq> {
        Self::start_with(mock_url, spec, workers, &Variant::default()).await
    }

    /// [`start`](Self::start) with a [`Variant`]: a registry, a tenant, config changes.
    pub async fn start_with(
        mock_url: &str,
        spec: WorkerSpec,
        workers: usize,
        variant: &Variant<'_>,
    ) -> anyhow::Result<Llmq> {
        let world = World::start().await?;
        if let Some(registry) = variant.registry {
            world.apply_registry(registry).await?;
        }
        let mut children = Vec::new();
        for n in 1..=workers {
            let mut setup = worker_setup(&world, mock_url, spec);
            if let Some(configure) = variant.configure {
                configure(&mut setup);
            }
            children
                .push(WorkerChild::spawn(&setup, world.dir.path(), &format!("worker-{n}")).await?);
        }
        let client = world.client_for(variant.tenant).await?;
        Ok(Llmq {
            world,
            workers: children,
            client,
        })
    }

    /// Every process of this llmq (workers, nats-server, this one), for a [`Meter`].
    ///
    /// [`Meter`]: super::procstat::Meter
    pub fn watched(&self) -> anyhow::Result<Vec<Watched>> {
        let mut watched: Vec<Watched> = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let name = if self.workers.len() == 1 {
                    "worker".to_owned()
                } else {
                    format!("worker-{}", i + 1)
                };
                Watched::new(name, w.pid)
            })
            .collect();
        watched.push(Watched::new("nats-server", self.world.nats_pid()?));
        watched.push(Watched::this_process());
        Ok(watched)
    }

    /// Runs `n` jobs one after the other: the path works, connections are open.
    pub async fn warm_up(&self, n: usize, stream: bool) -> anyhow::Result<()> {
        for _ in 0..n {
            run_job(&self.client, job(PROMPT, stream))
                .await
                .map_err(|err| anyhow!("warm-up job failed: {err}"))?;
        }
        Ok(())
    }

    /// Stops every worker with SIGTERM, all at once (as an orchestrator stopping a fleet
    /// does); an unclean exit is an error.
    pub async fn stop(self) -> anyhow::Result<()> {
        let stopped = futures::future::join_all(self.workers.into_iter().map(WorkerChild::stop));
        stopped
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<()>>>()
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_is_about_one_kib() {
        let bytes = job_payload().len();
        assert!((900..=1300).contains(&bytes), "{bytes} bytes");
        let job: Job = serde_json::from_slice(&job_payload()).unwrap();
        assert_eq!(job.model, MODEL);
        let body: serde_json::Value = serde_json::from_slice(&upstream_body()).unwrap();
        assert_eq!(body["model"], UPSTREAM_MODEL);
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn env_reads_the_machine() {
        let env = Env::probe();
        assert!(env.cores >= 1);
        assert!(env.facts().iter().any(|(k, _)| k == "build profile"));
    }
}
