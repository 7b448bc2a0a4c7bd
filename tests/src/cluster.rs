//! Three clustered nats-servers on loopback: random client and route ports, temp stores,
//! killed on drop, each restartable on its own port and store.

use std::time::Duration;

use crate::nats::{NatsOptions, TestNats};

/// A 3-node JetStream cluster.
#[derive(Debug)]
pub struct TestCluster {
    pub nodes: Vec<TestNats>,
}

/// A free loopback port (bound and released: another process could take it, rarely).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

impl TestCluster {
    /// Starts three nodes and waits until JetStream has a meta leader. Route ports are
    /// picked free and released, so another process can take one first: then the
    /// cluster starts again on fresh ports.
    pub async fn start() -> TestCluster {
        let cluster = Self::start_running(3).await;
        cluster.wait_for_jetstream().await;
        cluster
    }

    /// Starts three nodes and returns as soon as each listens for clients: the cluster is
    /// still forming (no meta leader yet), as when an orchestrator starts everything at once.
    pub async fn start_forming() -> TestCluster {
        Self::start_running(3).await
    }

    /// Two of the three nodes, the third never started: a cluster that can elect a
    /// leader but cannot place three replicas.
    pub async fn start_two_of_three() -> TestCluster {
        Self::start_running(2).await
    }

    /// `running` of the three configured nodes, not waiting for JetStream. Route ports
    /// are picked free and released: on a clash the nodes start again on fresh ports.
    async fn start_running(running: usize) -> TestCluster {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(running).await {
                Ok(cluster) => return cluster,
                Err(err) => last = err,
            }
        }
        panic!("the test cluster did not start: {last}");
    }

    async fn try_start(running: usize) -> Result<TestCluster, String> {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for (i, port) in routes.iter().enumerate().take(running) {
            let others: Vec<String> = routes
                .iter()
                .filter(|other| *other != port)
                .map(|other| format!("nats-route://127.0.0.1:{other}"))
                .collect();
            let extra_config = format!(
                "server_name: n{i}\ncluster {{\n  name: llmq-test\n  listen: 127.0.0.1:{port}\n  \
                 routes: [{}]\n}}\n",
                others.join(", ")
            );
            nodes.push(
                TestNats::try_start_with(NatsOptions {
                    extra_config,
                    ..NatsOptions::default()
                })
                .await?,
            );
        }
        Ok(TestCluster { nodes })
    }

    /// Every node's client URL, comma-separated (what a worker's `nats.url` takes).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(TestNats::url).collect();
        urls.join(",")
    }

    /// Waits until an R3 stream can be placed (the cluster formed, a meta leader elected).
    pub async fn wait_for_jetstream(&self) {
        let js = async_nats::jetstream::new(self.nodes[0].client().await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let placed = js
                .create_stream(async_nats::jetstream::stream::Config {
                    name: "CLUSTER_PROBE".into(),
                    subjects: vec!["cluster.probe".into()],
                    num_replicas: 3,
                    ..Default::default()
                })
                .await;
            if placed.is_ok() {
                let _ = js.delete_stream("CLUSTER_PROBE").await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cluster did not place an R3 stream within 30 s: {placed:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The index of the node leading `stream` (server names are `n<index>`).
    pub async fn leader_of(&self, stream: &str) -> usize {
        for node in &self.nodes {
            let Ok(client) = async_nats::connect(node.url()).await else {
                continue;
            };
            let js = async_nats::jetstream::new(client);
            if let Ok(mut handle) = js.get_stream(stream).await
                && let Ok(info) = handle.info().await
                && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
                && let Some(index) = leader.strip_prefix('n').and_then(|i| i.parse().ok())
            {
                return index;
            }
        }
        panic!("no node knows the leader of {stream}");
    }
}
