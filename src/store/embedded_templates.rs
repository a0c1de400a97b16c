//! Templates in the embedded store: table `templates` (`app\0name` → metadata JSON) and
//! `template_versions` (`app\0name\0{version:010}` → the version, protobuf). Each change is
//! one write transaction planned by [`super::templates`].

use prost::Message as _;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::embedded::{app_key_exists, backend};
use super::templates::{expose, plan_activate, plan_delete, plan_use, plan_write, stored, TemplateMeta, TemplateWrite};
use super::StoreError;
use crate::proto::v1::Template;

pub(super) const TEMPLATES: TableDefinition<&str, &[u8]> = TableDefinition::new("templates");
pub(super) const TEMPLATE_VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("template_versions");

fn meta_key(app_id: &str, name: &str) -> String {
    format!("{app_id}\0{name}")
}

fn version_key(app_id: &str, name: &str, v: i32) -> String {
    format!("{app_id}\0{name}\0{v:010}")
}

/// One write transaction: reads the metadata, plans, applies.
fn change<T>(
    db: &Database,
    app_id: &str,
    name: &str,
    plan: impl FnOnce(Option<&TemplateMeta>) -> Result<(Option<TemplateMeta>, Vec<(i32, Vec<u8>)>, Vec<i32>, T), StoreError>,
) -> Result<T, StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    if !app_key_exists(&txn, app_id)? {
        return Err(StoreError::AppNotFound(app_id.to_string()));
    }
    let result = {
        let mut metas = txn.open_table(TEMPLATES).map_err(backend)?;
        let mut versions = txn.open_table(TEMPLATE_VERSIONS).map_err(backend)?;
        let key = meta_key(app_id, name);
        let meta = metas.get(key.as_str()).map_err(backend)?.map(|g| TemplateMeta::decode(g.value())).transpose()?;
        let (next, sets, dels, result) = plan(meta.as_ref())?;
        for (v, blob) in sets {
            versions.insert(version_key(app_id, name, v).as_str(), blob.as_slice()).map_err(backend)?;
        }
        for v in dels {
            versions.remove(version_key(app_id, name, v).as_str()).map_err(backend)?;
        }
        match next {
            Some(m) => {
                metas.insert(key.as_str(), m.encode().as_slice()).map_err(backend)?;
            }
            None => {
                metas.remove(key.as_str()).map_err(backend)?;
            }
        }
        result
    };
    txn.commit().map_err(backend)?;
    Ok(result)
}

pub(super) fn write_template(db: &Database, app_id: &str, t: &Template, mode: TemplateWrite) -> Result<Template, StoreError> {
    change(db, app_id, &t.name, |meta| {
        let (next, v) = plan_write(&t.name, meta, mode, t.template_type, &t.last_modified_date)?;
        let record = stored(t);
        let sets = vec![(v, record.encode_to_vec())];
        let exposed = expose(app_id, v, &next, record);
        Ok((Some(next), sets, Vec::new(), exposed))
    })
}

fn read_meta(db: &Database, app_id: &str, name: &str) -> Result<Option<TemplateMeta>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    if txn.open_table(super::embedded_tables::APPS).map_err(backend)?.get(app_id).map_err(backend)?.is_none() {
        return Err(StoreError::AppNotFound(app_id.to_string()));
    }
    let metas = txn.open_table(TEMPLATES).map_err(backend)?;
    let found = metas.get(meta_key(app_id, name).as_str()).map_err(backend)?;
    found.map(|g| TemplateMeta::decode(g.value())).transpose()
}

fn read_versions(db: &Database, app_id: &str, name: &str, meta: &TemplateMeta, wanted: &[i32]) -> Result<Vec<Template>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let versions = txn.open_table(TEMPLATE_VERSIONS).map_err(backend)?;
    let mut out = Vec::with_capacity(wanted.len());
    for v in wanted {
        if let Some(g) = versions.get(version_key(app_id, name, *v).as_str()).map_err(backend)? {
            out.push(expose(app_id, *v, meta, Template::decode(g.value())?));
        }
    }
    Ok(out)
}

pub(super) fn get_template(db: &Database, app_id: &str, name: &str, version: Option<i32>) -> Result<Option<Template>, StoreError> {
    let Some(meta) = read_meta(db, app_id, name)? else { return Ok(None) };
    let v = version.unwrap_or(meta.active);
    if !meta.versions.contains(&v) {
        return Ok(None);
    }
    Ok(read_versions(db, app_id, name, &meta, &[v])?.pop())
}

pub(super) fn list_templates(db: &Database, app_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<Template>, StoreError> {
    let metas: Vec<(String, TemplateMeta)> = {
        let txn = db.begin_read().map_err(backend)?;
        if txn.open_table(super::embedded_tables::APPS).map_err(backend)?.get(app_id).map_err(backend)?.is_none() {
            return Err(StoreError::AppNotFound(app_id.to_string()));
        }
        let table = txn.open_table(TEMPLATES).map_err(backend)?;
        let lo = match after {
            Some(a) => std::ops::Bound::Excluded(meta_key(app_id, a)),
            None => std::ops::Bound::Included(format!("{app_id}\0")),
        };
        let hi = format!("{app_id}\u{1}");
        let range = table.range::<&str>((lo.as_ref().map(String::as_str), std::ops::Bound::Excluded(hi.as_str()))).map_err(backend)?;
        let mut out = Vec::new();
        for item in range.take(limit) {
            let (k, v) = item.map_err(backend)?;
            let name = k.value().split_once('\0').map(|(_, n)| n.to_string()).unwrap_or_default();
            out.push((name, TemplateMeta::decode(v.value())?));
        }
        out
    };
    let mut out = Vec::with_capacity(metas.len());
    for (name, meta) in metas {
        out.extend(read_versions(db, app_id, &name, &meta, &[meta.active])?);
    }
    Ok(out)
}

pub(super) fn list_template_versions(
    db: &Database,
    app_id: &str,
    name: &str,
    after: i32,
    limit: usize,
) -> Result<Vec<Template>, StoreError> {
    let meta = read_meta(db, app_id, name)?.ok_or_else(|| StoreError::NotFound(format!("template {name}")))?;
    let wanted: Vec<i32> = meta.versions.iter().copied().filter(|v| *v > after).take(limit).collect();
    read_versions(db, app_id, name, &meta, &wanted)
}

pub(super) fn set_active_template_version(db: &Database, app_id: &str, name: &str, version: Option<i32>) -> Result<Template, StoreError> {
    let v = change(db, app_id, name, |meta| {
        let meta = meta.ok_or_else(|| StoreError::NotFound(format!("template {name}")))?;
        let (next, v) = plan_activate(name, meta, version)?;
        Ok((Some(next), Vec::new(), Vec::new(), v))
    })?;
    get_template(db, app_id, name, Some(v))?.ok_or_else(|| StoreError::NotFound(format!("version {v} of template {name}")))
}

pub(super) fn set_template_use(db: &Database, app_id: &str, name: &str, user: &str, in_use: bool) -> Result<(), StoreError> {
    change(db, app_id, name, |meta| Ok((Some(plan_use(name, meta, user, in_use)?), Vec::new(), Vec::new(), ())))
}

pub(super) fn delete_template(db: &Database, app_id: &str, name: &str, version: Option<i32>) -> Result<i32, StoreError> {
    change(db, app_id, name, |meta| {
        let meta = meta.ok_or_else(|| StoreError::NotFound(format!("template {name}")))?;
        let (next, gone) = plan_delete(name, meta, version)?;
        let n = gone.len() as i32;
        Ok((next, Vec::new(), gone, n))
    })
}
