//! Open and click tracking and hosted one-click unsubscribe: the signed URLs written into
//! emails and what the public listener checks when they come back.
//!
//! A URL carries everything the listener records, signed, so nothing is stored per link:
//!
//! - open pixel `{public_url}/o/{context}.{mac}`
//! - click `{public_url}/c/{context}.{link}.{mac}` (redirects to exactly `link`)
//! - unsubscribe `{public_url}/u/{context}.{mac}` (RFC 8058 one-click)
//!
//! `context` is base64url of the message's ids (app, message, endpoint, campaign, treatment,
//! campaign activity, journey, journey activity; Herald's hex ids as raw bytes, an activity id
//! without its repeated campaign id, about 70 bytes in all) and an expiry; `link` is base64url of the original
//! URL; `mac` the first 16 bytes of HMAC-SHA256 over the kind, the context and the link, under
//! a key derived from `secret_key` (the key that seals channel secrets), so daemons sharing a
//! store share it. A changed byte, a context joined to another message's link, or an expired
//! open or click URL does not verify: the listener answers 404 and records nothing, so it is
//! neither an open redirect nor a way to forge engagement. Unsubscribe URLs do not expire.

pub mod rewrite;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 (the `sha2` crate uses the CPU's SHA extensions where it has them: half the
/// time of ring's SHA-256 on this machine, and every link of every tracked message is one).
type HmacSha256 = Hmac<Sha256>;

/// Bytes of the HMAC kept in a URL.
const MAC_LEN: usize = 16;
const VERSION: u8 = 2;
/// Field markers in a context (below them, a short text's length).
const LONG_TEXT: u8 = 255;
const HEX_ID: u8 = 254;
/// The rest of an id that starts with the campaign id and `:` (a campaign activity).
const AFTER_CAMPAIGN: u8 = 253;

/// What a tracking URL is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Open,
    Click,
    Unsubscribe,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Open => b'o',
            Kind::Click => b'c',
            Kind::Unsubscribe => b'u',
        }
    }

    /// The URL path segment.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Open => "o",
            Kind::Click => "c",
            Kind::Unsubscribe => "u",
        }
    }
}

/// The message a tracking URL is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageRef {
    pub app_id: String,
    pub message_id: String,
    pub endpoint_id: String,
    pub campaign_id: String,
    pub treatment_id: i32,
    /// The campaign run (Pinpoint's campaign activity).
    pub campaign_activity_id: String,
    pub journey_id: String,
    pub journey_activity_id: String,
}

/// A verified tracking URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub kind: Kind,
    pub message: MessageRef,
    /// The original link (clicks only).
    pub link: String,
}

/// Signs and verifies tracking URLs.
pub struct Links {
    /// The MAC keyed once: each URL continues from a copy.
    key: HmacSha256,
    /// `public_url` without a trailing slash.
    base: String,
    /// How long open and click URLs stay valid.
    ttl_secs: u64,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").field("base", &self.base).field("ttl_secs", &self.ttl_secs).finish_non_exhaustive()
    }
}

/// Writes one id compactly (every link of a message carries them): Herald's 32-hex-digit ids
/// as their 16 bytes, other text with a length byte (or a marker and two length bytes).
fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if b.len() == 32 && b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)) {
        out.push(HEX_ID);
        let mut raw = [0u8; 16];
        if hex::decode_to_slice(b, &mut raw).is_ok() {
            out.extend_from_slice(&raw);
            return;
        }
        out.pop();
    }
    if b.len() < AFTER_CAMPAIGN as usize {
        out.push(b.len() as u8);
    } else {
        let n = b.len().min(u16::MAX as usize);
        out.push(LONG_TEXT);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&b[..n]);
        return;
    }
    out.extend_from_slice(b);
}

/// Writes an id that usually starts with `campaign:` (an activity id) as the rest alone.
fn put_after(out: &mut Vec<u8>, s: &str, campaign: &str) {
    match s.strip_prefix(campaign).and_then(|r| r.strip_prefix(':')).filter(|_| !campaign.is_empty()) {
        Some(rest) => {
            out.push(AFTER_CAMPAIGN);
            put_str(out, rest);
        }
        None => put_str(out, s),
    }
}

fn take_str(input: &mut &[u8]) -> Option<String> {
    let (&marker, rest) = input.split_first()?;
    let (text, rest) = match marker {
        HEX_ID => {
            let (raw, rest) = rest.split_first_chunk::<16>()?;
            *input = rest;
            return Some(hex::encode(raw));
        }
        LONG_TEXT => {
            let (len, rest) = rest.split_first_chunk::<2>()?;
            let n = u16::from_be_bytes(*len) as usize;
            (rest.get(..n)?, rest.get(n..)?)
        }
        AFTER_CAMPAIGN => return None,
        n => (rest.get(..n as usize)?, rest.get(n as usize..)?),
    };
    *input = rest;
    String::from_utf8(text.to_vec()).ok()
}

fn take_after(input: &mut &[u8], campaign: &str) -> Option<String> {
    match input.split_first() {
        Some((&AFTER_CAMPAIGN, rest)) => {
            *input = rest;
            Some(format!("{campaign}:{}", take_str(input)?))
        }
        _ => take_str(input),
    }
}

/// One message's signed URLs: its context encoded once, then a URL per link.
pub struct MessageLinks<'a> {
    links: &'a Links,
    context: Vec<u8>,
    context_b64: String,
    /// HMAC state after the click kind and the context: each link continues from a copy.
    click: HmacSha256,
}

impl MessageLinks<'_> {
    /// The open pixel's URL.
    pub fn open_url(&self) -> String {
        self.links.url(Kind::Open, &self.context_b64, &self.links.mac(Kind::Open, &self.context, b""), None)
    }

    /// The unsubscribe URL.
    pub fn unsubscribe_url(&self) -> String {
        self.links.url(Kind::Unsubscribe, &self.context_b64, &self.links.mac(Kind::Unsubscribe, &self.context, b""), None)
    }

    /// Writes the click URL for `link` into `out`.
    pub fn write_click_url(&self, link: &str, out: &mut String) {
        let mut ctx = self.click.clone();
        ctx.update(link.as_bytes());
        let tag = ctx.finalize().into_bytes();
        out.push_str(&self.links.base);
        out.push_str("/c/");
        out.push_str(&self.context_b64);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(link.as_bytes(), out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&tag[..MAC_LEN], out);
    }

    /// The length of the click URL for a link of `link_len` bytes (to size buffers once).
    pub fn click_url_len(&self, link_len: usize) -> usize {
        self.links.base.len() + 3 + self.context_b64.len() + 1 + link_len.div_ceil(3) * 4 + 1 + (MAC_LEN * 4).div_ceil(3)
    }

    /// Whether `url` is one of Herald's unsubscribe URLs.
    pub fn is_unsubscribe(&self, url: &str) -> bool {
        url.strip_prefix(self.links.base.as_str()).is_some_and(|rest| rest.starts_with("/u/"))
    }
}

impl Links {
    /// Links under `public_url`, signed with a key derived from the sealing key's bytes.
    pub fn new(secret: &[u8], public_url: &str, ttl_secs: u64) -> Self {
        // HKDF-style extraction: a key for this purpose alone.
        let mut purpose = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        purpose.update(b"herald tracking links v1");
        let derived = purpose.finalize().into_bytes();
        let key = HmacSha256::new_from_slice(&derived).expect("HMAC takes any key length");
        Self { key, base: public_url.trim_end_matches('/').to_string(), ttl_secs }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn mac(&self, kind: Kind, context: &[u8], link: &[u8]) -> [u8; MAC_LEN] {
        let mut ctx = self.key.clone();
        ctx.update(&[kind.byte()]);
        ctx.update(context);
        ctx.update(link);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&ctx.finalize().into_bytes()[..MAC_LEN]);
        out
    }

    fn url(&self, kind: Kind, context_b64: &str, mac: &[u8], link: Option<&str>) -> String {
        let mut out = String::with_capacity(self.base.len() + context_b64.len() + 40);
        out.push_str(&self.base);
        out.push('/');
        out.push_str(kind.path());
        out.push('/');
        out.push_str(context_b64);
        if let Some(l) = link {
            out.push('.');
            URL_SAFE_NO_PAD.encode_string(l.as_bytes(), &mut out);
        }
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(mac, &mut out);
        out
    }

    /// The signed URLs of one message, valid from `now` (unix seconds) for the configured time.
    pub fn message(&self, m: &MessageRef, now: u64) -> MessageLinks<'_> {
        let expires = now.saturating_add(self.ttl_secs).min(u32::MAX as u64) as u32;
        let mut context = Vec::with_capacity(64 + m.app_id.len() + m.endpoint_id.len() + m.campaign_id.len());
        context.push(VERSION);
        context.extend_from_slice(&expires.to_be_bytes());
        for s in [&m.app_id, &m.message_id, &m.endpoint_id, &m.campaign_id] {
            put_str(&mut context, s);
        }
        // Treatments are 0 to 4.
        context.push(m.treatment_id.clamp(0, 255) as u8);
        put_after(&mut context, &m.campaign_activity_id, &m.campaign_id);
        put_str(&mut context, &m.journey_id);
        put_after(&mut context, &m.journey_activity_id, &m.journey_id);
        let mut click = self.key.clone();
        click.update(&[Kind::Click.byte()]);
        click.update(&context);
        let context_b64 = URL_SAFE_NO_PAD.encode(&context);
        MessageLinks { links: self, context, context_b64, click }
    }

    /// Checks a token (the path after `/o/`, `/c/` or `/u/`) at `now`: the message and link
    /// it was made for, or `None` when it is altered, made for something else, or expired.
    pub fn verify(&self, kind: Kind, token: &str, now: u64) -> Option<Verified> {
        let mut parts = token.split('.');
        let context_b64 = parts.next()?;
        let link_b64 = if kind == Kind::Click { Some(parts.next()?) } else { None };
        let mac_b64 = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let context = URL_SAFE_NO_PAD.decode(context_b64).ok()?;
        let link = match link_b64 {
            Some(l) => URL_SAFE_NO_PAD.decode(l).ok()?,
            None => Vec::new(),
        };
        let mac = URL_SAFE_NO_PAD.decode(mac_b64).ok()?;
        let mut full = self.key.clone();
        full.update(&[kind.byte()]);
        full.update(&context);
        full.update(&link);
        let expected = full.finalize().into_bytes();
        // Constant time over the kept bytes.
        if !crate::secrets::constant_time_eq(&expected[..MAC_LEN], &mac) {
            return None;
        }
        let (&version, mut rest) = context.split_first()?;
        if version != VERSION {
            return None;
        }
        let (exp, after) = rest.split_first_chunk::<4>()?;
        let expires = u32::from_be_bytes(*exp) as u64;
        rest = after;
        if kind != Kind::Unsubscribe && now > expires {
            return None;
        }
        let app_id = take_str(&mut rest)?;
        let message_id = take_str(&mut rest)?;
        let endpoint_id = take_str(&mut rest)?;
        let campaign_id = take_str(&mut rest)?;
        let (&treatment, after) = rest.split_first()?;
        rest = after;
        let campaign_activity_id = take_after(&mut rest, &campaign_id)?;
        let journey_id = take_str(&mut rest)?;
        let journey_activity_id = take_after(&mut rest, &journey_id)?;
        if !rest.is_empty() {
            return None;
        }
        let message = MessageRef {
            app_id,
            message_id,
            endpoint_id,
            campaign_id,
            treatment_id: treatment as i32,
            campaign_activity_id,
            journey_id,
            journey_activity_id,
        };
        Some(Verified { kind, message, link: String::from_utf8(link).ok()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> MessageRef {
        MessageRef {
            app_id: "app1".into(),
            message_id: "m1".into(),
            endpoint_id: "ep1".into(),
            campaign_id: "c1".into(),
            treatment_id: 2,
            campaign_activity_id: "run1".into(),
            ..Default::default()
        }
    }

    fn token<'a>(url: &'a str, links: &Links, kind: Kind) -> &'a str {
        url.strip_prefix(links.base()).unwrap().strip_prefix(&format!("/{}/", kind.path())).unwrap()
    }

    #[test]
    fn contexts_are_compact_and_round_trip() {
        let links = Links::new(b"k", "https://t.example", 3600);
        let campaign = "fedcba9876543210fedcba9876543210".to_string();
        let herald_ids = MessageRef {
            app_id: "0123456789abcdef0123456789abcdef".into(),
            message_id: "6931c0de0123456789abcdef01234567".into(),
            endpoint_id: "user-42".into(),
            campaign_activity_id: format!("{campaign}:000003-2"),
            campaign_id: campaign,
            treatment_id: 2,
            ..Default::default()
        };
        let long_text = MessageRef {
            app_id: "A".repeat(300),
            message_id: "0123456789ABCDEF0123456789ABCDEF".into(),
            endpoint_id: String::new(),
            journey_id: "j1".into(),
            journey_activity_id: "j1:welcome".into(),
            campaign_activity_id: "not:the:campaign".into(),
            ..Default::default()
        };
        for m in [herald_ids.clone(), long_text] {
            let open = links.message(&m, 0).open_url();
            let token = open.strip_prefix("https://t.example/o/").unwrap();
            assert_eq!(links.verify(Kind::Open, token, 1).unwrap().message, m);
        }
        let context = links.message(&herald_ids, 0).context.len();
        assert!(context <= 80, "{context} bytes");
    }

    #[test]
    fn macs_are_hmac_sha256_as_before_so_sent_urls_keep_verifying() {
        // Computed independently with ring's HMAC (what earlier releases signed with).
        let secret = b"0123456789abcdef0123456789abcdef";
        let purpose = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let derived = ring::hmac::sign(&purpose, b"herald tracking links v1");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref());
        let links = Links::new(secret, "https://t.example", 3600);
        let m = links.message(&message(), 1_000);
        let mut click = String::new();
        m.write_click_url("https://shop.example/a", &mut click);
        assert!(m.click_url_len("https://shop.example/a".len()) >= click.len(), "{click}");
        let parts: Vec<&str> = token(&click, &links, Kind::Click).split('.').collect();
        let context = URL_SAFE_NO_PAD.decode(parts[0]).unwrap();
        let mut signed = vec![b'c'];
        signed.extend_from_slice(&context);
        signed.extend_from_slice(b"https://shop.example/a");
        let expected = ring::hmac::sign(&key, &signed);
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap(), &expected.as_ref()[..MAC_LEN]);
    }

    #[test]
    fn urls_verify_for_their_message_and_link_only() {
        let links = Links::new(b"0123456789abcdef0123456789abcdef", "https://t.example/", 3600);
        let m = links.message(&message(), 1_000);
        let mut click = String::new();
        m.write_click_url("https://shop.example/a?b=1&c=2", &mut click);
        assert!(click.starts_with("https://t.example/c/"), "{click}");
        let v = links.verify(Kind::Click, token(&click, &links, Kind::Click), 2_000).unwrap();
        assert_eq!(v.link, "https://shop.example/a?b=1&c=2");
        assert_eq!(v.message, message());
        let open = m.open_url();
        assert_eq!(links.verify(Kind::Open, token(&open, &links, Kind::Open), 2_000).unwrap().message.endpoint_id, "ep1");
        // Another kind, a changed byte, another link's part, or too late: refused.
        assert!(links.verify(Kind::Unsubscribe, token(&open, &links, Kind::Open), 2_000).is_none());
        let t = token(&click, &links, Kind::Click).to_string();
        let mut altered = t.clone().into_bytes();
        altered[3] = if altered[3] == b'A' { b'B' } else { b'A' };
        assert!(links.verify(Kind::Click, std::str::from_utf8(&altered).unwrap(), 2_000).is_none());
        let mut other = String::new();
        m.write_click_url("https://evil.example/", &mut other);
        let other_link = token(&other, &links, Kind::Click).split('.').nth(1).unwrap().to_string();
        let parts: Vec<&str> = t.split('.').collect();
        assert!(links.verify(Kind::Click, &format!("{}.{}.{}", parts[0], other_link, parts[2]), 2_000).is_none());
        assert!(links.verify(Kind::Click, &t, 1_000 + 3_601).is_none());
        // Unsubscribe URLs do not expire; another key verifies nothing.
        let unsub = m.unsubscribe_url();
        assert!(m.is_unsubscribe(&unsub));
        assert!(links.verify(Kind::Unsubscribe, token(&unsub, &links, Kind::Unsubscribe), u32::MAX as u64).is_some());
        let other_key = Links::new(b"another key", "https://t.example", 3600);
        assert!(other_key.verify(Kind::Click, &t, 2_000).is_none());
    }
}
