//! Rewrites a rendered HTML part for tracking, as Pinpoint does: each `<a href="http(s)://…">`
//! becomes a signed click URL, except anchors marked `ses:no-track`, non-web links (`mailto:`,
//! `tel:`, `#…`) and unsubscribe links; a 1×1 open pixel goes before `</body>` (or at the
//! end). One pass over the HTML; the text part is left as it is.

use super::MessageLinks;

/// What to rewrite in one message's HTML.
pub struct Rewrite<'a> {
    pub links: &'a MessageLinks<'a>,
    /// URLs left alone besides Herald's own unsubscribe URLs (the template's unsubscribe URL).
    pub keep: &'a [&'a str],
    /// Add the open pixel.
    pub open_pixel: bool,
}

fn find_ci(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// Whether a tag carries `ses:no-track` (any case): found from its `:`s, which are few.
fn no_track(tag: &[u8]) -> bool {
    memchr::memchr_iter(b':', tag).any(|i| {
        i >= 3 && tag[i - 3..i].eq_ignore_ascii_case(b"ses") && tag.get(i + 1..i + 9).is_some_and(|r| r.eq_ignore_ascii_case(b"no-track"))
    })
}

/// The end (index of `>`) of the tag starting at `start`, skipping quoted values.
fn tag_end(html: &[u8], start: usize) -> Option<usize> {
    let mut quote = 0u8;
    for (i, &b) in html.iter().enumerate().skip(start) {
        match (quote, b) {
            (0, b'"' | b'\'') => quote = b,
            (0, b'>') => return Some(i),
            (q, c) if q != 0 && c == q => quote = 0,
            _ => {}
        }
    }
    None
}

/// The span of the href value inside a tag (`tag` is the tag's bytes).
fn href_span(tag: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(i) = find_ci(tag, b"href", from) {
        from = i + 4;
        if i == 0 || !tag[i - 1].is_ascii_whitespace() {
            continue;
        }
        let mut j = i + 4;
        while j < tag.len() && tag[j].is_ascii_whitespace() {
            j += 1;
        }
        if tag.get(j) != Some(&b'=') {
            continue;
        }
        j += 1;
        while j < tag.len() && tag[j].is_ascii_whitespace() {
            j += 1;
        }
        return match tag.get(j) {
            Some(&q @ (b'"' | b'\'')) => {
                let end = tag[j + 1..].iter().position(|&c| c == q)? + j + 1;
                Some((j + 1, end))
            }
            Some(_) => {
                let end = tag[j..].iter().position(|c| c.is_ascii_whitespace() || *c == b'>').map_or(tag.len(), |p| p + j);
                Some((j, end))
            }
            None => None,
        };
    }
    None
}

/// An attribute value as the browser reads it: the common character references decoded.
fn unescape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains('&') {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let known = [("&amp;", '&'), ("&quot;", '"'), ("&#39;", '\''), ("&apos;", '\''), ("&lt;", '<'), ("&gt;", '>'), ("&#x27;", '\'')];
        match known.iter().find(|(name, _)| rest.starts_with(name)) {
            Some((name, c)) => {
                out.push(*c);
                rest = &rest[name.len()..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

fn is_web(url: &str) -> bool {
    let b = url.as_bytes();
    (b.len() > 7 && b[..7].eq_ignore_ascii_case(b"http://")) || (b.len() > 8 && b[..8].eq_ignore_ascii_case(b"https://"))
}

impl Rewrite<'_> {
    /// The rewritten HTML.
    pub fn apply(&self, html: &str) -> String {
        let bytes = html.as_bytes();
        // Sized once for every anchor becoming a click URL of a typical link, and the pixel.
        let anchors = memchr::memmem::find_iter(bytes, b"href").count();
        let mut out = String::with_capacity(html.len() + anchors * self.links.click_url_len(80) + 256);
        let mut copied = 0;
        let mut at = 0;
        while let Some(p) = memchr(b'<', bytes, at) {
            at = p + 1;
            let is_anchor = bytes.get(p + 1).is_some_and(|c| c.eq_ignore_ascii_case(&b'a'))
                && bytes.get(p + 2).is_some_and(|c| c.is_ascii_whitespace());
            if !is_anchor {
                continue;
            }
            let Some(end) = tag_end(bytes, p) else { break };
            at = end + 1;
            let tag = &bytes[p..end];
            if no_track(tag) {
                continue;
            }
            let Some((vs, ve)) = href_span(tag) else { continue };
            let raw = &html[p + vs..p + ve];
            let url = unescape(raw.trim());
            if !is_web(&url) || self.links.is_unsubscribe(&url) || self.keep.iter().any(|k| *k == url) {
                continue;
            }
            out.push_str(&html[copied..p + vs]);
            self.links.write_click_url(&url, &mut out);
            copied = p + ve;
        }
        let body_end = if self.open_pixel { rfind_ci(bytes, b"</body") } else { None };
        match body_end {
            Some(b) if b >= copied => {
                out.push_str(&html[copied..b]);
                self.pixel(&mut out);
                out.push_str(&html[b..]);
            }
            _ => {
                out.push_str(&html[copied..]);
                if self.open_pixel {
                    self.pixel(&mut out);
                }
            }
        }
        out
    }

    fn pixel(&self, out: &mut String) {
        out.push_str("<img src=\"");
        out.push_str(&self.links.open_url());
        out.push_str("\" width=\"1\" height=\"1\" alt=\"\" style=\"border:0;width:1px;height:1px\" />");
    }
}

fn memchr(needle: u8, hay: &[u8], from: usize) -> Option<usize> {
    memchr::memchr(needle, hay.get(from..)?).map(|i| i + from)
}

fn rfind_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    // From the end, at each '<' (a body's close tag is near the end).
    let mut end = hay.len();
    while let Some(i) = memchr::memrchr(b'<', &hay[..end]) {
        if hay.len() - i >= needle.len() && hay[i..i + needle.len()].eq_ignore_ascii_case(needle) {
            return Some(i);
        }
        end = i;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, Links, MessageRef};
    use super::*;

    #[test]
    fn web_links_become_click_urls_and_the_rest_stays() {
        let links = Links::new(b"k", "https://t.example", 3600);
        let m = links.message(&MessageRef { app_id: "a".into(), message_id: "m".into(), ..Default::default() }, 0);
        let unsub = m.unsubscribe_url();
        let html = format!(
            "<html><body><p>Hi</p><a href=\"https://shop.example/x?a=1&amp;b=2\">Shop</a> \
             <A class=\"b\" HREF='http://shop.example/y'>Y</A> \
             <a ses:no-track href=\"https://shop.example/private\">P</a> \
             <a href=\"mailto:help@shop.example\">Mail</a> <a href=\"tel:+15550100\">Call</a> \
             <a href=\"{unsub}\">Unsubscribe</a> <a href=\"https://shop.example/u/1\">Theirs</a> \
             <abbr title=\"x\">x</abbr><a name=\"top\">top</a></body></html>"
        );
        let out = Rewrite { links: &m, keep: &["https://shop.example/u/1"], open_pixel: true }.apply(&html);
        let clicks: Vec<&str> = out.match_indices("https://t.example/c/").map(|(i, _)| &out[i..]).collect();
        assert_eq!(clicks.len(), 2, "{out}");
        let token = |s: &str| s["https://t.example/c/".len()..].split(['"', '\'']).next().unwrap().to_string();
        assert_eq!(links.verify(Kind::Click, &token(clicks[0]), 1).unwrap().link, "https://shop.example/x?a=1&b=2");
        assert_eq!(links.verify(Kind::Click, &token(clicks[1]), 1).unwrap().link, "http://shop.example/y");
        for kept in ["https://shop.example/private", "mailto:help@shop.example", "tel:+15550100", &unsub, "https://shop.example/u/1"] {
            assert!(out.contains(&format!("\"{kept}\"")), "{kept} not kept in {out}");
        }
        assert!(out.contains("<a name=\"top\">") && out.contains("<abbr title=\"x\">"));
        let pixel = out.find("<img src=\"https://t.example/o/").expect("pixel");
        assert!(pixel < out.find("</body>").unwrap());
        // Off: only links; no body: the pixel goes last.
        let plain = Rewrite { links: &m, keep: &[], open_pixel: false }.apply("<a href=\"https://a.example\">a</a>");
        assert!(plain.starts_with("<a href=\"https://t.example/c/") && !plain.contains("<img"));
        let fragment = Rewrite { links: &m, keep: &[], open_pixel: true }.apply("<p>no links</p>");
        assert!(fragment.starts_with("<p>no links</p><img src=\"https://t.example/o/"), "{fragment}");
    }
}
