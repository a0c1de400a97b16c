//! All-or-nothing admission of SendMessages: a call that cannot queue every recipient answers
//! RESOURCE_EXHAUSTED having sent and recorded none of them, and its retry with the same
//! idempotency key sends each message once. The queues are made full for real: one shard,
//! whose SMTP relay (smtp-sink behind a gate the test holds closed) does not answer yet.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{email_message, Daemon, SmtpSink, API_KEY};
use herald::proto::v1::{
    endpoints_client::EndpointsClient, list_outcomes_request, messages_client::MessagesClient, AddressConfiguration, ChannelType,
    DeliveryStatus, Endpoint, EndpointSendConfiguration, ListOutcomesRequest, SendMessagesRequest, UpdateEndpointsBatchRequest,
};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay to `target` that holds every connection until the gate opens.
async fn gated_relay(target: u16) -> (u16, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (open, gate) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut gate = gate.clone();
            tokio::spawn(async move {
                if gate.wait_for(|open| *open).await.is_err() {
                    return;
                }
                if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (port, open)
}

async fn outcomes_of(d: &Daemon, app: &str, endpoint: &str) -> usize {
    MessagesClient::new(d.channel().await)
        .list_outcomes(d.req(ListOutcomesRequest {
            app_id: app.into(),
            by: Some(list_outcomes_request::By::EndpointId(endpoint.into())),
            page_size: 100,
            page_token: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .outcomes
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_cannot_be_queued_whole_sends_and_records_nothing() {
    let sink = SmtpSink::start(&[]);
    let (relay, gate) = gated_relay(sink.port).await;
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("smtp://127.0.0.1:{relay}?pool=2");
    let d = Daemon::spawn(
        None,
        tmp.path().join("data"),
        Some(tmp),
        Some(API_KEY.to_string()),
        &["--smtp-url", &url, "--shards-per-channel", "1"],
    );
    let app = d.create_app("admission").await.app_id;
    let ids: Vec<String> = (0..100).map(|i| format!("b{i:03}")).collect();
    let endpoints = ids
        .iter()
        .map(|id| Endpoint {
            id: id.clone(),
            channel_type: ChannelType::Email as i32,
            address: format!("{id}@example.com"),
            ..Default::default()
        })
        .collect();
    EndpointsClient::new(d.channel().await)
        .update_endpoints_batch(d.req(UpdateEndpointsBatchRequest { app_id: app.clone(), endpoints }))
        .await
        .unwrap();

    // A fills the one shard's queue (10,000) while its relay does not answer.
    let filler: HashMap<String, AddressConfiguration> = (0..10_000)
        .map(|i| (format!("a{i}@example.com"), AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() }))
        .collect();
    let mut a_client = MessagesClient::new(d.channel().await);
    let a_req = d.req(SendMessagesRequest {
        app_id: app.clone(),
        addresses: filler,
        message_configuration: Some(email_message("A", "Hello")),
        ..Default::default()
    });
    let a = tokio::spawn(async move { a_client.send_messages(a_req).await });
    // Until A is queued whole: the shard's queue is deep and no longer growing (a fixed wait
    // is not enough on a loaded machine).
    let depth = |text: &str| -> f64 {
        text.lines().filter(|l| l.starts_with("herald_queue_depth{")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = -1.0;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = depth(&d.metrics_text());
        if now >= 9_000.0 && now == last {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "A was not queued within a minute (queue depth {now})");
        last = now;
    }

    let b = || SendMessagesRequest {
        app_id: app.clone(),
        endpoints: ids.iter().map(|id| (id.clone(), EndpointSendConfiguration::default())).collect(),
        message_configuration: Some(email_message("B", "Hello")),
        idempotency_key: "b-once".into(),
        ..Default::default()
    };
    let mut messages = MessagesClient::new(d.channel().await);
    let refused = messages.send_messages(d.req(b())).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(tonic_types::StatusExt::get_error_details(&refused).retry_info().is_some(), "retry info");
    for id in &ids {
        assert_eq!(outcomes_of(&d, &app, id).await, 0, "{id}: nothing of the refused call is recorded");
    }

    gate.send_replace(true);
    let a = a.await.unwrap().expect("A goes once the relay answers").into_inner();
    assert_eq!(a.result.len(), 10_000);
    assert!(a.result.values().all(|r| r.delivery_status == DeliveryStatus::Successful as i32));
    assert!(sink.received("B").is_empty(), "nothing of the refused call was sent");

    // The retry, with the same key, sends each message once; a repeat returns its response.
    let first = messages.send_messages(d.req(b())).await.unwrap().into_inner();
    assert_eq!(first.endpoint_result.len(), 100);
    assert!(first.endpoint_result.values().all(|r| r.delivery_status == DeliveryStatus::Successful as i32));
    let again = messages.send_messages(d.req(b())).await.unwrap().into_inner();
    assert_eq!(again.request_id, first.request_id, "the repeat gets the first response");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut got = sink.received("B");
    got.sort();
    let mut want: Vec<String> = ids.iter().map(|id| format!("{id}@example.com")).collect();
    want.sort();
    assert_eq!(got, want, "each of B's recipients got the message exactly once");
    for id in &ids {
        assert_eq!(outcomes_of(&d, &app, id).await, 1, "{id}: one outcome");
    }
}
