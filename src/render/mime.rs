//! Email output as a correct MIME message (RFC 5322, 2045–2047): multipart/alternative when
//! both a text and an html part exist, RFC 2047-encoded UTF-8 headers, Message-ID, Date, and
//! List-Unsubscribe with List-Unsubscribe-Post (RFC 8058 one-click) when an unsubscribe URL
//! is set. Bodies are 7bit when they are short-lined ASCII, quoted-printable otherwise.
//!
//! Written directly into one buffer: building a message for every recipient of a campaign is
//! on the hot path, and the sender's headers are formatted once per send ([`Sender`]).

use std::cell::RefCell;
use std::fmt::Write as _;

use base64::Engine as _;

#[derive(Debug, thiserror::Error)]
pub enum MimeError {
    #[error("bad {field} address '{value}': {reason}")]
    Address { field: &'static str, value: String, reason: String },
    #[error("an email needs a text part or an html part")]
    NoBody,
}

/// Who a message is from and to, and its optional unsubscribe URL.
#[derive(Debug, Clone, Default)]
pub struct Envelope<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub reply_to: Option<&'a str>,
    pub list_unsubscribe_url: Option<&'a str>,
}

/// A mailbox: `addr@domain` or `Display Name <addr@domain>`, split and checked.
fn mailbox(field: &'static str, value: &str) -> Result<(Option<String>, String), MimeError> {
    let bad = |reason: &str| MimeError::Address { field, value: value.to_string(), reason: reason.to_string() };
    let value = value.trim();
    let (name, addr) = match (value.rfind('<'), value.ends_with('>')) {
        (Some(open), true) => {
            let name = value[..open].trim().trim_matches('"').trim();
            (Some(name.to_string()).filter(|n| !n.is_empty()), &value[open + 1..value.len() - 1])
        }
        (None, false) => (None, value),
        _ => return Err(bad("unbalanced angle brackets")),
    };
    let opts = email_address::Options::default().without_display_text().without_domain_literal();
    email_address::EmailAddress::parse_with_options(addr, opts).map_err(|e| bad(&e.to_string()))?;
    if name.as_deref().is_some_and(|n| n.chars().any(char::is_control)) {
        return Err(bad("control characters in the display name"));
    }
    Ok((name, addr.to_string()))
}

/// A header value as RFC 2047 encoded-words when it is not plain printable ASCII.
fn encode_header_text(text: &str, out: &mut String) {
    let plain = text.bytes().all(|b| (0x20..0x7f).contains(&b)) && !text.contains("=?");
    if plain {
        out.push_str(text);
        return;
    }
    // Encoded-words of at most 75 characters: 45 bytes of UTF-8 each, split between chars.
    let mut first = true;
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + 45).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if !first {
            out.push_str("\r\n ");
        }
        out.push_str("=?utf-8?b?");
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(&text.as_bytes()[start..end]));
        out.push_str("?=");
        first = false;
        start = end;
    }
}

fn format_mailbox(name: &Option<String>, addr: &str, out: &mut String) {
    match name {
        Some(n) if n.bytes().all(|b| b.is_ascii_alphanumeric() || b" !#$%&'*+-/=?^_`{|}~".contains(&b)) => {
            let _ = write!(out, "{n} <{addr}>");
        }
        Some(n) if n.is_ascii() => {
            out.push('"');
            for c in n.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            let _ = write!(out, "\" <{addr}>");
        }
        Some(n) => {
            encode_header_text(n, out);
            let _ = write!(out, " <{addr}>");
        }
        None => out.push_str(addr),
    }
}

/// The RFC 5322 date of this second, formatted once per second per thread.
fn date_now(out: &mut String) {
    thread_local! {
        static CACHE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let now = chrono::Utc::now();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != now.timestamp() {
            *c = (now.timestamp(), now.format("%a, %d %b %Y %H:%M:%S +0000").to_string());
        }
        out.push_str(&c.1);
    });
}

/// Appends a body with its transfer encoding: 7bit for ASCII with lines of at most 998
/// octets, quoted-printable otherwise. Line breaks become CRLF. A `shared` body may be the
/// same for many recipients and its encoding is kept for reuse; one made for a single
/// recipient (a tracked HTML part) is only encoded.
fn write_body(body: &str, shared: bool, out: &mut String) {
    // A campaign renders the same static part for every recipient: the last few bodies this
    // thread encoded are kept, and an identical body reuses its encoding.
    thread_local! {
        static RECENT: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
    }
    const KEEP: usize = 4;
    const LARGEST: usize = 64 * 1024;
    if !shared {
        encode_body(body, out);
        return;
    }
    let hit = RECENT.with(|r| {
        let r = r.borrow();
        r.iter().find(|(b, _)| b == body).map(|(_, encoded)| out.push_str(encoded)).is_some()
    });
    if hit {
        return;
    }
    let start = out.len();
    encode_body(body, out);
    if body.len() <= LARGEST {
        let encoded = out[start..].to_string();
        RECENT.with(|r| {
            let mut r = r.borrow_mut();
            if r.len() == KEEP {
                r.remove(0);
            }
            r.push((body.to_string(), encoded));
        });
    }
}

/// Whether a body goes as 7bit: ASCII without NUL or CR, no line over 998 octets (checked a
/// word and a `memchr` at a time: bodies are kilobytes).
fn is_seven_bit(body: &str) -> bool {
    let b = body.as_bytes();
    if !b.is_ascii() || memchr::memchr2(0, b'\r', b).is_some() {
        return false;
    }
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', b) {
        if nl - start > 998 {
            return false;
        }
        start = nl + 1;
    }
    b.len() - start <= 998
}

fn encode_body(body: &str, out: &mut String) {
    if is_seven_bit(body) {
        out.push_str("Content-Transfer-Encoding: 7bit\r\n\r\n");
        for (i, line) in body.split('\n').enumerate() {
            if i > 0 {
                out.push_str("\r\n");
            }
            out.push_str(line);
        }
    } else {
        out.push_str("Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        quoted_printable(body, out);
    }
    out.push_str("\r\n");
}

/// RFC 2045 quoted-printable with soft breaks keeping lines within 76 characters.
fn quoted_printable(body: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let normalized = body.replace("\r\n", "\n");
    for (i, line) in normalized.split('\n').enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        let bytes = line.as_bytes();
        // The common case, a line of printable ASCII without '=' and not ending in a blank:
        // copied in slices of 75 with soft breaks between them.
        let plain = |b: &u8| (33..=126).contains(b) && *b != b'=' || *b == b' ' || *b == b'\t';
        if bytes.iter().all(plain) && !matches!(bytes.last(), Some(b' ' | b'\t')) {
            for (k, chunk) in line.as_bytes().chunks(75).enumerate() {
                if k > 0 {
                    out.push_str("=\r\n");
                }
                // ASCII only, so any cut is a char boundary.
                out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            }
            continue;
        }
        let mut width = 0;
        // Literal bytes are copied in runs (they are ASCII, so every run is valid UTF-8).
        let mut run = 0;
        for (j, &b) in bytes.iter().enumerate() {
            let last = j + 1 == bytes.len();
            let literal = (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let needed = if literal { 1 } else { 3 };
            if width + needed > 75 {
                if run < j {
                    out.push_str(&line[run..j]);
                }
                run = j;
                out.push_str("=\r\n");
                width = 0;
            }
            if !literal {
                if run < j {
                    out.push_str(&line[run..j]);
                }
                out.push('=');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
                run = j + 1;
            }
            width += needed;
        }
        out.push_str(&line[run..]);
    }
}

/// The sending side of many messages, formatted once (a campaign or template send reuses it).
#[derive(Debug, Clone)]
pub struct Sender {
    /// `From:` and `Reply-To:` lines, ready to copy.
    header: String,
    domain: String,
    address: String,
}

impl Sender {
    /// A sender `from`, with a `Reply-To:` line listing every address of `reply_to` (none: no
    /// line).
    pub fn new<S: AsRef<str>>(from: &str, reply_to: &[S]) -> Result<Self, MimeError> {
        let (name, addr) = mailbox("from", from)?;
        let domain = addr.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        let mut header = String::from("From: ");
        format_mailbox(&name, &addr, &mut header);
        header.push_str("\r\n");
        for (i, r) in reply_to.iter().enumerate() {
            let (name, addr) = mailbox("reply_to", r.as_ref())?;
            header.push_str(if i == 0 { "Reply-To: " } else { ",\r\n " });
            format_mailbox(&name, &addr, &mut header);
        }
        if !reply_to.is_empty() {
            header.push_str("\r\n");
        }
        Ok(Self { header, domain, address: addr })
    }

    /// The From address (without its display name).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Builds one message to `to` (an address).
    pub fn message(
        &self,
        to: &str,
        subject: &str,
        text: Option<&str>,
        html: Option<&str>,
        list_unsubscribe_url: Option<&str>,
        message_id: Option<&str>,
    ) -> Result<Vec<u8>, MimeError> {
        self.message_with(to, subject, text, html, list_unsubscribe_url, message_id, true)
    }

    /// [`Sender::message`], saying whether the HTML part may be other recipients' too
    /// (`html_shared`): one made for this recipient alone (rewritten for tracking) is encoded
    /// without being kept for reuse.
    #[allow(clippy::too_many_arguments)]
    pub fn message_with(
        &self,
        to: &str,
        subject: &str,
        text: Option<&str>,
        html: Option<&str>,
        list_unsubscribe_url: Option<&str>,
        message_id: Option<&str>,
        html_shared: bool,
    ) -> Result<Vec<u8>, MimeError> {
        let (to_name, to_addr) = mailbox("to", to)?;
        let text = text.filter(|t| !t.is_empty());
        let html = html.filter(|h| !h.is_empty());
        if text.is_none() && html.is_none() {
            return Err(MimeError::NoBody);
        }
        let mut out = String::with_capacity(512 + text.map_or(0, str::len) + html.map_or(0, str::len));
        out.push_str(&self.header);
        out.push_str("To: ");
        format_mailbox(&to_name, &to_addr, &mut out);
        out.push_str("\r\nSubject: ");
        encode_header_text(subject, &mut out);
        out.push_str("\r\nDate: ");
        date_now(&mut out);
        // Herald's message id when there is one: a provider's bounce or delivery notification
        // names it, and so the message it is about.
        match message_id.filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')) {
            Some(m) => {
                let _ = write!(out, "\r\nMessage-ID: <{m}@{}>\r\nMIME-Version: 1.0\r\n", self.domain);
            }
            None => {
                let id = uuid::Uuid::new_v4().simple();
                let _ = write!(out, "\r\nMessage-ID: <{id}@{}>\r\nMIME-Version: 1.0\r\n", self.domain);
            }
        }
        if let Some(url) = list_unsubscribe_url.filter(|u| !u.is_empty() && !u.contains(['\r', '\n', '>'])) {
            let _ = write!(out, "List-Unsubscribe: <{url}>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
        }
        match (text, html) {
            (Some(t), Some(h)) => {
                let boundary = format!("=_herald_{}", uuid::Uuid::new_v4().simple());
                let _ = write!(out, "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n");
                let _ = write!(out, "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n");
                write_body(t, true, &mut out);
                let _ = write!(out, "--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n");
                write_body(h, html_shared, &mut out);
                let _ = write!(out, "--{boundary}--\r\n");
            }
            (Some(t), None) => {
                out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
                write_body(t, true, &mut out);
            }
            (None, Some(h)) => {
                out.push_str("Content-Type: text/html; charset=utf-8\r\n");
                write_body(h, html_shared, &mut out);
            }
            (None, None) => unreachable!("checked above"),
        }
        Ok(out.into_bytes())
    }
}

/// Builds a whole message; `Message-ID` is `<id@domain of the sender>`.
pub fn build(envelope: &Envelope<'_>, subject: &str, text: Option<&str>, html: Option<&str>) -> Result<Vec<u8>, MimeError> {
    Sender::new(envelope.from, envelope.reply_to.as_slice())?.message(envelope.to, subject, text, html, envelope.list_unsubscribe_url, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_words(s: &str) -> String {
        s.split("\r\n ")
            .map(|w| {
                let b64 = w.trim_start_matches("=?utf-8?b?").trim_end_matches("?=");
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
            })
            .collect()
    }

    #[test]
    fn alternative_parts_encoded_subject_and_one_click_unsubscribe() {
        let env = Envelope {
            from: "Shop <news@shop.example>",
            to: "ana@example.com",
            reply_to: Some("help@shop.example"),
            list_unsubscribe_url: Some("https://shop.example/u?e=1"),
        };
        let raw = String::from_utf8(build(&env, "Grüße, Ana ✓", Some("Hello"), Some("<p>Hello</p>")).unwrap()).unwrap();
        assert!(raw.starts_with("From: Shop <news@shop.example>\r\nReply-To: help@shop.example\r\nTo: ana@example.com\r\n"), "{raw}");
        assert!(raw.contains("Content-Type: multipart/alternative; boundary=\"=_herald_"), "{raw}");
        assert!(raw.contains("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\nHello\r\n"), "{raw}");
        assert!(raw.contains("Content-Type: text/html; charset=utf-8"), "{raw}");
        let subject = raw.lines().find(|l| l.starts_with("Subject: ")).unwrap().trim_start_matches("Subject: ");
        assert_eq!(decode_words(subject), "Grüße, Ana ✓");
        assert!(raw.contains("@shop.example>\r\n") && raw.contains("Message-ID: <") && raw.contains("MIME-Version: 1.0\r\n"), "{raw}");
        assert!(raw.contains("\r\nDate: ") && raw.contains(" +0000\r\n"), "{raw}");
        assert!(raw.contains("List-Unsubscribe: <https://shop.example/u?e=1>\r\n"), "{raw}");
        assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"), "{raw}");
        assert!(raw.trim_end().ends_with("--"), "{raw}");
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

    #[test]
    fn long_unicode_subjects_fold_into_short_encoded_words() {
        let subject = "Ünïcödé ".repeat(20);
        let mut out = String::new();
        encode_header_text(&subject, &mut out);
        assert!(out.split("\r\n ").all(|w| w.len() <= 75 && w.starts_with("=?utf-8?b?") && w.ends_with("?=")), "{out}");
        assert_eq!(decode_words(&out), subject);
        let mut injected = String::new();
        encode_header_text("Hi\r\nBcc: victim@example.com", &mut injected);
        assert!(!injected.contains('\n') || injected.contains("\r\n =?utf-8?b?"), "{injected}");
        assert!(injected.starts_with("=?utf-8?b?"));
    }

    #[test]
    fn seven_bit_is_short_lined_ascii_without_cr_or_nul() {
        let line = |n: usize| "x".repeat(n);
        assert!(is_seven_bit(&format!("{}\n{}", line(998), line(998))));
        assert!(is_seven_bit(""));
        assert!(!is_seven_bit(&format!("{}\nok", line(999))));
        assert!(!is_seven_bit(&format!("ok\n{}", line(999))));
        for bad in ["a\rb", "a\0b", "Grüße"] {
            assert!(!is_seven_bit(bad), "{bad:?}");
        }
        // A body made for one recipient is encoded exactly as a shared one.
        let s = Sender::new::<&str>("news@shop.example", &[]).unwrap();
        let body = |own: bool| {
            let html = Some("<p>Grüße</p>\n<p>ok</p>");
            let out = String::from_utf8(s.message_with("a@b.example", "Hi", None, html, None, Some("m1"), !own).unwrap()).unwrap();
            out[out.find("Content-Type").unwrap()..].to_string()
        };
        assert_eq!(body(true), body(false));
        assert!(body(true).contains("Gr=C3=BC=C3=9Fe"), "{}", body(true));
    }

    #[test]
    fn non_ascii_bodies_are_quoted_printable_with_short_lines() {
        let mut out = String::new();
        write_body(&format!("Grüße = {}\nnext line \n", "x".repeat(100)), true, &mut out);
        assert!(out.starts_with("Content-Transfer-Encoding: quoted-printable\r\n\r\n"), "{out}");
        assert!(out.contains("Gr=C3=BC=C3=9Fe =3D "), "{out}");
        assert!(out.lines().all(|l| l.len() <= 76), "{out}");
        assert!(out.contains("next line=20\r\n"), "{out}");
        // A long plain line (the fast path) and one with escapes decode to what went in.
        let decode = |qp: &str| -> Vec<u8> {
            let joined = qp.replace("=\r\n", "");
            let b = joined.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'=' {
                    out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap());
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            out
        };
        for body in ["Herald load test payload. ".repeat(40), format!("{}é{}", "a".repeat(150), "b".repeat(80))] {
            let mut qp = String::new();
            quoted_printable(&body, &mut qp);
            assert!(qp.split("\r\n").all(|l| l.len() <= 76), "{qp}");
            assert_eq!(decode(&qp), body.as_bytes());
        }
        let mut named = String::new();
        format_mailbox(&Some("Zoë \"Z\"".into()), "z@example.com", &mut named);
        assert!(named.starts_with("=?utf-8?b?") && named.ends_with(" <z@example.com>"), "{named}");
    }
}
