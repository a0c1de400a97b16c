//! An SMTP relay's settings, from
//! `smtp[s]://[user:password@]host:port[?pool=N&per_connection=M&tls=none|starttls|tls&ca_file=PEM]`
//! or from an app's email channel.

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad SMTP URL: {0}")]
pub struct SmtpUrlError(pub String);

/// How a session to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plain SMTP (a relay on loopback or a private network).
    #[default]
    None,
    /// Plain connection upgraded with STARTTLS before anything else is said (port 587); a
    /// relay that does not offer STARTTLS gets nothing.
    StartTls,
    /// TLS from the first byte (implicit TLS, port 465).
    Tls,
}

#[derive(Clone, PartialEq, Eq)]
pub struct SmtpRelay {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Most connections open to this relay at once.
    pub pool_size: usize,
    /// Messages sent on one connection before it is closed and replaced (0: no limit).
    pub messages_per_connection: u32,
    /// The name Herald gives in EHLO.
    pub hello_name: String,
    pub tls: TlsMode,
    /// PEM certificates trusted besides the system's roots (a private relay's CA).
    pub extra_ca_pem: Option<String>,
}

impl fmt::Debug for SmtpRelay {
    // Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpRelay")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "********"))
            .field("pool_size", &self.pool_size)
            .field("messages_per_connection", &self.messages_per_connection)
            .field("tls", &self.tls)
            .field("extra_ca", &self.extra_ca_pem.is_some())
            .finish()
    }
}

impl SmtpRelay {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            username: None,
            password: None,
            pool_size: 8,
            messages_per_connection: 1_000,
            hello_name: "herald.localdomain".into(),
            tls: TlsMode::None,
            extra_ca_pem: None,
        }
    }

    pub fn from_url(s: &str) -> Result<Self, SmtpUrlError> {
        let url = url::Url::parse(s).map_err(|e| SmtpUrlError(e.to_string()))?;
        let (tls, default_port) = match url.scheme() {
            "smtp" => (TlsMode::None, 25),
            "smtps" => (TlsMode::Tls, 465),
            other => return Err(SmtpUrlError(format!("scheme '{other}' is neither smtp nor smtps"))),
        };
        let host = url.host_str().ok_or_else(|| SmtpUrlError("no host".into()))?;
        // An IPv6 literal comes bracketed; connecting and verifying want it bare.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let mut relay = Self::new(host, url.port().unwrap_or(default_port));
        relay.tls = tls;
        if !url.username().is_empty() {
            relay.username = Some(url.username().to_string());
            relay.password = url.password().map(str::to_string);
        }
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "pool" => {
                    relay.pool_size =
                        v.parse().ok().filter(|n| *n > 0).ok_or_else(|| SmtpUrlError(format!("pool={v} is not a positive number")))?
                }
                "per_connection" => {
                    relay.messages_per_connection = v.parse().map_err(|_| SmtpUrlError(format!("per_connection={v} is not a number")))?
                }
                "tls" => {
                    relay.tls = match v.as_ref() {
                        "none" => TlsMode::None,
                        "starttls" => TlsMode::StartTls,
                        "tls" => TlsMode::Tls,
                        _ => return Err(SmtpUrlError(format!("tls={v} is not none, starttls or tls"))),
                    }
                }
                "ca_file" => {
                    let pem = std::fs::read_to_string(v.as_ref()).map_err(|e| SmtpUrlError(format!("ca_file {v}: {e}")))?;
                    super::tls::parse_certificates(&pem).map_err(|e| SmtpUrlError(format!("ca_file {v}: {e}")))?;
                    relay.extra_ca_pem = Some(pem);
                }
                other => return Err(SmtpUrlError(format!("unknown option '{other}'"))),
            }
        }
        Ok(relay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_passwords_stay_hidden() {
        let r = SmtpRelay::from_url("smtp://herald:s3cret@127.0.0.1:2525?pool=16&per_connection=0").unwrap();
        assert_eq!((r.host.as_str(), r.port, r.pool_size, r.messages_per_connection), ("127.0.0.1", 2525, 16, 0));
        assert_eq!(r.password.as_deref(), Some("s3cret"));
        assert!(!format!("{r:?}").contains("s3cret"));
        assert_eq!(SmtpRelay::from_url("smtp://mail.example").unwrap().port, 25);
        assert!(SmtpRelay::from_url("http://x").is_err());
        assert!(SmtpRelay::from_url("smtp://x?pool=0").is_err());
        assert!(SmtpRelay::from_url("smtp://x?tls=yes").is_err());
        assert_eq!(SmtpRelay::from_url("smtp://x").unwrap().tls, TlsMode::None);
        let r = SmtpRelay::from_url("smtps://mail.example").unwrap();
        assert_eq!((r.tls, r.port), (TlsMode::Tls, 465));
        assert_eq!(SmtpRelay::from_url("smtp://x:587?tls=starttls").unwrap().tls, TlsMode::StartTls);
        assert!(SmtpRelay::from_url("smtp://x?ca_file=/nonexistent.pem").is_err());
    }
}
