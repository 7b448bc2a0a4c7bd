//! The worker binary as operators run it: what it says when it cannot start, and what
//! its log lines hold.

use std::time::Duration;

use llmq_schemas::OutcomeStatus;
use llmq_tests::stack::{Stack, chat_job, run_job};
use llmq_tests::worker::{WorkerProcess, worker_binary};

#[tokio::test]
async fn a_second_worker_on_the_same_admin_address_exits_64_naming_it() {
    let stack = Stack::start().await;
    let mut setup = stack.simple_setup();
    let first = stack.worker(&setup).await;
    let admin = first.admin_addr().expect("admin endpoint on");

    // The same config, as README's scaling advice has it, with the admin port fixed.
    setup.set("admin", "listen", &format!("\"{admin}\""));
    let config = setup.key_file.with_file_name("second.toml");
    std::fs::write(&config, setup.toml()).unwrap();
    let second = tokio::process::Command::new(worker_binary())
        .arg("--config")
        .arg(&config)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), second)
        .await
        .expect("the second worker exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {admin}")),
        "{stderr}"
    );
    assert!(stderr.contains("admin.listen"), "{stderr}");
    first.stop().await;
}

#[tokio::test]
async fn log_lines_inside_a_job_name_its_id_once() {
    let stack = Stack::start().await;
    let setup = stack.simple_setup();
    let mut worker = WorkerProcess::spawn(&setup, "logger").await;
    let client = stack.client().await;
    let job = chat_job("chat", "log me");
    let job_id = job.id.to_string();
    let outcome = run_job(&client, job).await;
    assert_eq!(outcome.status, OutcomeStatus::Succeeded);
    worker
        .wait_for_log("job finished", Duration::from_secs(10))
        .await;

    let log = worker.log();
    let line = log
        .lines()
        .find(|line| line.contains("job finished"))
        .expect("the job's last line");
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["span"]["job_id"], job_id.as_str(), "{line}");
    assert!(
        event.get("job_id").is_none(),
        "job_id repeated in the event: {line}"
    );
    assert_eq!(
        line.matches(job_id.as_str()).count(),
        1,
        "the id appears once in the line: {line}"
    );
    assert_eq!(
        worker.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
}
