//! Rendering: Pinpoint message templates on handlebars-rust with Pinpoint's helper set and
//! handlebars.js semantics. CPU only — no I/O.
//!
//! A part (subject, html, text, body...) is compiled once into a [`Compiled`]; rendering it
//! is one pass with a [`handlebars::Context`] built once per recipient. The compiler rewrites
//! each plain `{{value}}` into a call of an internal print helper, so values print as
//! handlebars.js prints JavaScript values (`["a","b"]` as `a,b`, `12.0` as `12`).

pub mod context;
pub mod helpers;
pub mod mime;
pub mod sms;
pub mod template;
pub mod value;

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{Handlebars, RenderContext, Renderable, StringOutput, Template};

/// handlebars-rust's own helpers that stay registered next to Pinpoint's.
const BUILT_INS: &[&str] = &["with", "lookup", "raw", "log", "len", "ne"];

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
    template: Template,
}

/// The helper registry every render uses. Build once; `render` takes `&self`.
pub struct Renderer {
    registry: Handlebars<'static>,
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    pub fn new() -> Self {
        let mut registry = Handlebars::new();
        registry.register_escape_fn(handlebars::html_escape);
        helpers::register(&mut registry);
        Self { registry }
    }

    /// Parses a part; the error names the line and column.
    pub fn compile(&self, source: &str) -> Result<Compiled, ParseError> {
        let source = inverse_helper_blocks(source);
        let mut template = Template::compile(&source).map_err(|e| {
            let (line, column) = e.pos().unwrap_or((0, 0));
            ParseError { line, column, message: e.reason().to_string() }
        })?;
        self.rewrite(&mut template);
        Ok(Compiled { template })
    }

    /// Renders a compiled part against a context.
    pub fn render(&self, part: &Compiled, context: &handlebars::Context) -> Result<String, RenderFailure> {
        let mut out = StringOutput::new();
        let mut rc = RenderContext::new(None);
        part.template.render(&self.registry, context, &mut rc, &mut out).map_err(|e| RenderFailure {
            message: e.reason().to_string(),
            line: e.line_no,
            column: e.column_no,
        })?;
        out.into_string().map_err(|e| RenderFailure { message: e.to_string(), line: None, column: None })
    }

    fn is_helper(&self, name: &Parameter) -> bool {
        let known = |n: &str| helpers::NAMES.contains(&n) || BUILT_INS.contains(&n);
        match name {
            Parameter::Name(n) => known(n),
            // `{{uuid}}` parses as a one-segment path.
            Parameter::Path(handlebars::Path::Relative((_, raw))) => known(raw),
            _ => false,
        }
    }

    /// Turns plain value expressions into calls of the print helper, in every nested block.
    fn rewrite(&self, template: &mut Template) {
        for element in &mut template.elements {
            match element {
                TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                    if ht.params.is_empty()
                        && ht.hash.is_empty()
                        && !self.is_helper(&ht.name)
                        && !context::prints_natively(&raw_path(&ht.name))
                    {
                        let original = std::mem::replace(&mut ht.name, Parameter::Name(helpers::PRINT.to_string()));
                        let param = match original {
                            Parameter::Name(n) => Parameter::parse(&n).unwrap_or(Parameter::Name(n)),
                            other => other,
                        };
                        ht.params.push(param);
                    }
                }
                TemplateElement::HelperBlock(ht) => {
                    if let Some(t) = ht.template.as_mut() {
                        self.rewrite(t);
                    }
                    if let Some(t) = ht.inverse.as_mut() {
                        self.rewrite(t);
                    }
                }
                TemplateElement::DecoratorBlock(d) | TemplateElement::PartialBlock(d) => {
                    if let Some(t) = d.template.as_mut() {
                        self.rewrite(t);
                    }
                }
                _ => {}
            }
        }
    }
}

/// handlebars.js accepts an inverted helper block, `{{^eq a b}}A{{else}}B{{/eq}}`, which
/// handlebars-rust does not parse; it means `{{#unless (eq a b)}}A{{else}}B{{/unless}}`, so it
/// is rewritten to that before parsing. Inverted sections without arguments stay as they are.
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
        let name_of = |body: &str| body.trim().split_whitespace().next().unwrap_or("").to_string();
        let mut replacement = None;
        if let Some(body) = inner.strip_prefix('#') {
            open.push((name_of(body.trim_start_matches('*').trim_start_matches('>')), false));
        } else if let Some(body) = inner.strip_prefix('^') {
            let name = name_of(body);
            let args = body.trim().strip_prefix(name.as_str()).unwrap_or("").trim();
            if !name.is_empty() && !args.is_empty() {
                replacement = Some(format!(
                    "{{{{{}#unless ({name} {args}){}}}}}",
                    if open_tilde { "~" } else { "" },
                    if close_tilde { "~" } else { "" }
                ));
                open.push((name, true));
            } else if !name.is_empty() {
                open.push((name, false));
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

/// The path as written (`User.UserAttributes.[Last Name]`), or "" when it is not a path.
fn raw_path(p: &Parameter) -> String {
    match p {
        Parameter::Name(n) => n.clone(),
        Parameter::Path(handlebars::Path::Relative((_, raw))) => raw.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests;
