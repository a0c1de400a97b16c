//! Each app's channel settings as the senders use them: opened once a second, and the
//! senders, pools and DKIM keys built from them kept while the settings are unchanged.

use std::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

use super::{Senders, Unusable};
use crate::channels::apns::ApnsSender;
use crate::channels::email::dkim::{DkimKey, DkimSigner};
use crate::channels::email::{SmtpPool, SmtpRelay};
use crate::channels::fcm::FcmSender;
use crate::channels::settings;
use crate::channels::sms::SmsSender;

/// How long an app's channel settings are used before they are read again: changes take
/// effect within this time, without a restart.
pub(super) const REFRESH: std::time::Duration = std::time::Duration::from_secs(1);
use crate::proto::v1::{ApnsChannel, CustomChannel, EmailChannel, GcmChannel, SmsChannel, TlsMode};
use crate::store::Store;

/// What was built from each app's channel settings, with the settings' fingerprint.
pub(super) type Built<T> = parking_lot::Mutex<HashMap<String, (String, Arc<T>)>>;

/// The value built from an app's settings `c`, built again only when they changed.
fn built<T, C: prost::Message>(
    cache: &Built<T>,
    app: &str,
    c: &C,
    modified: &str,
    build: impl FnOnce() -> Result<T, Unusable>,
) -> Result<Arc<T>, Unusable> {
    let fingerprint = format!("{modified}|{}", c.encoded_len());
    let mut cache = cache.lock();
    if let Some((seen, value)) = cache.get(app) {
        if *seen == fingerprint {
            return Ok(value.clone());
        }
    }
    let value = Arc::new(build()?);
    cache.insert(app.to_string(), (fingerprint, value.clone()));
    Ok(value)
}

/// An app's channel settings with their secrets opened, if it has any (`Err`: they are there
/// but cannot be used, and why).
#[derive(Clone, Default)]
pub(super) struct AppChannels {
    /// The store could not be reached and nothing was read before: nothing is known, so
    /// messages are retried rather than failed.
    pub(super) unknown: bool,
    pub(super) email: Option<Result<EmailChannel, Unusable>>,
    pub(super) custom: Option<Result<CustomChannel, Unusable>>,
    pub(super) apns: Option<Result<Arc<ApnsSender>, Unusable>>,
    pub(super) sms: Option<Result<Arc<SmsSender>, Unusable>>,
    pub(super) gcm: Option<Result<Arc<FcmSender>, Unusable>>,
}

impl Senders {
    /// An app's channels, read again once [`REFRESH`] has passed. While the store cannot be
    /// reached the settings read last are used; never read, they are `unknown`.
    pub(super) async fn app_channels(&self, app: &str) -> AppChannels {
        if let Some((at, c)) = self.channels.lock().get(app) {
            if at.elapsed() < REFRESH {
                return c.clone();
            }
        }
        match self.read_channels(app).await {
            Ok(c) => {
                self.channels.lock().insert(app.to_string(), (Instant::now(), c.clone()));
                c
            }
            Err(e) => {
                tracing::debug!(app, error = %e, "Store unreachable; channel settings read earlier are used.");
                match self.channels.lock().get(app) {
                    Some((_, c)) => c.clone(),
                    None => AppChannels { unknown: true, ..Default::default() },
                }
            }
        }
    }

    async fn read_channels(&self, app: &str) -> Result<AppChannels, crate::store::StoreError> {
        let c = match &self.sealer {
            Some(sealer) => {
                let store = self.store.as_ref();
                let email = settings::load_checked::<EmailChannel>(store, sealer, app).await?.map(opened);
                let custom = settings::load_checked::<CustomChannel>(store, sealer, app).await?.map(opened);
                let apns = settings::load_checked::<ApnsChannel>(store, sealer, app)
                    .await?
                    .map(|r| opened(r).and_then(|c| self.apns_sender(app, &c)));
                let sms =
                    settings::load_checked::<SmsChannel>(store, sealer, app).await?.map(|r| opened(r).and_then(|c| self.sms_sender(&c)));
                let gcm = settings::load_checked::<GcmChannel>(store, sealer, app)
                    .await?
                    .map(|r| opened(r).and_then(|c| self.fcm_sender(app, &c)));
                AppChannels { unknown: false, email, custom, apns, sms, gcm }
            }
            None => {
                let store = self.store.as_ref();
                let email = settings_raw::<EmailChannel>(store, app).await?.map(|c| {
                    if c.password.is_empty() {
                        Ok(c)
                    } else {
                        Err(Unusable::NoSecretKey)
                    }
                });
                let custom = settings_raw::<CustomChannel>(store, app).await?.map(|c| {
                    if c.signing_secret.is_empty() {
                        Ok(c)
                    } else {
                        Err(Unusable::NoSecretKey)
                    }
                });
                let apns = settings_raw::<ApnsChannel>(store, app).await?.map(|_| Err(Unusable::NoSecretKey));
                let sms = settings_raw::<SmsChannel>(store, app).await?.map(|_| Err(Unusable::NoSecretKey));
                let gcm = settings_raw::<GcmChannel>(store, app).await?.map(|_| Err(Unusable::NoSecretKey));
                AppChannels { unknown: false, email, custom, apns, sms, gcm }
            }
        };
        Ok(c)
    }

    /// The APNs sender of an app's settings, built again only when they changed.
    pub(super) fn apns_sender(&self, app: &str, c: &ApnsChannel) -> Result<Arc<ApnsSender>, Unusable> {
        if !c.enabled {
            return Err(Unusable::Disabled("APNs"));
        }
        built(&self.apns, app, c, &c.last_modified_date, || ApnsSender::new(c).map_err(|e| Unusable::Apns(Arc::new(e))))
    }

    /// The FCM sender of an app's settings, kept (with its access token) while they are
    /// unchanged.
    pub(super) fn fcm_sender(&self, app: &str, c: &GcmChannel) -> Result<Arc<FcmSender>, Unusable> {
        if !c.enabled {
            return Err(Unusable::Disabled("GCM"));
        }
        let http = self.http.clone().ok_or(Unusable::NoHttpClient)?;
        built(&self.fcm, app, c, &c.last_modified_date, || FcmSender::new(c, http).map_err(|e| Unusable::Fcm(Arc::new(e))))
    }

    /// The DKIM keys of an app's email channel, if it has any.
    pub(super) fn dkim_signer(&self, app: &str, c: &EmailChannel) -> Option<Arc<DkimSigner>> {
        if c.dkim_keys.is_empty() {
            return None;
        }
        let signer = built(&self.dkim, app, c, &c.last_modified_date, || {
            let keys = c.dkim_keys.iter().filter_map(|k| {
                DkimKey::from_pem(&k.domain, &k.selector, &k.private_key)
                    .inspect_err(|e| tracing::error!(app, domain = %k.domain, error = %e, "A DKIM key cannot be used."))
                    .ok()
            });
            Ok::<_, Unusable>(DkimSigner::new(keys.collect()))
        });
        signer.ok()
    }

    /// The SMS sender of an app's settings (sharing the engine's HTTP client).
    pub(super) fn sms_sender(&self, c: &SmsChannel) -> Result<Arc<SmsSender>, Unusable> {
        if !c.enabled {
            return Err(Unusable::Disabled("SMS"));
        }
        let http = self.http.clone().ok_or(Unusable::NoHttpClient)?;
        SmsSender::new(c, http).map(Arc::new).map_err(Unusable::Sms)
    }

    /// The pool an app's email goes through: its own relay, or the daemon's; `Err` says why none.
    pub(super) fn pool_for(&self, channel: &Option<Result<EmailChannel, Unusable>>) -> Result<Arc<SmtpPool>, Unusable> {
        match channel {
            Some(Err(why)) => Err(why.clone()),
            Some(Ok(c)) if !c.enabled => Err(Unusable::Disabled("email")),
            Some(Ok(c)) if !c.relay_host.is_empty() => {
                let key = format!(
                    "{}:{}:{}:{}:{}:{}:{}:{}",
                    c.relay_host,
                    c.relay_port,
                    c.username,
                    c.password,
                    c.pool_size,
                    c.messages_per_connection,
                    c.tls_mode,
                    c.ca_certificate
                );
                let mut pools = self.pools.lock();
                let pool = pools.entry(key).or_insert_with(|| {
                    let mut relay = SmtpRelay::new(c.relay_host.clone(), u16::try_from(c.relay_port).unwrap_or(25));
                    relay.username = Some(c.username.clone()).filter(|u| !u.is_empty());
                    relay.password = Some(c.password.clone()).filter(|p| !p.is_empty());
                    if c.pool_size > 0 {
                        relay.pool_size = c.pool_size as usize;
                    }
                    relay.messages_per_connection = c.messages_per_connection.max(0) as u32;
                    relay.tls = match TlsMode::try_from(c.tls_mode) {
                        Ok(TlsMode::Starttls) => crate::channels::email::TlsMode::StartTls,
                        Ok(TlsMode::Tls) => crate::channels::email::TlsMode::Tls,
                        _ => crate::channels::email::TlsMode::None,
                    };
                    relay.extra_ca_pem = Some(c.ca_certificate.clone()).filter(|p| !p.is_empty());
                    Arc::new(SmtpPool::new(relay))
                });
                Ok(pool.clone())
            }
            _ => self.smtp.clone().ok_or(Unusable::NoEmailChannel),
        }
    }
}

/// Settings whose secrets did not open, as the reason their channel cannot be used.
fn opened<C>(r: Result<C, settings::SettingsError>) -> Result<C, Unusable> {
    r.map_err(|e| Unusable::Settings(Arc::new(e)))
}

/// A channel's stored settings as they are (secrets still sealed).
async fn settings_raw<C: settings::ChannelSettings>(store: &dyn Store, app: &str) -> Result<Option<C>, crate::store::StoreError> {
    match store.get_channel(app, C::NAME).await {
        Ok(raw) => Ok(raw.and_then(|b| C::decode(b.as_slice()).ok())),
        Err(e) if e.is_transient() => Err(e),
        Err(_) => Ok(None),
    }
}
