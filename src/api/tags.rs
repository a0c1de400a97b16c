//! The `Tags` service: Pinpoint's TagResource, UntagResource and ListTagsForResource over
//! apps, campaigns, segments, journeys and templates. A tag change rewrites the resource's
//! latest version in place (compare-and-set on it, retried on contention): it makes no new
//! version, so nothing that follows versions (a journey's segment refresh, campaign versions)
//! sees it.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use tonic::{Request, Response, Status};

use super::{check_app_id, invalid, observe, store_status, FieldViolation};
use crate::proto::v1::{
    tags_server, Campaign, Journey, ListTagsForResourceRequest, Segment, TagResourceRequest, TagsResponse, UntagResourceRequest,
};
use crate::store::{Store, StoreError, TemplateWrite};

/// Pinpoint's limits on tags.
const MAX_TAGS: usize = 50;
const MAX_KEY: usize = 128;
const MAX_VALUE: usize = 256;

/// A tagged resource.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resource {
    App(String),
    /// A versioned record: app, record kind, id.
    Record(String, &'static str, String),
    Template(String, String),
}

/// The resource an ARN or path names.
fn resource(arn: &str) -> Result<Resource, Status> {
    let bad = |why: &str| invalid(vec![FieldViolation::new("resource_arn", why.to_string())]);
    let path = match arn.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            if parts.len() != 5 || parts[1] != "mobiletargeting" {
                return Err(bad("must be an arn:aws:mobiletargeting:… ARN or a path such as apps/APP/campaigns/ID"));
            }
            parts[4]
        }
        None => arn,
    };
    let parts: Vec<&str> = path.split('/').collect();
    let resource = match parts.as_slice() {
        ["apps", app] => Resource::App(app.to_string()),
        ["apps", app, "campaigns", id] => Resource::Record(app.to_string(), crate::campaigns::KIND, id.to_string()),
        ["apps", app, "segments", id] => Resource::Record(app.to_string(), crate::segments::KIND, id.to_string()),
        ["apps", app, "journeys", id] => Resource::Record(app.to_string(), crate::journeys::KIND, id.to_string()),
        ["apps", app, "templates", name] => Resource::Template(app.to_string(), name.to_string()),
        ["templates", ..] => {
            return Err(bad("Herald's templates live in an app: name one as apps/APP/templates/NAME"));
        }
        _ => return Err(bad("names no resource Herald tags: apps/APP, apps/APP/campaigns|segments|journeys/ID, apps/APP/templates/NAME")),
    };
    let app = match &resource {
        Resource::App(a) | Resource::Record(a, ..) | Resource::Template(a, _) => a,
    };
    check_app_id(app)?;
    Ok(resource)
}

fn check_tags(tags: &HashMap<String, String>) -> Vec<FieldViolation> {
    let mut keys: Vec<&String> = tags.keys().collect();
    keys.sort();
    let mut v = Vec::new();
    for k in keys {
        if k.is_empty() || k.chars().count() > MAX_KEY {
            v.push(FieldViolation::new(format!("tags[{k}]"), format!("keys are 1 to {MAX_KEY} characters")));
        } else if k.to_ascii_lowercase().starts_with("aws:") {
            v.push(FieldViolation::new(format!("tags[{k}]"), "keys beginning with aws: are reserved"));
        }
        if tags[k].chars().count() > MAX_VALUE {
            v.push(FieldViolation::new(format!("tags[{k}]"), format!("values are at most {MAX_VALUE} characters")));
        }
    }
    v
}

/// A record's tags, read and written by kind.
fn record_tags(kind: &str, raw: &[u8]) -> Result<HashMap<String, String>, StoreError> {
    Ok(match kind {
        crate::campaigns::KIND => Campaign::decode(raw)?.tags,
        crate::segments::KIND => Segment::decode(raw)?.tags,
        _ => Journey::decode(raw)?.tags,
    })
}

/// The record with `tags`, and its version.
fn retagged(kind: &str, raw: &[u8], tags: HashMap<String, String>) -> Result<(i32, Vec<u8>), StoreError> {
    Ok(match kind {
        crate::campaigns::KIND => {
            let mut r = Campaign::decode(raw)?;
            r.tags = tags;
            (r.version, r.encode_to_vec())
        }
        crate::segments::KIND => {
            let mut r = Segment::decode(raw)?;
            r.tags = tags;
            (r.version, r.encode_to_vec())
        }
        _ => {
            let mut r = Journey::decode(raw)?;
            r.tags = tags;
            (r.version, r.encode_to_vec())
        }
    })
}

pub struct TagsService {
    store: Arc<dyn Store>,
}

impl TagsService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    fn not_found(r: &Resource) -> Status {
        Status::not_found(match r {
            Resource::App(a) => format!("app {a} not found"),
            Resource::Record(a, kind, id) => format!("{kind} {id} not found in app {a}"),
            Resource::Template(a, name) => format!("template {name} not found in app {a}"),
        })
    }

    async fn tags(&self, r: &Resource) -> Result<HashMap<String, String>, Status> {
        let store = self.store.as_ref();
        let found = match r {
            Resource::App(a) => store.get_app(a).await.map_err(store_status)?.map(|a| a.tags),
            Resource::Record(a, kind, id) => match store.get_record(a, kind, id, None).await.map_err(store_status)? {
                Some(raw) => Some(record_tags(kind, &raw).map_err(store_status)?),
                None => None,
            },
            Resource::Template(a, name) => store.get_template(a, name, None).await.map_err(store_status)?.map(|t| t.tags),
        };
        found.ok_or_else(|| Self::not_found(r))
    }

    /// Applies `change` to the resource's tags and writes them; the tags after.
    async fn change(&self, r: &Resource, change: impl Fn(&mut HashMap<String, String>)) -> Result<HashMap<String, String>, Status> {
        let store = self.store.as_ref();
        for _ in 0..8 {
            let outcome = match r {
                Resource::App(a) => {
                    let mut app = store.get_app(a).await.map_err(store_status)?.ok_or_else(|| Self::not_found(r))?;
                    change(&mut app.tags);
                    too_many(&app.tags)?;
                    store.put_app(&app).await.map(|()| app.tags)
                }
                Resource::Record(a, kind, id) => {
                    let raw = store.get_record(a, kind, id, None).await.map_err(store_status)?.ok_or_else(|| Self::not_found(r))?;
                    let mut tags = record_tags(kind, &raw).map_err(store_status)?;
                    change(&mut tags);
                    too_many(&tags)?;
                    let (version, body) = retagged(kind, &raw, tags.clone()).map_err(store_status)?;
                    store.write_record(a, kind, id, version, version, &body).await.map(|()| tags)
                }
                Resource::Template(a, name) => {
                    let mut t = store.get_template(a, name, None).await.map_err(store_status)?.ok_or_else(|| Self::not_found(r))?;
                    change(&mut t.tags);
                    too_many(&t.tags)?;
                    store.write_template(a, &t, TemplateWrite::OverwriteLatest).await.map(|t| t.tags)
                }
            };
            match outcome {
                Ok(tags) => return Ok(tags),
                Err(StoreError::Contention) => continue,
                Err(e) => return Err(store_status(e)),
            }
        }
        Err(Status::aborted("the resource kept changing while it was tagged; try again"))
    }
}

fn too_many(tags: &HashMap<String, String>) -> Result<(), Status> {
    if tags.len() > MAX_TAGS {
        return Err(invalid(vec![FieldViolation::new(
            "tags",
            format!("a resource has at most {MAX_TAGS} tags ({} with these)", tags.len()),
        )]));
    }
    Ok(())
}

#[tonic::async_trait]
impl tags_server::Tags for TagsService {
    async fn tag_resource(&self, request: Request<TagResourceRequest>) -> Result<Response<TagsResponse>, Status> {
        observe("TagResource", async {
            let req = request.into_inner();
            let r = resource(&req.resource_arn)?;
            if req.tags.is_empty() {
                return Err(invalid(vec![FieldViolation::new("tags", "give at least one tag")]));
            }
            let v = check_tags(&req.tags);
            if !v.is_empty() {
                return Err(invalid(v));
            }
            let tags = self.change(&r, |t| t.extend(req.tags.iter().map(|(k, v)| (k.clone(), v.clone())))).await?;
            Ok(Response::new(TagsResponse { tags }))
        })
        .await
    }

    async fn untag_resource(&self, request: Request<UntagResourceRequest>) -> Result<Response<TagsResponse>, Status> {
        observe("UntagResource", async {
            let req = request.into_inner();
            let r = resource(&req.resource_arn)?;
            if req.tag_keys.is_empty() {
                return Err(invalid(vec![FieldViolation::new("tag_keys", "give at least one key")]));
            }
            let tags = self.change(&r, |t| req.tag_keys.iter().for_each(|k| drop(t.remove(k)))).await?;
            Ok(Response::new(TagsResponse { tags }))
        })
        .await
    }

    async fn list_tags_for_resource(&self, request: Request<ListTagsForResourceRequest>) -> Result<Response<TagsResponse>, Status> {
        observe("ListTagsForResource", async {
            let r = resource(&request.into_inner().resource_arn)?;
            Ok(Response::new(TagsResponse { tags: self.tags(&r).await? }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_and_paths_name_resources() {
        assert_eq!(
            resource("arn:aws:mobiletargeting:us-east-1:123456789012:apps/a1/campaigns/c1").unwrap(),
            Resource::Record("a1".into(), crate::campaigns::KIND, "c1".into())
        );
        assert_eq!(resource("apps/a1").unwrap(), Resource::App("a1".into()));
        assert_eq!(resource("apps/a1/templates/welcome").unwrap(), Resource::Template("a1".into(), "welcome".into()));
        assert_eq!(resource("apps/a1/journeys/j1").unwrap(), Resource::Record("a1".into(), crate::journeys::KIND, "j1".into()));
        for bad in ["arn:aws:s3:::bucket", "apps/a1/widgets/w", "templates/welcome/EMAIL", ""] {
            assert_eq!(resource(bad).unwrap_err().code(), tonic::Code::InvalidArgument, "{bad}");
        }
        let long: HashMap<String, String> = [("k".repeat(129), "v".into()), ("aws:x".into(), "v".into())].into();
        assert_eq!(check_tags(&long).len(), 2);
    }
}
