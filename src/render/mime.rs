//! Email output as a correct MIME message: multipart/alternative when both a text and an
//! html part exist, RFC 2047-encoded UTF-8 headers, Message-ID, Date, and List-Unsubscribe
//! with List-Unsubscribe-Post (RFC 8058 one-click) when an unsubscribe URL is set.

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;

#[derive(Debug, thiserror::Error)]
pub enum MimeError {
    #[error("bad {field} address '{value}': {reason}")]
    Address { field: &'static str, value: String, reason: String },
    #[error("an email needs a text part or an html part")]
    NoBody,
    #[error("cannot build the message: {0}")]
    Build(String),
}

/// Who a message is from and to, and its optional unsubscribe URL.
#[derive(Debug, Clone, Default)]
pub struct Envelope<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub reply_to: Option<&'a str>,
    pub list_unsubscribe_url: Option<&'a str>,
}

/// The sending side of many messages, parsed once (a campaign or template send reuses it).
#[derive(Debug, Clone)]
pub struct Sender {
    from: Mailbox,
    reply_to: Option<Mailbox>,
    domain: String,
}

impl Sender {
    pub fn new(from: &str, reply_to: Option<&str>) -> Result<Self, MimeError> {
        let from = mailbox("from", from)?;
        let domain = from.email.domain().to_string();
        let reply_to = reply_to.map(|r| mailbox("reply_to", r)).transpose()?;
        Ok(Self { from, reply_to, domain })
    }

    /// Builds one message to `to`.
    pub fn message(
        &self,
        to: &str,
        subject: &str,
        text: Option<&str>,
        html: Option<&str>,
        list_unsubscribe_url: Option<&str>,
    ) -> Result<Vec<u8>, MimeError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(mailbox("to", to)?)
            .subject(subject)
            .message_id(Some(format!("<{}@{}>", uuid::Uuid::new_v4().simple(), self.domain)))
            .date_now();
        if let Some(r) = &self.reply_to {
            builder = builder.reply_to(r.clone());
        }
        if let Some(url) = list_unsubscribe_url.filter(|u| !u.is_empty()) {
            builder = builder
                .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe"), format!("<{url}>")))
                .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe-Post"), "List-Unsubscribe=One-Click".into()));
        }
        let message = match (text.filter(|t| !t.is_empty()), html.filter(|h| !h.is_empty())) {
            (Some(t), Some(h)) => builder.multipart(MultiPart::alternative_plain_html(t.to_string(), h.to_string())),
            (Some(t), None) => builder.singlepart(SinglePart::plain(t.to_string())),
            (None, Some(h)) => builder.singlepart(SinglePart::html(h.to_string())),
            (None, None) => return Err(MimeError::NoBody),
        }
        .map_err(|e| MimeError::Build(e.to_string()))?;
        Ok(message.formatted())
    }
}

fn mailbox(field: &'static str, value: &str) -> Result<Mailbox, MimeError> {
    value.parse().map_err(|e: lettre::address::AddressError| MimeError::Address { field, value: value.to_string(), reason: e.to_string() })
}

/// Builds the whole message; `message_id` is `<id@domain of the sender>`.
pub fn build(envelope: &Envelope<'_>, subject: &str, text: Option<&str>, html: Option<&str>) -> Result<Vec<u8>, MimeError> {
    Sender::new(envelope.from, envelope.reply_to)?.message(envelope.to, subject, text, html, envelope.list_unsubscribe_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternative_parts_encoded_subject_and_one_click_unsubscribe() {
        let env = Envelope {
            from: "Shop <news@shop.example>",
            to: "ana@example.com",
            reply_to: None,
            list_unsubscribe_url: Some("https://shop.example/u?e=1"),
        };
        let raw = String::from_utf8(build(&env, "Grüße, Ana ✓", Some("Hello"), Some("<p>Hello</p>")).unwrap()).unwrap();
        assert!(raw.contains("Content-Type: multipart/alternative;"), "{raw}");
        assert!(raw.contains("Content-Type: text/plain; charset=utf-8") && raw.contains("Content-Type: text/html; charset=utf-8"), "{raw}");
        assert!(raw.contains("Subject: =?utf-8?b?"), "{raw}");
        assert!(raw.contains("@shop.example>\r\n") && raw.contains("Message-ID: <"), "{raw}");
        assert!(raw.contains("\r\nDate: "), "{raw}");
        assert!(raw.contains("List-Unsubscribe: <https://shop.example/u?e=1>\r\n"), "{raw}");
        assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"), "{raw}");
        let plain = String::from_utf8(
            build(&Envelope { from: "a@b.example", to: "c@d.example", ..Default::default() }, "Hi", Some("x"), None).unwrap(),
        )
        .unwrap();
        assert!(!plain.contains("multipart") && !plain.contains("List-Unsubscribe") && plain.contains("Subject: Hi\r\n"), "{plain}");
        assert!(matches!(build(&env, "s", None, None), Err(MimeError::NoBody)));
        assert!(matches!(
            build(&Envelope { from: "nope", to: "c@d.example", ..Default::default() }, "s", Some("x"), None),
            Err(MimeError::Address { .. })
        ));
    }
}
