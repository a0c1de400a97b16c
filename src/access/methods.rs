//! Every RPC of the API, read from the descriptor set the daemon serves by reflection: the
//! scope it needs, and where its request names the app and the resource (so the guard can
//! check a key's apps and the audit log can say what was touched) — read from the request's
//! top-level protobuf fields without decoding the rest of it.

use std::collections::HashMap;

use prost::Message as _;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};

use super::Scope;

/// The scope an RPC of `service` needs. The keys, the app's settings, its channels (which
/// hold provider credentials) and its event destinations (which send its data out) are admin;
/// SendMessages, SendUsersMessages and PutEvents are send; what only reads is read; every
/// other change is write.
pub fn scope_of(service: &str, method: &str) -> Scope {
    match (service, method) {
        ("Keys", _) | ("Apps", "CreateApp" | "DeleteApp" | "UpdateAppSettings") => Scope::Admin,
        ("Channels", m) if m.starts_with("Update") || m.starts_with("Delete") => Scope::Admin,
        ("Events", "CreateEventDestination" | "UpdateEventDestination" | "DeleteEventDestination") => Scope::Admin,
        ("Messages", "SendMessages" | "SendUsersMessages") | ("Events", "PutEvents") => Scope::Send,
        (_, m) if ["Get", "List", "Check", "Stream", "Export", "Render"].iter().any(|p| m.starts_with(p)) => Scope::Read,
        _ => Scope::Write,
    }
}

/// A request field the audit log names the resource by: a top-level string, or a string in a
/// top-level message (`campaign.name`).
#[derive(Debug, Clone)]
struct ResourceField {
    path: Vec<u32>,
    label: String,
}

#[derive(Debug, Clone)]
pub struct Method {
    /// `herald.v1.Apps`.
    pub service: String,
    /// `CreateApp`.
    pub name: String,
    pub scope: Scope,
    pub client_streaming: bool,
    /// The top-level `app_id` field's number.
    app_field: Option<u32>,
    /// The top-level `resource_arn` field's number (tags), whose ARN names the app.
    arn_field: Option<u32>,
    resource: Vec<ResourceField>,
}

/// What a request names, as far as access and audit care.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Named {
    pub app_id: Option<String>,
    /// (label, value) pairs, e.g. ("campaign_id", "…").
    pub resource: Vec<(String, String)>,
}

impl Method {
    /// Whether its requests name an app (a key limited to apps may call it).
    pub fn names_app(&self) -> bool {
        self.app_field.is_some() || self.arn_field.is_some()
    }

    /// Reads the app and resource a request message names.
    pub fn read(&self, message: &[u8]) -> Named {
        let mut named = Named::default();
        if let Some(n) = self.app_field {
            named.app_id = string_at(message, &[n]);
        }
        if let Some(n) = self.arn_field {
            if let Some(arn) = string_at(message, &[n]) {
                named.app_id = app_of_arn(&arn);
                named.resource.push(("resource_arn".into(), cap(arn)));
            }
        }
        for f in &self.resource {
            if let Some(v) = string_at(message, &f.path).filter(|v| !v.is_empty()) {
                named.resource.push((f.label.clone(), cap(v)));
            }
        }
        named
    }
}

fn cap(mut v: String) -> String {
    if v.len() > 200 {
        let mut end = 200;
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        v.truncate(end);
    }
    v
}

/// `arn:aws:mobiletargeting:R:A:apps/APP/…` or `apps/APP/…` → APP.
fn app_of_arn(arn: &str) -> Option<String> {
    let path = arn.rsplit(':').next().unwrap_or(arn);
    let mut parts = path.split('/');
    (parts.next() == Some("apps")).then(|| parts.next().map(str::to_string)).flatten().filter(|a| !a.is_empty())
}

/// The RPCs by path (`/herald.v1.Apps/CreateApp`).
pub struct Methods {
    by_path: HashMap<String, Method>,
}

impl Methods {
    pub fn load() -> Self {
        let set = FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).expect("the served descriptor set decodes");
        let mut messages: HashMap<String, &DescriptorProto> = HashMap::new();
        for file in &set.file {
            for m in &file.message_type {
                messages.insert(format!(".{}.{}", file.package(), m.name()), m);
            }
        }
        let mut by_path = HashMap::new();
        for file in &set.file {
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                for m in &service.method {
                    let input = messages.get(m.input_type()).copied();
                    let (app_field, arn_field, resource) = input.map(|d| fields(d, &messages)).unwrap_or_default();
                    let method = Method {
                        service: full.clone(),
                        name: m.name().to_string(),
                        scope: scope_of(service.name(), m.name()),
                        client_streaming: m.client_streaming(),
                        app_field,
                        arn_field,
                        resource,
                    };
                    by_path.insert(format!("/{full}/{}", m.name()), method);
                }
            }
        }
        Self { by_path }
    }

    pub fn get(&self, path: &str) -> Option<&Method> {
        self.by_path.get(path)
    }

    pub fn all(&self) -> impl Iterator<Item = (&str, &Method)> {
        self.by_path.iter().map(|(p, m)| (p.as_str(), m))
    }
}

fn is_resource_name(name: &str) -> bool {
    name != "app_id" && (name.ends_with("_id") || matches!(name, "id" | "name" | "template_name"))
}

type Fields = (Option<u32>, Option<u32>, Vec<ResourceField>);

fn fields(d: &DescriptorProto, messages: &HashMap<String, &DescriptorProto>) -> Fields {
    let (mut app, mut arn, mut resource) = (None, None, Vec::new());
    for f in &d.field {
        let repeated = f.label() == prost_types::field_descriptor_proto::Label::Repeated;
        match f.r#type() {
            Type::String if !repeated && f.name() == "app_id" => app = Some(f.number() as u32),
            Type::String if !repeated && f.name() == "resource_arn" => arn = Some(f.number() as u32),
            Type::String if !repeated && is_resource_name(f.name()) => {
                resource.push(ResourceField { path: vec![f.number() as u32], label: f.name().to_string() })
            }
            Type::Message if !repeated => {
                if let Some(inner) = messages.get(f.type_name()) {
                    for g in &inner.field {
                        if g.r#type() == Type::String && matches!(g.name(), "id" | "name") {
                            resource.push(ResourceField {
                                path: vec![f.number() as u32, g.number() as u32],
                                label: format!("{}.{}", f.name(), g.name()),
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (app, arn, resource)
}

/// The last occurrence (protobuf's rule for a singular field) of the length-delimited field
/// at `path`, read as UTF-8; `None` when absent or the bytes are not well formed.
fn string_at(message: &[u8], path: &[u32]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut found: Option<&[u8]> = None;
    let mut buf = message;
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (number, wire) = ((key >> 3) as u32, key & 7);
        match wire {
            0 => {
                varint(&mut buf)?;
            }
            1 => buf = buf.get(8..)?,
            5 => buf = buf.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let value = buf.get(..len)?;
                buf = &buf[len..];
                if number == *first {
                    found = Some(value);
                }
            }
            _ => return None,
        }
    }
    let value = found?;
    if rest.is_empty() {
        std::str::from_utf8(value).ok().map(str::to_string)
    } else {
        string_at(value, rest)
    }
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{Campaign, CreateCampaignRequest, GetCampaignRequest, TagResourceRequest};

    #[test]
    fn requests_name_their_app_and_resource() {
        let methods = Methods::load();
        let get = methods.get("/herald.v1.Campaigns/GetCampaign").expect("GetCampaign");
        assert_eq!(get.scope, Scope::Read);
        let body = GetCampaignRequest { app_id: "app1".into(), campaign_id: "c9".into(), ..Default::default() }.encode_to_vec();
        let named = get.read(&body);
        assert_eq!(named.app_id.as_deref(), Some("app1"));
        assert_eq!(named.resource, [("campaign_id".to_string(), "c9".to_string())]);

        let create = methods.get("/herald.v1.Campaigns/CreateCampaign").expect("CreateCampaign");
        assert_eq!(create.scope, Scope::Write);
        let body =
            CreateCampaignRequest { app_id: "app2".into(), campaign: Some(Campaign { name: "Spring".into(), ..Default::default() }) }
                .encode_to_vec();
        let named = create.read(&body);
        assert_eq!(named.app_id.as_deref(), Some("app2"));
        assert_eq!(named.resource, [("campaign.name".to_string(), "Spring".to_string())]);

        let tag = methods.get("/herald.v1.Tags/TagResource").expect("TagResource");
        let body =
            TagResourceRequest { resource_arn: "arn:aws:mobiletargeting:us-east-1:1:apps/a7/campaigns/c".into(), ..Default::default() }
                .encode_to_vec();
        assert_eq!(tag.read(&body).app_id.as_deref(), Some("a7"));
        assert!(tag.names_app());
        assert!(!methods.get("/herald.v1.Apps/ListApps").unwrap().names_app());
        // Not protobuf: nothing is read, nothing panics.
        assert_eq!(get.read(&[0xff, 0xff, 0xff]), Named::default());
    }
}
