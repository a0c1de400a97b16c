//! What both backends share about templates: write modes, the per-template metadata, and how
//! a stored version becomes the record callers see.

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::proto::v1::Template;

/// Most versions one template keeps.
pub const MAX_VERSIONS: i32 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateWrite {
    Create,
    NewVersion,
    OverwriteLatest,
}

impl TemplateWrite {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::NewVersion => "new",
            Self::OverwriteLatest => "overwrite",
        }
    }
}

/// Per-template state next to its versions (stored as JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TemplateMeta {
    pub template_type: i32,
    /// Highest version that exists.
    pub latest: i32,
    /// Highest version ever assigned: numbers are never reused.
    pub seq: i32,
    pub active: i32,
    /// Every version that exists, ascending.
    pub versions: Vec<i32>,
    pub creation_date: String,
    /// Who uses the template (scheduled or running campaigns, journeys): while anyone does,
    /// it cannot be deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
}

impl TemplateMeta {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("template metadata: {e}")))
    }
}

/// Decides a write: the new metadata and the version number written.
pub fn plan_write(
    name: &str,
    meta: Option<&TemplateMeta>,
    mode: TemplateWrite,
    template_type: i32,
    now: &str,
) -> Result<(TemplateMeta, i32), StoreError> {
    match (mode, meta) {
        (TemplateWrite::Create, Some(_)) => Err(StoreError::Exists(format!("template {name}"))),
        (TemplateWrite::Create, None) => Ok((
            TemplateMeta {
                template_type,
                latest: 1,
                seq: 1,
                active: 1,
                versions: vec![1],
                creation_date: now.to_string(),
                used_by: Vec::new(),
            },
            1,
        )),
        (_, None) => Err(StoreError::NotFound(format!("template {name}"))),
        (mode, Some(meta)) => {
            if meta.template_type != template_type {
                return Err(StoreError::Precondition(format!("template {name} is of another type; a template keeps its type")));
            }
            let mut next = meta.clone();
            if mode == TemplateWrite::OverwriteLatest {
                return Ok((next, meta.latest));
            }
            if meta.versions.len() >= MAX_VERSIONS as usize {
                return Err(StoreError::Precondition(format!(
                    "template {name} has {MAX_VERSIONS} versions, the most it may keep; delete some first"
                )));
            }
            let v = meta.seq + 1;
            next.seq = v;
            next.latest = v;
            next.versions.push(v);
            Ok((next, v))
        }
    }
}

/// Decides an activation (`None`: the latest).
pub fn plan_activate(name: &str, meta: &TemplateMeta, version: Option<i32>) -> Result<(TemplateMeta, i32), StoreError> {
    let v = version.unwrap_or(meta.latest);
    if !meta.versions.contains(&v) {
        return Err(StoreError::NotFound(format!("version {v} of template {name}")));
    }
    Ok((TemplateMeta { active: v, ..meta.clone() }, v))
}

/// Records that `user` (a campaign or journey id) starts or stops using a template.
pub fn plan_use(name: &str, meta: Option<&TemplateMeta>, user: &str, in_use: bool) -> Result<TemplateMeta, StoreError> {
    let meta = meta.ok_or_else(|| StoreError::NotFound(format!("template {name}")))?;
    let mut next = meta.clone();
    next.used_by.retain(|u| u != user);
    if in_use {
        next.used_by.push(user.to_string());
        next.used_by.sort();
    }
    Ok(next)
}

/// Decides a delete: the remaining metadata (`None`: the template is gone) and the versions
/// to delete.
pub fn plan_delete(name: &str, meta: &TemplateMeta, version: Option<i32>) -> Result<(Option<TemplateMeta>, Vec<i32>), StoreError> {
    if !meta.used_by.is_empty() {
        return Err(StoreError::Precondition(format!(
            "template {name} is in use by {}; stop or change them first",
            meta.used_by.join(", ")
        )));
    }
    let Some(v) = version else { return Ok((None, meta.versions.clone())) };
    if !meta.versions.contains(&v) {
        return Err(StoreError::NotFound(format!("version {v} of template {name}")));
    }
    if meta.versions.len() == 1 {
        return Ok((None, vec![v]));
    }
    if v == meta.active {
        return Err(StoreError::Precondition(format!(
            "version {v} is the active version of template {name}; activate another version first"
        )));
    }
    let mut next = meta.clone();
    next.versions.retain(|x| *x != v);
    next.latest = *next.versions.last().expect("other versions remain");
    Ok((Some(next), vec![v]))
}

/// The stored form of a version: its content, without what the metadata says.
pub fn stored(t: &Template) -> Template {
    Template { app_id: String::new(), version: 0, active_version: 0, latest_version: 0, creation_date: String::new(), ..t.clone() }
}

/// A stored version as callers see it.
pub fn expose(app_id: &str, version: i32, meta: &TemplateMeta, mut t: Template) -> Template {
    t.app_id = app_id.to_string();
    t.version = version;
    t.active_version = meta.active;
    t.latest_version = meta.latest;
    t.creation_date = meta.creation_date.clone();
    t.template_type = meta.template_type;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_numbered_activated_and_deleted_by_the_rules() {
        let (m1, v1) = plan_write("t", None, TemplateWrite::Create, 1, "d").unwrap();
        assert_eq!((v1, m1.active, m1.latest), (1, 1, 1));
        assert!(matches!(plan_write("t", Some(&m1), TemplateWrite::Create, 1, "d"), Err(StoreError::Exists(_))));
        assert!(matches!(plan_write("t", None, TemplateWrite::NewVersion, 1, "d"), Err(StoreError::NotFound(_))));
        assert!(matches!(plan_write("t", Some(&m1), TemplateWrite::NewVersion, 2, "d"), Err(StoreError::Precondition(_))));
        let (m2, v2) = plan_write("t", Some(&m1), TemplateWrite::NewVersion, 1, "d").unwrap();
        assert_eq!((v2, m2.active, m2.latest), (2, 1, 2), "a new version does not become active");
        let (m2b, v) = plan_write("t", Some(&m2), TemplateWrite::OverwriteLatest, 1, "d").unwrap();
        assert_eq!((v, m2b.versions.clone()), (2, vec![1, 2]));
        let (m3, _) = plan_activate("t", &m2, None).unwrap();
        assert_eq!(m3.active, 2);
        assert!(plan_activate("t", &m2, Some(9)).is_err());
        assert!(matches!(plan_delete("t", &m3, Some(2)), Err(StoreError::Precondition(_))));
        let (m4, gone) = plan_delete("t", &m3, Some(1)).unwrap();
        assert_eq!((gone, m4.clone().unwrap().versions), (vec![1], vec![2]));
        let (m5, v3) = plan_write("t", m4.as_ref(), TemplateWrite::NewVersion, 1, "d").unwrap();
        assert_eq!((v3, m5.latest), (3, 3), "numbers are never reused");
        let (after, gone) = plan_delete("t", &m5, None).unwrap();
        assert!(after.is_none() && gone == vec![2, 3]);
        let used = plan_use("t", Some(&m5), "campaign-1", true).unwrap();
        assert!(matches!(plan_delete("t", &used, None), Err(StoreError::Precondition(m)) if m.contains("campaign-1")));
        assert!(plan_delete("t", &plan_use("t", Some(&used), "campaign-1", false).unwrap(), None).is_ok());
        let full = TemplateMeta {
            versions: (1..=MAX_VERSIONS).collect(),
            seq: MAX_VERSIONS,
            latest: MAX_VERSIONS,
            active: 1,
            template_type: 1,
            ..Default::default()
        };
        assert!(matches!(plan_write("t", Some(&full), TemplateWrite::NewVersion, 1, "d"), Err(StoreError::Precondition(_))));
    }
}
