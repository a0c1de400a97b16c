//! A small S3 client for Pinpoint's import and export jobs: ListObjectsV2, GetObject and
//! PutObject, path-style, signed with SigV4 (service `s3`), against the S3-compatible endpoint
//! the configuration names (Amazon S3, MinIO, …).

use bytes::Bytes;

use super::sigv4;

/// Where jobs read and write: `s3_endpoint` and its credentials.
#[derive(Clone)]
pub struct S3 {
    http: reqwest::Client,
    endpoint: url::Url,
    region: String,
    access_key: String,
    secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("{0} is not an s3://bucket/key URL")]
    Url(String),
    #[error("S3 answered {status} for {what}: {message}")]
    Answer { status: u16, what: String, message: String },
    #[error("S3 cannot be reached: {0}")]
    Transport(String),
    #[error("s3_endpoint must be an http or https URL: {0}")]
    Endpoint(String),
}

/// `s3://bucket/prefix` → (bucket, prefix).
pub fn parse_url(url: &str) -> Result<(String, String), S3Error> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| S3Error::Url(url.into()))?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let ok =
        (3..=63).contains(&bucket.len()) && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !ok {
        return Err(S3Error::Url(url.into()));
    }
    Ok((bucket.to_string(), key.to_string()))
}

/// The text of every `<tag>…</tag>` in an XML document, unescaped.
fn elements(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(after[..j].replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&"));
        rest = &after[j + close.len()..];
    }
    out
}

impl S3 {
    pub fn new(endpoint: &str, region: &str, access_key: &str, secret: &str) -> Result<Self, S3Error> {
        let endpoint = url::Url::parse(endpoint).map_err(|e| S3Error::Endpoint(e.to_string()))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(S3Error::Endpoint(endpoint.to_string()));
        }
        crate::channels::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .map_err(|e| S3Error::Transport(e.to_string()))?;
        Ok(Self { http, endpoint, region: region.into(), access_key: access_key.into(), secret: secret.into() })
    }

    fn host(&self) -> String {
        let host = self.endpoint.host_str().unwrap_or_default();
        match self.endpoint.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        bucket: &str,
        key: &str,
        query: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Bytes, S3Error> {
        let base = self.endpoint.path().trim_end_matches('/');
        let path = sigv4::encode_s3_path(&format!("{base}/{bucket}/{key}"));
        let query = sigv4::encode_query(query);
        let mut headers = vec![("host".to_string(), self.host())];
        let signer = sigv4::Key { access_key: &self.access_key, secret: &self.secret, region: &self.region };
        sigv4::sign_s3(&signer, method.as_str(), &path, &query, &mut headers, &body, chrono::Utc::now());
        let mut url = format!("{}://{}{path}", self.endpoint.scheme(), self.host());
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut req = self.http.request(method, url);
        for (n, v) in headers.iter().filter(|(n, _)| n != "host") {
            req = req.header(n.as_str(), v.as_str());
        }
        let resp = req.body(body).send().await.map_err(|e| S3Error::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| S3Error::Transport(e.to_string()))?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&bytes);
            let message =
                elements(&text, "Message").into_iter().next().or_else(|| elements(&text, "Code").into_iter().next()).unwrap_or_default();
            return Err(S3Error::Answer { status, what: format!("s3://{bucket}/{key}"), message });
        }
        Ok(bytes)
    }

    /// Every key under `prefix`, in order (ListObjectsV2, page by page).
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(t) = &token {
                q.push(("continuation-token", t.as_str()));
            }
            let body = self.call(reqwest::Method::GET, bucket, "", &q, Vec::new()).await?;
            let text = String::from_utf8_lossy(&body).into_owned();
            keys.extend(elements(&text, "Key"));
            token = elements(&text, "NextContinuationToken").into_iter().next();
            if token.is_none() || elements(&text, "IsTruncated").first().map(String::as_str) != Some("true") {
                return Ok(keys);
            }
        }
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Result<Bytes, S3Error> {
        self.call(reqwest::Method::GET, bucket, key, &[], Vec::new()).await
    }

    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), S3Error> {
        self.call(reqwest::Method::PUT, bucket, key, &[], body).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_listings_parse() {
        assert_eq!(parse_url("s3://my-bucket/imports/a.csv").unwrap(), ("my-bucket".into(), "imports/a.csv".into()));
        assert_eq!(parse_url("s3://my-bucket").unwrap(), ("my-bucket".into(), String::new()));
        assert!(parse_url("https://my-bucket/x").is_err());
        assert!(parse_url("s3://UPPER/x").is_err());
        let xml = "<ListBucketResult><Contents><Key>a&amp;b.csv</Key></Contents><Contents><Key>c.csv</Key></Contents></ListBucketResult>";
        assert_eq!(elements(xml, "Key"), ["a&b.csv", "c.csv"]);
    }
}
