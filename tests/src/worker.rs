//! The gateway worker under test: in-process through the library's `run`, or as a child
//! process of the real binary (for SIGKILL and SIGTERM tests).
//!
//! Both read the same TOML text ([`WorkerSetup::toml`]), so a test's config is the same
//! whichever way the worker runs. The provider key goes through a file in the test's
//! temp dir: no test mutates the process environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use gateway_worker::RunningWorker;
use gateway_worker::config::{Config, load_str};
use gateway_worker::keys::KeyReload;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::nats::workspace_root;

/// The key the mock provider accepts by default.
pub const TEST_KEY: &str = "test-key";

/// A worker config for tests: test-friendly defaults plus the test's providers and models.
#[derive(Debug, Clone)]
pub struct WorkerSetup {
    pub key_file: PathBuf,
    /// `[providers.*]` and `[models.*]` tables (and `[[prices]]`). `{mock}` is replaced by
    /// `mock_url`, `{key_file}` by the key file's path.
    pub body: String,
    pub mock_url: String,
    /// Settings per section (`worker`, `jetstream`, `retry`, `retry.per_class`, ...): key to
    /// a TOML value. Test-friendly defaults; tests change them with [`set`](Self::set).
    pub settings: BTreeMap<String, BTreeMap<String, String>>,
}

impl WorkerSetup {
    /// Writes the key file into `dir` and returns a setup with defaults.
    pub fn new(dir: &Path, nats_url: &str, mock_url: &str, body: &str) -> Self {
        let key_file = dir.join("provider.key");
        std::fs::write(&key_file, TEST_KEY).expect("write the test key file");
        let mut setup = Self {
            key_file,
            body: body.to_owned(),
            mock_url: mock_url.to_owned(),
            settings: BTreeMap::new(),
        };
        setup
            .set("nats", "url", &format!("{nats_url:?}"))
            .set("jetstream", "prefix", "\"llmq\"")
            .set("jetstream", "catalog_heartbeat", "\"1s\"")
            .set("worker", "sweep_interval", "\"500ms\"")
            .set("worker", "fetch_expires", "\"500ms\"")
            .set("worker", "shutdown_grace", "\"10s\"")
            .set("admin", "listen", "\"127.0.0.1:0\"")
            .set("retry", "base_delay", "\"20ms\"")
            .set("retry", "max_delay", "\"200ms\"");
        setup
    }

    /// Sets `key = value` (a TOML value: strings quoted) in `section`.
    pub fn set(&mut self, section: &str, key: &str, value: &str) -> &mut Self {
        self.settings
            .entry(section.to_owned())
            .or_default()
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Replaces the key file's content as a secret mount does: a new file, renamed over
    /// the old one, so a reader never sees half of it.
    pub fn rotate_key(&self, key: &str) {
        let next = self.key_file.with_extension("next");
        std::fs::write(&next, key).expect("write the next key file");
        std::fs::rename(&next, &self.key_file).expect("rename it over the key file");
    }

    pub fn with_id(mut self, id: &str) -> Self {
        self.set("worker", "id", &format!("{id:?}"));
        self
    }

    pub fn toml(&self) -> String {
        let body = self
            .body
            .replace("{mock}", &self.mock_url)
            .replace("{key_file}", &self.key_file.display().to_string());
        let mut text = String::new();
        for (section, values) in &self.settings {
            text.push_str(&format!("[{section}]\n"));
            for (key, value) in values {
                text.push_str(&format!("{key} = {value}\n"));
            }
            text.push('\n');
        }
        text.push_str(&body);
        text
    }

    pub fn config(&self) -> Config {
        match load_str(&self.toml(), None) {
            Ok(config) => config,
            Err(err) => panic!(
                "test worker config is invalid:\n{err}\n---\n{}",
                self.toml()
            ),
        }
    }
}

/// One provider `mock` of kind `openai` at the mock, and the given models, as TOML.
pub fn openai_mock_provider(max_concurrency: usize) -> String {
    format!(
        r#"[providers.mock]
kind = "openai"
base_url = "{{mock}}/v1"
api_key_file = "{{key_file}}"
max_concurrency = {max_concurrency}
timeouts = {{ connect = "2s", first_token = "10s", inter_token = "5s", total = "30s" }}
"#
    )
}

/// A worker running in this process: the same [`RunningWorker`] the binary runs.
#[derive(Debug)]
pub struct TestWorker {
    worker: Option<RunningWorker>,
    draining: Option<JoinHandle<()>>,
    id: String,
    admin_addr: Option<SocketAddr>,
}

impl TestWorker {
    /// Starts the worker and waits until it is consuming.
    pub async fn start(config: Config) -> TestWorker {
        let started = tokio::time::timeout(Duration::from_secs(30), RunningWorker::start(config));
        let worker = match started.await {
            Ok(Ok(worker)) => worker,
            Ok(Err(err)) => panic!("test worker failed to start: {err}"),
            Err(_) => panic!("test worker did not start within 30s"),
        };
        TestWorker {
            id: worker.id().to_owned(),
            admin_addr: worker.admin_addr(),
            worker: Some(worker),
            draining: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Re-reads every provider key file now, as the binary does on SIGHUP.
    pub async fn reload_keys(&self) -> KeyReload {
        match &self.worker {
            Some(worker) => worker.reload_keys().await,
            None => panic!("reload_keys on a stopped test worker"),
        }
    }

    /// Graceful shutdown, as on SIGTERM: returns once the worker is drained.
    pub async fn stop(mut self) {
        self.begin_stop();
        self.wait_drained().await;
    }

    /// Starts the shutdown without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.draining = Some(tokio::spawn(worker.drain()));
        }
    }

    /// Waits for a shutdown begun with [`begin_stop`](Self::begin_stop).
    pub async fn finished(mut self) {
        self.wait_drained().await;
    }

    async fn wait_drained(&mut self) {
        if let Some(draining) = self.draining.take()
            && let Err(err) = draining.await
        {
            panic!("test worker drain panicked: {err}");
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop_now();
        }
    }
}

/// The worker binary built next to this test binary (`target/<profile>/gateway-worker`).
pub fn worker_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("LLMQ_WORKER_BIN") {
        return PathBuf::from(path);
    }
    workspace_binary("gateway-worker")
}

/// A workspace binary built next to the running executable (`target/<profile>/<name>`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/it-<hash> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace_root().join("target/debug"));
    dir.join(name)
}

/// A worker as a child process of the real binary.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Child,
    pub config_path: PathBuf,
    log_path: PathBuf,
}

impl WorkerProcess {
    /// Writes the config next to the key file and starts the binary; waits until the
    /// worker logs that it started.
    pub async fn spawn(setup: &WorkerSetup, name: &str) -> WorkerProcess {
        Self::spawn_with_args(setup, name, &[]).await
    }

    /// Like [`spawn`](Self::spawn), with more command-line arguments.
    pub async fn spawn_with_args(setup: &WorkerSetup, name: &str, args: &[&str]) -> WorkerProcess {
        let binary = worker_binary();
        assert!(
            binary.exists(),
            "worker binary not found at {}: build it with `cargo build -p gateway-worker` \
             (the test command builds every binary first)",
            binary.display()
        );
        let dir = setup.key_file.parent().unwrap_or(Path::new("."));
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, setup.toml()).expect("write the worker config");
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("create the worker log");
        let child = Command::new(&binary)
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("LLMQ__LOG__FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", binary.display()));
        let mut process = WorkerProcess {
            child,
            config_path,
            log_path,
        };
        process
            .wait_for_log("worker started", Duration::from_secs(30))
            .await;
        process
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The admin endpoint's address, from the worker's start-up log line.
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        let log = self.log();
        let port = log
            .lines()
            .find(|line| line.contains("worker started"))
            .and_then(|line| line.split("127.0.0.1:").nth(1))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|port| port.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no admin address in the start-up log:\n{log}"));
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The worker's `/metrics` page.
    pub async fn metrics(&self) -> String {
        gateway_worker::providers::http_client::install_crypto_provider();
        let url = format!("http://{}/metrics", self.admin_addr());
        let response = reqwest::get(&url)
            .await
            .unwrap_or_else(|err| panic!("GET {url}: {err}"));
        response
            .text()
            .await
            .unwrap_or_else(|err| panic!("GET {url}: {err}"))
    }

    /// Waits until the worker's log contains `needle` (it writes one JSON line per event).
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "worker exited with {status} before logging {needle:?}:\n{}",
                    self.log()
                );
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "worker did not log {needle:?} within {timeout:?}:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGHUP: the worker re-reads its provider key files.
    pub fn hang_up(&self) {
        let pid = self.child.id().expect("the worker is running");
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP {pid}: {status}");
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(err)) => panic!("waiting for the worker: {err}"),
            Err(_) => panic!(
                "worker did not exit within {timeout:?} of SIGTERM:\n{}",
                self.log()
            ),
        }
    }
}
