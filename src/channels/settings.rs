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
    /// The secret fields: (name, value).
    fn secrets(&mut self) -> Vec<(&'static str, &mut String)>;
    /// Sets the `has_*` flags from the secrets present.
    fn flag(&mut self);
    fn set_modified(&mut self, at: String);
    /// Checks settings about to be stored (secrets merged in, still plain).
    fn validate(&self) -> Vec<FieldViolation>;

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
    fn secrets(&mut self) -> Vec<(&'static str, &mut String)> {
        vec![("password", &mut self.password)]
    }
    fn flag(&mut self) {
        self.has_password = !self.password.is_empty();
    }
    fn set_modified(&mut self, at: String) {
        self.last_modified_date = at;
    }
    fn validate(&self) -> Vec<FieldViolation> {
        let c = self;
        let mut out = Vec::new();
        if !c.from_address.is_empty() && crate::render::mime::Sender::new(&c.from_address, None).is_err() {
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
        out
    }
}

impl ChannelSettings for CustomChannel {
    const NAME: &'static str = "custom";
    const LABEL: &'static str = "custom";
    fn secrets(&mut self) -> Vec<(&'static str, &mut String)> {
        vec![("signing_secret", &mut self.signing_secret)]
    }
    fn flag(&mut self) {
        self.has_signing_secret = !self.signing_secret.is_empty();
    }
    fn set_modified(&mut self, at: String) {
        self.last_modified_date = at;
    }
    fn validate(&self) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        if !self.delivery_url.is_empty() {
            if let Err(why) = crate::domain::endpoint::validate_address(crate::proto::v1::ChannelType::Custom, &self.delivery_url) {
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
    fn secrets(&mut self) -> Vec<(&'static str, &mut String)> {
        vec![("token_key", &mut self.token_key), ("private_key", &mut self.private_key)]
    }
    fn flag(&mut self) {
        self.has_token_key = !self.token_key.is_empty();
        self.has_private_key = !self.private_key.is_empty();
    }
    fn set_modified(&mut self, at: String) {
        self.last_modified_date = at;
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
                out.push(FieldViolation::new("channel.token_key", e));
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
    fn secrets(&mut self) -> Vec<(&'static str, &mut String)> {
        vec![("service_account_json", &mut self.service_account_json)]
    }
    fn flag(&mut self) {
        self.has_service_account_json = !self.service_account_json.is_empty();
    }
    fn set_modified(&mut self, at: String) {
        self.last_modified_date = at;
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
    fn secrets(&mut self) -> Vec<(&'static str, &mut String)> {
        vec![("auth_token", &mut self.auth_token)]
    }
    fn flag(&mut self) {
        self.has_auth_token = !self.auth_token.is_empty();
    }
    fn set_modified(&mut self, at: String) {
        self.last_modified_date = at;
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
    let mut old = old.unwrap_or_default();
    let kept: Vec<String> = old.secrets().into_iter().map(|(_, v)| std::mem::take(v)).collect();
    for ((_, v), kept) in c.secrets().into_iter().zip(kept) {
        if v.is_empty() {
            *v = kept;
        }
    }
}

/// Seals `c`'s secrets for `app`.
pub fn seal<C: ChannelSettings>(sealer: &Sealer, app: &str, c: &mut C) {
    for (field, v) in c.secrets() {
        *v = sealer.seal(&place(app, C::NAME, field), v);
    }
}

/// Opens `c`'s sealed secrets.
pub fn open<C: ChannelSettings>(sealer: &Sealer, app: &str, c: &mut C) -> Result<(), String> {
    for (field, v) in c.secrets() {
        *v = sealer.open(&place(app, C::NAME, field), v).map_err(|e| format!("the {} channel's {field}: {e}", C::LABEL))?;
    }
    Ok(())
}

/// An app's settings for channel `C` with secrets opened: `None` when it has none, `Err` when
/// they cannot be read or opened.
pub async fn load<C: ChannelSettings>(store: &dyn Store, sealer: &Sealer, app: &str) -> Option<Result<C, String>> {
    let raw = match store.get_channel(app, C::NAME).await {
        Ok(r) => r?,
        Err(e) => return Some(Err(e.to_string())),
    };
    Some(C::decode(raw.as_slice()).map_err(|e| e.to_string()).and_then(|mut c| open(sealer, app, &mut c).map(|()| c)))
}
