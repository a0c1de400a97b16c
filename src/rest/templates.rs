//! Pinpoint's message templates, which live at account level, one per name and type: the REST
//! door keeps them in the store's account spaces (`store::account_space`), where every app's
//! campaigns, journeys and SendMessages find a template of the kind they need that the app
//! does not have itself.

use prost_reflect::DynamicMessage;
use serde_json::{json, Map, Value};
use tonic::Request;

use super::model::Model;
use super::ops::{Call, ACCOUNT};
use super::transcode::{Decoder, Trail};
use super::RestError;
use crate::proto::v1::{self as pb, templates_server::Templates as _};

/// The members of a template request that belong to the template, not its content.
const TOP: [&str; 3] = ["DefaultSubstitutions", "TemplateDescription", "tags"];

struct Kind {
    /// `Email`, as operation names spell it.
    op: &'static str,
    /// `EMAIL`, as TemplateType values and paths spell it.
    pinpoint: &'static str,
    request_shape: &'static str,
    response_shape: &'static str,
    herald: pb::TemplateType,
    /// The content field of Herald's Template and its message.
    field: &'static str,
}

const KINDS: [Kind; 4] = [
    Kind {
        op: "Email",
        pinpoint: "EMAIL",
        request_shape: "EmailTemplateRequest",
        response_shape: "EmailTemplateResponse",
        herald: pb::TemplateType::Email,
        field: "email",
    },
    Kind {
        op: "Sms",
        pinpoint: "SMS",
        request_shape: "SMSTemplateRequest",
        response_shape: "SMSTemplateResponse",
        herald: pb::TemplateType::Sms,
        field: "sms",
    },
    Kind {
        op: "Push",
        pinpoint: "PUSH",
        request_shape: "PushNotificationTemplateRequest",
        response_shape: "PushNotificationTemplateResponse",
        herald: pb::TemplateType::Push,
        field: "push",
    },
    Kind {
        op: "InApp",
        pinpoint: "INAPP",
        request_shape: "InAppTemplateRequest",
        response_shape: "InAppTemplateResponse",
        herald: pb::TemplateType::InApp,
        field: "in_app",
    },
];

impl Kind {
    /// The account space this kind's templates live in.
    fn space(&self) -> &'static str {
        crate::store::account_space(self.herald).expect("every REST template kind has an account space")
    }
}

fn kind_of_op(op: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| op.strip_suffix("Template").is_some_and(|rest| rest.ends_with(k.op)))
}

fn kind_of_type(t: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.pinpoint.eq_ignore_ascii_case(t))
}

fn kind_of_herald(t: i32) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.herald as i32 == t)
}

fn message_body(message: &str, arn: Option<String>) -> Value {
    let mut v = json!({ "Message": message, "RequestID": uuid::Uuid::new_v4().to_string() });
    if let (Some(arn), Value::Object(o)) = (arn, &mut v) {
        o.insert("Arn".into(), Value::String(arn));
    }
    v
}

fn out(member: &str, v: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(member.to_string(), v);
    m
}

fn status(trail: &Trail) -> impl Fn(tonic::Status) -> RestError + '_ {
    move |s| RestError::from_status(s, trail)
}

fn template_arn(c: &Call<'_>, name: &str, kind: &Kind) -> String {
    format!("arn:aws:mobiletargeting:{}:{ACCOUNT}:templates/{name}/{}", c.region, kind.pinpoint)
}

/// `version` from Pinpoint's text (absent: the active version; `latest` is refused where a
/// number is needed).
fn version(c: &Call<'_>) -> Result<i32, RestError> {
    match c.input.get("Version").and_then(Value::as_str) {
        None | Some("") => Ok(0),
        Some(v) => v
            .parse::<i32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| RestError::bad_request(format!("Version '{v}' must be a version number"))),
    }
}

/// A Pinpoint template request as Herald's Template.
fn template_in(c: &Call<'_>, kind: &Kind, name: &str, body: &Value) -> Result<(pb::Template, Trail), RestError> {
    let rest = c.rest;
    let desc = rest.descriptor("Template");
    let Value::Object(members) = body else { return Err(RestError::bad_request(format!("{} must be an object", kind.request_shape))) };
    let (top, content): (Map<String, Value>, Map<String, Value>) =
        members.clone().into_iter().partition(|(k, _)| TOP.contains(&k.as_str()));
    let mut dec = Decoder::new();
    let mut msg = dec.message(Some(kind.request_shape), &Value::Object(top), &desc, "template", kind.request_shape);
    let field = desc.get_field_by_name(kind.field).expect("Template has its content fields");
    let prost_reflect::Kind::Message(content_desc) = field.kind() else { unreachable!("content fields are messages") };
    let content_msg = dec.message(
        Some(kind.request_shape),
        &Value::Object(content),
        &content_desc,
        &format!("template.{}", kind.field),
        kind.request_shape,
    );
    msg.set_field(&field, prost_reflect::Value::Message(content_msg));
    msg.set_field_by_name("name", prost_reflect::Value::String(name.to_string()));
    if !dec.violations.is_empty() {
        return Err(RestError::invalid(&dec.violations));
    }
    let t = msg.transcode_to::<pb::Template>().map_err(|e| RestError::new(500, "InternalServerErrorException", e.to_string()))?;
    Ok((t, dec.trail))
}

/// Herald's Template as Pinpoint's `<Kind>TemplateResponse`.
fn template_out(c: &Call<'_>, kind: &Kind, t: &pb::Template) -> Value {
    let model = Model::get();
    let d = DynamicMessage::decode(c.rest.descriptor("Template"), prost::Message::encode_to_vec(t).as_slice()).expect("a template decodes");
    let mut v = super::transcode::encode(model, kind.response_shape, &d);
    if let Some(prost_reflect::Value::Message(content)) = d.get_field_by_name(kind.field).map(|c| c.into_owned()) {
        if let (Value::Object(o), Value::Object(inner)) = (&mut v, super::transcode::encode(model, kind.response_shape, &content)) {
            for (k, x) in inner {
                o.entry(k).or_insert(x);
            }
        }
    }
    if let Value::Object(o) = &mut v {
        o.insert("Arn".into(), Value::String(template_arn(c, &t.name, kind)));
        o.insert("TemplateName".into(), Value::String(t.name.clone()));
        o.insert("TemplateType".into(), Value::String(kind.pinpoint.into()));
        o.insert("Version".into(), Value::String(t.version.to_string()));
        o.entry("tags").or_insert_with(|| json!({}));
    }
    v
}

/// Herald's Template as a TemplateResponse or TemplateVersionResponse (no content).
fn summary(c: &Call<'_>, t: &pb::Template, shape: &str) -> Value {
    let d = DynamicMessage::decode(c.rest.descriptor("Template"), prost::Message::encode_to_vec(t).as_slice()).expect("a template decodes");
    let mut v = super::transcode::encode(Model::get(), shape, &d);
    let kind = kind_of_herald(t.template_type);
    if let Value::Object(o) = &mut v {
        o.insert("TemplateName".into(), Value::String(t.name.clone()));
        if let Some(k) = kind {
            o.insert("TemplateType".into(), Value::String(k.pinpoint.into()));
            if shape == "TemplateResponse" {
                o.insert("Arn".into(), Value::String(template_arn(c, &t.name, k)));
            }
        }
        o.insert("Version".into(), Value::String(t.version.to_string()));
    }
    v
}

/// The template, which must be of `kind` (Pinpoint keeps one template per name and type).
async fn get(c: &Call<'_>, kind: &Kind, name: &str, version: i32) -> Result<pb::Template, RestError> {
    let trail = Trail::default();
    let req = pb::GetTemplateRequest { app_id: kind.space().into(), name: name.into(), version };
    let t = c.rest.services.templates.get_template(Request::new(req)).await.map_err(status(&trail))?.into_inner();
    if t.template_type != kind.herald as i32 {
        return Err(RestError::not_found(format!("Template {name} of type {} not found", kind.pinpoint)));
    }
    Ok(t)
}

pub async fn dispatch(c: &Call<'_>, op: &str) -> Result<Map<String, Value>, RestError> {
    let svc = &c.rest.services.templates;
    let name = c.input.get("TemplateName").and_then(Value::as_str).unwrap_or_default().to_string();
    match op {
        "ListTemplates" => return list(c).await,
        "ListTemplateVersions" => {
            let kind = kind_of_type(c.input.get("TemplateType").and_then(Value::as_str).unwrap_or_default())
                .ok_or_else(|| RestError::bad_request("TemplateType must be EMAIL, SMS, PUSH or INAPP"))?;
            get(c, kind, &name, 0).await?;
            let page_size = page_size(c)?;
            let token = c.input.get("NextToken").and_then(Value::as_str).unwrap_or_default().to_string();
            let req = pb::ListTemplateVersionsRequest { app_id: kind.space().into(), name, page_size, page_token: token };
            let trail = Trail::default();
            let r = svc.list_template_versions(Request::new(req)).await.map_err(status(&trail))?.into_inner();
            let items: Vec<Value> = r.versions.iter().map(|t| summary(c, t, "TemplateVersionResponse")).collect();
            let mut v = json!({ "Item": items, "RequestID": uuid::Uuid::new_v4().to_string() });
            if !r.next_page_token.is_empty() {
                v["NextToken"] = Value::String(r.next_page_token);
            }
            return Ok(out("TemplateVersionsResponse", v));
        }
        "UpdateTemplateActiveVersion" => {
            let kind = kind_of_type(c.input.get("TemplateType").and_then(Value::as_str).unwrap_or_default())
                .ok_or_else(|| RestError::bad_request("TemplateType must be EMAIL, SMS, PUSH or INAPP"))?;
            get(c, kind, &name, 0).await?;
            let version =
                c.input.get("TemplateActiveVersionRequest").and_then(|r| r.get("Version")).and_then(Value::as_str).unwrap_or_default();
            let trail = Trail::default();
            let req = pb::UpdateTemplateActiveVersionRequest { app_id: kind.space().into(), name, version: version.to_string() };
            svc.update_template_active_version(Request::new(req)).await.map_err(status(&trail))?;
            return Ok(out("MessageBody", message_body("Accepted", None)));
        }
        _ => {}
    }
    if op.contains("Voice") {
        return Err(RestError::bad_request("Herald has no voice channel, so no voice templates"));
    }
    let kind = kind_of_op(op).ok_or_else(|| RestError::bad_request(format!("{op} is not served over Herald's REST API")))?;
    let body_member = kind.request_shape;
    if op.starts_with("Create") {
        c.rest.ensure_account(kind.space()).await?;
        let (template, trail) = template_in(c, kind, &name, c.input.get(body_member).unwrap_or(&Value::Null))?;
        let req = pb::CreateTemplateRequest { app_id: kind.space().into(), template: Some(template) };
        svc.create_template(Request::new(req)).await.map_err(status(&trail))?;
        Ok(out("CreateTemplateMessageBody", message_body("Created", Some(template_arn(c, &name, kind)))))
    } else if op.starts_with("Update") {
        get(c, kind, &name, 0).await?;
        if c.input.contains_key("Version") {
            return Err(RestError::bad_request(
                "Version: Herald updates the latest version (or writes a new one with CreateNewVersion=true); omit Version",
            ));
        }
        let (template, trail) = template_in(c, kind, &name, c.input.get(body_member).unwrap_or(&Value::Null))?;
        let new_version = c.input.get("CreateNewVersion").and_then(Value::as_bool).unwrap_or(false);
        let req = pb::UpdateTemplateRequest { app_id: kind.space().into(), template: Some(template), overwrite_latest: !new_version };
        svc.update_template(Request::new(req)).await.map_err(status(&trail))?;
        Ok(out("MessageBody", message_body("Accepted", None)))
    } else if op.starts_with("Get") {
        let t = get(c, kind, &name, version(c)?).await?;
        Ok(out(kind.response_shape, template_out(c, kind, &t)))
    } else {
        get(c, kind, &name, 0).await?;
        let trail = Trail::default();
        let req = pb::DeleteTemplateRequest { app_id: kind.space().into(), name, version: version(c)? };
        svc.delete_template(Request::new(req)).await.map_err(status(&trail))?;
        Ok(out("MessageBody", message_body("Accepted", None)))
    }
}

fn page_size(c: &Call<'_>) -> Result<i32, RestError> {
    match c.input.get("PageSize").and_then(Value::as_str) {
        None | Some("") => Ok(0),
        Some(v) => v
            .parse::<i32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| RestError::bad_request(format!("PageSize '{v}' must be a positive number"))),
    }
}

/// ListTemplates, with Pinpoint's Prefix and TemplateType filters applied while paging: the
/// kinds' spaces one after the other (the token says which, and where in it).
async fn list(c: &Call<'_>) -> Result<Map<String, Value>, RestError> {
    let svc = &c.rest.services.templates;
    let want = match page_size(c)? {
        0 => 20,
        n => n as usize,
    };
    let prefix = c.input.get("Prefix").and_then(Value::as_str).unwrap_or_default().to_string();
    let only = match c.input.get("TemplateType").and_then(Value::as_str) {
        None | Some("") => None,
        Some(t) => Some(kind_of_type(t).ok_or_else(|| RestError::bad_request("TemplateType must be EMAIL, SMS, PUSH or INAPP"))?.herald),
    };
    let given = c.input.get("NextToken").and_then(Value::as_str).unwrap_or_default();
    let (mut at, mut token) = match given.split_once(':') {
        Some((i, t)) => (i.parse::<usize>().map_err(|_| RestError::bad_request("NextToken is not one Herald gave"))?, t.to_string()),
        None if given.is_empty() => (0, String::new()),
        None => return Err(RestError::bad_request("NextToken is not one Herald gave")),
    };
    let mut items = Vec::new();
    let trail = Trail::default();
    while at < KINDS.len() && items.len() < want {
        let kind = &KINDS[at];
        if only.is_some_and(|k| k != kind.herald) {
            at += 1;
            token.clear();
            continue;
        }
        let req = pb::ListTemplatesRequest {
            app_id: kind.space().into(),
            page_size: (want - items.len()) as i32,
            page_token: token.clone(),
            template_type: 0,
        };
        let r = match svc.list_templates(Request::new(req)).await {
            Ok(r) => r.into_inner(),
            // No template of this kind was ever created: its space does not exist yet.
            Err(s) if s.code() == tonic::Code::NotFound => pb::ListTemplatesResponse::default(),
            Err(s) => return Err(status(&trail)(s)),
        };
        items.extend(r.templates.iter().filter(|t| t.name.starts_with(&prefix)).map(|t| summary(c, t, "TemplateResponse")));
        token = r.next_page_token;
        if token.is_empty() {
            at += 1;
        }
    }
    let mut v = json!({ "Item": items });
    if at < KINDS.len() && (!token.is_empty() || only.is_none_or(|k| KINDS[at..].iter().any(|x| x.herald == k))) {
        v["NextToken"] = Value::String(format!("{at}:{token}"));
    }
    Ok(out("TemplatesResponse", v))
}
