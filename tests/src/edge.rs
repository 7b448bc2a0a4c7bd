//! The HTTP edge under test: in-process through the library's [`RunningEdge`] (the same
//! start as the `llmq-edge` binary's), or the real binary as a child process
//! ([`EdgeProcess`]) for what only a process shows: signals, exit codes.
//!
//! An in-process edge binds port 0 itself and the test reads the address it got from
//! [`RunningEdge::addr`]: no port is bound, released and passed on (another test could
//! take it in between). The child process says its address on stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use llmq_edge::{EdgeConfig, RunningEdge};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

use crate::stack::eventually;
use crate::worker::workspace_binary;

/// An edge config for tests: NATS at `nats_url`, any free loopback port.
pub fn edge_config(nats_url: &str) -> EdgeConfig {
    let mut config = EdgeConfig::for_nats(nats_url);
    config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config
}

/// An edge running in this process; dropped, it stops at once.
#[derive(Debug)]
pub struct TestEdge {
    edge: RunningEdge,
    url: String,
}

impl TestEdge {
    /// Starts an edge with `config`; it serves (and `/readyz` answers 200) on return.
    pub async fn start(config: EdgeConfig) -> TestEdge {
        let edge = RunningEdge::start(config)
            .await
            .unwrap_or_else(|err| panic!("the edge did not start: {err}"));
        let url = format!("http://{}", edge.addr());
        TestEdge { edge, url }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.edge.addr()
    }

    /// Stops it, cutting open requests (their jobs are cancelled).
    pub async fn stop(self) {
        self.edge.stop().await;
    }
}

/// An edge on NATS at `nats_url` with default settings.
pub async fn spawn_edge(nats_url: &str) -> TestEdge {
    TestEdge::start(edge_config(nats_url)).await
}

/// An edge with `config` (from [`edge_config`], with the test's changes: its own NATS
/// credentials, smaller limits).
pub async fn spawn_edge_with(config: EdgeConfig) -> TestEdge {
    TestEdge::start(config).await
}

/// Text written by a process or a log subscriber, shared with the test that reads it.
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn push(&self, bytes: &[u8]) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.extend_from_slice(bytes);
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Captures every log line at debug and above of what runs on this thread (a
/// `#[tokio::test]` runs its in-process edge and worker there), until the guard drops.
pub fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// The `llmq-edge` binary as a child process, killed on drop.
#[derive(Debug)]
pub struct EdgeProcess {
    child: Child,
    /// `http://<address it listens on>`.
    pub url: String,
    stderr: Captured,
}

impl EdgeProcess {
    /// Starts `llmq-edge` with `args` and the environment `env` (nothing inherited from
    /// the test's `LLMQ__` variables), and waits until it says where it listens.
    pub async fn spawn(env: &[(&str, &str)], args: &[&str]) -> EdgeProcess {
        let mut child = edge_command(env, args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("start llmq-edge: {err}"));
        let stderr = Captured::default();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("piped")).lines();
        let log = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                log.push(format!("{line}\n").as_bytes());
            }
        });
        let url = eventually(Duration::from_secs(20), "llmq-edge listening", || {
            let text = stderr.text();
            async move {
                let line = text.lines().find(|l| l.starts_with("edge listening on "))?;
                Some(line.trim_start_matches("edge listening on ").to_owned())
            }
        })
        .await;
        EdgeProcess { child, url, stderr }
    }

    /// Everything it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.stderr.text()
    }

    /// SIGKILL: the edge dies where it is.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.child.id().expect("llmq-edge is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}: {status}");
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(err)) => panic!("waiting for llmq-edge: {err}"),
            Err(_) => panic!(
                "llmq-edge did not exit within {timeout:?} of SIGTERM:\n{}",
                self.log()
            ),
        }
    }
}

/// Runs `llmq-edge` with `args` and `env` to its end (within a minute): for the runs that
/// end by themselves (a bad config, an unreachable NATS, `--check-config`).
pub async fn run_edge_binary(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let output = edge_command(env, args).stderr(Stdio::piped()).output();
    tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("llmq-edge ends within a minute")
        .expect("llmq-edge runs")
}

fn edge_command(env: &[(&str, &str)], args: &[&str]) -> Command {
    let binary = workspace_binary("llmq-edge");
    assert!(
        binary.exists(),
        "{} not found: build it with `cargo build -p llmq-edge` (the test command builds \
         every binary first)",
        binary.display()
    );
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LLMQ") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    command
}
