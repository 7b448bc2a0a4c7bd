//! README's shell blocks, run as a newcomer would run them: from the repository root, with
//! the built binaries on `PATH`, free ports for whatever the block starts.

use std::process::Output;
use std::time::Duration;

use crate::nats::workspace_root;
use crate::worker::workspace_binary;

/// The first ```sh block after `<!-- recipe: NAME -->` in README.md.
pub fn block(name: &str) -> String {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let marker = format!("<!-- recipe: {name} -->");
    readme
        .split(marker.as_str())
        .nth(1)
        .and_then(|after| after.split("```sh\n").nth(1))
        .and_then(|rest| rest.split("\n```").next())
        .unwrap_or_else(|| panic!("README.md has no sh block after {marker}"))
        .to_owned()
}

/// A free loopback port (bound and released).
pub fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port().to_string())
        .expect("a free loopback port")
}

/// Runs block `name` with bash, each of `ports` set to a free port, within two minutes.
pub async fn run(name: &str, ports: &[&str]) -> Output {
    let bin = workspace_binary("submitter");
    let path = format!(
        "{}:{}",
        bin.parent().expect("the binaries' directory").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-c")
        .arg(block(name))
        .current_dir(workspace_root())
        .env("PATH", path)
        .env_remove("LLMQ__NATS__URL")
        .env_remove("LLMQ_TENANT")
        // Other tests run workers at the same time: not on the default admin port.
        .env("LLMQ__ADMIN__LISTEN", "127.0.0.1:0")
        .kill_on_drop(true);
    for port in ports {
        command.env(port, free_port());
    }
    tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("README block {name:?} did not finish within 2 minutes"))
        .expect("bash runs")
}
