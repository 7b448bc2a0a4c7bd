//! The worker binary's command line: exit codes and what it prints. (This test also makes
//! cargo build the binary the integration tests run as a child process.)

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

#[test]
fn the_example_config_is_valid_and_keys_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let azure_key = dir.path().join("azure.key");
    std::fs::write(&azure_key, "azure-secret-value").unwrap();
    let config = std::fs::read_to_string(example_config()).unwrap().replace(
        "/run/secrets/azure-openai-key",
        &azure_key.display().to_string(),
    );
    let path = dir.path().join("worker.toml");
    std::fs::write(&path, config).unwrap();
    let output = worker()
        .args(["--check-config", "--config"])
        .arg(&path)
        .env("OPENAI_API_KEY", "sk-openai-secret-value")
        .env("ANTHROPIC_API_KEY", "sk-ant-secret-value")
        .env("GEMINI_API_KEY", "gemini-secret-value")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{all}");
    assert!(all.contains("config ok"), "{all}");
    assert!(!all.contains("secret-value"), "a key was printed: {all}");
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

/// A valid config whose NATS server does not exist: the worker logs, then exits 69.
fn unreachable_nats_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("worker.toml");
    // Port 9 (discard) on loopback: nothing listens there.
    std::fs::write(
        &path,
        r#"
[nats]
url = "nats://127.0.0.1:9"
connect_timeout = "1s"
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
    assert_eq!(
        output.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&output.stderr)
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
