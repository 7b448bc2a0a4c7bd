//! The HTTP edge (`submitter serve`) as a child process, for tests that need one beside
//! their own: on a free loopback port, killed on drop.

use std::process::Stdio;
use std::time::Duration;

use crate::stack::eventually;
use crate::worker::workspace_binary;

/// Starts `submitter serve` on NATS at `nats_url` and waits until its `/readyz` answers
/// 200; returns the child and the edge's base URL (`http://127.0.0.1:<port>`).
pub async fn spawn_edge(nats_url: &str, http: &reqwest::Client) -> (tokio::process::Child, String) {
    spawn_edge_with(nats_url, &[], http).await
}

/// [`spawn_edge`] with more connection options (`--nkey-file <edge.nk>`).
pub async fn spawn_edge_with(
    nats_url: &str,
    options: &[&str],
    http: &reqwest::Client,
) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port");
    let child = tokio::process::Command::new(workspace_binary("submitter"))
        .args(["--url", nats_url])
        .args(options)
        .args(["serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start submitter serve");
    let url = format!("http://127.0.0.1:{port}");
    let probe = format!("{url}/readyz");
    eventually(Duration::from_secs(20), "the edge is ready", || {
        let (http, probe) = (http.clone(), probe.clone());
        async move {
            let response = http.get(&probe).send().await.ok()?;
            (response.status() == 200).then_some(())
        }
    })
    .await;
    (child, url)
}
