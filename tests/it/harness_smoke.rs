use llmq_tests::nats::TestNats;

#[tokio::test]
async fn test_nats_runs_jetstream_and_survives_restart() {
    let mut nats = TestNats::start().await;
    let client = nats.client().await;
    let info = client.server_info();
    assert!(info.version.starts_with("2.15"), "{}", info.version);
    let js = async_nats::jetstream::new(client.clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "SMOKE".into(),
        subjects: vec!["smoke.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("smoke.a", "1".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let port = nats.port();
    nats.restart().await;
    assert_eq!(nats.port(), port);
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("SMOKE").await.unwrap();
    // Without sync_always the store may lose its last writes on SIGKILL; the stream
    // definition itself is written synchronously.
    assert_eq!(stream.info().await.unwrap().config.name, "SMOKE");
}
