//! DKIM signing and the sending identity of an app's email channel, end to end: keys per
//! sending domain with write-only private keys, the DNS records Herald tells the operator to
//! publish, mail delivered into Postfix's smtp-sink, and every signature checked by an
//! independent verifier — dkimpy (Debian's python3-dkim), resolving the selector records to
//! the values the channel shows — which must also reject a message altered after signing.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::{Backend, Daemon, SmtpSink};
use herald::proto::v1::{
    channels_client::ChannelsClient, messages_client::MessagesClient, AddressConfiguration, ChannelType, DeliveryStatus,
    DirectMessageConfiguration, DkimKey, EmailChannel, EmailMessage, GetChannelRequest, SendMessagesRequest, UpdateEmailChannelRequest,
};
use tonic::Code;

const RSA_KEY: &str = include_str!("fixtures/dkim-rsa.pem");

fn violations(err: &tonic::Status) -> Vec<String> {
    tonic_types::StatusExt::get_details_bad_request(err).unwrap().field_violations.into_iter().map(|v| v.field).collect()
}

/// Runs dkimpy over `messages` with `records` (TXT name → value) as the DNS; its verdict per
/// message.
fn dkimpy_verify(messages: &[Vec<u8>], records: &HashMap<String, String>) -> Vec<bool> {
    let dir = tempfile::tempdir().unwrap();
    for (i, m) in messages.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i}.eml")), m).unwrap();
    }
    std::fs::write(dir.path().join("records.json"), serde_json::to_vec(records).unwrap()).unwrap();
    let script = r#"
import dkim, json, sys, os
d = sys.argv[1]
records = json.load(open(os.path.join(d, "records.json")))
def dns(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    return records.get(name.rstrip("."), "").encode()
n = len([f for f in os.listdir(d) if f.endswith(".eml")])
for i in range(n):
    msg = open(os.path.join(d, "%d.eml" % i), "rb").read()
    print("ok" if dkim.verify(msg, dnsfunc=dns) else "bad")
"#;
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(dir.path())
        .output()
        .expect("python3 with dkimpy (python3-dkim; scripts/test installs it)");
    assert!(out.status.success(), "dkimpy: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| l == "ok").collect()
}

/// A message as smtp-sink dumped it, without the lines smtp-sink adds in front, with CRLF line
/// ends as it travelled.
fn as_sent(dump: &str) -> Vec<u8> {
    let start = dump.find("DKIM-Signature:").or_else(|| dump.find("From:")).unwrap();
    let text = dump[start..].replace("\r\n", "\n").replace('\n', "\r\n");
    text.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_signatures_verify_and_the_identity_is_enforced() {
    let sink = SmtpSink::start(&[]);
    let d = Daemon::start(Backend::Redis);
    let app = d.create_app("dkim").await.app_id;
    let mut ch = ChannelsClient::new(d.channel().await);
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap().serialize_pem();
    let channel = EmailChannel {
        enabled: true,
        relay_host: "127.0.0.1".into(),
        relay_port: sink.port as i32,
        from_address: "Shop <news@shop.example>".into(),
        identity: "shop.example".into(),
        dkim_keys: vec![
            DkimKey { domain: "shop.example".into(), selector: "s2026".into(), private_key: RSA_KEY.into(), ..Default::default() },
            DkimKey { domain: "mail.shop.example".into(), selector: "ed1".into(), private_key: ed25519.clone(), ..Default::default() },
        ],
        ..Default::default()
    };

    // Each bad field is named; nothing is stored.
    let mut bad = channel.clone();
    bad.from_address = "news@elsewhere.example".into();
    bad.dkim_keys.push(DkimKey { domain: "shop.example".into(), selector: "x".into(), private_key: ed25519.clone(), ..Default::default() });
    bad.dkim_keys.push(DkimKey {
        domain: "not a domain".into(),
        selector: "bad selector".into(),
        private_key: "nope".into(),
        ..Default::default()
    });
    let err = ch.update_email_channel(d.req(UpdateEmailChannelRequest { app_id: app.clone(), channel: Some(bad) })).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&err),
        [
            "channel.from_address",
            "channel.dkim_keys[2].domain",
            "channel.dkim_keys[3].domain",
            "channel.dkim_keys[3].selector",
            "channel.dkim_keys[3].private_key"
        ]
    );
    assert_eq!(ch.get_email_channel(d.req(GetChannelRequest { app_id: app.clone() })).await.unwrap_err().code(), Code::NotFound);

    // Stored: keys write-only, their algorithm and DNS records shown.
    let shown = ch
        .update_email_channel(d.req(UpdateEmailChannelRequest { app_id: app.clone(), channel: Some(channel.clone()) }))
        .await
        .unwrap()
        .into_inner();
    let rsa = &shown.dkim_keys[0];
    assert!(rsa.has_private_key && rsa.private_key.is_empty());
    assert_eq!((rsa.algorithm.as_str(), rsa.dns_record_name.as_str()), ("rsa-sha256", "s2026._domainkey.shop.example"));
    assert!(rsa.dns_record_value.starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"), "{}", rsa.dns_record_value);
    assert_eq!(shown.dkim_keys[1].algorithm, "ed25519-sha256");
    // An update naming the same domains and selectors without keys keeps them.
    let mut again = channel.clone();
    for k in &mut again.dkim_keys {
        k.private_key.clear();
    }
    ch.update_email_channel(d.req(UpdateEmailChannelRequest { app_id: app.clone(), channel: Some(again) })).await.unwrap();
    let got = ch.get_email_channel(d.req(GetChannelRequest { app_id: app.clone() })).await.unwrap().into_inner();
    assert!(got.dkim_keys.iter().all(|k| k.has_private_key && k.private_key.is_empty()));
    assert_eq!(got.dkim_keys[0].dns_record_value, rsa.dns_record_value);
    let records: HashMap<String, String> = got.dkim_keys.iter().map(|k| (k.dns_record_name.clone(), k.dns_record_value.clone())).collect();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;

    let send = |from: &str, to: &[&str]| SendMessagesRequest {
        app_id: app.clone(),
        addresses: to
            .iter()
            .map(|a| (a.to_string(), AddressConfiguration { channel_type: ChannelType::Email as i32, ..Default::default() }))
            .collect(),
        message_configuration: Some(DirectMessageConfiguration {
            email_message: Some(EmailMessage {
                from_address: from.into(),
                subject: "Ihre Bestellung — Nr. 42".into(),
                text_part: "Hallo,\n\nzeilen  mit   Leerzeichen   \n.ein Punkt am Anfang\n".into(),
                html_part: "<p>Hallo <b>{{Address}}</b></p>".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut messages = MessagesClient::new(d.channel().await);
    // A From outside the identity is refused before anything is sent.
    let err = messages.send_messages(d.req(send("x@other.example", &["ana@example.com"]))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["message_configuration.email_message.from_address"]);

    let r = messages.send_messages(d.req(send("news@shop.example", &["ana@example.com", "bo@example.org"]))).await.unwrap().into_inner();
    assert!(r.result.values().all(|x| x.delivery_status == DeliveryStatus::Successful as i32), "{r:?}");
    let r = messages.send_messages(d.req(send("alerts@mail.shop.example", &["cy@example.net"]))).await.unwrap().into_inner();
    assert!(r.result.values().all(|x| x.delivery_status == DeliveryStatus::Successful as i32), "{r:?}");
    // The channel's own from_address stands in when a send gives none.
    let r = messages.send_messages(d.req(send("", &["di@example.com"]))).await.unwrap().into_inner();
    assert!(r.result.values().all(|x| x.delivery_status == DeliveryStatus::Successful as i32), "{r:?}");

    let mut dumps = Vec::new();
    for _ in 0..100 {
        dumps = sink.messages();
        if dumps.len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    assert_eq!(dumps.len(), 4, "{dumps:?}");
    let sent: Vec<Vec<u8>> = dumps.iter().map(|m| as_sent(m)).collect();
    for m in &sent {
        let text = String::from_utf8_lossy(m);
        let ed = text.contains("From: alerts@mail.shop.example");
        let want = if ed {
            "a=ed25519-sha256; c=relaxed/relaxed; d=mail.shop.example; s=ed1;"
        } else {
            "a=rsa-sha256; c=relaxed/relaxed; d=shop.example; s=s2026;"
        };
        assert!(text.starts_with("DKIM-Signature: v=1; ") && text.contains(want), "{text}");
    }
    assert_eq!(dkimpy_verify(&sent, &records), vec![true; 4], "dkimpy verifies every signature");

    // The verifier is not lenient: a changed body or subject, or a wrong published key, fails.
    let tamper = |m: &[u8], from: &str, to: &str| String::from_utf8_lossy(m).replacen(from, to, 1).into_bytes();
    let altered = vec![tamper(&sent[0], "Hallo,", "Hallo!"), tamper(&sent[0], "Subject: ", "Subject: Re: ")];
    assert_eq!(dkimpy_verify(&altered, &records), [false, false]);
    let mut wrong = records.clone();
    for v in wrong.values_mut() {
        // Another modulus: one base64 digit inside it changed.
        let at = v.len() / 2;
        let digit = if &v[at..at + 1] == "A" { "B" } else { "A" };
        v.replace_range(at..at + 1, digit);
    }
    let rsa_sent: Vec<Vec<u8>> = sent.iter().filter(|m| String::from_utf8_lossy(m).contains("s=s2026;")).cloned().collect();
    assert_eq!(dkimpy_verify(&rsa_sent, &wrong), vec![false; rsa_sent.len()]);
}
