//! Rendering: Pinpoint message templates on handlebars-rust with Pinpoint's helper set and
//! handlebars.js semantics. CPU only — no I/O.
//!
//! A part (subject, html, text, body...) is parsed with handlebars-rust's parser and compiled
//! once into a [`Compiled`] program ([`eval`]); rendering it is one pass over the program with
//! a JSON context built once per recipient. Values print as handlebars.js prints JavaScript
//! values (`["a","b"]` as `a,b`, `12.0` as `12`).

pub mod context;
pub mod eval;
pub mod helpers;
pub mod mime;
pub mod sms;
pub mod template;
pub mod value;

use handlebars::Template;
use serde_json::Value;

/// A template part that does not parse: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A render that failed (a helper's bad argument, a bad date...): the message, and where in
/// the part when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RenderFailure {
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// One compiled template part; cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Compiled {
    program: eval::Program,
}

/// Compiles and renders parts. Stateless today; the seam where per-deployment rendering
/// options would live.
#[derive(Debug, Default)]
pub struct Renderer;

impl Renderer {
    pub fn new() -> Self {
        Self
    }

    /// Parses a part (handlebars-rust's parser) and resolves every helper and path once; the
    /// error names the line and column.
    pub fn compile(&self, source: &str) -> Result<Compiled, ParseError> {
        let (escaped, added) = escape_literal_controls(source);
        let rewritten = inverse_helper_blocks(&escaped);
        let template = Template::compile(&rewritten).map_err(|e| {
            let (line, column) = e.pos().map_or((0, 0), |(l, c)| original_position(&escaped, source, &added, l, c));
            ParseError { line, column, message: e.reason().to_string() }
        })?;
        let program = eval::Program::compile(&template).map_err(|e| ParseError { line: e.line, column: e.column, message: e.message })?;
        Ok(Compiled { program })
    }

    /// Renders a compiled part against a context (the JSON the context module builds).
    pub fn render(&self, part: &Compiled, context: &Value) -> Result<String, RenderFailure> {
        let mut out = String::with_capacity(256);
        part.program.render(context, &mut out).map_err(|e| RenderFailure {
            message: e.message,
            line: Some(e.line),
            column: Some(e.column),
        })?;
        Ok(out)
    }
}

/// handlebars.js takes any character in a string literal, a tab or a line break among them;
/// handlebars-rust reads a literal as JSON, which takes no control characters. Inside a
/// mustache's string literals they are written as JSON escapes, so the literal's value is the
/// same. Returns the text and, for each escape, its end in the escaped text and the bytes added
/// so far (to point parse errors into the source as written).
fn escape_literal_controls(source: &str) -> (std::borrow::Cow<'_, str>, Vec<(usize, usize)>) {
    if !source.bytes().any(|b| b < 0x20) {
        return (std::borrow::Cow::Borrowed(source), Vec::new());
    }
    let mut out = String::with_capacity(source.len() + 8);
    let mut added = Vec::new();
    let mut extra = 0;
    let mut i = 0;
    while let Some(open) = source[i..].find("{{").map(|o| i + o) {
        out.push_str(&source[i..open]);
        let tag = &source[open..];
        // Comments are copied as they are: their text is never parsed.
        let comment_end = if tag.starts_with("{{!--") {
            Some(tag.find("--}}").map_or(tag.len(), |e| e + 4))
        } else if tag.starts_with("{{!") {
            Some(tag.find("}}").map_or(tag.len(), |e| e + 2))
        } else {
            None
        };
        if let Some(end) = comment_end {
            out.push_str(&tag[..end]);
            i = open + end;
            continue;
        }
        // Copy the mustache up to the first `}}` outside a literal, escaping control
        // characters inside its literals.
        out.push_str("{{");
        let mut quote: Option<char> = None;
        let mut escaped_next = false;
        let mut end = tag.len();
        let mut chars = tag.char_indices().skip(2).peekable();
        while let Some((at, c)) = chars.next() {
            match quote {
                Some(_) if escaped_next => escaped_next = false,
                Some(_) if c == '\\' => escaped_next = true,
                Some(q) if c == q => quote = None,
                Some(_) if (c as u32) < 0x20 => {
                    let e = match c {
                        '\t' => "\\t".to_string(),
                        '\n' => "\\n".to_string(),
                        '\r' => "\\r".to_string(),
                        other => format!("\\u{:04x}", other as u32),
                    };
                    out.push_str(&e);
                    extra += e.len() - 1;
                    added.push((out.len(), extra));
                    continue;
                }
                Some(_) => {}
                None if c == '"' || c == '\'' => quote = Some(c),
                None if c == '}' && chars.peek().is_some_and(|(_, n)| *n == '}') => {
                    out.push_str("}}");
                    end = at + 2;
                    break;
                }
                None => {}
            }
            out.push(c);
        }
        i = open + end;
    }
    out.push_str(&source[i..]);
    if added.is_empty() {
        return (std::borrow::Cow::Borrowed(source), added);
    }
    (std::borrow::Cow::Owned(out), added)
}

/// The line and column in `source` of a (1-based) line and column of its escaped form.
fn original_position(escaped: &str, source: &str, added: &[(usize, usize)], line: usize, column: usize) -> (usize, usize) {
    if added.is_empty() {
        return (line, column);
    }
    // The byte offset of the position in the escaped text...
    let mut offset = 0;
    for (n, l) in escaped.split_inclusive('\n').enumerate() {
        if n + 1 == line {
            offset += l.char_indices().nth(column.saturating_sub(1)).map_or(l.len(), |(b, _)| b);
            break;
        }
        offset += l.len();
    }
    // ...less what the escapes before it added...
    let before = added.iter().take_while(|(end, _)| *end <= offset).last().map_or(0, |(_, n)| *n);
    let at = offset.saturating_sub(before).min(source.len());
    // (on a character boundary, for the slice below)
    // ...as a line and column of the source.
    let mut at = at;
    while !source.is_char_boundary(at) {
        at -= 1;
    }
    let head = &source[..at];
    let line = head.matches('\n').count() + 1;
    let column = head.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// handlebars.js accepts an inverted helper block, `{{^eq a b}}A{{else}}B{{/eq}}`, which
/// handlebars-rust does not parse; it means `{{#unless (eq a b)}}A{{else}}B{{/unless}}`, so it
/// is rewritten to that before parsing; an inverted section, `{{^list}}none{{/list}}`, likewise
/// becomes `{{#unless list}}none{{/unless}}`.
fn inverse_helper_blocks(source: &str) -> std::borrow::Cow<'_, str> {
    if !source.contains("{{^") && !source.contains("{{~^") {
        return std::borrow::Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len() + 32);
    // Open blocks by name; `true` for the ones rewritten into `unless`.
    let mut open: Vec<(String, bool)> = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let tag_and_after = &rest[start..];
        let Some(end) = tag_and_after.find("}}") else {
            out.push_str(tag_and_after);
            return std::borrow::Cow::Owned(out);
        };
        let tag = &tag_and_after[..end + 2];
        let inner = tag[2..tag.len() - 2].trim_start_matches('~').trim_end_matches('~');
        let (open_tilde, close_tilde) = (tag[2..].starts_with('~'), tag[..tag.len() - 2].ends_with('~'));
        let name_of = |body: &str| body.split_whitespace().next().unwrap_or("").to_string();
        let mut replacement = None;
        if let Some(body) = inner.strip_prefix('#') {
            open.push((name_of(body.trim_start_matches('*').trim_start_matches('>')), false));
        } else if let Some(body) = inner.strip_prefix('^') {
            let name = name_of(body);
            let args = body.trim().strip_prefix(name.as_str()).unwrap_or("").trim();
            if !name.is_empty() {
                let condition = if args.is_empty() { name.clone() } else { format!("({name} {args})") };
                replacement =
                    Some(format!("{{{{{}#unless {condition}{}}}}}", if open_tilde { "~" } else { "" }, if close_tilde { "~" } else { "" }));
                open.push((name, true));
            }
        } else if let Some(body) = inner.strip_prefix('/') {
            let name = body.trim().to_string();
            if let Some(pos) = open.iter().rposition(|(n, _)| *n == name) {
                let (_, rewritten) = open.remove(pos);
                if rewritten {
                    replacement =
                        Some(format!("{{{{{}/unless{}}}}}", if open_tilde { "~" } else { "" }, if close_tilde { "~" } else { "" }));
                }
            }
        }
        out.push_str(replacement.as_deref().unwrap_or(tag));
        rest = &tag_and_after[end + 2..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests;
