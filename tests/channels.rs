//! Per-app channel settings: write-only secrets, and sends going through the app's own relay.

#[macro_use]
mod common;
#[path = "common/tls_relay.rs"]
mod tls_relay;

use common::{Backend, Daemon, SmtpSink};
use herald::proto::v1::{
    channels_client::ChannelsClient, messages_client::MessagesClient, AddressConfiguration, ChannelType, DeliveryStatus,
    DirectMessageConfiguration, EmailChannel, EmailMessage, GetChannelRequest, SendMessagesRequest, TlsMode, UpdateEmailChannelRequest,
};
use tonic::Code;

async fn app_relays_and_write_only_secrets(backend: Backend) {
    let sink = SmtpSink::start(&[]);
    // No daemon-wide relay: the app's channel is the only way out.
    let d = Daemon::start(backend);
    let app = d.create_app("c").await.app_id;
    let mut ch = ChannelsClient::new(d.channel().await);
    let send = || SendMessagesRequest {
        app_id: app.clone(),
        addresses: [(
            "ana@example.com".to_string(),
            AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() },
        )]
        .into(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: "news@shop.example".into(),
                subject: "Hi".into(),
                text_part: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = MessagesClient::new(d.channel().await).send_messages(d.req(send())).await.unwrap().into_inner();
    assert!(r.result["ana@example.com"].status_message.contains("no email channel"), "{:?}", r.result);

    let channel = EmailChannel {
        enabled: true,
        relay_host: "127.0.0.1".into(),
        relay_port: sink.port as i32,
        username: "u".into(),
        password: "pw-secret".into(),
        ..Default::default()
    };
    let shown = ch
        .update_email_channel(d.req(UpdateEmailChannelRequest { app_id: app.clone(), channel: Some(channel.clone()) }))
        .await
        .unwrap()
        .into_inner();
    assert!(shown.has_password && shown.password.is_empty());
    // An update without a password keeps it.
    let keep = EmailChannel { password: String::new(), pool_size: 2, ..channel.clone() };
    ch.update_email_channel(d.req(UpdateEmailChannelRequest { app_id: app.clone(), channel: Some(keep) })).await.unwrap();
    let got = ch.get_email_channel(d.req(GetChannelRequest { app_id: app.clone() })).await.unwrap().into_inner();
    assert!(got.has_password && got.password.is_empty() && got.pool_size == 2);
    let bad = EmailChannel { relay_host: "x".into(), relay_port: 0, from_address: "nope".into(), ..Default::default() };
    let err = ch.update_email_channel(d.req(UpdateEmailChannelRequest { app_id: app.clone(), channel: Some(bad) })).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // smtp-sink offers no AUTH here, so drop the credentials before sending.
    let plain = EmailChannel { username: String::new(), password: String::new(), ..channel.clone() };
    ch.delete_email_channel(d.req(GetChannelRequest { app_id: app.clone() })).await.unwrap();
    ch.update_email_channel(d.req(UpdateEmailChannelRequest { app_id: app.clone(), channel: Some(plain.clone()) })).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let r = MessagesClient::new(d.channel().await).send_messages(d.req(send())).await.unwrap().into_inner();
    assert_eq!(r.result["ana@example.com"].delivery_status, DeliveryStatus::Successful as i32, "{:?}", r.result);

    // The channel's from address stands in when a send gives none.
    let with_from = EmailChannel { from_address: "Shop Desk <desk@shop.example>".into(), ..plain.clone() };
    ch.update_email_channel(d.req(UpdateEmailChannelRequest { app_id: app.clone(), channel: Some(with_from) })).await.unwrap();
    let mut no_from = send();
    no_from.message_configuration.as_mut().unwrap().email_message.as_mut().unwrap().from_address.clear();
    let r = MessagesClient::new(d.channel().await).send_messages(d.req(no_from)).await.unwrap().into_inner();
    assert_eq!(r.result["ana@example.com"].delivery_status, DeliveryStatus::Successful as i32, "{:?}", r.result);
    let mut found = false;
    for _ in 0..50 {
        found = sink
            .messages()
            .iter()
            .any(|m| m.contains("X-Mail-Args: <desk@shop.example>") && m.contains("From: Shop Desk <desk@shop.example>"));
        if found {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    assert!(found, "{:?}", sink.messages());

    let off = EmailChannel { enabled: false, ..plain };
    ch.update_email_channel(d.req(UpdateEmailChannelRequest { app_id: app.clone(), channel: Some(off) })).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let r = MessagesClient::new(d.channel().await).send_messages(d.req(send())).await.unwrap().into_inner();
    let res = &r.result["ana@example.com"];
    assert_eq!(res.delivery_status, DeliveryStatus::PermanentFailure as i32);
    assert!(res.status_message.contains("disabled"), "{res:?}");

    ch.delete_email_channel(d.req(GetChannelRequest { app_id: app.clone() })).await.unwrap();
    assert_eq!(ch.get_email_channel(d.req(GetChannelRequest { app_id: app.clone() })).await.unwrap_err().code(), Code::NotFound);
}

/// An app's relay reached with STARTTLS, trusting the relay's private CA.
async fn starttls_relay_with_a_private_ca(backend: Backend) {
    let sink = SmtpSink::start(&[]);
    let relay = tls_relay::TlsRelay::start(tls_relay::Front::StartTls, sink.port).await;
    let d = Daemon::start(backend);
    let app = d.create_app("tls").await.app_id;
    let mut ch = ChannelsClient::new(d.channel().await);
    let update = |c: EmailChannel| UpdateEmailChannelRequest { app_id: app.clone(), channel: Some(c) };

    // Bad TLS settings are refused field by field.
    let bad = EmailChannel {
        enabled: true,
        tls_mode: TlsMode::Starttls as i32,
        ca_certificate: "not a certificate".into(),
        ..Default::default()
    };
    let err = ch.update_email_channel(d.req(update(bad))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_details_bad_request(&err).expect("field violations");
    let fields: Vec<&str> = details.field_violations.iter().map(|v| v.field.as_str()).collect();
    assert!(fields.contains(&"channel.tls_mode") && fields.contains(&"channel.ca_certificate"), "{fields:?}");

    let channel = EmailChannel {
        enabled: true,
        from_address: "news@shop.example".into(),
        relay_host: "127.0.0.1".into(),
        relay_port: relay.port as i32,
        tls_mode: TlsMode::Starttls as i32,
        ca_certificate: relay.ca_pem.clone(),
        ..Default::default()
    };
    let shown = ch.update_email_channel(d.req(update(channel))).await.unwrap().into_inner();
    assert_eq!(shown.tls_mode, TlsMode::Starttls as i32);
    let request = SendMessagesRequest {
        app_id: app.clone(),
        addresses: [(
            "ana@example.com".to_string(),
            AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() },
        )]
        .into(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage { subject: "Sealed".into(), text_part: "x".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let r = MessagesClient::new(d.channel().await).send_messages(d.req(request)).await.unwrap().into_inner();
    assert_eq!(r.result["ana@example.com"].delivery_status, DeliveryStatus::Successful as i32, "{:?}", r.result);
    assert_eq!(relay.handshakes.load(std::sync::atomic::Ordering::SeqCst), 1);
    let mut found = false;
    for _ in 0..50 {
        found = sink.messages().iter().any(|m| m.lines().any(|l| l.trim_end() == "Subject: Sealed"));
        if found {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    assert!(found, "{:?}", sink.messages());
}

on_both_backends!(app_relays_and_write_only_secrets, starttls_relay_with_a_private_ca);
