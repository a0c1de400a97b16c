//! The closed set of senders: for each channel Herald delivers to, the provider's client built
//! from each app's settings (or the daemon's defaults), and one entry point, [`Senders::deliver`],
//! that takes a batch of one channel's outbound messages and gives back one [`Delivery`] per
//! message. The dispatch engine calls only that; everything a provider needs (relays and their
//! pools, DKIM signing, provider tokens, webhook signatures) is decided here.
//!
//! A new channel adds its folder under `channels/`, a [`Lane`] and a [`Payload`] variant, and
//! one arm in [`deliver`].

mod apps;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::apns::ApnsSender;
use super::email::dkim::DkimSigner;
use super::email::SmtpPool;
use super::fcm::FcmSender;
use super::webhook::{Webhook, WebhookConfig, MAX_ENDPOINTS_PER_CALL};
use super::{Delivery, Lane, Outbound, Payload};
use crate::secrets::Sealer;
use crate::store::Store;
use apps::{AppChannels, Built};

/// Why an app's channel cannot deliver: what every message to it is failed with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unusable {
    #[error("the app's {0} channel is disabled")]
    Disabled(&'static str),
    #[error("no {0} channel is configured for this app")]
    Missing(&'static str),
    #[error("no email channel is configured (smtp_url or UpdateEmailChannel)")]
    NoEmailChannel,
    #[error("channel secrets cannot be opened: this daemon has no secret key")]
    NoSecretKey,
    #[error("no HTTP client")]
    NoHttpClient,
    #[error("{0}")]
    Settings(Arc<super::settings::SettingsError>),
    #[error("{0}")]
    Apns(Arc<super::apns::ApnsError>),
    #[error("{0}")]
    Fcm(Arc<super::fcm::FcmError>),
    #[error("{0}")]
    Sms(#[from] super::sms::SmsError),
}

/// A relay's pool and the messages going through it.
type RelayBatch = (Arc<SmtpPool>, Vec<usize>);

/// Every channel's senders, shared by all shards.
pub struct Senders {
    store: Arc<dyn Store>,
    /// The daemon's relay (`smtp_url`), for apps without their own.
    smtp: Option<Arc<SmtpPool>>,
    /// Opens the secrets in apps' channel settings (`None`: settings with secrets fail).
    sealer: Option<Arc<Sealer>>,
    /// Signs custom-channel requests of apps without their own signing secret.
    webhook_secret: Option<String>,
    webhook_timeout: Duration,
    /// Each app's channel settings, read again after [`apps::REFRESH`].
    channels: parking_lot::Mutex<HashMap<String, (Instant, AppChannels)>>,
    /// The HTTP client webhooks, FCM and SMS share (`None` if it could not be built).
    http: Option<reqwest::Client>,
    /// SMTP pools of apps with their own relay, by relay settings.
    pools: parking_lot::Mutex<HashMap<String, Arc<SmtpPool>>>,
    /// Each app's APNs sender and the settings it was built from.
    apns: Built<ApnsSender>,
    /// Each app's FCM sender (holding its access token) and the settings it was built from.
    fcm: Built<FcmSender>,
    /// Each app's DKIM keys and the settings they were read from.
    dkim: Built<DkimSigner>,
}

impl Senders {
    pub fn new(
        store: Arc<dyn Store>,
        smtp: Option<Arc<SmtpPool>>,
        sealer: Option<Arc<Sealer>>,
        webhook_secret: Option<String>,
        webhook_timeout: Duration,
    ) -> Self {
        Self {
            store,
            smtp,
            sealer,
            webhook_secret,
            webhook_timeout,
            channels: parking_lot::Mutex::new(HashMap::new()),
            http: Webhook::client(webhook_timeout).inspect_err(|e| tracing::error!(error = %e, "Cannot build the HTTP client.")).ok(),
            pools: parking_lot::Mutex::new(HashMap::new()),
            apns: Built::default(),
            fcm: Built::default(),
            dkim: Built::default(),
        }
    }

    /// Sends one channel's batch; one delivery per message, in order. Called by a shard for
    /// each batch it takes: messages of several apps may share it.
    pub async fn deliver(&self, lane: Lane, batch: &[Outbound<'_>]) -> Vec<Delivery> {
        // Apps whose settings are not known (the store cannot be reached and they were never
        // read): their messages are retried later, not failed.
        let mut unknown: Vec<&str> = Vec::new();
        let mut checked: Vec<&str> = Vec::new();
        for j in batch {
            if !checked.contains(&j.app_id) {
                checked.push(j.app_id);
                if self.app_channels(j.app_id).await.unknown {
                    unknown.push(j.app_id);
                }
            }
        }
        if unknown.is_empty() {
            return deliver(self, lane, batch).await;
        }
        let known: Vec<Outbound<'_>> = batch.iter().copied().filter(|j| !unknown.contains(&j.app_id)).collect();
        let mut sent = deliver(self, lane, &known).await.into_iter();
        batch
            .iter()
            .map(|j| match unknown.contains(&j.app_id) {
                true => Delivery::Retry {
                    status_code: 0,
                    message: "the app's channel settings cannot be read now (store unreachable)".into(),
                    retry_after: Some(Duration::from_secs(1)),
                },
                false => sent.next().expect("one delivery per message"),
            })
            .collect()
    }
}

async fn deliver(shared: &Senders, lane: Lane, jobs: &[Outbound<'_>]) -> Vec<Delivery> {
    let dry = |_: &Outbound<'_>| Delivery::Delivered { status_code: 0, message: "dry run: not sent".into(), provider_id: None };
    match lane {
        Lane::Email => {
            let mut out: Vec<Option<Delivery>> = jobs.iter().map(|j| j.dry_run.then(|| dry(j))).collect();
            // One pipelined batch per (relay, sender address).
            let mut groups: HashMap<(usize, &str), RelayBatch> = HashMap::new();
            type AppEmail = (Result<Arc<SmtpPool>, Unusable>, Option<Arc<DkimSigner>>);
            let mut apps: HashMap<&str, AppEmail> = HashMap::new();
            let mut to_sign = Vec::new();
            for (i, j) in jobs.iter().enumerate() {
                let app = j.app_id;
                if !apps.contains_key(app) {
                    let c = shared.app_channels(app).await;
                    let signer = match &c.email {
                        Some(Ok(email)) => shared.dkim_signer(app, email),
                        _ => None,
                    };
                    apps.insert(app, (shared.pool_for(&c.email), signer));
                }
                match (&apps[app], j.payload) {
                    ((Err(why), _), _) if out[i].is_none() => {
                        out[i] = Some(Delivery::Permanent { status_code: 0, message: why.to_string(), hard_bounce: false })
                    }
                    ((Ok(pool), signer), Payload::Email { from, mime }) if out[i].is_none() => {
                        if let Some(signer) = signer.as_ref().filter(|s| s.key_for(from).is_some()) {
                            to_sign.push((i, signer.clone(), from.clone(), mime.clone()));
                        }
                        groups.entry((Arc::as_ptr(pool) as usize, from.as_str())).or_insert_with(|| (pool.clone(), Vec::new())).1.push(i);
                    }
                    _ => {}
                }
            }
            // DKIM signatures (RSA takes a while) are made off the async workers.
            let mut signed: Vec<Option<Vec<u8>>> = vec![None; jobs.len()];
            if !to_sign.is_empty() {
                let now = chrono::Utc::now().timestamp();
                let sign = move || to_sign.into_iter().map(|(i, s, from, mime)| (i, s.sign(&from, &mime, now))).collect::<Vec<_>>();
                match tokio::task::spawn_blocking(sign).await {
                    Ok(done) => done.into_iter().for_each(|(i, m)| signed[i] = m),
                    Err(e) => tracing::error!(error = %e, "DKIM signing failed."),
                }
            }
            for ((_, from), (pool, idx)) in groups {
                let items: Vec<(&str, &[u8])> = idx
                    .iter()
                    .map(|&i| match (jobs[i].payload, &signed[i]) {
                        (_, Some(m)) => (jobs[i].address, m.as_slice()),
                        (Payload::Email { mime, .. }, None) => (jobs[i].address, mime.as_slice()),
                        _ => unreachable!("email lane"),
                    })
                    .collect();
                for (i, d) in idx.into_iter().zip(pool.send_batch(from, &items).await) {
                    out[i] = Some(d);
                }
            }
            out.into_iter()
                .map(|d| d.unwrap_or(Delivery::Permanent { status_code: 0, message: "not an email".into(), hard_bounce: false }))
                .collect()
        }
        Lane::Custom => custom(shared, jobs).await,
        Lane::Apns | Lane::Gcm | Lane::Sms => {
            let mut futures = Vec::with_capacity(jobs.len());
            for j in jobs {
                let app = shared.app_channels(j.app_id).await;
                futures.push(async move {
                    if j.dry_run {
                        dry(j)
                    } else {
                        provider_send(lane, &app, j).await
                    }
                });
            }
            futures::future::join_all(futures).await
        }
    }
}

/// One custom-channel POST being gathered.
struct Call {
    /// The URL, the secret, and the payload without its endpoints.
    key: (String, String, String),
    /// Whether other messages may join (each message so far went to one endpoint).
    open: bool,
    messages: Vec<usize>,
}

/// Custom-channel messages: each to the endpoint's own URL, or (an address that is an id) to
/// the app's delivery_url. Messages to one URL with the same content and origin go as one
/// POST carrying up to [`MAX_ENDPOINTS_PER_CALL`] endpoints, as Pinpoint batches them; the
/// answer is every one's delivery.
async fn custom(shared: &Senders, jobs: &[Outbound<'_>]) -> Vec<Delivery> {
    let mut out: Vec<Option<Delivery>> = vec![None; jobs.len()];
    let mut groups: Vec<Call> = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        if j.dry_run {
            out[i] = Some(Delivery::Delivered { status_code: 0, message: "dry run: not sent".into(), provider_id: None });
            continue;
        }
        let Payload::Custom { body } = j.payload else {
            out[i] = Some(permanent("not a custom-channel message".into()));
            continue;
        };
        let app = shared.app_channels(j.app_id).await;
        let channel = match &app.custom {
            Some(Err(why)) => {
                out[i] = Some(permanent(why.to_string()));
                continue;
            }
            Some(Ok(c)) if !c.enabled => {
                out[i] = Some(permanent(Unusable::Disabled("custom").to_string()));
                continue;
            }
            Some(Ok(c)) => Some(c),
            None => None,
        };
        let url = if crate::domain::endpoint::is_own_url(j.address) {
            j.address.to_string()
        } else {
            match channel.map(|c| c.delivery_url.as_str()).filter(|u| !u.is_empty()) {
                Some(u) => u.to_string(),
                None => {
                    out[i] = Some(permanent(format!(
                        "the custom address {:?} is not a URL and the app's custom channel has no delivery_url",
                        j.address
                    )));
                    continue;
                }
            }
        };
        let secret = channel
            .map(|c| c.signing_secret.clone())
            .filter(|s| !s.is_empty())
            .or_else(|| shared.webhook_secret.clone())
            .unwrap_or_default();
        let content = serde_json::to_string(&super::webhook::Payload { endpoints: Default::default(), ..body.clone() }).unwrap_or_default();
        let key = (url, secret, content);
        // Only messages to one endpoint each share a call, and never two to the same endpoint.
        let endpoint = body.endpoints.keys().next().filter(|_| body.endpoints.len() == 1);
        let shared_call = endpoint.and_then(|id| {
            groups.iter_mut().find(|c| {
                c.open
                    && c.key == key
                    && c.messages.len() < MAX_ENDPOINTS_PER_CALL
                    && c.messages.iter().all(|&o| matches!(jobs[o].payload, Payload::Custom { body } if !body.endpoints.contains_key(id)))
            })
        });
        match shared_call {
            Some(c) => c.messages.push(i),
            None => groups.push(Call { key, open: endpoint.is_some(), messages: vec![i] }),
        }
    }
    let Some(http) = shared.http.as_ref() else {
        return out.into_iter().map(|d| d.unwrap_or_else(|| permanent(Unusable::NoHttpClient.to_string()))).collect();
    };
    let calls = groups.into_iter().map(|Call { key: (url, secret, _), messages: idx, .. }| {
        let hook = Webhook::with_client(WebhookConfig { url, secret, timeout: shared.webhook_timeout }, http.clone());
        let mut body = match jobs[idx[0]].payload {
            Payload::Custom { body } => body.clone(),
            _ => unreachable!("grouped as custom"),
        };
        for &i in &idx[1..] {
            if let Payload::Custom { body: other } = jobs[i].payload {
                body.endpoints.extend(other.endpoints.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        async move { (idx, hook.send(&body).await) }
    });
    for (idx, delivery) in futures::future::join_all(calls).await {
        for i in idx {
            out[i] = Some(delivery.clone());
        }
    }
    out.into_iter().map(|d| d.expect("every custom message has its delivery")).collect()
}

fn permanent(message: String) -> Delivery {
    Delivery::Permanent { status_code: 0, message, hard_bounce: false }
}

/// An app's sender for a channel, or the delivery that says why there is none.
fn usable<'a, S>(channel: &'a Option<Result<Arc<S>, Unusable>>, label: &'static str) -> Result<&'a Arc<S>, Delivery> {
    match channel {
        None => Err(permanent(Unusable::Missing(label).to_string())),
        Some(Err(why)) => Err(permanent(why.to_string())),
        Some(Ok(sender)) => Ok(sender),
    }
}

/// One message to a push or SMS provider through the app's channel.
async fn provider_send(lane: Lane, app: &AppChannels, j: &Outbound<'_>) -> Delivery {
    let sent = match (lane, j.payload) {
        (Lane::Apns, Payload::Apns(push)) => match usable(&app.apns, "APNs") {
            Ok(sender) => Ok(sender.send(push, j.message_id).await),
            Err(d) => Err(d),
        },
        (Lane::Gcm, Payload::Gcm(m)) => match usable(&app.gcm, "GCM") {
            Ok(sender) => Ok(sender.send(m).await),
            Err(d) => Err(d),
        },
        (Lane::Sms, Payload::Sms(text)) => match usable(&app.sms, "SMS") {
            Ok(sender) => Ok(sender.send(text).await),
            Err(d) => Err(d),
        },
        _ => Err(permanent("the message does not match its channel".into())),
    };
    sent.unwrap_or_else(|d| d)
}
