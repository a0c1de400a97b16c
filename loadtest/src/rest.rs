//! Pinpoint's REST door under load: SendMessages with one address, signed with SigV4 by the
//! load test itself (as an AWS SDK signs), at a fixed rate; then, in the same run, the same
//! call over gRPC at the same rate, for the daemon's CPU per call through each door.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde_json::json;
use tonic::transport::Channel;

use herald::rest::sigv4;

pub struct Target {
    pub url: String,
    pub access_key: String,
    pub secret: String,
}

#[allow(clippy::too_many_arguments)]
pub async fn send(
    channel: &Channel,
    channels: &[Channel],
    key: &Option<String>,
    target: &Target,
    rate: u64,
    duration: Duration,
    daemon_pid: Option<u32>,
    json_out: bool,
    keep: bool,
) -> anyhow::Result<()> {
    let app = crate::create_app(channel, key, "loadtest-rest").await?;
    let uri: hyper::Uri = target.url.parse().context("--rest-url")?;
    let host = uri.authority().context("--rest-url needs host:port")?.to_string();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).pool_max_idle_per_host(512).build(connector);
    let shared = Arc::new((client, target.url.clone(), host, target.access_key.clone(), target.secret.clone(), app.clone()));
    let call = |n: u64| {
        let shared = shared.clone();
        async move {
            let (client, base, host, access, secret, app) = &*shared;
            let path = format!("/v1/apps/{app}/messages");
            let body = json!({
                "Addresses": {format!("t{n}@load.herald.test"): {"ChannelType": "EMAIL"}},
                "MessageConfiguration": {"EmailMessage": {
                    "FromAddress": "Load Test <load@herald.test>",
                    "SimpleEmail": {
                        "Subject": {"Charset": "UTF-8", "Data": "Your code"},
                        "TextPart": {"Charset": "UTF-8", "Data": "Your one-time code is 123456. It expires in ten minutes."},
                    },
                }},
            })
            .to_string();
            let mut headers = vec![("host".to_string(), host.clone()), ("content-type".to_string(), "application/json".to_string())];
            let signer = sigv4::Key { access_key: access, secret, region: "us-east-1" };
            sigv4::sign(&signer, "POST", &path, "", &mut headers, body.as_bytes(), chrono::Utc::now());
            let mut req = hyper::Request::post(format!("{base}{path}"));
            for (n, v) in &headers {
                req = req.header(n.as_str(), v.as_str());
            }
            let req = req.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
            let resp = client.request(req).await.map_err(|e| format!("connect: {e}"))?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            if !status.is_success() {
                return Err(format!("HTTP {}", status.as_u16()));
            }
            let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            let results = v["Result"].as_object().ok_or("no Result")?;
            match results.values().find(|r| r["DeliveryStatus"] != "SUCCESSFUL") {
                None => Ok(()),
                Some(r) => Err(r["DeliveryStatus"].as_str().unwrap_or("UNKNOWN").to_string()),
            }
        }
    };
    // A second of warm-up (connections, caches), not measured.
    crate::open_loop(rate, Duration::from_secs(1), call).await?;
    let cpu0 = daemon_pid.and_then(crate::scenarios::cpu_seconds);
    let (hist, errors, achieved) = crate::open_loop(rate, duration, call).await?;
    let cpu1 = daemon_pid.and_then(crate::scenarios::cpu_seconds);
    let rest_cpu = cpu0.zip(cpu1).map(|(a, b)| (b - a) * 1e6 / hist.len().max(1) as f64);

    crate::send_fixed_rate(channels, key, &app, rate, Duration::from_secs(1), false).await?;
    let cpu2 = daemon_pid.and_then(crate::scenarios::cpu_seconds);
    let (ghist, gerrors, gachieved) = crate::send_fixed_rate(channels, key, &app, rate, duration, false).await?;
    let cpu3 = daemon_pid.and_then(crate::scenarios::cpu_seconds);
    let grpc_cpu = cpu2.zip(cpu3).map(|(a, b)| (b - a) * 1e6 / ghist.len().max(1) as f64);
    let ratio = rest_cpu.zip(grpc_cpu).map(|(r, g)| r / g);
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    if json_out {
        println!(
            "{}",
            json!({"scenario": "rest-send", "target_rate": rate, "achieved_rate": achieved, "calls": hist.len(), "errors": errors,
                "p50_ms": ms(&hist, 0.5), "p90_ms": ms(&hist, 0.9), "p99_ms": ms(&hist, 0.99), "p999_ms": ms(&hist, 0.999),
                "grpc": {"achieved_rate": gachieved, "calls": ghist.len(), "errors": gerrors, "p50_ms": ms(&ghist, 0.5), "p99_ms": ms(&ghist, 0.99)},
                "daemon_cpu_us_per_call": {"rest": rest_cpu, "grpc": grpc_cpu, "ratio": ratio}})
        );
    } else {
        let f = |v: Option<f64>, d: usize| v.map_or("?".to_string(), |v| format!("{v:.d$}"));
        println!(
            "rest-send: {} calls at {achieved:.0}/s (target {rate}/s), {} failed {errors:?}; latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
            hist.len(),
            errors.values().sum::<u64>(),
            ms(&hist, 0.5),
            ms(&hist, 0.9),
            ms(&hist, 0.99),
            ms(&hist, 0.999)
        );
        println!(
            "grpc-send (same run): {} calls at {gachieved:.0}/s, {} failed; latency p50 {:.3} ms, p99 {:.3} ms",
            ghist.len(),
            gerrors.values().sum::<u64>(),
            ms(&ghist, 0.5),
            ms(&ghist, 0.99)
        );
        println!("daemon CPU per call: REST {} µs, gRPC {} µs, ratio {}", f(rest_cpu, 1), f(grpc_cpu, 1), f(ratio, 2));
    }
    crate::cleanup(channel, key, &app, keep).await
}
