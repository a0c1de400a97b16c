//! Per-app channel settings as stored: protobuf with every secret field sealed
//! ([`crate::secrets`]). [`ChannelSettings`] says, per channel, where it is stored, which fields
//! are secrets and what a valid setting is; [`load`] reads one with its secrets opened, for
//! the engine. Callers of the API only ever see [`ChannelSettings::shown`].

use prost::Message;

use crate::domain::FieldViolation;
use crate::proto::v1::{ApnsChannel, CustomChannel, EmailChannel, GcmChannel, SmsChannel, TlsMode};
use crate::secrets::{place, Sealer};
use crate::store::Store;

/// A channel's settings message.
pub trait ChannelSettings: Message + Default + Clone {
    /// The store's name for it.
    const NAME: &'static str;
    /// How errors name it.
    const LABEL: &'static str;
    /// The secret fields: (name, value). The name binds a sealed value to its place.
    fn secrets(&mut self) -> Vec<(String, &mut String)>;
    /// Sets the `has_*` flags from the secrets present.
    fn flag(&mut self);
    fn set_modified(&mut self, at: String);
    /// Whether it is enabled, and when it was last changed (GetChannels).
    fn summary(&self) -> (bool, &str);
    /// Checks settings about to be stored (secrets merged in, still plain).
    fn validate(&self) -> Vec<FieldViolation>;
    /// Fills in what Herald derives from valid settings (before secrets are sealed).
    fn complete(&mut self) {}

    /// Fills the secrets this update leaves empty from `old` (opened), the same field by name.
    fn keep_secrets_from(&mut self, mut old: Self) {
        let kept: std::collections::HashMap<String, String> =
            old.secrets().into_iter().map(|(name, v)| (name, std::mem::take(v))).collect();
        for (name, v) in self.secrets() {
            if v.is_empty() {
                if let Some(k) = kept.get(&name) {
                    *v = k.clone();
                }
            }
        }
    }

    /// What a caller may see: flags set, secrets blanked.
    fn shown(mut self) -> Self {
        self.flag();
        for (_, v) in self.secrets() {
            v.clear();
        }
        self
    }
}

fn url_violation(field: &str, url: &str, out: &mut Vec<FieldViolation>) {
    if url.is_empty() {
        return;
    }
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
        _ => out.push(FieldViolation::new(field, "must be an http:// or https:// URL")),
    }
}

fn ca_violation(field: &str, pem: &str, out: &mut Vec<FieldViolation>) {
    if !pem.is_empty() {
        if let Err(e) = crate::channels::email::tls::parse_certificates(pem) {
            out.push(FieldViolation::new(field, e.to_string()));
        }
    }
}

impl ChannelSettings for EmailChannel {
    const NAME: &'static str = "email";
    const LABEL: &'static str = "email";
    fn secrets(&mut self) -> Vec<(String, &mut String)> {
        let mut out = vec![("password".to_string(), &mut self.password)];
        // Each key bound to its domain and selector.
        for k in &mut self.dkim_keys {
            out.push((format!("dkim_keys/{}/{}", k.domain, k.selector), &mut k.private_key));
        }
        out
    }
    fn flag(&mut self) {
        self.has_password = !self.password.is_empty();
        for k in &mut self.dkim_keys {
            k.has_private_key = !k.private_key.is_empty();
        }
    }
    fn set_modified(&mut self, at: String) {
        self.last_modified_date = at;
    }
    fn summary(&self) -> (bool, &str) {
        (self.enabled, &self.last_modified_date)
    }
    fn validate(&self) -> Vec<FieldViolation> {
        let c = self;
        let mut out = Vec::new();
        if !c.from_address.is_empty() && crate::render::mime::Sender::new::<&str>(&c.from_address, &[]).is_err() {
            out.push(FieldViolation::new("channel.from_address", "is not an email address (Name <address> or address)"));
        }
        if !c.relay_host.is_empty() && !(1..=65_535).contains(&c.relay_port) {
            out.push(FieldViolation::new("channel.relay_port", "must be 1 to 65535 with a relay_host"));
        }
        if !(0..=256).contains(&c.pool_size) {
            out.push(FieldViolation::new("channel.pool_size", "must be 0 (default) to 256"));
        }
        if c.messages_per_connection < 0 {
            out.push(FieldViolation::new("channel.messages_per_connection", "must not be negative"));
        }
        if TlsMode::try_from(c.tls_mode).is_err() {
            out.push(FieldViolation::new("channel.tls_mode", "must be TLS_MODE_NONE, TLS_MODE_STARTTLS or TLS_MODE_TLS"));
        } else if c.tls_mode != TlsMode::None as i32 && c.relay_host.is_empty() {
            out.push(FieldViolation::new("channel.tls_mode", "applies to the app's relay_host, which is empty"));
        }
        ca_violation("channel.ca_certificate", &c.ca_certificate, &mut out);
        if !c.identity.is_empty() {
            let (domain, address) = match c.identity.rsplit_once('@') {
                Some((local, d)) => (d, !local.is_empty() && email_address::EmailAddress::is_valid(&c.identity)),
                None => (c.identity.as_str(), true),
            };
            if !address || !domain_ok(domain) {
                out.push(FieldViolation::new("channel.identity", "must be a domain (shop.example) or an email address"));
            } else if let Ok(sender) = crate::render::mime::Sender::new::<&str>(&c.from_address, &[]) {
                if !c.from_address.is_empty() && !identity_covers(&c.identity, sender.address()) {
                    out.push(FieldViolation::new("channel.from_address", format!("is not within the sending identity {}", c.identity)));
                }
            }
        }
        if c.dkim_keys.len() > 32 {
            out.push(FieldViolation::new("channel.dkim_keys", "at most 32 keys"));
        }
        for (i, k) in c.dkim_keys.iter().enumerate() {
            let f = |name: &str| format!("channel.dkim_keys[{i}].{name}");
            if !domain_ok(&k.domain) {
                out.push(FieldViolation::new(f("domain"), "must be a domain name such as shop.example"));
            } else if c.dkim_keys[..i].iter().any(|o| o.domain.eq_ignore_ascii_case(&k.domain)) {
                out.push(FieldViolation::new(f("domain"), "has a key already: one key per sending domain"));
            }
            let selector_ok = !k.selector.is_empty()
                && k.selector.len() <= 63
                && k.selector.split('.').all(|l| !l.is_empty() && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-'));
            if !selector_ok {
                out.push(FieldViolation::new(f("selector"), "must be letters, digits, '-' and '.' (a DNS label)"));
            }
            if k.private_key.is_empty() {
                out.push(FieldViolation::new(f("private_key"), "is required (PEM: RSA 2048-4096 bits or Ed25519)"));
            } else if let Err(e) = crate::channels::email::dkim::DkimKey::from_pem(&k.domain, &k.selector, &k.private_key) {
                out.push(FieldViolation::new(f("private_key"), e));
            }
        }
        out
    }

    fn complete(&mut self) {
        for k in &mut self.dkim_keys {
            if let Ok(key) = crate::channels::email::dkim::DkimKey::from_pem(&k.domain, &k.selector, &k.private_key) {
                k.algorithm = key.algorithm().to_string();
                (k.dns_record_name, k.dns_record_value) = key.dns_record();
            }
        }
    }
}

/// A domain name: dot-separated labels of letters, digits and '-', at least two.
fn domain_ok(d: &str) -> bool {
    let d = d.strip_suffix('.').unwrap_or(d);
    d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Whether a sending identity (a domain or an address) covers `address`: the address itself,
/// or an address at the domain or one of its subdomains.
pub fn identity_covers(identity: &str, address: &str) -> bool {
    let (identity, address) = (identity.trim_end_matches('.').to_ascii_lowercase(), address.to_ascii_lowercase());
    if identity.contains('@') {
        return address == identity;
    }
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    crate::channels::email::within_domain(domain, &identity)
}

impl ChannelSettings for CustomChannel {
    const NAME: &'static str = "custom";
    const LABEL: &'static str = "custom";
    fn secrets(&mut self) -> Vec<(String, &mut String)> {
        vec![("signing_secret".to_string(), &mut self.signing_secret)]
    }
    fn flag(&mut self) {
        self.has_signing_secret = !self.signing_secret.is_empty();
    }
    fn set_modified(&mut self, at: String) {
        self.last_modified_date = at;
    }
    fn summary(&self) -> (bool, &str) {
        (self.enabled, &self.last_modified_date)
    }
    fn validate(&self) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        if !self.delivery_url.is_empty() {
            if let Err(why) = crate::domain::endpoint::validate_url(&self.delivery_url) {
                out.push(FieldViolation::new("channel.delivery_url", why));
            }
        }
        out
    }
}

/// APNs push types Apple documents.
pub const PUSH_TYPES: [&str; 8] = ["alert", "background", "voip", "complication", "fileprovider", "mdm", "location", "liveactivity"];

impl ChannelSettings for ApnsChannel {
    const NAME: &'static str = "apns";
    const LABEL: &'static str = "APNs";
    fn secrets(&mut self) -> Vec<(String, &mut String)> {
        vec![("token_key".to_string(), &mut self.token_key), ("private_key".to_string(), &mut self.private_key)]
    }
    fn flag(&mut self) {
        self.has_token_key = !self.token_key.is_empty();
        self.has_private_key = !self.private_key.is_empty();
    }
    fn set_modified(&mut self, at: String) {
        self.last_modified_date = at;
    }
    fn summary(&self) -> (bool, &str) {
        (self.enabled, &self.last_modified_date)
    }
    fn validate(&self) -> Vec<FieldViolation> {
        use crate::channels::apns::{authentication, Authentication};
        let mut out = Vec::new();
        let method = authentication(self);
        if !matches!(self.default_authentication_method.as_str(), "" | "TOKEN" | "CERTIFICATE") {
            out.push(FieldViolation::new("channel.default_authentication_method", "must be TOKEN or CERTIFICATE"));
        }
        // Whatever is given is checked; what the chosen method needs is required.
        let token = method == Some(Authentication::Token);
        if self.token_key.is_empty() && token {
            out.push(FieldViolation::new("channel.token_key", "is required for token authentication (the .p8 key, PEM)"));
        } else if !self.token_key.is_empty() {
            if let Err(e) = crate::channels::apns::SigningKey::from_pem(&self.token_key) {
                out.push(FieldViolation::new("channel.token_key", e.to_string()));
            }
        }
        let ten = |v: &str| v.len() == 10 && v.chars().all(|c| c.is_ascii_alphanumeric());
        if (token || !self.token_key_id.is_empty()) && !ten(&self.token_key_id) {
            out.push(FieldViolation::new("channel.token_key_id", "must be the key's 10-character id"));
        }
        if (token || !self.team_id.is_empty()) && !ten(&self.team_id) {
            out.push(FieldViolation::new("channel.team_id", "must be the 10-character team id"));
        }
        let certificate = method == Some(Authentication::Certificate);
        if certificate && self.certificate.is_empty() {
            out.push(FieldViolation::new("channel.certificate", "is required for certificate authentication (PEM)"));
        }
        if certificate && self.private_key.is_empty() {
            out.push(FieldViolation::new("channel.private_key", "is required for certificate authentication (PEM)"));
        }
        if !self.certificate.is_empty() || !self.private_key.is_empty() {
            match (self.certificate.is_empty(), self.private_key.is_empty()) {
                (false, false) => {
                    if let Err(e) = crate::channels::email::tls::ClientIdentity::from_pem(&self.certificate, &self.private_key) {
                        let field = match e {
                            crate::channels::email::tls::TlsError::Key(_) => "channel.private_key",
                            _ => "channel.certificate",
                        };
                        out.push(FieldViolation::new(field, e.to_string()));
                    }
                }
                (true, _) if !certificate => out.push(FieldViolation::new("channel.certificate", "is required with a private_key")),
                (_, true) if !certificate => out.push(FieldViolation::new("channel.private_key", "is required with a certificate")),
                _ => {}
            }
        }
        if method.is_none() {
            out.push(FieldViolation::new(
                "channel.token_key",
                "give a token key (with token_key_id and team_id) or a certificate and private_key",
            ));
        }
        let bad_bundle = self.bundle_id.chars().any(|c| c.is_whitespace() || c.is_control());
        if (self.bundle_id.is_empty() && !certificate) || bad_bundle {
            out.push(FieldViolation::new("channel.bundle_id", "is required with a token key (the app's bundle id, the apns-topic)"));
        }
        if !self.default_push_type.is_empty() && !PUSH_TYPES.contains(&self.default_push_type.as_str()) {
            out.push(FieldViolation::new("channel.default_push_type", format!("must be one of {}", PUSH_TYPES.join(", "))));
        }
        url_violation("channel.base_url", &self.base_url, &mut out);
        url_violation("channel.sandbox_base_url", &self.sandbox_base_url, &mut out);
        ca_violation("channel.ca_certificate", &self.ca_certificate, &mut out);
        if !(0..=64).contains(&self.connections) {
            out.push(FieldViolation::new("channel.connections", "must be 0 (default) to 64"));
        }
        out
    }
}

impl ChannelSettings for GcmChannel {
    const NAME: &'static str = "gcm";
    const LABEL: &'static str = "GCM";
    fn secrets(&mut self) -> Vec<(String, &mut String)> {
        vec![("service_account_json".to_string(), &mut self.service_account_json)]
    }
    fn flag(&mut self) {
        self.has_service_account_json = !self.service_account_json.is_empty();
    }
    fn set_modified(&mut self, at: String) {
        self.last_modified_date = at;
    }
    fn summary(&self) -> (bool, &str) {
        (self.enabled, &self.last_modified_date)
    }
    fn validate(&self) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        if self.service_account_json.is_empty() {
            out.push(FieldViolation::new("channel.service_account_json", "is required (the service account's JSON key)"));
        } else {
            match serde_json::from_str::<serde_json::Value>(&self.service_account_json) {
                Ok(v) => {
                    let given = |k: &str| v.get(k).and_then(|s| s.as_str()).is_some_and(|s| !s.is_empty());
                    for k in ["client_email", "private_key", "token_uri"] {
                        if !given(k) {
                            out.push(FieldViolation::new("channel.service_account_json", format!("has no {k}")));
                        }
                    }
                    if self.project_id.is_empty() && !given("project_id") {
                        out.push(FieldViolation::new("channel.project_id", "is required when the key file names none"));
                    }
                }
                Err(e) => out.push(FieldViolation::new("channel.service_account_json", format!("is not JSON: {e}"))),
            }
        }
        url_violation("channel.base_url", &self.base_url, &mut out);
        out
    }
}

impl ChannelSettings for SmsChannel {
    const NAME: &'static str = "sms";
    const LABEL: &'static str = "SMS";
    fn secrets(&mut self) -> Vec<(String, &mut String)> {
        vec![("auth_token".to_string(), &mut self.auth_token)]
    }
    fn flag(&mut self) {
        self.has_auth_token = !self.auth_token.is_empty();
    }
    fn set_modified(&mut self, at: String) {
        self.last_modified_date = at;
    }
    fn summary(&self) -> (bool, &str) {
        (self.enabled, &self.last_modified_date)
    }
    fn validate(&self) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        if self.base_url.is_empty() {
            out.push(FieldViolation::new("channel.base_url", "is required (the provider's API root)"));
        }
        url_violation("channel.base_url", &self.base_url, &mut out);
        if self.account_sid.is_empty() || self.account_sid.contains(['/', '?', '#']) {
            out.push(FieldViolation::new("channel.account_sid", "is required (no '/', '?' or '#')"));
        }
        if self.auth_token.is_empty() {
            out.push(FieldViolation::new("channel.auth_token", "is required"));
        }
        for (i, n) in self.origination_numbers.iter().enumerate() {
            if crate::domain::endpoint::validate_address(crate::proto::v1::ChannelType::Sms, n).is_err() {
                out.push(FieldViolation::new(
                    format!("channel.origination_numbers[{i}]"),
                    "must be an E.164 number (+ and 8 to 15 digits)",
                ));
            }
        }
        let sender_ok = self.sender_id.len() <= 11 && self.sender_id.chars().all(|c| c.is_ascii_alphanumeric());
        if !sender_ok {
            out.push(FieldViolation::new("channel.sender_id", "must be 1 to 11 letters or digits"));
        }
        url_violation("channel.status_callback_url", &self.status_callback_url, &mut out);
        out
    }
}

/// Fills the secrets `c` leaves empty from `old` (opened): an update that does not repeat a
/// secret keeps it.
pub fn keep_secrets<C: ChannelSettings>(c: &mut C, old: Option<C>) {
    if let Some(old) = old {
        c.keep_secrets_from(old);
    }
}

/// Why an app's stored channel settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("the {label} channel's {field}: {source}")]
    Sealed { label: &'static str, field: String, source: crate::secrets::SecretError },
    #[error("the stored {label} channel settings cannot be read")]
    Decode { label: &'static str },
    #[error("the {label} channel settings cannot be read from the store")]
    Store { label: &'static str },
}

/// Seals `c`'s secrets for `app`.
pub fn seal<C: ChannelSettings>(sealer: &Sealer, app: &str, c: &mut C) {
    for (field, v) in c.secrets() {
        *v = sealer.seal(&place(app, C::NAME, &field), v);
    }
}

/// Opens `c`'s sealed secrets.
pub fn open<C: ChannelSettings>(sealer: &Sealer, app: &str, c: &mut C) -> Result<(), SettingsError> {
    for (field, v) in c.secrets() {
        let place = place(app, C::NAME, &field);
        *v = sealer.open(&place, v).map_err(|source| SettingsError::Sealed { label: C::LABEL, field: field.to_string(), source })?;
    }
    Ok(())
}

/// An app's settings for channel `C` with secrets opened: `None` when it has none, `Err` when
/// they cannot be read or opened.
pub async fn load<C: ChannelSettings>(store: &dyn Store, sealer: &Sealer, app: &str) -> Option<Result<C, SettingsError>> {
    match load_checked::<C>(store, sealer, app).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(app, channel = C::LABEL, error = %e, "Channel settings cannot be read.");
            Some(Err(SettingsError::Store { label: C::LABEL }))
        }
    }
}

/// As [`load`], but a store that cannot be reached is an error of its own (the settings are
/// not known, rather than unusable).
pub async fn load_checked<C: ChannelSettings>(
    store: &dyn Store,
    sealer: &Sealer,
    app: &str,
) -> Result<Option<Result<C, SettingsError>>, crate::store::StoreError> {
    let raw = match store.get_channel(app, C::NAME).await {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(None),
        Err(e) if e.is_transient() => return Err(e),
        Err(e) => {
            tracing::warn!(app, channel = C::LABEL, error = %e, "Channel settings cannot be read.");
            return Ok(Some(Err(SettingsError::Store { label: C::LABEL })));
        }
    };
    let decoded = C::decode(raw.as_slice()).map_err(|_| SettingsError::Decode { label: C::LABEL });
    Ok(Some(decoded.and_then(|mut c| open(sealer, app, &mut c).map(|()| c))))
}
