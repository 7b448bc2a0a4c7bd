//! The worker binary as operators run it: what it says when it cannot start.

use std::time::Duration;

use llmq_tests::stack::Stack;
use llmq_tests::worker::worker_binary;

#[tokio::test]
async fn a_second_worker_on_the_same_admin_address_exits_64_naming_it() {
    let stack = Stack::start().await;
    let mut setup = stack.simple_setup();
    let first = stack.worker(&setup).await;
    let admin = first.started.admin_addr.expect("admin endpoint on");

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
    first.stop().await.unwrap();
}
