//! DKIM signatures (RFC 6376) for outgoing mail: relaxed/relaxed canonicalization, SHA-256,
//! RSA (`rsa-sha256`, PKCS#1 v1.5) or Ed25519 (`ed25519-sha256`, RFC 8463), signed with ring.
//! An app's email channel holds one key per sending domain; a message is signed with the key
//! of the closest domain to its From address (the domain itself, else its nearest parent), so
//! the signature aligns with From as DMARC asks.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _, RsaKeyPair, RSA_PKCS1_SHA256};
use sha2::{Digest, Sha256};

/// Headers signed when present, in this order (RFC 6376 §5.4.1's recommendation, plus the
/// MIME and list headers a receiver shows or acts on).
const SIGNED_HEADERS: [&str; 14] = [
    "from",
    "reply-to",
    "subject",
    "date",
    "to",
    "cc",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
];

enum Pair {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// One domain's key.
pub struct DkimKey {
    domain: String,
    selector: String,
    pair: Pair,
}

/// What is wrong with a DKIM private key (each reads after "the key").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DkimError {
    #[error("is not a PEM private key (-----BEGIN PRIVATE KEY----- or RSA PRIVATE KEY)")]
    NotPem,
    #[error("is a {0}-bit RSA key; use 2048 to 4096 bits")]
    RsaSize(usize),
    #[error("is not a usable RSA key: {0}")]
    Rsa(String),
    #[error("is neither an RSA nor an Ed25519 key")]
    Unknown,
    #[error("is not an RSA or Ed25519 key")]
    Kind,
}

impl DkimKey {
    /// From a PEM private key: RSA (PKCS#1 or PKCS#8, 2048 to 4096 bits) or Ed25519 (PKCS#8).
    pub fn from_pem(domain: &str, selector: &str, pem: &str) -> Result<Self, DkimError> {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::PrivateKeyDer;
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| DkimError::NotPem)?;
        let rsa_bits = |pair: RsaKeyPair| {
            let bits = pair.public().modulus_len() * 8;
            if (2048..=4096).contains(&bits) {
                Ok(Pair::Rsa(pair))
            } else {
                Err(DkimError::RsaSize(bits))
            }
        };
        let pair = match &der {
            PrivateKeyDer::Pkcs1(k) => rsa_bits(RsaKeyPair::from_der(k.secret_pkcs1_der()).map_err(|e| DkimError::Rsa(e.to_string()))?)?,
            PrivateKeyDer::Pkcs8(k) => match RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()) {
                Ok(pair) => rsa_bits(pair)?,
                Err(_) => Pair::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(k.secret_pkcs8_der()).map_err(|_| DkimError::Unknown)?),
            },
            _ => return Err(DkimError::Kind),
        };
        Ok(Self { domain: domain.trim_end_matches('.').to_ascii_lowercase(), selector: selector.to_string(), pair })
    }

    /// `rsa-sha256` or `ed25519-sha256`.
    pub fn algorithm(&self) -> &'static str {
        match self.pair {
            Pair::Rsa(_) => "rsa-sha256",
            Pair::Ed25519(_) => "ed25519-sha256",
        }
    }

    /// The TXT record that publishes the public key: its name and value.
    pub fn dns_record(&self) -> (String, String) {
        let b64 = base64::engine::general_purpose::STANDARD;
        let (k, p) = match &self.pair {
            Pair::Rsa(pair) => ("rsa", b64.encode(rsa_spki(pair.public().as_ref()))),
            Pair::Ed25519(pair) => ("ed25519", b64.encode(pair.public_key().as_ref())),
        };
        (format!("{}._domainkey.{}", self.selector, self.domain), format!("v=DKIM1; k={k}; p={p}"))
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        match &self.pair {
            Pair::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), data, &mut sig).expect("RSA signing");
                sig
            }
            // RFC 8463: PureEdDSA over the SHA-256 hash of the data.
            Pair::Ed25519(pair) => pair.sign(&Sha256::digest(data)).as_ref().to_vec(),
        }
    }
}

/// An app's DKIM keys.
pub struct DkimSigner {
    keys: Vec<DkimKey>,
}

impl DkimSigner {
    pub fn new(keys: Vec<DkimKey>) -> Self {
        Self { keys }
    }

    /// The key for mail from `address`: the longest key domain that is the address's domain
    /// or a parent of it.
    pub fn key_for(&self, address: &str) -> Option<&DkimKey> {
        let domain = address.rsplit_once('@').map_or(address, |(_, d)| d).trim_end_matches('>').to_ascii_lowercase();
        self.keys.iter().filter(|k| super::within_domain(&domain, &k.domain)).max_by_key(|k| k.domain.len())
    }

    /// `message` (headers, blank line, body) with a DKIM-Signature header in front, when a key
    /// covers `from`; `None` when none does.
    pub fn sign(&self, from: &str, message: &[u8], now: i64) -> Option<Vec<u8>> {
        let key = self.key_for(from)?;
        Some(sign_with(key, message, now))
    }
}

/// `message` signed with `key` at unix time `now`.
pub fn sign_with(key: &DkimKey, message: &[u8], now: i64) -> Vec<u8> {
    let (headers, body) = split(message);
    let b64 = base64::engine::general_purpose::STANDARD;
    let body_hash = b64.encode(Sha256::digest(relaxed_body(body)));
    // Which instances are signed: for a name listed once, its last instance (RFC 6376 §5.4.2).
    let mut signed: Vec<(&str, &[u8])> = Vec::new();
    for name in SIGNED_HEADERS {
        if let Some(h) = headers.iter().rev().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            signed.push((name, h.1));
        }
    }
    let names: Vec<&str> = signed.iter().map(|(n, _)| *n).collect();
    let field = format!(
        "DKIM-Signature: v=1; a={}; c=relaxed/relaxed; d={}; s={};\r\n\tt={}; h={};\r\n\tbh={};\r\n\tb=",
        key.algorithm(),
        key.domain,
        key.selector,
        now,
        names.join(":"),
        body_hash
    );
    let mut data = Vec::with_capacity(1024);
    for (_, raw) in &signed {
        relaxed_header(raw, &mut data);
        data.extend_from_slice(b"\r\n");
    }
    relaxed_header(field.as_bytes(), &mut data);
    let signature = b64.encode(key.sign(&data));
    let mut out = Vec::with_capacity(field.len() + signature.len() + 8 + message.len());
    out.extend_from_slice(field.as_bytes());
    // Folded every 72 characters; whitespace in b= is ignored by verifiers.
    for (i, chunk) in signature.as_bytes().chunks(72).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n\t");
        }
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(message);
    out
}

/// The header fields (name, whole raw field with its continuation lines, without the final
/// line end) and the body.
fn split(message: &[u8]) -> (Vec<(&str, &[u8])>, &[u8]) {
    let mut fields = Vec::new();
    let (mut pos, mut field_start, mut field_end) = (0, None, 0);
    while pos < message.len() {
        let next = memchr::memchr(b'\n', &message[pos..]).map_or(message.len(), |i| pos + i + 1);
        let line = &message[pos..next];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if line.is_empty() || !continuation {
            if let Some(s) = field_start.take() {
                push_field(&message[s..field_end], &mut fields);
            }
        }
        if line.is_empty() {
            return (fields, &message[next..]);
        }
        if !continuation {
            field_start = Some(pos);
        }
        field_end = pos + line.len();
        pos = next;
    }
    if let Some(s) = field_start {
        push_field(&message[s..field_end], &mut fields);
    }
    (fields, &[])
}

fn push_field<'a>(raw: &'a [u8], out: &mut Vec<(&'a str, &'a [u8])>) {
    if let Some(colon) = memchr::memchr(b':', raw) {
        if let Ok(name) = std::str::from_utf8(&raw[..colon]) {
            out.push((name.trim(), raw));
        }
    }
}

/// Relaxed header canonicalization (RFC 6376 §3.4.2): the name lowercased, continuation lines
/// unfolded, runs of whitespace one space, none around the colon or at the end.
fn relaxed_header(raw: &[u8], out: &mut Vec<u8>) {
    let colon = memchr::memchr(b':', raw).unwrap_or(raw.len());
    out.extend(raw[..colon].iter().filter(|b| !b.is_ascii_whitespace()).map(u8::to_ascii_lowercase));
    out.push(b':');
    let value = raw.get(colon + 1..).unwrap_or(&[]);
    let mut space = false;
    let mut started = false;
    for &b in value {
        match b {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => space = true,
            _ => {
                if space && started {
                    out.push(b' ');
                }
                space = false;
                started = true;
                out.push(b);
            }
        }
    }
}

/// Relaxed body canonicalization (RFC 6376 §3.4.4): whitespace runs one space, none at line
/// ends, no empty lines at the end, CRLF line ends (bare LF counts as a line end, as the SMTP
/// session sends it).
fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut pending_empty = 0usize;
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut canon = Vec::with_capacity(line.len());
        let mut space = false;
        for &b in line {
            if b == b' ' || b == b'\t' {
                space = true;
            } else {
                if space {
                    canon.push(b' ');
                }
                space = false;
                canon.push(b);
            }
        }
        if canon.is_empty() {
            pending_empty += 1;
        } else {
            for _ in 0..pending_empty {
                out.extend_from_slice(b"\r\n");
            }
            pending_empty = 0;
            out.extend_from_slice(&canon);
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// An RSA public key (PKCS#1 RSAPublicKey DER) in a SubjectPublicKeyInfo, the form DKIM
/// records publish (what `openssl rsa -pubout` prints).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    fn der(tag: u8, content: &[u8], out: &mut Vec<u8>) {
        out.push(tag);
        let n = content.len();
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let bytes: Vec<u8> = n.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(content);
    }
    // SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
    const ALGORITHM: [u8; 15] = [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    let mut inner = ALGORITHM.to_vec();
    der(0x03, &bits, &mut inner);
    let mut out = Vec::new();
    der(0x30, &inner, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxed_body_follows_rfc6376() {
        // RFC 6376 §3.4.6's example body.
        assert_eq!(relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n"), b" C\r\nD E\r\n");
        assert_eq!(relaxed_body(b""), b"");
        assert_eq!(relaxed_body(b"\r\n\r\n"), b"");
        assert_eq!(relaxed_body(b"no line end"), b"no line end\r\n");
        assert_eq!(relaxed_body(b"a\nb\n"), b"a\r\nb\r\n");
    }

    #[test]
    fn relaxed_headers_follow_rfc6376() {
        // RFC 6376 §3.4.6's example headers.
        let mut out = Vec::new();
        relaxed_header(b"A: X", &mut out);
        assert_eq!(out, b"a:X");
        out.clear();
        relaxed_header(b"B : Y\t\r\n\tZ  ", &mut out);
        assert_eq!(out, b"b:Y Z");
    }

    #[test]
    fn headers_and_body_split_with_folding() {
        let m = b"From: a@b.example\r\nSubject: one\r\n two\r\n\r\nbody\r\n";
        let (h, body) = split(m);
        assert_eq!(h.len(), 2);
        assert_eq!(h[1], ("Subject", &b"Subject: one\r\n two"[..]));
        assert_eq!(body, b"body\r\n");
    }

    #[test]
    fn keys_cover_their_domain_and_its_subdomains() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let text = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        );
        let signer = DkimSigner::new(vec![
            DkimKey::from_pem("example.com", "s1", &text).unwrap(),
            DkimKey::from_pem("mail.example.com", "s2", &text).unwrap(),
        ]);
        assert_eq!(signer.key_for("a@example.com").unwrap().selector, "s1");
        assert_eq!(signer.key_for("a@news.example.com").unwrap().selector, "s1");
        assert_eq!(signer.key_for("a@x.mail.example.com").unwrap().selector, "s2");
        assert!(signer.key_for("a@badexample.com").is_none());
        assert!(signer.key_for("a@other.org").is_none());
        let k = signer.key_for("a@example.com").unwrap();
        assert_eq!(k.algorithm(), "ed25519-sha256");
        assert_eq!(k.dns_record().0, "s1._domainkey.example.com");
        let signed = signer.sign("a@example.com", b"From: a@example.com\r\n\r\nhi\r\n", 1_700_000_000).unwrap();
        let text = String::from_utf8(signed).unwrap();
        assert!(text.starts_with("DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.com; s=s1;"), "{text}");
        assert!(text.ends_with("\r\nFrom: a@example.com\r\n\r\nhi\r\n"));
    }
}
