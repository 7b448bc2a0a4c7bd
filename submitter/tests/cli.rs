//! The `submitter` binary's exit codes, as scripts see them.

// Helpers, not only `#[test]` functions, may fail the test loudly.
#![allow(clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Command, Output};

fn submitter(args: &[&str]) -> Output {
    submitter_with_env(args, &[])
}

/// Runs the binary with `vars` as its only `LLMQ*` environment variables.
fn submitter_with_env(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_submitter"));
    // The caller's environment must not point the test at a real deployment.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LLMQ") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .envs(vars.iter().copied())
        .output()
        .expect("run the submitter binary")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A loopback URL nothing listens on: bind a port, then free it.
fn unreachable_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    format!("nats://127.0.0.1:{port}")
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        &["chat"][..],                 // no --model
        &["chat", "--model", "m"][..], // nothing to ask (own validation)
        &["chat", "--model", "m", "--stream", "--json", "hi"][..],
        &["result", "not-a-uuid"][..],
        &["dlq", "replay"][..], // neither SEQ nor --all
        &["usage", "--since", "last tuesday"][..],
        &["frobnicate"][..],
    ] {
        let output = submitter(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn an_invalid_tenant_is_a_usage_error_before_connecting() {
    let url = unreachable_url();
    let output = submitter(&["models", "--url", &url, "--tenant", "a.b"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("tenant"), "{}", stderr(&output));
}

#[test]
fn an_unreachable_server_exits_4() {
    let url = unreachable_url();
    for args in [
        &["models", "--url", &url][..],
        &["chat", "--url", &url, "--model", "m", "hello"][..],
        &[
            "result",
            "--url",
            &url,
            "0193a3c2-6c2e-7cc3-9c1d-3f1d2c4b5a69",
        ][..],
    ] {
        let output = submitter(args);
        assert_eq!(
            output.status.code(),
            Some(4),
            "{args:?}: {}",
            stderr(&output)
        );
        let text = stderr(&output);
        assert!(
            text.starts_with("error: cannot connect to NATS at"),
            "{text}"
        );
    }
}

#[test]
fn help_documents_the_exit_codes() {
    let output = submitter(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    for line in [
        "0  success",
        "2  usage error",
        "3  the job ended but did not succeed",
        "4  connection or server error",
        "5  rejected at submit",
        "6  not found",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
}

#[test]
fn usage_lines_do_not_list_options_set_from_the_environment() {
    let url = unreachable_url();
    let output = submitter_with_env(
        &["chat", "--model", "m", "--stream", "--json", "hi"],
        &[
            ("LLMQ__NATS__URL", &url),
            ("LLMQ_NATS_URL", &url),
            ("LLMQ_TENANT", "acme"),
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stderr(&output);
    let usage = text
        .lines()
        .find(|line| line.starts_with("Usage:"))
        .unwrap_or_else(|| panic!("no usage line in {text}"));
    assert!(!usage.contains("--url"), "{usage}");
    assert!(!usage.contains("--tenant"), "{usage}");
}

#[test]
fn the_url_comes_from_the_workers_variable_or_the_deprecated_one() {
    let url = unreachable_url();
    let output = submitter_with_env(&["models"], &[("LLMQ__NATS__URL", &url)]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.starts_with(&format!("error: cannot connect to NATS at {url}")),
        "{text}"
    );
    assert!(!text.contains("deprecated"), "{text}");
    assert!(!text.contains("default"), "named, not the default: {text}");

    let output = submitter_with_env(&["models"], &[("LLMQ_NATS_URL", &url)]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("LLMQ_NATS_URL is deprecated; set LLMQ__NATS__URL instead"),
        "{text}"
    );
    assert!(
        text.contains(&format!("cannot connect to NATS at {url}")),
        "{text}"
    );
}

#[test]
fn a_bad_job_id_says_what_a_job_id_is() {
    for command in ["result", "cancel"] {
        let output = submitter(&[command, "not-a-uuid"]);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        let text = stderr(&output);
        assert!(text.contains("not a job id: \"not-a-uuid\""), "{text}");
        assert!(text.contains("submitter chat --no-wait"), "{text}");
    }
}

#[test]
fn logs_written_to_a_file_or_pipe_have_no_colour_codes() {
    let url = unreachable_url();
    let output = submitter_with_env(&["models", "--url", &url], &[("RUST_LOG", "debug")]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("DEBUG"),
        "expected debug logs on stderr: {text}"
    );
    assert!(!text.contains('\u{1b}'), "ANSI escape codes in {text:?}");
}
