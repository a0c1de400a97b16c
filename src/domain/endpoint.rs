//! Endpoint rules with Pinpoint's semantics: validation of every field, how a write merges into
//! the stored endpoint, and the cohort an endpoint falls into.

use std::str::FromStr;

use super::{countries, FieldViolation};
use crate::proto::v1::{ChannelType, Endpoint, EndpointStatus, OptOut};

/// Most endpoints one user id may have ACTIVE at once.
pub const MAX_ENDPOINTS_PER_USER: usize = 15;
/// Longest attribute name, in characters.
pub const MAX_ATTRIBUTE_NAME: usize = 50;
/// Longest attribute value, in characters.
pub const MAX_ATTRIBUTE_VALUE: usize = 100;
/// Most attributes, user attributes and metrics one endpoint holds in all.
pub const MAX_ATTRIBUTES: usize = 250;
/// Largest encoded endpoint, in bytes.
pub const MAX_ENDPOINT_BYTES: usize = 15 * 1024;
/// Longest endpoint or user id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest push token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Characters Pinpoint does not allow in attribute names.
const FORBIDDEN_NAME_CHARS: &[char] = &['#', ':', '?', '\\', '/'];

/// The cohort (0..=99) of an endpoint id: FNV-1a (64-bit) of its bytes, modulo 100. Stable
/// across versions and machines, so treatments and holdouts never move an endpoint.
pub fn cohort_id(endpoint_id: &str) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in endpoint_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % 100) as i32
}

/// Native push channels: a user's 16th ACTIVE push endpoint retires the oldest push endpoint
/// rather than being refused.
pub fn is_push(channel: ChannelType) -> bool {
    matches!(
        channel,
        ChannelType::Apns
            | ChannelType::ApnsSandbox
            | ChannelType::ApnsVoip
            | ChannelType::ApnsVoipSandbox
            | ChannelType::Gcm
            | ChannelType::Baidu
            | ChannelType::Adm
            | ChannelType::Push
    )
}

/// Pinpoint's name for a channel (`EMAIL`, `APNS_SANDBOX`).
pub fn channel_name(channel: ChannelType) -> &'static str {
    channel.as_str_name().trim_start_matches("CHANNEL_TYPE_")
}

/// The channel for Pinpoint's name, case-insensitively.
pub fn parse_channel(name: &str) -> Option<ChannelType> {
    let upper = name.trim().to_ascii_uppercase();
    ChannelType::from_str_name(&format!("CHANNEL_TYPE_{upper}")).filter(|c| *c != ChannelType::Unspecified)
}

pub fn is_active(e: &Endpoint) -> bool {
    e.endpoint_status == EndpointStatus::Active as i32
}

/// What is wrong with an endpoint or user id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_BYTES} bytes")]
    TooLong,
    #[error("must not contain control characters")]
    Control,
}

/// Checks an endpoint or user id.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong);
    }
    if id.chars().any(char::is_control) {
        return Err(IdError::Control);
    }
    Ok(())
}

/// What is wrong with an address on its channel (each reads after "the address").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("is required")]
    Missing,
    #[error("is not a valid email address: {0}")]
    Email(String),
    #[error("must be an E.164 phone number: + and 7 to 15 digits, the first not 0")]
    Phone,
    #[error("must be an http or https URL")]
    NotHttp,
    #[error("must be an http or https URL: {0}")]
    Url(url::ParseError),
    #[error("needs a channel_type")]
    NoChannel,
    #[error("must be at most {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("must not contain whitespace or control characters")]
    Whitespace,
}

/// Whether `address` is a valid destination on `channel`.
pub fn validate_address(channel: ChannelType, address: &str) -> Result<(), AddressError> {
    if address.is_empty() {
        return Err(AddressError::Missing);
    }
    match channel {
        ChannelType::Email => {
            let opts = email_address::Options::default().without_display_text().without_domain_literal();
            match email_address::EmailAddress::parse_with_options(address, opts) {
                Ok(_) => Ok(()),
                Err(e) => Err(AddressError::Email(e.to_string())),
            }
        }
        ChannelType::Sms | ChannelType::Voice => {
            let digits = address.strip_prefix('+').unwrap_or("");
            let ok = (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
            if ok {
                Ok(())
            } else {
                Err(AddressError::Phone)
            }
        }
        // Any id the app's custom channel resolves (its delivery_url gets it), or a URL of the
        // endpoint's own, which then must be one Herald can POST to.
        ChannelType::Custom if address.contains("://") => validate_url(address),
        ChannelType::Unspecified => Err(AddressError::NoChannel),
        _ => {
            if address.len() > MAX_TOKEN_BYTES {
                Err(AddressError::TooLong)
            } else if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(AddressError::Whitespace)
            } else {
                Ok(())
            }
        }
    }
}

/// An http(s) URL with a host: where custom-channel messages can be POSTed.
pub fn validate_url(address: &str) -> Result<(), AddressError> {
    match url::Url::parse(address) {
        Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => Ok(()),
        Ok(_) => Err(AddressError::NotHttp),
        Err(e) => Err(AddressError::Url(e)),
    }
}

/// A custom endpoint's address that is a URL of its own (else the app's delivery_url takes it).
pub fn is_own_url(address: &str) -> bool {
    address.contains("://") && validate_url(address).is_ok()
}

fn validate_attribute_map<'a>(field: &str, attrs: impl Iterator<Item = (&'a String, &'a [String])>, out: &mut Vec<FieldViolation>) {
    for (name, values) in attrs {
        let path = format!("{field}[{name}]");
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_ATTRIBUTE_NAME {
            out.push(FieldViolation::new(&path, format!("attribute names must be 1 to {MAX_ATTRIBUTE_NAME} characters")));
        } else if name.contains(FORBIDDEN_NAME_CHARS) || name.chars().any(char::is_control) {
            out.push(FieldViolation::new(&path, "attribute names must not contain # : ? \\ / or control characters"));
        }
        if let Some(v) = values.iter().find(|v| v.chars().count() > MAX_ATTRIBUTE_VALUE) {
            out.push(FieldViolation::new(
                &path,
                format!(
                    "attribute values must be at most {MAX_ATTRIBUTE_VALUE} characters ('{}…' is longer)",
                    v.chars().take(20).collect::<String>()
                ),
            ));
        }
    }
}

/// Checks every field a write carries, on its own (before it merges into the stored endpoint).
/// Paths are relative to the endpoint (`address`, `location.country`).
pub fn validate_write(e: &Endpoint) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    if let Err(why) = validate_id(&e.id) {
        out.push(FieldViolation::new("id", why));
    }
    if ChannelType::try_from(e.channel_type).is_err() {
        out.push(FieldViolation::new("channel_type", format!("unknown channel type {}", e.channel_type)));
    }
    if EndpointStatus::try_from(e.endpoint_status).is_err() {
        out.push(FieldViolation::new("endpoint_status", format!("unknown endpoint status {}", e.endpoint_status)));
    }
    if OptOut::try_from(e.opt_out).is_err() {
        out.push(FieldViolation::new("opt_out", format!("unknown opt_out value {}", e.opt_out)));
    }
    // The address is checked against the channel after merging; here only its channel-free bounds.
    if e.address.len() > MAX_TOKEN_BYTES {
        out.push(FieldViolation::new("address", format!("must be at most {MAX_TOKEN_BYTES} bytes")));
    }
    validate_attribute_map("attributes", e.attributes.iter().map(|(k, v)| (k, v.values.as_slice())), &mut out);
    for (name, value) in &e.metrics {
        if !value.is_finite() {
            out.push(FieldViolation::new(format!("metrics[{name}]"), "must be a finite number"));
        }
        if name.is_empty() || name.chars().count() > MAX_ATTRIBUTE_NAME {
            out.push(FieldViolation::new(format!("metrics[{name}]"), format!("metric names must be 1 to {MAX_ATTRIBUTE_NAME} characters")));
        }
    }
    if let Some(loc) = &e.location {
        if !loc.country.is_empty() && !countries::is_alpha2(&loc.country.to_ascii_uppercase()) {
            out.push(FieldViolation::new("location.country", format!("'{}' is not an ISO 3166-1 alpha-2 country code", loc.country)));
        }
        if let Some(lat) = loc.latitude {
            if !(-90.0..=90.0).contains(&lat) {
                out.push(FieldViolation::new("location.latitude", "must be between -90 and 90"));
            }
        }
        if let Some(lon) = loc.longitude {
            if !(-180.0..=180.0).contains(&lon) {
                out.push(FieldViolation::new("location.longitude", "must be between -180 and 180"));
            }
        }
    }
    if let Some(d) = &e.demographic {
        if !d.timezone.is_empty() && chrono_tz::Tz::from_str(&d.timezone).is_err() {
            out.push(FieldViolation::new("demographic.timezone", format!("'{}' is not an IANA time zone name", d.timezone)));
        }
    }
    if let Some(u) = &e.user {
        if !u.user_id.is_empty() {
            if let Err(why) = validate_id(&u.user_id) {
                out.push(FieldViolation::new("user.user_id", why));
            }
        }
        validate_attribute_map("user.user_attributes", u.user_attributes.iter().map(|(k, v)| (k, v.values.as_slice())), &mut out);
    }
    if !e.effective_date.is_empty() && chrono::DateTime::parse_from_rfc3339(&e.effective_date).is_err() {
        out.push(FieldViolation::new("effective_date", "must be an ISO-8601 date and time with a UTC offset"));
    }
    out
}

/// Checks what only the merged endpoint can show: a channel and an address valid on it, the
/// attribute count and the encoded size.
pub fn validate_merged(e: &Endpoint) -> Vec<FieldViolation> {
    use prost::Message as _;
    let mut out = Vec::new();
    let channel = ChannelType::try_from(e.channel_type).unwrap_or(ChannelType::Unspecified);
    if channel == ChannelType::Unspecified {
        out.push(FieldViolation::new("channel_type", "is required for a new endpoint"));
    } else if let Err(why) = validate_address(channel, &e.address) {
        out.push(FieldViolation::new("address", why));
    }
    let count = e.attributes.len() + e.metrics.len() + e.user.as_ref().map_or(0, |u| u.user_attributes.len());
    if count > MAX_ATTRIBUTES {
        out.push(FieldViolation::new(
            "attributes",
            format!("an endpoint holds at most {MAX_ATTRIBUTES} attributes, user attributes and metrics in all ({count} given)"),
        ));
    }
    let size = e.encoded_len();
    if size > MAX_ENDPOINT_BYTES {
        out.push(FieldViolation::new("", format!("an endpoint is at most {MAX_ENDPOINT_BYTES} bytes ({size} given)")));
    }
    out
}

/// Merges a write into the stored endpoint (or a new one), as Pinpoint's UpdateEndpoint does:
/// fields the write carries replace stored ones, attributes are replaced per name (a name with
/// no values is removed), and the endpoint becomes ACTIVE unless the write says otherwise.
pub fn merge(old: Option<Endpoint>, write: &Endpoint, app_id: &str, now: &str, request_id: &str) -> Endpoint {
    let mut e = match old {
        Some(old) => old,
        None => Endpoint {
            id: write.id.clone(),
            application_id: app_id.to_string(),
            cohort_id: cohort_id(&write.id),
            creation_date: now.to_string(),
            opt_out: OptOut::None as i32,
            ..Default::default()
        },
    };
    if write.channel_type != 0 {
        e.channel_type = write.channel_type;
    }
    if !write.address.is_empty() {
        e.address = write.address.clone();
    }
    e.endpoint_status = if write.endpoint_status != 0 { write.endpoint_status } else { EndpointStatus::Active as i32 };
    if write.opt_out != 0 {
        e.opt_out = write.opt_out;
    }
    for (name, values) in &write.attributes {
        if values.values.is_empty() {
            e.attributes.remove(name);
        } else {
            e.attributes.insert(name.clone(), values.clone());
        }
    }
    for (name, value) in &write.metrics {
        e.metrics.insert(name.clone(), *value);
    }
    if let Some(w) = &write.location {
        let l = e.location.get_or_insert_with(Default::default);
        set_if_given(&mut l.city, &w.city);
        if !w.country.is_empty() {
            l.country = w.country.to_ascii_uppercase();
        }
        if w.latitude.is_some() {
            l.latitude = w.latitude;
        }
        if w.longitude.is_some() {
            l.longitude = w.longitude;
        }
        set_if_given(&mut l.postal_code, &w.postal_code);
        set_if_given(&mut l.region, &w.region);
    }
    if let Some(w) = &write.demographic {
        let d = e.demographic.get_or_insert_with(Default::default);
        set_if_given(&mut d.app_version, &w.app_version);
        set_if_given(&mut d.locale, &w.locale);
        set_if_given(&mut d.make, &w.make);
        set_if_given(&mut d.model, &w.model);
        set_if_given(&mut d.model_version, &w.model_version);
        set_if_given(&mut d.platform, &w.platform);
        set_if_given(&mut d.platform_version, &w.platform_version);
        set_if_given(&mut d.timezone, &w.timezone);
    }
    if let Some(w) = &write.user {
        let u = e.user.get_or_insert_with(Default::default);
        set_if_given(&mut u.user_id, &w.user_id);
        for (name, values) in &w.user_attributes {
            if values.values.is_empty() {
                u.user_attributes.remove(name);
            } else {
                u.user_attributes.insert(name.clone(), values.clone());
            }
        }
    }
    e.effective_date = if write.effective_date.is_empty() { now.to_string() } else { write.effective_date.clone() };
    touch(&mut e, &write.last_activity_date);
    e.request_id = if write.request_id.is_empty() { request_id.to_string() } else { write.request_id.clone() };
    e
}

/// Moves an endpoint's last activity forward to `at` (ISO-8601; never backward).
pub fn touch(e: &mut Endpoint, at: &str) {
    if !at.is_empty() && later(at, &e.last_activity_date) {
        e.last_activity_date = at.to_string();
    }
}

/// Whether instant `a` is after `b` (an empty or unreadable `b` is before everything).
fn later(a: &str, b: &str) -> bool {
    use crate::segments::rule::parse_instant;
    match (parse_instant(a), parse_instant(b)) {
        (Some(a), Some(b)) => a > b,
        (Some(_), None) => true,
        _ => false,
    }
}

fn set_if_given(slot: &mut String, given: &str) {
    if !given.is_empty() {
        *slot = given.to_string();
    }
}

/// The user id of an endpoint, if it has one.
pub fn user_id(e: &Endpoint) -> Option<&str> {
    e.user.as_ref().map(|u| u.user_id.as_str()).filter(|u| !u.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{AttributeValues, EndpointDemographic, EndpointLocation};

    fn email(id: &str, addr: &str) -> Endpoint {
        Endpoint { id: id.into(), channel_type: ChannelType::Email as i32, address: addr.into(), ..Default::default() }
    }

    #[test]
    fn cohorts_are_stable_and_spread() {
        assert_eq!(cohort_id("endpoint-1"), cohort_id("endpoint-1"));
        let mut seen = [0u32; 100];
        for i in 0..100_000 {
            seen[cohort_id(&format!("ep-{i}")) as usize] += 1;
        }
        // Each cohort holds about 1 % of ids.
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        // Pinned values: changing the hash would move every endpoint's cohort.
        assert_eq!(cohort_id(""), (0xcbf2_9ce4_8422_2325u64 % 100) as i32);
    }

    #[test]
    fn addresses_are_checked_per_channel() {
        assert!(validate_address(ChannelType::Email, "ana@example.com").is_ok());
        assert!(validate_address(ChannelType::Email, "Ana <ana@example.com>").is_err());
        assert!(validate_address(ChannelType::Email, "not-an-address").is_err());
        assert!(validate_address(ChannelType::Sms, "+14155550100").is_ok());
        assert!(validate_address(ChannelType::Sms, "4155550100").is_err());
        assert!(validate_address(ChannelType::Voice, "+0123456789").is_err());
        assert!(validate_address(ChannelType::Sms, "+1234567890123456").is_err());
        assert!(validate_address(ChannelType::Custom, "https://hooks.example.com/x").is_ok());
        assert!(validate_address(ChannelType::Custom, "ftp://example.com").is_err());
        assert!(validate_address(ChannelType::Custom, "crm-contact-4711").is_ok(), "an id the custom channel resolves");
        assert!(validate_address(ChannelType::Custom, "user 1").is_err());
        assert!(validate_address(ChannelType::Custom, &"x".repeat(MAX_TOKEN_BYTES + 1)).is_err());
        assert!(is_own_url("https://hooks.example.com/x") && !is_own_url("crm-contact-4711"));
        assert!(validate_url("crm-contact-4711").is_err());
        assert!(validate_address(ChannelType::Apns, "a1b2c3").is_ok());
        assert!(validate_address(ChannelType::Gcm, "tok en").is_err());
        assert!(validate_address(ChannelType::Gcm, &"x".repeat(MAX_TOKEN_BYTES + 1)).is_err());
        assert!(validate_address(ChannelType::Gcm, "").is_err());
    }

    #[test]
    fn writes_report_every_bad_field() {
        let mut e = email("", "ana@example.com");
        e.location = Some(EndpointLocation { country: "XX".into(), latitude: Some(91.0), ..Default::default() });
        e.demographic = Some(EndpointDemographic { timezone: "Mars/Olympus".into(), ..Default::default() });
        e.attributes.insert("a/b".into(), AttributeValues { values: vec!["v".into()] });
        e.attributes.insert("x".repeat(51), AttributeValues { values: vec!["y".repeat(101)] });
        e.effective_date = "yesterday".into();
        let fields: Vec<_> = validate_write(&e).into_iter().map(|v| v.field).collect();
        for f in ["id", "location.country", "location.latitude", "demographic.timezone", "attributes[a/b]", "effective_date"] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
        assert_eq!(fields.iter().filter(|f| f.starts_with("attributes[xxx")).count(), 2);
        let mut ok = email("e1", "ana@example.com");
        ok.location = Some(EndpointLocation { country: "us".into(), ..Default::default() });
        ok.demographic = Some(EndpointDemographic { timezone: "America/New_York".into(), ..Default::default() });
        assert!(validate_write(&ok).is_empty());
    }

    #[test]
    fn merge_keeps_what_the_write_leaves_out() {
        let mut first = email("e1", "ana@example.com");
        first.attributes.insert("Plan".into(), AttributeValues { values: vec!["Pro".into()] });
        first.attributes.insert("Team".into(), AttributeValues { values: vec!["A".into()] });
        let stored = merge(None, &first, "app", "2026-01-01T00:00:00.000Z", "r1");
        assert_eq!(stored.creation_date, "2026-01-01T00:00:00.000Z");
        assert_eq!(stored.endpoint_status, EndpointStatus::Active as i32);
        assert_eq!(stored.opt_out, OptOut::None as i32);
        assert_eq!(stored.cohort_id, cohort_id("e1"));

        let mut second = Endpoint { id: "e1".into(), ..Default::default() };
        second.attributes.insert("Team".into(), AttributeValues { values: vec![] });
        second.attributes.insert("Seats".into(), AttributeValues { values: vec!["3".into()] });
        second.location = Some(EndpointLocation { country: "de".into(), ..Default::default() });
        let merged = merge(Some(stored.clone()), &second, "app", "2026-02-01T00:00:00.000Z", "r2");
        assert_eq!(merged.address, "ana@example.com");
        assert_eq!(merged.channel_type, ChannelType::Email as i32);
        assert_eq!(merged.creation_date, "2026-01-01T00:00:00.000Z");
        assert_eq!(merged.effective_date, "2026-02-01T00:00:00.000Z");
        assert!(merged.attributes.contains_key("Plan") && merged.attributes.contains_key("Seats"));
        assert!(!merged.attributes.contains_key("Team"));
        assert_eq!(merged.location.unwrap().country, "DE");
    }

    #[test]
    fn merged_endpoints_need_a_channel_and_fit_the_limits() {
        let e = merge(None, &Endpoint { id: "e".into(), address: "x@y.z".into(), ..Default::default() }, "a", "t", "r");
        assert_eq!(validate_merged(&e)[0].field, "channel_type");
        let mut big = email("e", "ana@example.com");
        for i in 0..251 {
            big.metrics.insert(format!("m{i}"), 1.0);
        }
        assert!(validate_merged(&big).iter().any(|v| v.field == "attributes"));
        let mut huge = email("e", "ana@example.com");
        for i in 0..200 {
            huge.attributes.insert(format!("a{i}"), AttributeValues { values: vec!["v".repeat(100)] });
        }
        assert!(validate_merged(&huge).iter().any(|v| v.description.contains("bytes")));
    }

    #[test]
    fn channel_names_round_trip() {
        assert_eq!(channel_name(ChannelType::ApnsSandbox), "APNS_SANDBOX");
        assert_eq!(parse_channel("apns_sandbox"), Some(ChannelType::ApnsSandbox));
        assert_eq!(parse_channel("EMAIL"), Some(ChannelType::Email));
        assert_eq!(parse_channel("UNSPECIFIED"), None);
        assert_eq!(parse_channel("FAX"), None);
    }
}
