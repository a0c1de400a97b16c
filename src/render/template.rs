//! Templates as compiled units: which parts a template type has, write-time validation, the
//! compiled-version cache shared by every shard, and rendering one recipient.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use super::context;
use super::{Compiled, ParseError, RenderFailure, Renderer};
use crate::domain::FieldViolation;
use crate::proto::v1::{template::Content, Endpoint, PushBlock, Template, TemplateType};
use crate::telemetry;

/// Longest email part, in characters.
pub const MAX_EMAIL_PART: usize = 600_000;
/// Longest SMS body, in characters.
pub const MAX_SMS_BODY: usize = 1_600;
/// Longest push or custom part, in characters.
pub const MAX_OTHER_PART: usize = 100_000;

fn push_parts<'a>(prefix: &str, b: &'a PushBlock, out: &mut Vec<(String, &'a str)>) {
    for (name, source) in [
        ("title", &b.title),
        ("body", &b.body),
        ("action", &b.action),
        ("url", &b.url),
        ("sound", &b.sound),
        ("image_url", &b.image_url),
        ("raw_content", &b.raw_content),
    ] {
        if !source.is_empty() {
            out.push((format!("{prefix}.{name}"), source.as_str()));
        }
    }
}

/// The template's parts as (name, source): `subject`, `html_part`, `text_part`,
/// `list_unsubscribe_url`; `body`; `default.title`, `apns.body`...; `payload`.
pub fn parts(t: &Template) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    match &t.content {
        Some(Content::Email(e)) => {
            for (name, source) in [
                ("subject", &e.subject),
                ("html_part", &e.html_part),
                ("text_part", &e.text_part),
                ("list_unsubscribe_url", &e.list_unsubscribe_url),
            ] {
                if !source.is_empty() {
                    out.push((name.to_string(), source.as_str()));
                }
            }
        }
        Some(Content::Sms(s)) => out.push(("body".into(), s.body.as_str())),
        Some(Content::Push(p)) => {
            for (prefix, block) in [("default", &p.default), ("apns", &p.apns), ("gcm", &p.gcm)] {
                if let Some(b) = block {
                    push_parts(prefix, b, &mut out);
                }
            }
        }
        Some(Content::Custom(c)) => out.push(("payload".into(), c.payload.as_str())),
        // Shown by the app as written: nothing to render.
        Some(Content::InApp(_)) | None => {}
    }
    out
}

/// The content field's path in the API (`email.html_part`, `push.apns.body`).
fn field(t: &Template, part: &str) -> String {
    let kind = match &t.content {
        Some(Content::Email(_)) => "email",
        Some(Content::Sms(_)) => "sms",
        Some(Content::Push(_)) => "push",
        Some(Content::Custom(_)) => "custom",
        Some(Content::InApp(_)) => "in_app",
        None => "content",
    };
    format!("{kind}.{part}")
}

/// The type a content block implies.
pub fn content_type(t: &Template) -> TemplateType {
    match &t.content {
        Some(Content::Email(_)) => TemplateType::Email,
        Some(Content::Sms(_)) => TemplateType::Sms,
        Some(Content::Push(_)) => TemplateType::Push,
        Some(Content::Custom(_)) => TemplateType::Custom,
        Some(Content::InApp(_)) => TemplateType::InApp,
        None => TemplateType::Unspecified,
    }
}

/// Checks a template write: content present and of the declared type, sizes, every part
/// parses (the violation names the part, line and column), default substitutions well formed.
/// Paths are relative to the template.
pub fn validate(renderer: &Renderer, t: &Template) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    let ok_name = !t.name.is_empty() && t.name.len() <= 128 && t.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok_name {
        out.push(FieldViolation::new("name", "must be 1 to 128 letters, digits, '-' or '_'"));
    }
    let kind = content_type(t);
    if kind == TemplateType::Unspecified {
        out.push(FieldViolation::new("content", "one of email, sms, push, custom or in_app is required"));
        return out;
    }
    if t.template_type != 0 && t.template_type != kind as i32 {
        out.push(FieldViolation::new("template_type", "does not match the content block"));
    }
    if let Some(Content::InApp(a)) = &t.content {
        let m = crate::proto::v1::InAppMessage { content: a.content.clone(), custom_config: a.custom_config.clone(), layout: a.layout };
        out.extend(crate::campaigns::inapp::validate(&m, "in_app"));
        if t.description.chars().count() > 500 {
            out.push(FieldViolation::new("description", "must be at most 500 characters"));
        }
        return out;
    }
    let parts = parts(t);
    if parts.is_empty() {
        out.push(FieldViolation::new(field(t, ""), "has no content"));
    }
    let limit = match kind {
        TemplateType::Email => MAX_EMAIL_PART,
        TemplateType::Sms => MAX_SMS_BODY,
        _ => MAX_OTHER_PART,
    };
    for (part, source) in &parts {
        let chars = source.chars().count();
        if chars > limit {
            out.push(FieldViolation::new(field(t, part), format!("is {chars} characters; at most {limit}")));
            continue;
        }
        if let Err(ParseError { line, column, message }) = renderer.compile(source) {
            out.push(FieldViolation::new(field(t, part), format!("does not parse at line {line}, column {column}: {message}")));
        }
    }
    if let Err(why) = context::parse_defaults(&t.default_substitutions) {
        out.push(FieldViolation::new("default_substitutions", why.to_string()));
    }
    if t.description.chars().count() > 500 {
        out.push(FieldViolation::new("description", "must be at most 500 characters"));
    }
    out
}

/// A template version compiled once: every part and its default substitutions.
#[derive(Debug)]
pub struct CompiledTemplate {
    pub template_type: TemplateType,
    pub version: i32,
    parts: Vec<(String, Compiled)>,
    defaults: Vec<(Vec<String>, String)>,
    /// The endpoint variables the parts can reach: the only ones built per recipient.
    roots: context::Roots,
}

/// A render that failed in one part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {failure}")]
pub struct PartFailure {
    pub part: String,
    pub failure: RenderFailure,
}

impl CompiledTemplate {
    pub fn compile(renderer: &Renderer, t: &Template) -> Result<Self, PartFailure> {
        let mut parts = Vec::new();
        for (name, source) in self::parts(t) {
            let compiled = renderer.compile(source).map_err(|e| PartFailure {
                part: name.clone(),
                failure: RenderFailure { message: e.message, line: Some(e.line), column: Some(e.column) },
            })?;
            parts.push((name, compiled));
        }
        let defaults = context::parse_defaults(&t.default_substitutions).map_err(|message| PartFailure {
            part: "default_substitutions".into(),
            failure: RenderFailure { message: message.to_string(), line: None, column: None },
        })?;
        let roots = context::Roots::referenced_by(self::parts(t).into_iter().map(|(_, s)| s).chain([t.default_substitutions.as_str()]));
        metrics::counter!(telemetry::TEMPLATE_COMPILATIONS).increment(1);
        Ok(Self { template_type: content_type(t), version: t.version, parts, defaults, roots })
    }

    /// The context for one recipient: build once, render every part with it.
    pub fn context(&self, endpoint: Option<&Endpoint>, substitutions: &HashMap<String, Vec<String>>) -> serde_json::Value {
        context::build(endpoint, substitutions, &self.defaults, &self.roots)
    }

    /// Renders every part; the first failure fails the whole message.
    pub fn render(&self, renderer: &Renderer, ctx: &serde_json::Value) -> Result<Vec<(String, String)>, PartFailure> {
        self.parts
            .iter()
            .map(|(name, part)| {
                renderer.render(part, ctx).map(|s| (name.clone(), s)).map_err(|failure| PartFailure { part: name.clone(), failure })
            })
            .collect()
    }
}

/// Which compiled version an entry is: a version's content changes only when the latest is
/// overwritten, and then its modification time changes too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    app_id: String,
    name: String,
    version: i32,
    modified: String,
}

/// The cached versions and their insertion order (oldest first).
type Entries = (HashMap<Key, Arc<CompiledTemplate>>, VecDeque<Key>);

/// Compiled template versions, shared by every shard. Bounded: past `capacity` entries the
/// oldest are dropped.
pub struct TemplateCache {
    renderer: Arc<Renderer>,
    capacity: usize,
    inner: Mutex<Entries>,
}

impl TemplateCache {
    pub fn new(renderer: Arc<Renderer>, capacity: usize) -> Self {
        Self { renderer, capacity: capacity.max(1), inner: Mutex::new((HashMap::new(), VecDeque::new())) }
    }

    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    /// The compiled form of a stored version, compiling it on first use. The lock is never
    /// held while compiling.
    pub fn get(&self, t: &Template) -> Result<Arc<CompiledTemplate>, PartFailure> {
        let key = Key { app_id: t.app_id.clone(), name: t.name.clone(), version: t.version, modified: t.last_modified_date.clone() };
        if let Some(hit) = self.inner.lock().0.get(&key) {
            return Ok(hit.clone());
        }
        let compiled = Arc::new(CompiledTemplate::compile(&self.renderer, t)?);
        let mut inner = self.inner.lock();
        let (map, order) = &mut *inner;
        if let Some(raced) = map.get(&key) {
            return Ok(raced.clone());
        }
        map.insert(key.clone(), compiled.clone());
        order.push_back(key);
        while map.len() > self.capacity {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
        Ok(compiled)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{EmailTemplate, SmsTemplate};

    fn email(name: &str, version: i32, html: &str) -> Template {
        Template {
            app_id: "app".into(),
            name: name.into(),
            version,
            template_type: TemplateType::Email as i32,
            default_substitutions: r#"{"User.UserAttributes.FirstName": "friend"}"#.into(),
            content: Some(Content::Email(EmailTemplate {
                subject: "Hi {{User.UserAttributes.FirstName}}".into(),
                html_part: html.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn validation_names_part_line_and_column() {
        let r = Renderer::new();
        let bad = email("t", 1, "<p>\n{{#if x}}never closed</p>");
        let v = validate(&r, &bad);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].field, "email.html_part");
        assert!(v[0].description.contains("line"), "{v:?}");
        let mut long =
            Template { name: "s".into(), content: Some(Content::Sms(SmsTemplate { body: "x".repeat(1601) })), ..Default::default() };
        assert_eq!(validate(&r, &long)[0].field, "sms.body");
        long.content = Some(Content::Sms(SmsTemplate { body: "ok".into() }));
        long.default_substitutions = "[1]".into();
        long.name = "bad name".into();
        let fields: Vec<_> = validate(&r, &long).into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["name", "default_substitutions"]);
        assert!(validate(&r, &email("ok", 1, "<p>{{Id}}</p>")).is_empty());
    }

    #[test]
    fn versions_compile_once_and_render_with_defaults() {
        let cache = TemplateCache::new(Arc::new(Renderer::new()), 2);
        let t1 = email("t", 1, "<p>{{Id}}</p>");
        let a = cache.get(&t1).unwrap();
        let b = cache.get(&t1).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "a render never recompiles");
        let ctx = a.context(Some(&Endpoint { id: "e1".into(), ..Default::default() }), &HashMap::new());
        let parts = a.render(cache.renderer(), &ctx).unwrap();
        assert_eq!(parts, [("subject".to_string(), "Hi friend".to_string()), ("html_part".to_string(), "<p>e1</p>".to_string())]);
        // A new version is its own entry; the cache stays bounded.
        let t2 = email("t", 2, "<p>v2</p>");
        assert!(!Arc::ptr_eq(&a, &cache.get(&t2).unwrap()));
        cache.get(&email("u", 1, "x")).unwrap();
        assert_eq!(cache.len(), 2);
        let failing = email("f", 1, "{{divide 1 0}}");
        let c = cache.get(&failing).unwrap();
        let err = c.render(cache.renderer(), &c.context(None, &HashMap::new())).unwrap_err();
        assert_eq!(err.part, "html_part");
    }
}
