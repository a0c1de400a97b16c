//! Templates on Redis: `herald:{app}:tpl:{name}` holds the metadata (JSON),
//! `herald:{app}:tplv:{name}:{version}` each version (protobuf), `herald:{app}:tpls` the set of
//! names. Changes are planned by [`super::templates`] and committed with the same
//! compare-and-set script as endpoint writes.

use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands};
use prost::Message as _;

use super::redis::{commit, Change, Keys, RedisStore};
use super::templates::{expose, plan_activate, plan_delete, plan_use, plan_write, stored, TemplateMeta, TemplateWrite};
use super::StoreError;
use crate::proto::v1::Template;

const MAX_ATTEMPTS: usize = 16;

fn meta_key(keys: &Keys, name: &str) -> String {
    keys.key("tpl:", name)
}

fn version_key(keys: &Keys, name: &str, v: i32) -> String {
    keys.key("tplv:", &format!("{name}:{v}"))
}

fn names_key(keys: &Keys) -> String {
    keys.key("tpls", "")
}

async fn backoff(attempt: usize) {
    crate::telemetry::store_retry("redis");
    let cap = 1u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_millis(rand::random_range(0..=cap))).await;
}

impl RedisStore {
    /// The app must exist; returns the raw metadata of a template.
    async fn template_meta(
        &self,
        conn: &mut impl redis::aio::ConnectionLike,
        app_id: &str,
        name: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let keys = Keys::new(app_id);
        let (app, meta): (Option<Vec<u8>>, Option<Vec<u8>>) =
            redis::cmd("MGET").arg(keys.app()).arg(meta_key(&keys, name)).query_async(conn).await?;
        if app.is_none() {
            return Err(StoreError::AppNotFound(app_id.to_string()));
        }
        Ok(meta)
    }

    /// Reads the metadata, plans a change with `plan`, and commits it if the metadata is
    /// unchanged; retries otherwise.
    async fn template_cas<T>(
        &self,
        app_id: &str,
        name: &str,
        plan: impl Fn(Option<&TemplateMeta>) -> Result<(Option<TemplateMeta>, Vec<(String, Vec<u8>)>, Vec<String>, T), StoreError>,
    ) -> Result<T, StoreError> {
        let keys = Keys::new(app_id);
        let mut conn = self.pooled().await?;
        for attempt in 0..MAX_ATTEMPTS {
            let raw = self.template_meta(&mut conn, app_id, name).await?;
            let meta = raw.as_deref().map(TemplateMeta::decode).transpose()?;
            let (next, mut sets, mut dels, result) = plan(meta.as_ref())?;
            let names = [name.to_string()];
            let (add, remove): (&[String], &[String]) = match &next {
                Some(m) => {
                    sets.push((meta_key(&keys, name), m.encode()));
                    (&names, &[])
                }
                None => {
                    dels.push(meta_key(&keys, name));
                    (&[], &names)
                }
            };
            let read = [(meta_key(&keys, name), raw.unwrap_or_default())];
            let change = Change { read: &read, sets: &sets, dels: &dels, set_key: names_key(&keys), add, remove };
            match commit(&mut conn, &keys, change).await? {
                1 => return Ok(result),
                0 => backoff(attempt).await,
                _ => return Err(StoreError::AppNotFound(app_id.to_string())),
            }
        }
        Err(StoreError::Contention)
    }

    pub(super) async fn redis_write_template(&self, app_id: &str, t: &Template, mode: TemplateWrite) -> Result<Template, StoreError> {
        let keys = Keys::new(app_id);
        let now = t.last_modified_date.clone();
        self.template_cas(app_id, &t.name, |meta| {
            let (next, v) = plan_write(&t.name, meta, mode, t.template_type, &now)?;
            let record = stored(t);
            let sets = vec![(version_key(&keys, &t.name, v), record.encode_to_vec())];
            let exposed = expose(app_id, v, &next, record);
            Ok((Some(next), sets, Vec::new(), exposed))
        })
        .await
    }

    pub(super) async fn redis_get_template(&self, app_id: &str, name: &str, version: Option<i32>) -> Result<Option<Template>, StoreError> {
        let keys = Keys::new(app_id);
        let mut conn = self.conn();
        let Some(raw) = self.template_meta(&mut conn, app_id, name).await? else { return Ok(None) };
        let meta = TemplateMeta::decode(&raw)?;
        let v = version.unwrap_or(meta.active);
        if !meta.versions.contains(&v) {
            return Ok(None);
        }
        let blob: Option<Vec<u8>> = conn.get(version_key(&keys, name, v)).await?;
        blob.map(|b| Ok(expose(app_id, v, &meta, Template::decode(b.as_slice())?))).transpose()
    }

    pub(super) async fn redis_list_templates(&self, app_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<Template>, StoreError> {
        let keys = Keys::new(app_id);
        let mut conn = self.conn();
        let (app, mut names): (Option<Vec<u8>>, Vec<String>) =
            redis::pipe().get(keys.app()).zrange(names_key(&keys), 0, -1).query_async(&mut conn).await?;
        if app.is_none() {
            return Err(StoreError::AppNotFound(app_id.to_string()));
        }
        names.sort();
        let names: Vec<String> = names.into_iter().filter(|n| after.is_none_or(|a| n.as_str() > a)).take(limit).collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let metas: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(names.iter().map(|n| meta_key(&keys, n)).collect::<Vec<_>>()).query_async(&mut conn).await?;
        let mut found = Vec::new();
        for (name, raw) in names.into_iter().zip(metas) {
            if let Some(raw) = raw {
                let meta = TemplateMeta::decode(&raw)?;
                found.push((name, meta));
            }
        }
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let blobs: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(found.iter().map(|(n, m)| version_key(&keys, n, m.active)).collect::<Vec<_>>())
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::new();
        for ((_, meta), blob) in found.iter().zip(blobs) {
            if let Some(b) = blob {
                out.push(expose(app_id, meta.active, meta, Template::decode(b.as_slice())?));
            }
        }
        Ok(out)
    }

    pub(super) async fn redis_list_template_versions(
        &self,
        app_id: &str,
        name: &str,
        after: i32,
        limit: usize,
    ) -> Result<Vec<Template>, StoreError> {
        let keys = Keys::new(app_id);
        let mut conn = self.conn();
        let raw = self.template_meta(&mut conn, app_id, name).await?.ok_or_else(|| StoreError::NotFound(format!("template {name}")))?;
        let meta = TemplateMeta::decode(&raw)?;
        let versions: Vec<i32> = meta.versions.iter().copied().filter(|v| *v > after).take(limit).collect();
        if versions.is_empty() {
            return Ok(Vec::new());
        }
        let blobs: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(versions.iter().map(|v| version_key(&keys, name, *v)).collect::<Vec<_>>())
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::new();
        for (v, blob) in versions.into_iter().zip(blobs) {
            if let Some(b) = blob {
                out.push(expose(app_id, v, &meta, Template::decode(b.as_slice())?));
            }
        }
        Ok(out)
    }

    pub(super) async fn redis_set_active_template_version(
        &self,
        app_id: &str,
        name: &str,
        version: Option<i32>,
    ) -> Result<Template, StoreError> {
        let v = self
            .template_cas(app_id, name, |meta| {
                let meta = meta.ok_or_else(|| StoreError::NotFound(format!("template {name}")))?;
                let (next, v) = plan_activate(name, meta, version)?;
                Ok((Some(next), Vec::new(), Vec::new(), v))
            })
            .await?;
        self.redis_get_template(app_id, name, Some(v)).await?.ok_or_else(|| StoreError::NotFound(format!("version {v} of template {name}")))
    }

    pub(super) async fn redis_set_template_use(&self, app_id: &str, name: &str, user: &str, in_use: bool) -> Result<(), StoreError> {
        self.template_cas(app_id, name, |meta| Ok((Some(plan_use(name, meta, user, in_use)?), Vec::new(), Vec::new(), ()))).await
    }

    pub(super) async fn redis_delete_template(&self, app_id: &str, name: &str, version: Option<i32>) -> Result<i32, StoreError> {
        let keys = Keys::new(app_id);
        self.template_cas(app_id, name, |meta| {
            let meta = meta.ok_or_else(|| StoreError::NotFound(format!("template {name}")))?;
            let (next, gone) = plan_delete(name, meta, version)?;
            let dels = gone.iter().map(|v| version_key(&keys, name, *v)).collect();
            Ok((next, Vec::new(), dels, gone.len() as i32))
        })
        .await
    }
}
