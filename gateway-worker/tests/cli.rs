//! The worker binary's command line: exit codes and what it prints. (This test also makes
//! cargo build the binary the integration tests run as a child process.)

// Helpers, not only `#[test]` functions, may fail the test loudly.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gateway-worker"))
}

fn example_config() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("worker.example.toml")
}

#[test]
fn help_explains_environment_and_exit_codes() {
    let output = worker().arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("LLMQ__"), "{text}");
    assert!(text.contains("64 invalid config"), "{text}");
}

/// The worker binary with no `LLMQ*` variable and none of the example's key variables
/// from the caller's environment.
fn clean_worker() -> Command {
    let mut command = worker();
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("LLMQ") || name.ends_with("_API_KEY") {
            command.env_remove(name);
        }
    }
    command
}

fn all_output(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn check_config_passes_the_example_without_any_key_and_names_each_key_source() {
    let output = clean_worker()
        .args(["--check-config", "--config"])
        .arg(example_config())
        .output()
        .unwrap();
    let all = all_output(&output);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("config ok"), "{all}");
    assert!(all.contains("no key read"), "{all}");
    for line in [
        "providers.openai (openai): key from environment variable OPENAI_API_KEY",
        "providers.azure-eu (azure): key from file /run/secrets/azure-openai-key",
        "providers.vllm (openai_compatible): no key",
    ] {
        assert!(all.contains(line), "{line:?} missing from:\n{all}");
    }
}

#[test]
fn check_keys_reads_every_key_and_names_the_missing_ones() {
    let output = clean_worker()
        .args(["--check-keys", "--config"])
        .arg(example_config())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{}", all_output(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for field in [
        "providers.openai.api_key_env: environment variable OPENAI_API_KEY",
        "providers.anthropic.api_key_env: environment variable ANTHROPIC_API_KEY",
        "providers.gemini.api_key_env: environment variable GEMINI_API_KEY",
        "providers.azure-eu.api_key_file: cannot read /run/secrets/azure-openai-key",
    ] {
        assert!(stderr.contains(field), "{field:?} missing from:\n{stderr}");
    }
}

#[test]
fn check_keys_passes_when_every_key_is_there_and_prints_none() {
    let dir = tempfile::tempdir().unwrap();
    let azure_key = dir.path().join("azure.key");
    std::fs::write(&azure_key, "azure-secret-value").unwrap();
    let config = std::fs::read_to_string(example_config()).unwrap().replace(
        "/run/secrets/azure-openai-key",
        &azure_key.display().to_string(),
    );
    let path = dir.path().join("worker.toml");
    std::fs::write(&path, config).unwrap();
    let output = clean_worker()
        .args(["--check-keys", "--config"])
        .arg(&path)
        .env("OPENAI_API_KEY", "sk-openai-secret-value")
        .env("ANTHROPIC_API_KEY", "sk-ant-secret-value")
        .env("GEMINI_API_KEY", "gemini-secret-value")
        .output()
        .unwrap();
    let all = all_output(&output);
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains("config ok") && all.contains("every key read"),
        "{all}"
    );
    assert!(!all.contains("secret-value"), "a key was printed: {all}");
}

#[test]
fn an_environment_override_with_underscores_reaches_a_dashed_provider() {
    let output = clean_worker()
        .args(["--check-config", "--config"])
        .arg(example_config())
        .env("LLMQ__PROVIDERS__AZURE_EU__BASE_URL", "ftp://elsewhere")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{}", all_output(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("providers.azure-eu.base_url: must start with http"),
        "{stderr}"
    );
}

#[test]
fn a_missing_key_and_a_typo_exit_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("worker.toml");
    std::fs::write(
        &path,
        r#"
[providers.openai]
kind = "openai"
api_key_env = "LLMQ_TEST_UNSET_KEY_VARIABLE"
[models.m]
deployments = [{ provider = "openai", model = "gpt-4.1" }]
"#,
    )
    .unwrap();
    let output = worker().arg("--config").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("providers.openai.api_key_env"), "{stderr}");

    std::fs::write(
        &path,
        r#"
[worker]
max_inflite = 3
[providers.p]
kind = "openai_compatible"
base_url = "http://x/v1"
[models.m]
deployments = [{ provider = "p", model = "x" }]
"#,
    )
    .unwrap();
    let output = worker().arg("--config").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_inflite"), "{stderr}");
}

/// A valid config whose NATS server does not exist: the worker logs what it waits for,
/// then exits 69 once `worker.startup_timeout` has passed.
fn unreachable_nats_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("worker.toml");
    // Port 9 (discard) on loopback: nothing listens there.
    std::fs::write(
        &path,
        r#"
[nats]
url = "nats://127.0.0.1:9"
connect_timeout = "1s"
[worker]
startup_timeout = "1s"
[admin]
listen = "127.0.0.1:0"
[providers.p]
kind = "openai_compatible"
base_url = "http://127.0.0.1:9/v1"
[models.m]
deployments = [{ provider = "p", model = "x" }]
"#,
    )
    .unwrap();
    path
}

#[test]
fn an_unreachable_nats_exits_69() {
    let dir = tempfile::tempdir().unwrap();
    let path = unreachable_nats_config(dir.path());
    let output = worker().arg("--config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("waiting for NATS to accept connections"),
        "{stderr}"
    );
}

#[test]
fn logs_to_a_file_or_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = unreachable_nats_config(dir.path());
    let output = worker()
        .arg("--config")
        .arg(&path)
        .env("LLMQ__LOG__FORMAT", "pretty")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("worker failed"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape codes in {stderr:?}"
    );
}

/// SIGTERM while the worker waits for NATS at start-up ends it at once, cleanly.
#[cfg(unix)]
#[test]
fn sigterm_while_waiting_for_nats_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = unreachable_nats_config(dir.path());
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("startup_timeout = \"1s\"", "startup_timeout = \"5m\"");
    std::fs::write(&path, text).unwrap();
    let log = dir.path().join("worker.log");
    let mut child = worker()
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("waiting for NATS to accept connections")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no waiting line logged"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stopped while starting"), "{log}");
}
