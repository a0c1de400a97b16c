//! Security: TLS and mutual TLS on the daemon's listeners with certificates reloaded from
//! their files, scoped keys over every method, app-limited keys, revocation seen at once by
//! every daemon, per-key rate limits, and the audit log — with no configured secret in any
//! log or audit line.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, Daemon, RedisServer, API_KEY};
use herald::proto::v1::{
    apps_client::AppsClient, channels_client::ChannelsClient, endpoints_client::EndpointsClient, keys_client::KeysClient,
    tags_client::TagsClient, CreateAppRequest, CreateKeyRequest, Endpoint, GetAppRequest, ImportEndpointsRequest, ListAppsRequest,
    ListKeysRequest, RevokeKeyRequest, SmsChannel, TagResourceRequest, UpdateSmsChannelRequest,
};
use prost::Message as _;
use rcgen::{CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint as Dial, Identity};
use tonic::{Code, Request};
use tonic_types::StatusExt as _;

/// A fresh self-signed CA named `name`.
fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    herald::channels::install_crypto_provider();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Writes a server certificate for 127.0.0.1 issued by `issuer` (chain: leaf then CA) and its key.
fn write_server_cert(issuer: &CertifiedIssuer<'static, KeyPair>, cert: &Path, key: &Path) {
    let k = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "herald.test");
    let leaf = params.signed_by(&k, issuer).unwrap();
    // Written whole, then moved: the reloader never reads half a file.
    let tmp_cert = cert.with_extension("cert-new");
    std::fs::write(&tmp_cert, format!("{}{}", leaf.pem(), issuer.pem())).unwrap();
    let tmp_key = key.with_extension("key-new");
    std::fs::write(&tmp_key, k.serialize_pem()).unwrap();
    std::fs::rename(tmp_key, key).unwrap();
    std::fs::rename(tmp_cert, cert).unwrap();
}

/// A client certificate issued by `issuer`: (cert PEM, key PEM).
fn client_cert(issuer: &CertifiedIssuer<'static, KeyPair>) -> (String, String) {
    let k = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "herald-cli");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    (params.signed_by(&k, issuer).unwrap().pem(), k.serialize_pem())
}

async fn tls_channel(port: u16, ca_pem: &str, identity: Option<&(String, String)>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((c, k)) = identity {
        tls = tls.identity(Identity::from_pem(c, k));
    }
    let dial = Dial::from_shared(format!("https://127.0.0.1:{port}")).unwrap().tls_config(tls).map_err(|e| e.to_string())?;
    dial.connect().await.map_err(|e| format!("{e:?}"))
}

fn keyed<T>(key: &str, m: T) -> Request<T> {
    let mut r = Request::new(m);
    r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

async fn list_apps(ch: Channel) -> Result<usize, tonic::Status> {
    Ok(AppsClient::new(ch).list_apps(keyed(API_KEY, ListAppsRequest::default())).await?.into_inner().apps.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_speaks_mutual_tls_and_follows_renewed_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, client_ca_file) = (dir.path().join("server.pem"), dir.path().join("server.key"), dir.path().join("clients.pem"));
    let server_ca = ca("Herald test server CA");
    let clients = ca("Herald test client CA");
    write_server_cert(&server_ca, &cert, &key);
    std::fs::write(&client_ca_file, clients.pem()).unwrap();
    let identity = client_cert(&clients);
    let stranger = client_cert(&ca("Someone else's CA"));
    let (cert_s, key_s, ca_s) = (cert.to_str().unwrap(), key.to_str().unwrap(), client_ca_file.to_str().unwrap());
    let d = Daemon::spawn(
        None,
        dir.path().join("data"),
        None,
        Some(API_KEY.into()),
        &["--tls-cert-file", cert_s, "--tls-key-file", key_s, "--tls-client-ca-file", ca_s],
    );
    let port = d.grpc.port();

    // With the CA and a client certificate: served.
    let ch = tls_channel(port, &server_ca.pem(), Some(&identity)).await.expect("a TLS connection with a client certificate");
    AppsClient::new(ch.clone()).create_app(keyed(API_KEY, CreateAppRequest { name: "tls".into(), ..Default::default() })).await.unwrap();
    assert_eq!(list_apps(ch).await.unwrap(), 1);
    // Without a client certificate, with one from another CA, or in plain text: refused.
    for who in [None, Some(&stranger)] {
        let refused = match tls_channel(port, &server_ca.pem(), who).await {
            Ok(ch) => list_apps(ch).await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "a client without an accepted certificate is refused");
    }
    let plain = Dial::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await;
    assert!(match plain {
        Ok(ch) => list_apps(ch).await.is_err(),
        Err(_) => true,
    });

    // The CLI speaks TLS: --ca-file, and the client certificate.
    let files = tempfile::tempdir().unwrap();
    let (ca_pem, c_pem, k_pem) = (files.path().join("ca.pem"), files.path().join("c.pem"), files.path().join("c.key"));
    std::fs::write(&ca_pem, server_ca.pem()).unwrap();
    std::fs::write(&c_pem, &identity.0).unwrap();
    std::fs::write(&k_pem, &identity.1).unwrap();
    let addr = format!("https://127.0.0.1:{port}");
    let (ca_a, c_a, k_a) = (ca_pem.to_str().unwrap(), c_pem.to_str().unwrap(), k_pem.to_str().unwrap());
    let (code, out, err) = common::herald(
        &["apps", "list", "--addr", &addr, "--api-key", API_KEY, "--ca-file", ca_a, "--cert-file", c_a, "--key-file", k_a],
        &[],
        files.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("tls"), "{out}");
    let (code, _, err) = common::herald(&["apps", "list", "--addr", &addr, "--api-key", API_KEY, "--ca-file", ca_a], &[], files.path());
    assert_ne!(code, 0, "no client certificate: refused ({err})");
    let (code, out, err) = common::herald(
        &["health", "--addr", &format!("127.0.0.1:{port}"), "--ca-file", ca_a, "--cert-file", c_a, "--key-file", k_a],
        &[],
        files.path(),
    );
    assert_eq!((code, out.trim()), (0, "SERVING"), "{err}");

    // A renewed certificate from another CA: served from the next handshake, no restart.
    let renewed_ca = ca("Herald test server CA, renewed");
    write_server_cert(&renewed_ca, &cert, &key);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(ch) = tls_channel(port, &renewed_ca.pem(), Some(&identity)).await {
            if list_apps(ch).await.is_ok() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the renewed certificate was not served within 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old = match tls_channel(port, &server_ca.pem(), Some(&identity)).await {
        Ok(ch) => list_apps(ch).await.is_ok(),
        Err(_) => false,
    };
    assert!(!old, "new connections get the renewed certificate, not the old one");
    // Files that do not load keep the current certificate.
    std::fs::write(&cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let ch = tls_channel(port, &renewed_ca.pem(), Some(&identity)).await.expect("still served");
    assert_eq!(list_apps(ch).await.unwrap(), 1);
    assert!(d.metrics_text().contains("herald_tls_reloads_total{listener=\"grpc\",result=\"failed\"} 1"), "{}", d.metrics_text());
}

#[test]
fn validate_checks_the_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("s.pem"), dir.path().join("s.key"));
    write_server_cert(&ca("v"), &cert, &key);
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let (code, out, err) = common::herald(&["serve", "--validate", "--tls-cert-file", c, "--tls-key-file", k], &[], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    std::fs::write(dir.path().join("bad.pem"), "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n").unwrap();
    let (code, _, err) = common::herald(&["serve", "--validate", "--tls-cert-file", "bad.pem", "--tls-key-file", k], &[], dir.path());
    assert_eq!(code, 64);
    assert!(err.contains("bad.pem"), "{err}");
    let (code, _, err) = common::herald(&["serve", "--validate", "--tls-cert-file", c], &[], dir.path());
    assert_eq!(code, 64);
    assert!(err.contains("go together"), "{err}");
    // A key that is not the certificate's.
    let other = dir.path().join("other.key");
    write_server_cert(&ca("w"), &dir.path().join("o.pem"), &other);
    let (code, _, err) =
        common::herald(&["serve", "--validate", "--tls-cert-file", c, "--tls-key-file", other.to_str().unwrap()], &[], dir.path());
    assert_eq!(code, 64, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_metrics_and_rest_listeners_speak_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("s.pem"), dir.path().join("s.key"));
    let authority = ca("Herald test CA");
    write_server_cert(&authority, &cert, &key);
    let feedback = common::free_port();
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let public = format!("127.0.0.1:{feedback}");
    let rest = format!("127.0.0.1:{}", common::free_port());
    let d = Daemon::spawn(
        None,
        dir.path().join("data"),
        None,
        Some(API_KEY.into()),
        &[
            "--tls-cert-file",
            c,
            "--tls-key-file",
            k,
            "--metrics-tls",
            "true",
            "--feedback-addr",
            &public,
            "--public-tls-cert-file",
            c,
            "--public-tls-key-file",
            k,
            "--public-url",
            &format!("https://{public}"),
            "--rest-addr",
            &rest,
        ],
    );
    herald::channels::install_crypto_provider();
    let client =
        reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(authority.pem().as_bytes()).unwrap()]).build().unwrap();
    let metrics = client.get(format!("https://{}/metrics", d.metrics)).send().await.expect("metrics over TLS");
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("herald_build_info"));
    // A forged open-pixel token: the listener answers (over TLS) and records nothing.
    let forged = client.get(format!("https://{public}/o/forged")).send().await.expect("the public listener over TLS");
    assert_eq!(forged.status(), 404);
    // Pinpoint's REST API speaks HTTPS with the gRPC certificate (no client certificate asked).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(&rest).is_err() {
        assert!(std::time::Instant::now() < deadline, "the REST listener did not come up");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let apps = client.get(format!("https://{rest}/v1/apps")).send().await.expect("the REST listener over TLS");
    assert_eq!(apps.status(), 200);
    assert!(apps.text().await.unwrap().contains("\"Item\""));
    // Plain HTTP is not served on any of them.
    let plain = reqwest::Client::new();
    assert!(plain.get(format!("http://{}/metrics", d.metrics)).send().await.is_err_or_not_ok());
    assert!(plain.get(format!("http://{public}/o/forged")).send().await.is_err_or_not_ok());
    assert!(plain.get(format!("http://{rest}/v1/apps")).send().await.is_err_or_not_ok());
}

trait NotOk {
    fn is_err_or_not_ok(&self) -> bool;
}

impl NotOk for Result<reqwest::Response, reqwest::Error> {
    fn is_err_or_not_ok(&self) -> bool {
        self.as_ref().map_or(true, |r| !r.status().is_success() && r.status() != 404)
    }
}

/// The scope each method needs, as README documents it. A method missing here fails the test.
const SCOPES: &[(&str, &str)] = &[
    ("Apps/CreateApp", "admin"),
    ("Apps/GetApp", "read"),
    ("Apps/ListApps", "read"),
    ("Apps/DeleteApp", "admin"),
    ("Apps/UpdateAppSettings", "admin"),
    ("Campaigns/CreateCampaign", "write"),
    ("Campaigns/GetCampaign", "read"),
    ("Campaigns/ListCampaignVersions", "read"),
    ("Campaigns/ListCampaigns", "read"),
    ("Campaigns/UpdateCampaign", "write"),
    ("Campaigns/DeleteCampaign", "write"),
    ("Campaigns/GetCampaignActivities", "read"),
    ("Campaigns/GetInAppMessages", "read"),
    ("Channels/UpdateEmailChannel", "admin"),
    ("Channels/GetEmailChannel", "read"),
    ("Channels/DeleteEmailChannel", "admin"),
    ("Channels/UpdateCustomChannel", "admin"),
    ("Channels/GetCustomChannel", "read"),
    ("Channels/DeleteCustomChannel", "admin"),
    ("Channels/UpdateApnsChannel", "admin"),
    ("Channels/GetApnsChannel", "read"),
    ("Channels/DeleteApnsChannel", "admin"),
    ("Channels/UpdateGcmChannel", "admin"),
    ("Channels/GetGcmChannel", "read"),
    ("Channels/DeleteGcmChannel", "admin"),
    ("Channels/UpdateSmsChannel", "admin"),
    ("Channels/GetSmsChannel", "read"),
    ("Channels/DeleteSmsChannel", "admin"),
    ("Channels/GetChannels", "read"),
    ("Endpoints/UpdateEndpoint", "write"),
    ("Endpoints/UpdateEndpointsBatch", "write"),
    ("Endpoints/GetEndpoint", "read"),
    ("Endpoints/DeleteEndpoint", "write"),
    ("Endpoints/GetUserEndpoints", "read"),
    ("Endpoints/DeleteUserEndpoints", "write"),
    ("Endpoints/ImportEndpoints", "write"),
    ("Endpoints/RemoveAttributes", "write"),
    ("Events/PutEvents", "send"),
    ("Events/StreamEvents", "read"),
    ("Events/CreateEventDestination", "admin"),
    ("Events/GetEventDestination", "read"),
    ("Events/ListEventDestinations", "read"),
    ("Events/UpdateEventDestination", "admin"),
    ("Events/DeleteEventDestination", "admin"),
    ("Journeys/CreateJourney", "write"),
    ("Journeys/GetJourney", "read"),
    ("Journeys/ListJourneys", "read"),
    ("Journeys/UpdateJourney", "write"),
    ("Journeys/DeleteJourney", "write"),
    ("Journeys/UpdateJourneyState", "write"),
    ("Journeys/GetJourneyExecutionMetrics", "read"),
    ("Journeys/GetJourneyExecutionActivityMetrics", "read"),
    ("Keys/CreateKey", "admin"),
    ("Keys/ListKeys", "admin"),
    ("Keys/RevokeKey", "admin"),
    ("Kpis/GetApplicationDateRangeKpi", "read"),
    ("Kpis/GetCampaignDateRangeKpi", "read"),
    ("Kpis/GetJourneyDateRangeKpi", "read"),
    ("Messages/SendMessages", "send"),
    ("Messages/SendUsersMessages", "send"),
    ("Messages/GetMessageOutcome", "read"),
    ("Messages/ListOutcomes", "read"),
    ("Segments/CreateSegment", "write"),
    ("Segments/UpdateSegment", "write"),
    ("Segments/GetSegment", "read"),
    ("Segments/ListSegments", "read"),
    ("Segments/ListSegmentVersions", "read"),
    ("Segments/DeleteSegment", "write"),
    ("Segments/GetSegmentSize", "read"),
    ("Segments/ExportSegment", "read"),
    ("Segments/ImportSegment", "write"),
    ("Segments/GetImportJob", "read"),
    ("Segments/ListImportJobs", "read"),
    ("Segments/GetExportJob", "read"),
    ("Segments/ListExportJobs", "read"),
    ("Suppressions/AddSuppressions", "write"),
    ("Suppressions/RemoveSuppression", "write"),
    ("Suppressions/ListSuppressions", "read"),
    ("Suppressions/CheckSuppression", "read"),
    ("Tags/TagResource", "write"),
    ("Tags/UntagResource", "write"),
    ("Tags/ListTagsForResource", "read"),
    ("Templates/CreateTemplate", "write"),
    ("Templates/UpdateTemplate", "write"),
    ("Templates/GetTemplate", "read"),
    ("Templates/ListTemplates", "read"),
    ("Templates/ListTemplateVersions", "read"),
    ("Templates/UpdateTemplateActiveVersion", "write"),
    ("Templates/DeleteTemplate", "write"),
    ("Templates/RenderTemplate", "read"),
];

struct Rpc {
    path: String,
    short: String,
    client_streaming: bool,
    server_streaming: bool,
}

fn rpcs() -> Vec<Rpc> {
    let set = prost_types::FileDescriptorSet::decode(herald::proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for f in set.file.iter().filter(|f| f.package() == "herald.v1") {
        for s in &f.service {
            for m in &s.method {
                out.push(Rpc {
                    path: format!("/herald.v1.{}/{}", s.name(), m.name()),
                    short: format!("{}/{}", s.name(), m.name()),
                    client_streaming: m.client_streaming(),
                    server_streaming: m.server_streaming(),
                });
            }
        }
    }
    out
}

async fn create_key(d: &Daemon, name: &str, scopes: &[&str], apps: &[&str], rate: u32, burst: u32) -> String {
    let mut keys = KeysClient::new(d.channel().await);
    let created = keys
        .create_key(d.req(CreateKeyRequest {
            name: name.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            app_ids: apps.iter().map(|s| s.to_string()).collect(),
            rate_per_second: rate,
            burst,
        }))
        .await
        .expect("create key")
        .into_inner();
    assert!(created.secret.starts_with("hrld_"), "{}", created.secret);
    created.secret
}

async fn every_method_needs_its_scope(backend: Backend) {
    let d = Daemon::start(backend);
    let all = rpcs();
    let listed: std::collections::BTreeSet<&str> = SCOPES.iter().map(|(m, _)| *m).collect();
    let served: std::collections::BTreeSet<&str> = all.iter().map(|r| r.short.as_str()).collect();
    assert_eq!(served, listed, "every served method has its scope in the table, and only those");
    let mut keys = Vec::new();
    for scope in ["admin", "write", "send", "read"] {
        keys.push((scope, create_key(&d, &format!("only-{scope}"), &[scope], &[], 0, 0).await));
    }
    let mut wrong = Vec::new();
    for rpc in &all {
        let needed = SCOPES.iter().find(|(m, _)| *m == rpc.short).unwrap().1;
        // Without a key: UNAUTHENTICATED, whatever the method.
        let anonymous =
            common::raw::call(d.channel().await, Request::new(()), &rpc.path, rpc.client_streaming, rpc.server_streaming, vec![]).await;
        if anonymous.as_ref().err().map(|s| s.code()) != Some(Code::Unauthenticated) {
            wrong.push(format!("{} without a key: {anonymous:?}", rpc.short));
        }
        for (scope, secret) in &keys {
            let allowed = *scope == "admin" || *scope == needed;
            let answer =
                common::raw::call(d.channel().await, keyed(secret, ()), &rpc.path, rpc.client_streaming, rpc.server_streaming, vec![])
                    .await;
            let denied = answer.as_ref().err().filter(|s| s.code() == Code::PermissionDenied);
            match (allowed, denied) {
                (true, Some(s)) => wrong.push(format!("{} refused to a {scope} key: {}", rpc.short, s.message())),
                (false, None) => wrong.push(format!("{} let a {scope} key in: {answer:?}", rpc.short)),
                (false, Some(s)) if !s.message().contains(&format!("needs the {needed} scope")) => {
                    wrong.push(format!("{}: the refusal does not name the scope: {}", rpc.short, s.message()))
                }
                _ => {}
            }
            if let Err(s) = &answer {
                assert_ne!(s.code(), Code::Unauthenticated, "{} {scope}: {}", rpc.short, s.message());
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

on_both_backends!(every_method_needs_its_scope);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_keys_are_refused_at_once_on_every_daemon_and_keys_outlive_a_redis_restart() {
    let redis = RedisServer::start_durable();
    let tmp = tempfile::tempdir().unwrap();
    let a = Daemon::spawn(Some(redis), tmp.path().join("data"), None, Some(API_KEY.into()), &[]);
    let b = a.sibling();
    let app = a.create_app("revoke").await.app_id;
    let secret = create_key(&a, "ci", &["read", "send"], &[], 0, 0).await;
    async fn get(d: &Daemon, key: String, app: String) -> Result<tonic::Response<herald::proto::v1::App>, tonic::Status> {
        AppsClient::new(d.channel().await).get_app(keyed(&key, GetAppRequest { app_id: app })).await
    }
    get(&b, secret.clone(), app.clone()).await.expect("the other daemon knows the key");

    // Redis restarts (from its append-only file): the key still works.
    let mut a = a;
    a.redis.as_mut().unwrap().kill();
    let down = get(&a, secret.clone(), app.clone()).await.unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    a.redis.as_mut().unwrap().start_again();
    let deadline = Instant::now() + Duration::from_secs(15);
    for d in [&a, &b] {
        while get(d, secret.clone(), app.clone()).await.is_err() {
            assert!(Instant::now() < deadline, "the key works again once Redis is back");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let key_id = secret.split('_').nth(1).unwrap().to_string();
    let mut keys = KeysClient::new(a.channel().await);
    let revoked = keys.revoke_key(a.req(RevokeKeyRequest { key_id: key_id.clone() })).await.unwrap().into_inner();
    assert!(!revoked.revoked_at.is_empty());
    for d in [&a, &b] {
        let refused = get(d, secret.clone(), app.clone()).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert!(refused.message().contains("revoked"), "{}", refused.message());
    }
    let listed = keys.list_keys(a.req(ListKeysRequest { include_revoked: false })).await.unwrap().into_inner().keys;
    assert!(listed.iter().all(|k| k.key_id != key_id), "revoked keys are listed only on request");
    assert!(listed.iter().any(|k| k.source == "config" && k.name == "api_keys[0]"));
    let all = keys.list_keys(a.req(ListKeysRequest { include_revoked: true })).await.unwrap().into_inner().keys;
    let k = all.iter().find(|k| k.key_id == key_id).expect("listed with include_revoked");
    assert_eq!(
        (k.name.as_str(), k.created_by.as_str(), k.scopes.clone()),
        ("ci", "api_keys[0]", vec!["send".to_string(), "read".to_string()])
    );
    // A configured key is revoked by the configuration, not the API; an unknown one is NOT_FOUND.
    let config = keys.revoke_key(a.req(RevokeKeyRequest { key_id: "config:api_keys[0]".into() })).await.unwrap_err();
    assert_eq!(config.code(), Code::FailedPrecondition);
    let unknown = keys.revoke_key(a.req(RevokeKeyRequest { key_id: "0123456789abcdef".into() })).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    // The stored record holds a hash, never the secret.
    let stored = a.redis.as_ref().unwrap().cli(&["HGET", "herald:keys", &key_id]).join("");
    assert!(!stored.contains(secret.split('_').nth(2).unwrap()), "{stored}");
    assert!(stored.contains(&herald::access::hash_secret(&secret)), "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_resource_exhausted_with_retry_info() {
    let d = Daemon::start(Backend::Embedded);
    let app = d.create_app("rate").await.app_id;
    let secret = create_key(&d, "slow", &["read"], &[], 2, 2).await;
    let mut apps = AppsClient::new(d.channel().await);
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(apps.get_app(keyed(&secret, GetAppRequest { app_id: app.clone() })).await);
    }
    let over: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(answers[0].is_ok() && answers[1].is_ok(), "the burst is served");
    assert!(!over.is_empty(), "calls over the rate are refused");
    let s = over[0];
    assert_eq!(s.code(), Code::ResourceExhausted);
    let wait = s.get_error_details().retry_info().and_then(|r| r.retry_delay).expect("RetryInfo");
    assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    apps.get_app(keyed(&secret, GetAppRequest { app_id: app.clone() })).await.expect("served again after the wait");
    // Other keys are not slowed by this one's limit.
    for _ in 0..10 {
        apps.get_app(d.req(GetAppRequest { app_id: app.clone() })).await.unwrap();
    }
    // A bad key definition names each bad field.
    let bad = KeysClient::new(d.channel().await)
        .create_key(d.req(CreateKeyRequest { name: "no spaces".into(), scopes: vec!["root".into()], burst: 3, ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(common::violations(&bad), ["burst", "name", "scopes"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_limited_to_apps_touch_only_those() {
    let d = Daemon::start(Backend::Embedded);
    let (mine, theirs) = (d.create_app("mine").await.app_id, d.create_app("theirs").await.app_id);
    let secret = create_key(&d, "tenant", &["admin"], &[&mine], 0, 0).await;
    let mut apps = AppsClient::new(d.channel().await);
    apps.get_app(keyed(&secret, GetAppRequest { app_id: mine.clone() })).await.expect("its app");
    let other = apps.get_app(keyed(&secret, GetAppRequest { app_id: theirs.clone() })).await.unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    assert!(other.message().contains(&theirs), "{}", other.message());
    let listed = apps.list_apps(keyed(&secret, ListAppsRequest::default())).await.unwrap().into_inner().apps;
    assert_eq!(listed.iter().map(|a| a.app_id.as_str()).collect::<Vec<_>>(), [mine.as_str()]);
    let create = apps.create_app(keyed(&secret, CreateAppRequest { name: "x".into(), ..Default::default() })).await.unwrap_err();
    assert_eq!(create.code(), Code::PermissionDenied, "{create:?}");
    let keys = KeysClient::new(d.channel().await).list_keys(keyed(&secret, ListKeysRequest::default())).await.unwrap_err();
    assert_eq!(keys.code(), Code::PermissionDenied);
    // Tags name the app in the ARN.
    let mut tags = TagsClient::new(d.channel().await);
    let arn = |app: &str| format!("arn:aws:mobiletargeting:us-east-1:000000000000:apps/{app}");
    tags.tag_resource(keyed(&secret, TagResourceRequest { resource_arn: arn(&mine), tags: [("k".into(), "v".into())].into() }))
        .await
        .unwrap();
    let t = tags
        .tag_resource(keyed(&secret, TagResourceRequest { resource_arn: arn(&theirs), tags: [("k".into(), "v".into())].into() }))
        .await
        .unwrap_err();
    assert_eq!(t.code(), Code::PermissionDenied);
    // A client stream is checked on its first message.
    let mut eps = EndpointsClient::new(d.channel().await);
    let batch = |app: &str| ImportEndpointsRequest {
        app_id: app.into(),
        endpoints: vec![Endpoint { id: "e1".into(), address: "a@example.com".into(), channel_type: 1, ..Default::default() }],
    };
    let denied = eps.import_endpoints(keyed(&secret, futures::stream::iter(vec![batch(&theirs)]))).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let done = eps.import_endpoints(keyed(&secret, futures::stream::iter(vec![batch(&mine), batch(&mine)]))).await.unwrap().into_inner();
    assert_eq!(done.written, 2, "{done:?}");
    // …and its later messages cannot switch apps.
    let switched = eps.import_endpoints(keyed(&secret, futures::stream::iter(vec![batch(&mine), batch(&theirs)]))).await.unwrap_err();
    assert_eq!(switched.code(), Code::InvalidArgument);
}

/// Starts a daemon whose log goes to a file.
fn logged_daemon(dir: &Path, args: &[&str]) -> (std::process::Child, u16, PathBuf) {
    let port = common::free_port();
    let log = dir.join("daemon.log");
    let mut child = Command::new(common::herald_bin())
        .args(["serve", "--grpc-addr", &format!("127.0.0.1:{port}"), "--metrics-addr", &format!("127.0.0.1:{}", common::free_port())])
        .args(args)
        .env_remove("HERALD_API_KEYS")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    common::wait_for_port(port, "herald", &mut child);
    (child, port, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_for_a_session_and_no_secret_in_any_line() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let secret_key = "q1Jr0k9yq8bN6XbQ1qf1mC9o2iZpQe9C1h1vS3xY0aA=";
    let webhook_secret = "whsec-do-not-print-8c1f0e";
    let smtp_password = "smtp-pass-never-logged-77";
    let sms_token = "sms-auth-token-never-logged-42";
    let (mut child, port, log) = logged_daemon(
        dir.path(),
        &[
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--api-key",
            API_KEY,
            "--secret-key",
            secret_key,
            "--webhook-secret",
            webhook_secret,
            "--smtp-url",
            &format!("smtp://herald:{smtp_password}@127.0.0.1:2525"),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    let addr = format!("127.0.0.1:{port}");
    let cli = |args: &[&str], key: &str| {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(["--addr".to_string(), addr.clone(), "--api-key".to_string(), key.to_string()]);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        common::herald(&all, &[], dir.path())
    };
    let (code, out, err) = cli(&["apps", "create", "--name", "audited"], API_KEY);
    assert_eq!(code, 0, "{err}");
    let app = out.trim().to_string();
    let ch = Dial::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    ChannelsClient::new(ch.clone())
        .update_sms_channel(keyed(
            API_KEY,
            UpdateSmsChannelRequest {
                app_id: app.clone(),
                channel: Some(SmsChannel {
                    enabled: true,
                    account_sid: "AC0123456789abcdef".into(),
                    auth_token: sms_token.into(),
                    base_url: "http://127.0.0.1:9".into(),
                    origination_numbers: vec!["+14255550100".into()],
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    let (code, out, err) = cli(&["keys", "create", "--name", "marketing", "--scope", "write,read", "--app", &app], API_KEY);
    assert_eq!(code, 0, "{err}");
    let created = out.lines().next().unwrap().trim().to_string();
    assert!(err.contains("shown this once"), "{err}");
    let (code, _, err) = cli(&["apps", "get", &app], &created);
    assert_eq!(code, 0, "a read: served, not audited ({err})");
    let (code, _, err) = cli(&["endpoints", "put", "--app", &app, "e1", "--channel-type", "EMAIL", "--address", "a@example.com"], &created);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = cli(&["apps", "delete", &app], &created);
    assert_ne!(code, 0, "a write key cannot delete apps");
    let (code, out, _) = cli(&["keys", "list"], API_KEY);
    assert_eq!(code, 0);
    assert!(out.contains("marketing") && !out.contains(&created[20..]), "{out}");
    let key_id = created.split('_').nth(1).unwrap().to_string();
    let (code, _, err) = cli(&["keys", "revoke", &key_id], API_KEY);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&["apps", "get", &app], &created);
    assert!(code != 0 && err.contains("revoked"), "{err}");
    let (code, _, _) = cli(&["apps", "list"], "not-a-key-at-all-0000");
    assert_ne!(code, 0);

    // SIGTERM: every queued line is written before the daemon exits.
    assert!(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let find = |method: &str, outcome: &str| {
        lines
            .iter()
            .find(|l| l["method"] == format!("herald.v1.{method}") && l["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {method} {outcome} line in\n{text}"))
    };
    let create_app = find("Apps/CreateApp", "OK");
    assert_eq!((create_app["caller"].as_str(), create_app["scope"].as_str()), (Some("api_keys[0]"), Some("admin")));
    assert_eq!(create_app["resource"]["name"], "audited", "{create_app}");
    assert!(create_app["time"].as_str().unwrap().ends_with('Z') && create_app["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(find("Channels/UpdateSmsChannel", "OK")["app_id"], app.as_str());
    assert_eq!(find("Keys/CreateKey", "OK")["resource"]["name"], "marketing");
    let put = find("Endpoints/UpdateEndpoint", "OK");
    assert_eq!(
        (put["caller"].as_str(), put["app_id"].as_str(), put["resource"]["endpoint_id"].as_str()),
        (Some("marketing"), Some(app.as_str()), Some("e1"))
    );
    assert_eq!(find("Apps/DeleteApp", "PERMISSION_DENIED")["caller"], "marketing");
    assert_eq!(find("Keys/RevokeKey", "OK")["resource"]["key_id"], key_id.as_str());
    assert_eq!(find("Apps/GetApp", "UNAUTHENTICATED")["caller"], "unauthenticated", "a revoked key's call is audited");
    find("Apps/ListApps", "UNAUTHENTICATED");
    assert!(!lines.iter().any(|l| l["method"] == "herald.v1.Apps/GetApp" && l["outcome"] == "OK"), "reads that pass are not audited");
    // No configured or created secret in the log, the audit log or `herald config`.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("API key created"), "the log is there to search: {logged}");
    let (_, shown, _) = common::herald(
        &["config", "--api-key", API_KEY, "--secret-key", secret_key, "--webhook-secret", webhook_secret],
        &[("HERALD_SMTP_URL", &format!("smtp://herald:{smtp_password}@127.0.0.1:2525"))],
        dir.path(),
    );
    for secret in [API_KEY, secret_key, webhook_secret, smtp_password, sms_token, created.as_str(), &created[22..]] {
        for (what, out) in [("daemon log", &logged), ("audit log", &text), ("herald config", &shown)] {
            assert!(!out.contains(secret), "{what} holds the secret {secret}");
        }
    }

    // kill -9: a line is on disk once its call has been answered and the writer's queue
    // emptied (at once on an idle daemon); the next daemon appends to the same file, and the
    // revoked key stays revoked.
    let (mut child, port, _) = logged_daemon(
        dir.path(),
        &["--data-dir", dir.path().join("data").to_str().unwrap(), "--api-key", API_KEY, "--audit-log", audit.to_str().unwrap()],
    );
    let addr = format!("127.0.0.1:{port}");
    let (code, _, err) =
        common::herald(&["apps", "create", "--name", "after-crash", "--addr", &addr, "--api-key", API_KEY], &[], dir.path());
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = common::herald(&["apps", "get", &app, "--addr", &addr, "--api-key", &created], &[], dir.path());
    assert!(code != 0 && err.contains("revoked"), "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let after = std::fs::read_to_string(&audit).unwrap();
    assert!(after.starts_with(&text), "appended, not rewritten");
    assert!(after[text.len()..].contains("\"after-crash\""), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_hash_makes_configuration_entries_the_daemon_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let entry = |args: &[&str]| {
        let (code, out, err) = common::herald(args, &[], dir.path());
        assert_eq!(code, 0, "{err}");
        let secret = out.lines().next().unwrap().strip_prefix("secret: ").unwrap().to_string();
        let toml = out.lines().skip(1).collect::<Vec<_>>().join("\n");
        assert!(!toml.contains(&secret), "the entry holds the hash, not the secret");
        (secret, toml)
    };
    let (admin, admin_entry) = entry(&["keys", "hash", "--name", "deploy", "--scope", "admin"]);
    let (sender, sender_entry) = entry(&["keys", "hash", "--name", "reset-flow", "--scope", "send"]);
    let (code, _, err) = common::herald(&["keys", "hash", "--name", "bad name", "--scope", "root"], &[], dir.path());
    assert!(code != 0 && err.contains("name"), "{err}");
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, format!("{admin_entry}\n{sender_entry}\n")).unwrap();
    let d = Daemon::spawn(None, dir.path().join("data"), None, None, &["--config", config.to_str().unwrap()]);
    let mut apps = AppsClient::new(d.channel().await);
    apps.create_app(keyed(&admin, CreateAppRequest { name: "from-config".into(), ..Default::default() })).await.expect("the admin entry");
    let denied = apps.create_app(keyed(&sender, CreateAppRequest { name: "x".into(), ..Default::default() })).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("needs the admin scope") && denied.message().contains("reset-flow"), "{}", denied.message());
    let none = apps.list_apps(Request::new(ListAppsRequest::default())).await.unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated, "hashed keys alone turn authentication on");
}
