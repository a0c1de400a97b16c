//! AWS Signature Version 4, as the AWS SDKs sign Pinpoint requests: the verifier the REST door
//! runs on every request, and the signer the load test and the tests use.
//!
//! The canonical request is rebuilt from what arrived (method, the path as sent, encoded once
//! more as every service but S3 expects, the query sorted and encoded as RFC 3986 says, the
//! signed headers, the body's SHA-256) and signed with the secret of the access key the
//! `Credential` names; the signatures are compared in constant time. A request dated more
//! than five minutes from the daemon's clock is refused, as AWS refuses it.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The signing name of Pinpoint's API (`mobiletargeting`), whatever the region.
pub const SERVICE: &str = "mobiletargeting";
/// How far a request's date may be from the daemon's clock.
pub const MAX_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// Access key id → secret access key.
#[derive(Clone, Default)]
pub struct Credentials {
    secrets: HashMap<String, String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("access_key_ids", &self.secrets.keys().collect::<Vec<_>>()).finish()
    }
}

impl Credentials {
    /// From `ACCESS_KEY_ID:SECRET` pairs.
    pub fn parse<S: AsRef<str>>(pairs: &[S]) -> Result<Self, CredentialError> {
        let mut secrets = HashMap::new();
        for (i, pair) in pairs.iter().enumerate() {
            let (id, secret) = pair.as_ref().split_once(':').ok_or(CredentialError::Shape(i))?;
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(CredentialError::KeyId(i));
            }
            if secret.len() < 16 {
                return Err(CredentialError::Short(i, id.to_string()));
            }
            if secrets.insert(id.to_string(), secret.to_string()).is_some() {
                return Err(CredentialError::Twice(i, id.to_string()));
            }
        }
        Ok(Self { secrets })
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

/// Why a configured credential is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("sigv4_credentials[{0}] must be ACCESS_KEY_ID:SECRET")]
    Shape(usize),
    #[error("sigv4_credentials[{0}]: the access key id must be letters and digits")]
    KeyId(usize),
    #[error("sigv4_credentials[{0}] ({1}): the secret must be at least 16 characters")]
    Short(usize, String),
    #[error("sigv4_credentials[{0}]: access key id {1} is given twice")]
    Twice(usize, String),
}

/// Why a request's signature was refused, with the error code the AWS SDKs expect.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("Missing Authentication Token")]
    Missing,
    #[error("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters ({0})")]
    Malformed(String),
    #[error("Only AWS4-HMAC-SHA256 signatures are accepted")]
    Algorithm,
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    #[error("Credential should be scoped to correct service: '{SERVICE}'.")]
    WrongService,
    #[error("Signature expired: {given} is now earlier than {limit} ({now} - 5 min.)")]
    Expired { given: String, limit: String, now: String },
    #[error("Signature not yet current: {given} is still later than {limit} ({now} + 5 min.)")]
    Future { given: String, limit: String, now: String },
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
    )]
    Mismatch,
}

impl AuthError {
    /// The `x-amzn-ErrorType` the SDKs read.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::UnknownKey => "UnrecognizedClientException",
            AuthError::Malformed(_) => "IncompleteSignatureException",
            _ => "InvalidSignatureException",
        }
    }
}

/// What a signature covers.
pub struct Signed<'a> {
    pub method: &'a str,
    /// The path exactly as sent (percent-encoded once).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// (lower-case name, value) of every header.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, AuthError> {
    let rest = value.strip_prefix(ALGORITHM).ok_or(AuthError::Algorithm)?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(AuthError::Malformed("a parameter is missing".into()));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope[..] else {
        return Err(AuthError::Malformed("Credential must be KEY/DATE/REGION/SERVICE/aws4_request".into()));
    };
    Ok(Authorization { access_key, date, region, service, signed_headers: signed.split(';').collect(), signature })
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Checks a request's signature; answers the access key id that signed it.
pub fn verify(credentials: &Credentials, request: &Signed<'_>, now: DateTime<Utc>) -> Result<String, AuthError> {
    let authorization = header(request.headers, "authorization").ok_or(AuthError::Missing)?;
    let auth = parse_authorization(authorization)?;
    let secret = credentials.secrets.get(auth.access_key).ok_or(AuthError::UnknownKey)?;
    if auth.service != SERVICE {
        return Err(AuthError::WrongService);
    }
    let amz_date = header(request.headers, "x-amz-date").ok_or_else(|| AuthError::Malformed("X-Amz-Date is missing".into()))?;
    let when = NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| AuthError::Malformed("X-Amz-Date must be YYYYMMDDTHHMMSSZ".into()))?
        .and_utc();
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(AuthError::Malformed("the Credential's date is not X-Amz-Date's".into()));
    }
    let stamp = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
    if when < now - MAX_SKEW {
        return Err(AuthError::Expired { given: amz_date.into(), limit: stamp(now - MAX_SKEW), now: stamp(now) });
    }
    if when > now + MAX_SKEW {
        return Err(AuthError::Future { given: amz_date.into(), limit: stamp(now + MAX_SKEW), now: stamp(now) });
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(AuthError::Malformed("SignedHeaders must include host".into()));
    }
    let body_hash = hex::encode(Sha256::digest(request.body));
    if let Some(claimed) = header(request.headers, "x-amz-content-sha256") {
        if claimed != body_hash {
            return Err(AuthError::Mismatch);
        }
    }
    let canonical = canonical_request(request, &auth.signed_headers, &body_hash);
    let expected = signature(secret, amz_date, auth.date, auth.region, auth.service, &canonical);
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(auth.access_key.to_string())
    } else {
        Err(AuthError::Mismatch)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn signature(secret: &str, amz_date: &str, date: &str, region: &str, service: &str, canonical: &str) -> String {
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical.as_bytes())));
    let key =
        [date, region, service, "aws4_request"].iter().fold(format!("AWS4{secret}").into_bytes(), |key, part| hmac(&key, part.as_bytes()));
    hex::encode(hmac(&key, to_sign.as_bytes()))
}

/// RFC 3986 encoding: everything but unreserved characters (and `/` when asked).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// RFC 3986 section 5.2.4, keeping a trailing slash; an empty path is `/`.
fn remove_dot_segments(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut joined = format!("/{}", out.join("/"));
    if (path.ends_with("/.") || path.ends_with("/..")) && !joined.ends_with('/') {
        joined.push('/');
    }
    joined
}

fn canonical_request(request: &Signed<'_>, signed_headers: &[&str], body_hash: &str) -> String {
    canonical(request, signed_headers, body_hash, false)
}

/// S3 signs the path as sent: not normalized, not encoded again.
fn canonical(request: &Signed<'_>, signed_headers: &[&str], body_hash: &str, s3: bool) -> String {
    let path = if s3 { request.path.to_string() } else { encode(&remove_dot_segments(request.path), true) };
    let mut pairs: Vec<(String, String)> = request
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(&k.replace('+', " ")), false), encode(&decode(&v.replace('+', " ")), false))
        })
        .collect();
    pairs.sort();
    let query: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> =
            request.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    format!("{}\n{path}\n{}\n{headers}\n{}\n{body_hash}", request.method, query.join("&"), signed_headers.join(";"))
}

/// Who signs, where.
pub struct Key<'a> {
    pub access_key: &'a str,
    pub secret: &'a str,
    pub region: &'a str,
}

/// Signs a request as the AWS SDKs do: adds `x-amz-date` and `authorization` to `headers`,
/// which must already hold `host` (and every other header to sign).
pub fn sign(key: &Key<'_>, method: &str, path: &str, query: &str, headers: &mut Vec<(String, String)>, body: &[u8], now: DateTime<Utc>) {
    let body_hash = hex::encode(Sha256::digest(body));
    sign_for(key, (SERVICE, false), method, path, query, headers, &body_hash, now);
}

/// Signs a request to S3 (service `s3`): adds `x-amz-content-sha256`, `x-amz-date` and
/// `authorization`. `path` is the path as it will be sent (see [`encode_s3_path`]).
pub fn sign_s3(key: &Key<'_>, method: &str, path: &str, query: &str, headers: &mut Vec<(String, String)>, body: &[u8], now: DateTime<Utc>) {
    let body_hash = hex::encode(Sha256::digest(body));
    headers.retain(|(n, _)| n != "x-amz-content-sha256");
    headers.push(("x-amz-content-sha256".into(), body_hash.clone()));
    sign_for(key, ("s3", true), method, path, query, headers, &body_hash, now);
}

/// An S3 object path as sent: every byte but unreserved characters and `/` encoded.
pub fn encode_s3_path(path: &str) -> String {
    encode(path, true)
}

/// A query string in canonical order, each name and value encoded.
pub fn encode_query(pairs: &[(&str, &str)]) -> String {
    let mut p: Vec<(String, String)> = pairs.iter().map(|(k, v)| (encode(k, false), encode(v, false))).collect();
    p.sort();
    p.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// `service` is the signing name and whether it is S3 (its paths signed as sent).
#[allow(clippy::too_many_arguments)]
fn sign_for(
    key: &Key<'_>,
    service: (&str, bool),
    method: &str,
    path: &str,
    query: &str,
    headers: &mut Vec<(String, String)>,
    body_hash: &str,
    now: DateTime<Utc>,
) {
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];
    headers.retain(|(n, _)| n != "authorization" && n != "x-amz-date");
    headers.push(("x-amz-date".into(), amz_date.clone()));
    let mut names: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    names.dedup();
    let signed: Vec<&str> = names.iter().map(String::as_str).collect();
    let request = Signed { method, path, query, headers, body: b"" };
    let canonical = canonical(&request, &signed, body_hash, service.1);
    let sig = signature(key.secret, &amz_date, date, key.region, service.0, &canonical);
    let value = format!(
        "{ALGORITHM} Credential={}/{date}/{}/{}/aws4_request, SignedHeaders={}, Signature={sig}",
        key.access_key,
        key.region,
        service.0,
        signed.join(";")
    );
    headers.push(("authorization".into(), value));
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn at(s: &str) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").unwrap().and_utc()
    }

    #[test]
    fn the_aws_test_suite_get_vanilla_signature() {
        // AWS's published SigV4 test suite, "get-vanilla" (service "service").
        let headers = vec![("host".to_string(), "example.amazonaws.com".to_string()), ("x-amz-date".into(), "20150830T123600Z".into())];
        let request = Signed { method: "GET", path: "/", query: "", headers: &headers, body: b"" };
        let hash = hex::encode(Sha256::digest(b""));
        let canonical = canonical_request(&request, &["host", "x-amz-date"], &hash);
        let sig = signature(SECRET, "20150830T123600Z", "20150830", "us-east-1", "service", &canonical);
        assert_eq!(sig, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    }

    fn signed(body: &[u8], now: DateTime<Utc>) -> Vec<(String, String)> {
        let mut headers = vec![("host".to_string(), "127.0.0.1:9".to_string()), ("content-type".into(), "application/json".into())];
        let key = Key { access_key: "AKIDHERALD", secret: SECRET, region: "eu-west-1" };
        sign(&key, "POST", "/v1/apps/a%2Fb/messages", "b=2&a=1", &mut headers, body, now);
        headers
    }

    #[test]
    fn what_is_signed_verifies_and_any_change_is_refused() {
        let creds = Credentials::parse(&[format!("AKIDHERALD:{SECRET}")]).unwrap();
        let now = at("20261203T120000Z");
        let headers = signed(b"{}", now);
        let req = |path, query, headers: &[(String, String)], body: &'static [u8], method| {
            verify(&creds, &Signed { method, path, query, headers, body }, now)
        };
        assert_eq!(req("/v1/apps/a%2Fb/messages", "b=2&a=1", &headers, b"{}", "POST"), Ok("AKIDHERALD".to_string()));
        assert_eq!(req("/v1/apps/a%2Fb/messages", "b=2&a=1", &headers, b"{ }", "POST"), Err(AuthError::Mismatch));
        assert_eq!(req("/v1/apps/a%2Fc/messages", "b=2&a=1", &headers, b"{}", "POST"), Err(AuthError::Mismatch));
        assert_eq!(req("/v1/apps/a%2Fb/messages", "b=3&a=1", &headers, b"{}", "POST"), Err(AuthError::Mismatch));
        assert_eq!(req("/v1/apps/a%2Fb/messages", "b=2&a=1", &headers, b"{}", "PUT"), Err(AuthError::Mismatch));
        let mut altered = headers.clone();
        altered.iter_mut().find(|(n, _)| n == "content-type").unwrap().1 = "text/plain".into();
        assert_eq!(req("/v1/apps/a%2Fb/messages", "b=2&a=1", &altered, b"{}", "POST"), Err(AuthError::Mismatch));
        let other = Credentials::parse(&[format!("AKIDHERALD:{SECRET}x")]).unwrap();
        let signed_req = Signed { method: "POST", path: "/v1/apps/a%2Fb/messages", query: "b=2&a=1", headers: &headers, body: b"{}" };
        assert_eq!(verify(&other, &signed_req, now), Err(AuthError::Mismatch));
        let nobody = Credentials::parse(&[format!("AKIDOTHER:{SECRET}")]).unwrap();
        assert_eq!(verify(&nobody, &signed_req, now), Err(AuthError::UnknownKey));
    }

    #[test]
    fn a_stale_or_future_date_is_refused() {
        let creds = Credentials::parse(&[format!("AKIDHERALD:{SECRET}")]).unwrap();
        let then = at("20261203T120000Z");
        let headers = signed(b"", then);
        let req = Signed { method: "POST", path: "/v1/apps/a%2Fb/messages", query: "b=2&a=1", headers: &headers, body: b"" };
        assert!(verify(&creds, &req, then + chrono::Duration::minutes(4)).is_ok());
        let late = verify(&creds, &req, then + chrono::Duration::minutes(6)).unwrap_err();
        assert!(matches!(late, AuthError::Expired { .. }), "{late:?}");
        assert_eq!(late.code(), "InvalidSignatureException");
        assert!(matches!(verify(&creds, &req, then - chrono::Duration::minutes(6)), Err(AuthError::Future { .. })));
    }

    #[test]
    fn canonical_paths_and_queries() {
        assert_eq!(remove_dot_segments("/a/./b/../c"), "/a/c");
        assert_eq!(remove_dot_segments(""), "/");
        assert_eq!(encode("/v1/tags/arn%3Aaws", true), "/v1/tags/arn%253Aaws");
        assert_eq!(encode("a b+~", false), "a%20b%2B~");
    }

    #[test]
    fn credentials_are_checked_and_never_printed() {
        assert!(Credentials::parse(&["AKID"]).is_err());
        assert!(Credentials::parse(&["AKID:short"]).is_err());
        assert!(Credentials::parse(&["AK-ID:0123456789abcdef"]).is_err());
        let c = Credentials::parse(&["AKID:0123456789abcdef"]).unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }
}
