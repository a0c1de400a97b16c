//! Pinpoint's REST API, driven by the clients teams leaving Pinpoint already run: boto3 and
//! the AWS CLI (pinned, from PyPI) with real SigV4, against the real daemon, its effects
//! checked through the gRPC API and at a real SMTP server (Postfix's smtp-sink).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, Backend, Daemon, RedisServer, SmtpSink, API_KEY};
use herald::proto::v1::{
    campaigns_client::CampaignsClient, channels_client::ChannelsClient, journeys_client::JourneysClient, templates_client::TemplatesClient,
    CampaignState, GetCampaignRequest, GetChannelRequest, GetJourneyRequest, GetTemplateRequest, JourneyState, SmsChannel,
    UpdateSmsChannelRequest,
};
use serde_json::Value;

const ACCESS_KEY: &str = "AKIDHERALDTEST";
const SECRET_KEY: &str = "pinpoint-secret-0123456789";

struct Rest {
    daemon: Daemon,
    url: String,
    sink: SmtpSink,
}

/// A daemon serving Pinpoint's REST API (signed with [`ACCESS_KEY`] unless `unsigned`), sending
/// email into its own smtp-sink.
fn start(backend: Backend, unsigned: bool) -> Rest {
    start_with((backend == Backend::Redis).then(RedisServer::start), unsigned, &[])
}

fn start_with(redis: Option<RedisServer>, unsigned: bool, more: &[&str]) -> Rest {
    let sink = SmtpSink::start(&[]);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let smtp = format!("smtp://127.0.0.1:{}", sink.port);
    let credential = format!("{ACCESS_KEY}:{SECRET_KEY}");
    let mut extra = vec!["--rest-addr", &addr, "--smtp-url", &smtp];
    if !unsigned {
        extra.extend(["--sigv4-credential", &credential]);
    }
    extra.extend(more);
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let daemon = Daemon::spawn(redis, data_dir, Some(tmp), Some(API_KEY.to_string()), &extra);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "the REST listener did not come up on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Rest { daemon, url: format!("http://{addr}"), sink }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pinpoint").join(name)
}

fn client_env(rest: &Rest) -> Vec<(&'static str, String)> {
    vec![
        ("HERALD_REST_URL", rest.url.clone()),
        ("HERALD_ACCESS_KEY", ACCESS_KEY.to_string()),
        ("HERALD_SECRET_KEY", SECRET_KEY.to_string()),
        // Nothing of the machine's own AWS setup may leak in.
        ("AWS_CONFIG_FILE", "/dev/null".to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
}

/// Runs a Python fixture with the test venv's boto3; answers its JSON output.
fn python(rest: &Rest, script: &str) -> Value {
    python_with(rest, script, &[])
}

fn python_with(rest: &Rest, script: &str, env: &[(&str, String)]) -> Value {
    let out = Command::new(common::python())
        .arg(fixture(script))
        .envs(client_env(rest))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (scripts/test makes the venv): {e}", common::python()));
    assert!(out.status.success(), "{script} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs `aws pinpoint ARGS --endpoint-url …` from the test venv; answers its JSON output.
fn aws(rest: &Rest, args: &[&str]) -> Value {
    let aws = Path::new(&common::python()).with_file_name("aws");
    let out = Command::new(&aws)
        .arg("pinpoint")
        .args(args)
        .args(["--endpoint-url", &rest.url, "--region", "us-west-2", "--output", "json"])
        .envs(client_env(rest))
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", aws.display()));
    assert!(out.status.success(), "aws pinpoint {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("aws printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_campaign_guide_runs_unchanged_with_boto3() {
    let rest = start(Backend::Embedded, false);
    let made = python(&rest, "campaign_guide.py");
    let app = made["app_id"].as_str().unwrap().to_string();
    let d = &rest.daemon;

    // The immediate campaign mailed each gold customer once, rendered from the account-level
    // template (with the app's endpoint attributes); the free customer got nothing.
    let mut got = wait_for("two welcome emails", || {
        let mut r = rest.sink.received("Welcome, Ann");
        r.extend(rest.sink.received("Welcome, Bo"));
        (r.len() >= 2).then_some(r)
    });
    got.sort();
    assert_eq!(got, ["user0@example.com", "user1@example.com"]);
    assert!(rest.sink.messages().iter().all(|m| !m.contains("user2@example.com")));
    let acts = made["campaign_metrics"]["activities"].as_array().unwrap();
    assert_eq!(acts.len(), 1, "{acts:?}");
    assert_eq!(acts[0]["TotalEndpointCount"], 2);
    assert_eq!(acts[0]["SuccessfulEndpointCount"], 2);
    assert_eq!(acts[0]["Result"], "SUCCESS");

    // The template is the account's, seen through the gRPC API too.
    let mut templates = TemplatesClient::new(d.channel().await);
    let t = templates
        .get_template(d.req(GetTemplateRequest { app_id: "_account_email".into(), name: "welcome".into(), version: 0 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.description, "Welcome email for new customers");
    assert!(made["template"]["Arn"].as_str().unwrap().ends_with(":templates/welcome/EMAIL"));

    let mut campaigns = CampaignsClient::new(d.channel().await);
    let get = |id: &str| GetCampaignRequest { app_id: app.clone(), campaign_id: id.into(), version: 0 };
    let scheduled = campaigns.get_campaign(d.req(get(made["scheduled_campaign"].as_str().unwrap()))).await.unwrap().into_inner();
    assert_eq!(scheduled.state, CampaignState::Scheduled as i32);
    assert_eq!(scheduled.schedule.unwrap().start_time, "2030-01-01T09:00:00Z");
    assert_eq!(scheduled.tags.get("team").map(String::as_str), Some("growth"));
    let ab = campaigns.get_campaign(d.req(get(made["ab_test"]["Id"].as_str().unwrap()))).await.unwrap().into_inner();
    assert_eq!(ab.holdout_percent, 10);
    assert_eq!(ab.treatment_name, "Control");
    assert_eq!(ab.additional_treatments.len(), 1);
    assert_eq!(ab.additional_treatments[0].size_percent, 45);
    assert_eq!(
        ab.additional_treatments[0].message_configuration.as_ref().unwrap().email_message.as_ref().unwrap().subject,
        "Last day of the sale"
    );
    assert_eq!(made["ab_test"]["AdditionalTreatments"][0]["TreatmentName"], "Urgent");

    // KPIs answer in Pinpoint's row shape; the campaign's unique deliveries count both.
    let rows = made["campaign_metrics"]["kpi_rows"].as_array().unwrap();
    assert_eq!(rows[0]["Values"][0]["Value"].as_str().and_then(|v| v.parse::<f64>().ok()), Some(2.0), "{rows:?}");
    for kpi in ["email-open-rate", "successful-delivery-rate", "unique-deliveries"] {
        assert!(made["email_kpis"][kpi].is_array(), "{kpi}: {}", made["email_kpis"]);
    }

    let mut journeys = JourneysClient::new(d.channel().await);
    let j = journeys
        .get_journey(d.req(GetJourneyRequest { app_id: app.clone(), journey_id: made["journey"]["Id"].as_str().unwrap().into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(j.state, JourneyState::Draft as i32);
    assert_eq!(j.activities.len(), 2);
    assert_eq!(made["journey"]["Activities"]["welcome"]["EMAIL"]["MessageConfig"]["FromAddress"], "news@shop.example");
    assert_eq!(made["missing_campaign"], "NotFoundException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engagement_guide_runs_with_the_aws_cli() {
    let rest = start(Backend::Redis, false);
    let d = &rest.daemon;
    let app = aws(&rest, &["create-app", "--create-application-request", r#"{"Name":"engage","tags":{"owner":"growth"}}"#]);
    let app_id = app["ApplicationResponse"]["Id"].as_str().unwrap().to_string();
    assert_eq!(app["ApplicationResponse"]["tags"]["owner"], "growth");
    let a = ["--application-id", app_id.as_str()];

    let email = aws(
        &rest,
        &[
            &[
                "update-email-channel",
                "--email-channel-request",
                "FromAddress=news@shop.example,Identity=arn:aws:ses:us-west-2:111122223333:identity/shop.example,Enabled=true",
            ],
            &a[..],
        ]
        .concat(),
    );
    assert_eq!(email["EmailChannelResponse"]["Platform"], "EMAIL");
    assert_eq!(email["EmailChannelResponse"]["Identity"], "shop.example");

    // Herald's SMS channel needs a provider Pinpoint's request does not carry: set over gRPC,
    // then kept by the CLI's update.
    let mut channels = ChannelsClient::new(d.channel().await);
    let provider = SmsChannel {
        enabled: true,
        base_url: "http://127.0.0.1:9".into(),
        account_sid: "AC0123".into(),
        auth_token: "sms-token".into(),
        origination_numbers: vec!["+14255550100".into()],
        ..Default::default()
    };
    channels.update_sms_channel(d.req(UpdateSmsChannelRequest { app_id: app_id.clone(), channel: Some(provider) })).await.unwrap();
    let sms = aws(&rest, &[&["update-sms-channel"][..], &a[..], &["--sms-channel-request", "Enabled=true,SenderId=SHOP"]].concat());
    assert_eq!(sms["SMSChannelResponse"]["SenderId"], "SHOP");
    let kept = channels.get_sms_channel(d.req(GetChannelRequest { app_id: app_id.clone() })).await.unwrap().into_inner();
    assert_eq!((kept.sender_id.as_str(), kept.base_url.as_str(), kept.has_auth_token), ("SHOP", "http://127.0.0.1:9", true));

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap().serialize_pem();
    let apns_request = serde_json::json!({
        "BundleId": "com.shop.app", "TeamId": "TEAM123456", "TokenKeyId": "KEY1234567", "TokenKey": key,
        "DefaultAuthenticationMethod": "TOKEN", "Enabled": true,
    })
    .to_string();
    let apns = aws(&rest, &[&["update-apns-channel"][..], &a[..], &["--apns-channel-request", &apns_request]].concat());
    assert_eq!(apns["APNSChannelResponse"]["Platform"], "APNS");
    assert_eq!(apns["APNSChannelResponse"]["HasTokenKey"], true);
    assert!(apns["APNSChannelResponse"].get("TokenKey").is_none(), "secrets are never answered");

    let endpoint =
        r#"{"ChannelType":"EMAIL","Address":"cli@example.com","Attributes":{"interest":["shoes"]},"User":{"UserId":"cli-user"}}"#;
    aws(&rest, &[&["update-endpoint"][..], &a[..], &["--endpoint-id", "cli-1", "--endpoint-request", endpoint]].concat());
    let got = aws(&rest, &[&["get-endpoint"][..], &a[..], &["--endpoint-id", "cli-1"]].concat());
    assert_eq!(got["EndpointResponse"]["Attributes"]["interest"][0], "shoes");
    let seg = aws(
        &rest,
        &[
            &[
                "create-segment",
                "--write-segment-request",
                r#"{"Name":"shoes","Dimensions":{"Attributes":{"interest":{"AttributeType":"INCLUSIVE","Values":["shoes"]}}}}"#,
            ],
            &a[..],
        ]
        .concat(),
    );
    let seg_id = seg["SegmentResponse"]["Id"].as_str().unwrap().to_string();
    let campaign = serde_json::json!({
        "Name": "Shoe sale", "SegmentId": seg_id, "Schedule": {"StartTime": "IMMEDIATE"},
        "MessageConfiguration": {"EmailMessage": {"Title": "Shoe sale from the CLI", "HtmlBody": "<p>Shoes</p>", "FromAddress": "news@shop.example"}},
    })
    .to_string();
    aws(&rest, &[&["create-campaign"][..], &a[..], &["--write-campaign-request", &campaign]].concat());
    assert_eq!(
        wait_for("the CLI campaign", || Some(rest.sink.received("Shoe sale from the CLI")).filter(|r| !r.is_empty())),
        ["cli@example.com"]
    );

    let journey = serde_json::json!({
        "Name": "CLI journey", "StartCondition": {"SegmentStartCondition": {"SegmentId": seg_id}}, "StartActivity": "w",
        "Activities": {"w": {"Wait": {"WaitTime": {"WaitFor": "PT2H"}}}}, "State": "DRAFT",
    })
    .to_string();
    let j = aws(&rest, &[&["create-journey"][..], &a[..], &["--write-journey-request", &journey]].concat());
    assert_eq!(j["JourneyResponse"]["State"], "DRAFT");

    let message = r#"{"Addresses":{"direct@example.com":{"ChannelType":"EMAIL"}},"MessageConfiguration":{"EmailMessage":{"FromAddress":"news@shop.example","SimpleEmail":{"Subject":{"Charset":"UTF-8","Data":"Sent by the CLI"},"TextPart":{"Data":"hello"}}}}}"#;
    let sent = aws(&rest, &[&["send-messages"][..], &a[..], &["--message-request", message]].concat());
    assert_eq!(sent["MessageResponse"]["Result"]["direct@example.com"]["DeliveryStatus"], "SUCCESSFUL");
    assert_eq!(rest.sink.received("Sent by the CLI"), ["direct@example.com"]);

    let events = r#"{"BatchItem":{"cli-1":{"Endpoint":{},"Events":{"e1":{"EventType":"purchase","Timestamp":"2026-12-01T10:00:00Z","Attributes":{"sku":"shoe-1"}}}}}}"#;
    let put = aws(&rest, &[&["put-events"][..], &a[..], &["--events-request", events]].concat());
    assert_eq!(put["EventsResponse"]["Results"]["cli-1"]["EventsItemResponse"]["e1"]["StatusCode"], 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_errors_and_methods_answer_as_pinpoint_does() {
    let rest = start(Backend::Embedded, false);
    let out = python(&rest, "wire.py");
    let case = |name: &str| (out[name]["status"].as_u64().unwrap(), out[name]["type"].as_str().unwrap_or_default().to_string());
    assert_eq!(out["good"]["status"], 201);
    for (name, status, code) in [
        ("altered_body", 403, "InvalidSignatureException"),
        ("altered_header", 403, "InvalidSignatureException"),
        ("wrong_secret", 403, "InvalidSignatureException"),
        ("stale", 403, "InvalidSignatureException"),
        ("unknown_key", 403, "UnrecognizedClientException"),
        ("unsigned", 403, "MissingAuthenticationTokenException"),
        ("method", 405, "MethodNotAllowedException"),
        ("no_route", 404, "NotFoundException"),
        ("too_large", 413, "PayloadTooLargeException"),
        ("bad_member", 400, "BadRequestException"),
        ("not_json", 400, "BadRequestException"),
        ("missing_app", 404, "NotFoundException"),
        ("conflict", 409, "ConflictException"),
        ("unsupported", 400, "BadRequestException"),
    ] {
        assert_eq!(case(name), (status, code.to_string()), "{name}: {}", out[name]);
        let body = &out[name]["body"];
        assert!(body["Message"].is_string() && body["RequestID"].is_string(), "{name}: {body}");
    }
    assert!(out["stale"]["body"]["Message"].as_str().unwrap().starts_with("Signature expired"), "{}", out["stale"]);
    let bad = out["bad_member"]["body"]["Message"].as_str().unwrap();
    assert!(bad.contains("WriteCampaignRequest.Bogus") && bad.contains("is not a member"), "{bad}");
    // Herald's own validation, told in Pinpoint's member names.
    assert!(out["unsupported"]["body"]["Message"].as_str().unwrap().contains("webhooks"), "{}", out["unsupported"]);
    // The altered body wrote nothing: only the good app exists.
    let apps = aws(&rest, &["get-apps"]);
    let names: Vec<&str> = apps["ApplicationsResponse"]["Item"].as_array().unwrap().iter().filter_map(|a| a["Name"].as_str()).collect();
    assert_eq!(names, ["wire"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_name_pinpoint_members() {
    let rest = start(Backend::Embedded, false);
    let app = aws(&rest, &["create-app", "--create-application-request", "Name=v"]);
    let app_id = app["ApplicationResponse"]["Id"].as_str().unwrap().to_string();
    let aws_path = Path::new(&common::python()).with_file_name("aws");
    let run = |args: &[&str]| {
        let out = Command::new(&aws_path)
            .arg("pinpoint")
            .args(args)
            .args(["--application-id", &app_id, "--endpoint-url", &rest.url, "--region", "us-east-1"])
            .envs(client_env(&rest))
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err =
        run(&["create-campaign", "--write-campaign-request", r#"{"Name":"c","SegmentId":"s","Schedule":{"StartTime":"not a time"}}"#]);
    assert!(err.contains("BadRequestException") && err.contains("WriteCampaignRequest.Schedule.StartTime"), "{err}");
    let err = run(&["update-gcm-channel", "--gcm-channel-request", "ApiKey=AAAA,Enabled=true"]);
    assert!(err.contains("GCMChannelRequest.ApiKey") && err.contains("legacy API"), "{err}");
    let err =
        run(&["update-endpoint", "--endpoint-id", "e", "--endpoint-request", r#"{"ChannelType":"EMAIL","Address":"not an address"}"#]);
    assert!(err.contains("EndpointRequest.Address"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_through_hundreds_with_next_token() {
    let rest = start(Backend::Redis, false);
    let out = python(&rest, "paging.py");
    for kind in ["segments", "campaigns", "templates"] {
        let mut made: Vec<String> = out["made"][kind].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        let mut listed: Vec<String> = out[kind].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        assert_eq!(listed.len(), made.len(), "{kind}: each item once");
        made.sort();
        listed.sort();
        assert_eq!(listed, made, "{kind}");
    }
    for pages in out["pages"].as_array().unwrap() {
        assert!(pages.as_u64().unwrap() >= 5, "210 items in pages of 50: {}", out["pages"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_loopback_is_served_unsigned() {
    let rest = start(Backend::Embedded, true);
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(rest.url.trim_start_matches("http://")).unwrap();
    let payload = r#"{"Name":"plain"}"#;
    write!(
        s,
        "POST /v1/apps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains(r#""Name":"plain""#), "{answer}");
    // And a public address without credentials is refused at startup.
    let (code, _, err) = common::herald(&["serve", "--validate", "--rest-addr", "0.0.0.0:8080"], &[], Path::new("."));
    assert_ne!(code, 0);
    assert!(err.contains("without SigV4 credentials"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_channels_versions_and_journeys_round_trip() {
    let rest = start(Backend::Redis, false);
    let service_json = serde_json::json!({
        "type": "service_account",
        "project_id": "project-1",
        "private_key_id": "k1",
        "private_key": include_str!("fixtures/fcm-test-key.pem"),
        "client_email": "herald-test@project-1.iam.gserviceaccount.com",
        "token_uri": "http://127.0.0.1:9/token",
    })
    .to_string();
    let out = python_with(&rest, "resources.py", &[("HERALD_SERVICE_JSON", service_json)]);
    let push = &out["push"];
    assert_eq!(push["Default"]["Body"], "Order {{Attributes.order}} is on its way");
    assert_eq!(push["Default"]["Action"], "OPEN_APP");
    assert_eq!(push["APNS"]["Sound"], "ping.caf");
    assert_eq!(push["APNS"]["MediaUrl"], "https://shop.example/box.png");
    assert_eq!((push["TemplateType"].as_str(), push["TemplateDescription"].as_str()), (Some("PUSH"), Some("push")));
    assert_eq!(out["inapp"]["Layout"], "TOP_BANNER");
    assert_eq!(out["inapp"]["Content"][0]["BodyConfig"]["Body"], "Welcome back");
    let versions: Vec<&str> = out["versions"].as_array().unwrap().iter().filter_map(|v| v["Version"].as_str()).collect();
    assert_eq!(versions, ["1", "2"]);
    assert_eq!(
        (out["active_before"].as_str(), out["active_after"].as_str(), out["version_1"].as_str()),
        (Some("Code v1"), Some("Code v2"), Some("Code v1"))
    );
    assert_eq!(out["deleted_template"], "NotFoundException");
    assert_eq!(out["wrong_type"], "NotFoundException");
    // As in Pinpoint, one name may be a template of each type.
    assert_eq!((out["same_name_email"].as_str(), out["same_name_sms"].as_str()), (Some("Email body"), Some("SMS body")));
    // An EmailTemplate reference finds the email one of that name.
    assert_eq!(out["same_name_sent"], "SUCCESSFUL");
    let mail = wait_for("the same-name email", || rest.sink.messages().into_iter().find(|m| m.contains("same@example.com")));
    assert!(mail.contains("Email body"), "{mail}");
    assert_eq!(out["raw"]["DeliveryStatus"], "SUCCESSFUL", "{}", out["raw"]);
    let raw = wait_for("the raw email", || rest.sink.messages().into_iter().find(|m| m.contains("Subject: Raw from boto3")));
    assert!(raw.contains("A raw MIME message."), "{raw}");
    assert_eq!(out["gcm"]["Platform"], "GCM");
    assert_eq!(out["gcm"]["Enabled"], true);
    assert!(out["gcm"].get("ServiceJson").is_none(), "secrets are never answered: {}", out["gcm"]);
    assert_eq!(out["channels"]["GCM"]["Enabled"], true, "{}", out["channels"]);
    assert_eq!(out["segment_v1"], "v1");
    assert_eq!(out["segment_versions"].as_array().unwrap().len(), 2);
    assert_eq!(out["campaign_v1"], "first");
    assert_eq!(out["campaign_versions"].as_array().unwrap().len(), 2);
    assert_eq!(out["deleted_campaign"], true);
    assert_eq!(out["journey_active"], "ACTIVE");
    assert!(out["journey_metrics"]["JourneyId"].is_string(), "{}", out["journey_metrics"]);
    assert_eq!(out["journeys"].as_array().unwrap().len(), 1);
    assert_eq!(out["removed"]["AttributeType"], "endpoint-custom-attributes", "{}", out["removed"]);
    // As in Pinpoint: the endpoint keeps the removed attribute's value, later writes no longer change it.
    assert_eq!(out["after_remove"], serde_json::json!({"legacy": ["x"], "keep": ["changed"]}));
    assert!(out["inapp_messages"].is_object(), "{}", out["inapp_messages"]);
    // Required members are answered even when empty, as code written for Pinpoint indexes them.
    assert!(out["quiet_kpi_rows"].is_array(), "{}", out["quiet_kpi_rows"]);
    assert_eq!(out["deleted_app"], "NotFoundException");
}

/// moto's S3 server (from the test venv) on a free loopback port; stopped on drop.
struct Moto(std::process::Child, u16);

impl Moto {
    fn start() -> Self {
        let port = free_port();
        let bin = Path::new(&common::python()).with_file_name("moto_server");
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} (scripts/test installs moto[server]): {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self(child, port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_jobs_read_endpoint_files_from_s3() {
    let moto = Moto::start();
    let role = "arn:aws:iam::000000000000:role/pinpoint-import";
    let s3_url = format!("http://127.0.0.1:{}", moto.1);
    let sink = SmtpSink::start(&[]);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let credential = format!("{ACCESS_KEY}:{SECRET_KEY}");
    let extra = [
        "--rest-addr",
        &addr,
        "--sigv4-credential",
        &credential,
        "--s3-endpoint",
        &s3_url,
        "--s3-access-key-id",
        "testing",
        "--s3-secret-access-key",
        "testing",
        "--s3-role-arn",
        role,
    ];
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::spawn(None, tmp.path().join("data"), Some(tmp), Some(API_KEY.to_string()), &extra);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "the REST listener did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rest = Rest { daemon, url: format!("http://{addr}"), sink };
    let out = python_with(&rest, "import_jobs.py", &[("HERALD_S3_URL", s3_url.clone()), ("HERALD_S3_ROLE", role.to_string())]);
    assert_eq!(out["created"]["Type"], "IMPORT");
    assert_eq!(out["created"]["Definition"]["S3Url"], "s3://pinpoint-imports/imports/");
    assert_eq!(out["created"]["Definition"]["RoleArn"], role);
    let csv = &out["csv"];
    assert_eq!(csv["JobStatus"], "COMPLETED", "{csv}");
    // Four rows over two files (the second file's header dropped); the PIGEON row refused.
    assert_eq!((csv["TotalProcessed"].as_u64(), csv["TotalFailures"].as_u64()), (Some(4), Some(1)), "{csv}");
    assert!(csv["Failures"][0].as_str().unwrap().contains("PIGEON"), "{csv}");
    assert_eq!(out["json"]["JobStatus"], "COMPLETED", "{}", out["json"]);
    assert_eq!(out["json"]["TotalProcessed"], 3);
    assert_eq!(out["listed"].as_array().unwrap().len(), 2);
    assert_eq!(out["segment_listed"].as_array().unwrap().len(), 2);
    assert_eq!(out["segment"]["SegmentType"], "IMPORT");
    assert_eq!(out["segment"]["Version"], 2);
    assert_eq!(
        (out["wrong_role"].as_str(), out["empty_prefix"].as_str(), out["no_segment"].as_str()),
        (Some("ForbiddenException"), Some("BadRequestException"), Some("BadRequestException"))
    );
    // The export wrote the segment's members (version 2: the JSON file's three) as Pinpoint's
    // EndpointResponse JSON lines.
    assert_eq!(out["export"]["JobStatus"], "COMPLETED", "{}", out["export"]);
    assert_eq!(out["export"]["Type"], "EXPORT");
    assert_eq!(out["export"]["Definition"]["S3UrlPrefix"], "s3://pinpoint-exports/out/");
    assert_eq!(out["exports_listed"].as_array().unwrap().len(), 1);
    let mut ids: Vec<&str> = out["exported"].as_array().unwrap().iter().filter_map(|e| e["Id"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["json-0", "json-1", "json-2"], "{}", out["exported"]);
    assert_eq!(out["exported"][0]["ChannelType"], "EMAIL");
    assert_eq!(out["export"]["TotalProcessed"], 3);
    // With no SegmentId, every endpoint of the app: three from the CSV files, three from JSON.
    assert_eq!(out["app_export"]["JobStatus"], "COMPLETED", "{}", out["app_export"]);
    assert_eq!(out["app_exported"], serde_json::json!(["imp-1", "imp-2", "imp-3", "json-0", "json-1", "json-2"]));
    // The endpoints are Herald's now, read back over gRPC.
    let app = out["app"].as_str().unwrap().to_string();
    let mut endpoints = rest.daemon.endpoints().await;
    for id in ["imp-1", "imp-3", "json-2"] {
        let e = endpoints
            .get_endpoint(rest.daemon.req(herald::proto::v1::GetEndpointRequest { app_id: app.clone(), endpoint_id: id.into() }))
            .await
            .unwrap_or_else(|s| panic!("{id}: {s:?}"))
            .into_inner();
        assert!(e.address.ends_with("@example.com"));
    }
}

/// A Redis outage answers 500 InternalServerErrorException (which the SDKs retry) and nothing
/// else; the door serves again once Redis is back, and SIGTERM stops the daemon cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_a_retryable_error_and_sigterm_drains() {
    let mut rest = start_with(Some(RedisServer::start_durable()), false, &[]);
    let script = r#"
import json, sys, herald_client
from botocore.config import Config
from botocore.exceptions import ClientError
import boto3, os
c = boto3.client("pinpoint", endpoint_url=os.environ["HERALD_REST_URL"], region_name="us-east-1",
    aws_access_key_id=os.environ["HERALD_ACCESS_KEY"], aws_secret_access_key=os.environ["HERALD_SECRET_KEY"],
    config=Config(retries={"max_attempts": 1, "mode": "standard"}))
try:
    r = c.create_app(CreateApplicationRequest={"Name": sys.argv[1]})
    print(json.dumps({"ok": r["ApplicationResponse"]["Id"]}))
except ClientError as e:
    print(json.dumps({"code": e.response["Error"]["Code"], "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}))
"#;
    let run = |rest: &Rest, name: &str| -> Value {
        let out = Command::new(common::python())
            .args(["-c", script, name])
            .current_dir(fixture(""))
            .env("PYTHONPATH", fixture(""))
            .envs(client_env(rest))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert!(run(&rest, "before")["ok"].is_string());
    rest.daemon.redis.as_mut().unwrap().kill();
    let down = run(&rest, "during");
    assert_eq!((down["status"].as_u64(), down["code"].as_str()), (Some(500), Some("InternalServerErrorException")), "{down}");
    rest.daemon.redis.as_mut().unwrap().start_again();
    let back = wait_for("the store back", || Some(run(&rest, "after")).filter(|v| v["ok"].is_string()));
    assert!(back["ok"].is_string());
    let apps = aws(&rest, &["get-apps"]);
    let mut names: Vec<&str> = apps["ApplicationsResponse"]["Item"].as_array().unwrap().iter().filter_map(|a| a["Name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["after", "before"], "the refused call wrote nothing");
    let status = rest.daemon.terminate();
    assert!(status.success(), "SIGTERM with the REST door open exits 0: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_changes_and_refusals_are_audited_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let log_arg = log.display().to_string();
    let rest = start_with(None, false, &["--audit-log", &log_arg]);
    let app = aws(&rest, &["create-app", "--create-application-request", "Name=audited"]);
    let app_id = app["ApplicationResponse"]["Id"].as_str().unwrap().to_string();
    aws(&rest, &["get-apps"]);
    let out = python(&rest, "wire.py");
    assert_eq!(out["wrong_secret"]["status"], 403);
    let lines: Vec<Value> = wait_for("audit lines", || {
        let text = std::fs::read_to_string(&log).ok()?;
        let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        lines.iter().any(|l| l["outcome"] == "InvalidSignatureException").then_some(lines)
    });
    let created = lines.iter().find(|l| l["method"] == "pinpoint/CreateApp" && l["outcome"] == "OK").expect("CreateApp audited");
    assert_eq!(created["key_id"], ACCESS_KEY);
    let got = lines.iter().find(|l| l["app_id"] == app_id.as_str());
    assert!(got.is_none() || got.unwrap()["method"] != "pinpoint/GetApps", "reads are not audited");
    assert!(!lines.iter().any(|l| l["method"] == "pinpoint/GetApps" && l["outcome"] == "OK"), "reads are not audited");
    let refused = lines.iter().find(|l| l["outcome"] == "InvalidSignatureException").unwrap();
    assert_eq!(refused["caller"], "unauthenticated");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(SECRET_KEY), "the secret never reaches the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_of_the_model_answers_as_pinpoint_can() {
    let rest = start(Backend::Embedded, false);
    let out = python(&rest, "every_operation.py");
    let answers = out.as_object().unwrap();
    assert_eq!(answers.len(), 122, "every operation of the model was called");
    let pinpoint_errors = [
        "BadRequestException",
        "NotFoundException",
        "ForbiddenException",
        "ConflictException",
        "MethodNotAllowedException",
        "PayloadTooLargeException",
        "TooManyRequestsException",
    ];
    for (op, a) in answers {
        let status = a["status"].as_u64().unwrap();
        assert!(status < 500, "{op} failed on the server: {a}");
        if let Some(code) = a["code"].as_str() {
            assert!(pinpoint_errors.contains(&code), "{op}: {code} is not an error Pinpoint answers: {a}");
            assert!(!a["message"].as_str().unwrap_or_default().is_empty(), "{op}: an error says why: {a}");
        }
    }
    // Herald's own checks speak Pinpoint's member names.
    for (op, member) in [
        ("CreateSegment", "WriteSegmentRequest.Name"),
        ("PutEvents", "EventsRequest.BatchItem"),
        ("SendUsersMessages", "SendUsersMessageRequest.Users"),
        ("CreateCampaign", "WriteCampaignRequest.Schedule"),
    ] {
        assert!(answers[op]["message"].as_str().unwrap().contains(member), "{op}: {}", answers[op]);
    }
}
