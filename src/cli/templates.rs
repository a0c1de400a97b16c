//! `herald templates create|update|get|list|versions|activate|delete|preview`.
//!
//! Content comes from flags or from a JSON file in Pinpoint's request shape
//! (`{"Subject": ..., "HtmlPart": ..., "TextPart": ..., "DefaultSubstitutions": ...}` for email,
//! `{"Body": ...}` for SMS, `{"Default": {...}, "APNS": {...}, "GCM": {...}}` for push), so
//! templates exported from Pinpoint load unchanged.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;

use super::client::ConnArgs;
use super::endpoints::key_value;
use crate::proto::v1::{
    render_template_request::Recipient, template::Content, templates_client::TemplatesClient, AttributeValues, CreateTemplateRequest,
    CustomTemplate, DeleteTemplateRequest, EmailTemplate, GetTemplateRequest, ListTemplateVersionsRequest, ListTemplatesRequest, PushBlock,
    PushTemplate, RenderTemplateRequest, SmsTemplate, Template, TemplateType, UpdateTemplateActiveVersionRequest, UpdateTemplateRequest,
};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    Email,
    Sms,
    Push,
    Custom,
    /// An in-app message (Pinpoint's InAppTemplateRequest), from --file.
    InApp,
}

#[derive(Debug, Args)]
pub struct ContentArgs {
    /// email, sms, push, custom or in-app.
    #[arg(long = "type", value_enum)]
    kind: Kind,
    /// JSON in Pinpoint's request shape for the type.
    #[arg(long)]
    file: Option<PathBuf>,
    #[arg(long)]
    subject: Option<String>,
    #[arg(long)]
    html_file: Option<PathBuf>,
    #[arg(long)]
    text_file: Option<PathBuf>,
    /// SMS body, or the push body.
    #[arg(long)]
    body: Option<String>,
    /// Push title.
    #[arg(long)]
    title: Option<String>,
    /// Custom channel payload template.
    #[arg(long)]
    payload_file: Option<PathBuf>,
    #[arg(long)]
    list_unsubscribe_url: Option<String>,
    /// Default substitutions as a JSON object.
    #[arg(long)]
    defaults: Option<String>,
    #[arg(long)]
    description: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Create a template (version 1, active).
    Create {
        #[arg(long)]
        app: String,
        name: String,
        #[command(flatten)]
        content: ContentArgs,
    },
    /// Write a new version (or overwrite the latest).
    Update {
        #[arg(long)]
        app: String,
        name: String,
        #[command(flatten)]
        content: ContentArgs,
        #[arg(long)]
        overwrite: bool,
    },
    /// Print a version (default: the active one) as JSON.
    Get {
        #[arg(long)]
        app: String,
        name: String,
        #[arg(long, default_value_t = 0)]
        version: i32,
    },
    List {
        #[arg(long)]
        app: String,
    },
    Versions {
        #[arg(long)]
        app: String,
        name: String,
    },
    /// Make a version (a number or `latest`) the active one.
    Activate {
        #[arg(long)]
        app: String,
        name: String,
        version: String,
    },
    /// Delete one version, or the whole template.
    Delete {
        #[arg(long)]
        app: String,
        name: String,
        #[arg(long, default_value_t = 0)]
        version: i32,
    },
    /// Render a version for an endpoint without sending.
    Preview {
        #[arg(long)]
        app: String,
        name: String,
        #[arg(long, default_value_t = 0)]
        version: i32,
        /// A stored endpoint's id.
        #[arg(long)]
        endpoint: Option<String>,
        /// A substitution NAME=VALUE (repeatable).
        #[arg(long = "sub", value_parser = key_value)]
        substitutions: Vec<(String, String)>,
        /// Print the whole MIME message (email).
        #[arg(long)]
        mime: bool,
    },
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
struct PinpointPush {
    #[serde(alias = "action")]
    action: String,
    #[serde(alias = "body")]
    body: String,
    #[serde(alias = "sound")]
    sound: String,
    #[serde(alias = "title")]
    title: String,
    #[serde(alias = "url")]
    url: String,
    #[serde(alias = "image_url")]
    image_url: String,
    media_url: String,
    #[serde(alias = "raw_content")]
    raw_content: String,
}

impl From<PinpointPush> for PushBlock {
    fn from(p: PinpointPush) -> Self {
        PushBlock {
            title: p.title,
            body: p.body,
            action: p.action,
            url: p.url,
            sound: p.sound,
            image_url: if p.image_url.is_empty() { p.media_url } else { p.image_url },
            raw_content: p.raw_content,
        }
    }
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
struct PinpointRequest {
    // Each member also by the API's (snake_case) name: a file in either shape reads the same.
    #[serde(alias = "subject")]
    subject: String,
    #[serde(alias = "html_part")]
    html_part: String,
    #[serde(alias = "text_part")]
    text_part: String,
    #[serde(alias = "body")]
    body: String,
    #[serde(alias = "default_substitutions")]
    default_substitutions: String,
    #[serde(alias = "description")]
    template_description: String,
    #[serde(alias = "default")]
    default: Option<PinpointPush>,
    #[serde(rename = "APNS", alias = "apns")]
    apns: Option<PinpointPush>,
    #[serde(rename = "GCM", alias = "gcm")]
    gcm: Option<PinpointPush>,
    #[serde(alias = "payload")]
    payload: String,
    #[serde(rename = "tags")]
    tags: std::collections::HashMap<String, String>,
}

/// Pinpoint members of template requests Herald has no counterpart for, and why.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("ADM", "Herald has no Amazon Device Messaging channel"),
    ("Baidu", "Herald has no Baidu channel"),
    ("RecommenderId", "Herald has no recommender models"),
    ("Headers", "Herald's email templates take no extra headers"),
    ("ImageIconUrl", "Herald's push templates have no icon image"),
    ("SmallImageIconUrl", "Herald's push templates have no small icon image"),
];

/// A template file in Pinpoint's request shape: the request's members (EmailTemplateRequest,
/// SMSTemplateRequest, PushNotificationTemplateRequest, a custom `Payload`), or wrapped as
/// `aws pinpoint create-…-template --cli-input-json` files are (`{"TemplateName": …,
/// "EmailTemplateRequest": {…}}`). An unknown key is an error naming it and its line, and a
/// Pinpoint member Herald has no counterpart for one saying why.
fn pinpoint_request(source: &str) -> anyhow::Result<PinpointRequest> {
    use crate::domain::json::read::line_of;
    let v: serde_json::Value = serde_json::from_str(source)?;
    let o = v.as_object().ok_or_else(|| anyhow::anyhow!("expected a JSON object"))?;
    let wrappers = ["EmailTemplateRequest", "SMSTemplateRequest", "PushNotificationTemplateRequest"];
    if o.contains_key("VoiceTemplateRequest") {
        anyhow::bail!("VoiceTemplateRequest: not supported by Herald (no voice templates)");
    }
    let inner = match o.keys().find(|k| wrappers.contains(&k.as_str())) {
        Some(w) if o.keys().all(|k| k == w || k == "TemplateName") => o[w].clone(),
        Some(w) => anyhow::bail!("{w} stands beside other members; give the request alone or wrapped with TemplateName"),
        None => v.clone(),
    };
    // Pinpoint members without a counterpart, at the top and in the push blocks.
    let mut blocks = vec![("", &inner)];
    for b in ["Default", "APNS", "GCM"] {
        if let Some(x) = inner.get(b) {
            blocks.push((b, x));
        }
    }
    for (at, block) in blocks {
        for (key, why) in UNSUPPORTED {
            if block.get(key).is_some_and(|x| !x.is_null()) {
                let line = line_of(source, key).map(|l| format!(" (line {l})")).unwrap_or_default();
                let path = if at.is_empty() { key.to_string() } else { format!("{at}.{key}") };
                anyhow::bail!("{path}: not supported by Herald: {why}{line}");
            }
        }
    }
    serde_json::from_value::<PinpointRequest>(inner).map_err(|e| {
        let msg = e.to_string();
        match msg.split('`').nth(1).and_then(|k| line_of(source, k)) {
            Some(l) => anyhow::anyhow!("{msg} (line {l})"),
            None => anyhow::anyhow!(msg),
        }
    })
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// An in-app template file: InAppTemplateRequest's members (Content, CustomConfig, Layout,
/// TemplateDescription, tags), bare or wrapped as `{"TemplateName": …, "InAppTemplateRequest": {…}}`.
fn in_app_template(name: String, source: &str, description: Option<String>) -> anyhow::Result<Template> {
    use crate::domain::json::read::line_of;
    let v: serde_json::Value = serde_json::from_str(source)?;
    let mut inner = match v.get("InAppTemplateRequest") {
        Some(w) => w.clone(),
        None => v,
    };
    let o = inner.as_object_mut().ok_or_else(|| anyhow::anyhow!("expected a JSON object"))?;
    let stored_description = o.remove("TemplateDescription").and_then(|d| d.as_str().map(str::to_string)).unwrap_or_default();
    let tags: std::collections::HashMap<String, String> = match o.remove("tags") {
        Some(t) => serde_json::from_value(t).map_err(|e| anyhow::anyhow!("tags: {e}"))?,
        None => Default::default(),
    };
    let m = crate::campaigns::inapp::json::message(&inner, "InAppTemplateRequest").map_err(|e| {
        let line = e.at.rsplit('.').next().and_then(|k| line_of(source, k.split('[').next().unwrap_or(k)));
        match line {
            Some(l) => anyhow::anyhow!("{e} (line {l})"),
            None => anyhow::anyhow!("{e}"),
        }
    })?;
    Ok(Template {
        name,
        description: description.unwrap_or(stored_description),
        tags,
        content: Some(Content::InApp(crate::proto::v1::InAppTemplate {
            content: m.content,
            custom_config: m.custom_config,
            layout: m.layout,
        })),
        ..Default::default()
    })
}

fn template(name: String, c: ContentArgs) -> anyhow::Result<Template> {
    if let Kind::InApp = c.kind {
        let f = c.file.as_ref().ok_or_else(|| anyhow::anyhow!("an in-app template comes from --file (Pinpoint's InAppTemplateRequest)"))?;
        return in_app_template(name, &read(f)?, c.description).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()));
    }
    let mut p: PinpointRequest = match &c.file {
        Some(f) => pinpoint_request(&read(f)?).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
        None => PinpointRequest::default(),
    };
    if let Some(s) = c.subject {
        p.subject = s;
    }
    if let Some(f) = &c.html_file {
        p.html_part = read(f)?;
    }
    if let Some(f) = &c.text_file {
        p.text_part = read(f)?;
    }
    if let Some(f) = &c.payload_file {
        p.payload = read(f)?;
    }
    let content = match c.kind {
        Kind::Email => Content::Email(EmailTemplate {
            subject: p.subject,
            html_part: p.html_part,
            text_part: p.text_part,
            list_unsubscribe_url: c.list_unsubscribe_url.unwrap_or_default(),
        }),
        Kind::Sms => Content::Sms(SmsTemplate { body: c.body.unwrap_or(p.body) }),
        Kind::Push => {
            let mut default: PushBlock = p.default.map(Into::into).unwrap_or_default();
            if let Some(b) = c.body {
                default.body = b;
            }
            if let Some(t) = c.title {
                default.title = t;
            }
            Content::Push(PushTemplate { default: Some(default), apns: p.apns.map(Into::into), gcm: p.gcm.map(Into::into) })
        }
        Kind::Custom => Content::Custom(CustomTemplate { payload: p.payload }),
        Kind::InApp => unreachable!("read above"),
    };
    Ok(Template {
        name,
        description: c.description.unwrap_or(p.template_description),
        default_substitutions: c.defaults.unwrap_or(p.default_substitutions),
        tags: p.tags,
        content: Some(content),
        ..Default::default()
    })
}

fn kind_name(t: i32) -> &'static str {
    TemplateType::try_from(t).map(|t| t.as_str_name().trim_start_matches("TEMPLATE_TYPE_")).unwrap_or("?")
}

pub async fn run(conn: ConnArgs, command: TemplatesCommand) -> anyhow::Result<()> {
    let mut c = TemplatesClient::new(conn.channel().await?);
    match command {
        TemplatesCommand::Create { app, name, content } => {
            let t = c
                .create_template(conn.request(CreateTemplateRequest { app_id: app, template: Some(template(name, content)?) }))
                .await?
                .into_inner();
            println!("created {} version {}", t.name, t.version);
        }
        TemplatesCommand::Update { app, name, content, overwrite } => {
            let req = UpdateTemplateRequest { app_id: app, template: Some(template(name, content)?), overwrite_latest: overwrite };
            let t = c.update_template(conn.request(req)).await?.into_inner();
            println!("wrote {} version {} (active version {})", t.name, t.version, t.active_version);
        }
        TemplatesCommand::Get { app, name, version } => {
            let t = c.get_template(conn.request(GetTemplateRequest { app_id: app, name, version })).await?.into_inner();
            println!("{t:#?}");
        }
        TemplatesCommand::List { app } => {
            let mut token = String::new();
            println!("{:<32} {:<7} {:>7} {:>7}  MODIFIED", "NAME", "TYPE", "ACTIVE", "LATEST");
            loop {
                let page = c
                    .list_templates(conn.request(ListTemplatesRequest {
                        app_id: app.clone(),
                        page_size: 1000,
                        page_token: token,
                        template_type: 0,
                    }))
                    .await?
                    .into_inner();
                for t in &page.templates {
                    println!(
                        "{:<32} {:<7} {:>7} {:>7}  {}",
                        t.name,
                        kind_name(t.template_type),
                        t.active_version,
                        t.latest_version,
                        t.last_modified_date
                    );
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        TemplatesCommand::Versions { app, name } => {
            let mut token = String::new();
            println!("{:>7}  {:<6}  WRITTEN", "VERSION", "ACTIVE");
            loop {
                let req = ListTemplateVersionsRequest { app_id: app.clone(), name: name.clone(), page_size: 1000, page_token: token };
                let page = c.list_template_versions(conn.request(req)).await?.into_inner();
                for t in &page.versions {
                    println!("{:>7}  {:<6}  {}", t.version, if t.version == t.active_version { "*" } else { "" }, t.last_modified_date);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        TemplatesCommand::Activate { app, name, version } => {
            let t = c
                .update_template_active_version(conn.request(UpdateTemplateActiveVersionRequest { app_id: app, name, version }))
                .await?
                .into_inner();
            println!("{} active version is {}", t.name, t.active_version);
        }
        TemplatesCommand::Delete { app, name, version } => {
            let r = c.delete_template(conn.request(DeleteTemplateRequest { app_id: app, name: name.clone(), version })).await?.into_inner();
            println!("deleted {} version(s) of {name}", r.deleted_versions);
        }
        TemplatesCommand::Preview { app, name, version, endpoint, substitutions, mime } => {
            let mut subs: std::collections::HashMap<String, AttributeValues> = Default::default();
            for (k, v) in substitutions {
                subs.entry(k).or_default().values.push(v);
            }
            let req =
                RenderTemplateRequest { app_id: app, name, version, recipient: endpoint.map(Recipient::EndpointId), substitutions: subs };
            let r = c.render_template(conn.request(req)).await?.into_inner();
            if let Some(e) = r.error {
                anyhow::bail!("version {} does not render: {}: {} (line {}, column {})", r.version, e.part, e.message, e.line, e.column);
            }
            if mime && !r.mime.is_empty() {
                print!("{}", r.mime);
                return Ok(());
            }
            for p in &r.parts {
                println!("== {} ==\n{}", p.name, p.content);
            }
            if let Some(s) = r.sms {
                println!("== sms ==\n{} characters, {}, {} part(s)", s.characters, s.encoding, s.parts);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pinpoint_request;

    #[test]
    fn template_files_are_read_strictly_bare_or_wrapped() {
        let p = pinpoint_request(r#"{"Subject": "Hi", "HtmlPart": "<p>x</p>", "tags": {"team": "growth"}}"#).unwrap();
        assert_eq!((p.subject.as_str(), p.html_part.as_str(), p.tags["team"].as_str()), ("Hi", "<p>x</p>", "growth"));
        let p = pinpoint_request(
            r#"{"TemplateName": "welcome", "PushNotificationTemplateRequest": {"Default": {"Title": "T", "Body": "B"}, "GCM": {"Body": "g"}}}"#,
        )
        .unwrap();
        assert_eq!((p.default.unwrap().title, p.gcm.unwrap().body), ("T".to_string(), "g".to_string()));
        let e = pinpoint_request("{\n  \"Subject\": \"x\",\n  \"Subjcet\": \"y\"\n}").unwrap_err().to_string();
        assert!(e.contains("Subjcet") && e.ends_with("(line 3)"), "{e}");
        let e = pinpoint_request("{\"GCM\": {\"Body\": \"b\",\n \"ImageIconUrl\": \"i\"}}").unwrap_err().to_string();
        assert!(e.starts_with("GCM.ImageIconUrl: not supported") && e.ends_with("(line 2)"), "{e}");
        assert!(pinpoint_request(r#"{"VoiceTemplateRequest": {}}"#).unwrap_err().to_string().contains("not supported"));
        // The API's shape reads the same.
        let p = pinpoint_request(r#"{"subject": "Hi", "text_part": "t", "description": "d"}"#).unwrap();
        assert_eq!((p.subject.as_str(), p.text_part.as_str(), p.template_description.as_str()), ("Hi", "t", "d"));
        let p = pinpoint_request(r#"{"default": {"title": "T"}, "apns": {"raw_content": "{}"}}"#).unwrap();
        assert_eq!((p.default.unwrap().title, p.apns.unwrap().raw_content), ("T".to_string(), "{}".to_string()));
        let t = super::in_app_template(
            "banner".into(),
            r#"{"TemplateName": "banner", "InAppTemplateRequest": {"Layout": "TOP_BANNER", "TemplateDescription": "d",
                "Content": [{"HeaderConfig": {"Header": "Hi"}}], "tags": {"team": "growth"}}}"#,
            None,
        )
        .unwrap();
        assert_eq!((t.description.as_str(), t.tags["team"].as_str()), ("d", "growth"));
        let e = super::in_app_template("b".into(), "{\"Layout\": \"TOP_BANNER\",\n \"Colour\": 1}", None).unwrap_err().to_string();
        assert!(e.contains("Colour") && e.ends_with("(line 2)"), "{e}");
    }
}
