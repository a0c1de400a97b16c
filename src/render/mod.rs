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
        let source = inverse_helper_blocks(source);
        let template = Template::compile(&source).map_err(|e| {
            let (line, column) = e.pos().unwrap_or((0, 0));
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
