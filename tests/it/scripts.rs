//! `scripts/test` and `scripts/demo`, run against a fake `cargo` that records its
//! arguments: which parts run, and what a newcomer sees while the demo builds.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use llmq_tests::nats::workspace_root;

/// A `cargo` that appends its arguments to `cargo.log` and fails when they contain
/// `fail_on`.
fn fake_cargo(dir: &Path, fail_on: &str) {
    let script = format!(
        "#!/usr/bin/env bash\necho \"$*\" >> {log:?}\ncase \" $* \" in *\" {fail_on} \"*) exit 101 ;; esac\n",
        log = dir.join("cargo.log"),
    );
    let path = dir.join("cargo");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn run_script(dir: &Path, script: &str) -> Output {
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new("bash")
        .arg(workspace_root().join("scripts").join(script))
        .env("PATH", path)
        .output()
        .unwrap()
}

#[test]
fn scripts_test_runs_every_part_after_a_failure_and_fails_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    fake_cargo(dir.path(), "--lib");
    let output = run_script(dir.path(), "test");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let calls = std::fs::read_to_string(dir.path().join("cargo.log")).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(
        calls[0].starts_with("build --workspace --bins"),
        "{calls:?}"
    );
    assert!(calls[1].contains("--no-fail-fast"), "{calls:?}");
    assert!(calls[2].starts_with("test --workspace --doc"), "{calls:?}");
    assert!(calls[3].contains("--bin bench -- all --quick"), "{calls:?}");
    assert!(
        stderr.contains("1 part(s) failed:\n  - unit and integration tests"),
        "{stderr}"
    );
}

#[test]
fn the_demo_shows_cargos_progress_while_it_builds() {
    let dir = tempfile::tempdir().unwrap();
    fake_cargo(dir.path(), "build");
    let output = run_script(dir.path(), "demo");
    assert_ne!(output.status.code(), Some(0));
    let calls = std::fs::read_to_string(dir.path().join("cargo.log")).unwrap();
    assert!(calls.starts_with("build --bins"), "{calls}");
    assert!(!calls.contains("--quiet"), "the build is silent: {calls}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("cargo shows its progress"), "{stdout}");
}
