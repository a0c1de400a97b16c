//! The embedded backend: one redb file under the data directory, so a fresh machine runs
//! Herald with nothing else installed. Every write is one redb write transaction, durable
//! when it returns (fsync on commit); reads see the last committed state.
//!
//! Tables, all keyed `"{app_id}\0{name}"` so one app's rows are one contiguous range:
//! `apps` (app id → `App`), `endpoints` (→ `Endpoint`), `addresses` (channel:address → id of
//! the ACTIVE endpoint), `users` (user id → its endpoint ids, newline-separated).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use prost::Message as _;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::codec;
use super::embedded_tables::*;
use super::plan::{self, EndpointOp, Plan};
use super::{embedded_endpoints, embedded_records as records, embedded_templates, Store, StoreError, TemplateWrite};
use crate::proto::v1::{App, Endpoint, Event, MessageOutcome, Suppression, Template};

/// The database file's name inside the data directory.
pub const FILE_NAME: &str = "herald.redb";

pub(super) fn backend<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Backend(e.into().to_string())
}

pub(super) fn key(app_id: &str, name: &str) -> String {
    format!("{app_id}\0{name}")
}

pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    /// Messages taken in the current second, by app and channel: one daemon owns the file,
    /// so the per-second windows live in its memory.
    rates: parking_lot::Mutex<std::collections::HashMap<(String, String), (i64, u64)>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the database in `dir`. Blocking.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(format!("cannot create data directory {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {}", path.display(), redb::Error::from(e))))?;
        let txn = db.begin_write().map_err(backend)?;
        {
            txn.open_table(APPS).map_err(backend)?;
            txn.open_table(EVENT_SEQ).map_err(backend)?;
            txn.open_table(API_KEYS).map_err(backend)?;
            app_tables(&txn, None)?;
        }
        txn.commit().map_err(backend)?;
        Ok(Self { db: Arc::new(db), path, rates: Default::default() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(|e| StoreError::Backend(e.to_string()))?
    }
}

pub(super) fn app_key_exists(txn: &WriteTransaction, app_id: &str) -> Result<bool, StoreError> {
    app_exists(txn, app_id)
}

/// Reads the rows of `table` under `app_id` in key order, after the row whose key is
/// `app_id\0{after}` when given, at most `limit`; `decode` gets each key's part after the app
/// id and the value.
pub(super) fn page<T>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    app_id: &str,
    after: Option<&str>,
    limit: usize,
    decode: impl Fn(&str, &[u8]) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(table).map_err(backend)?;
    let (lo, hi) = app_range(app_id);
    let start = after.map(|a| key(app_id, a));
    let range = match &start {
        Some(s) => table.range::<&str>((std::ops::Bound::Excluded(s.as_str()), std::ops::Bound::Excluded(hi.as_str()))),
        None => table.range::<&str>(lo.as_str()..hi.as_str()),
    }
    .map_err(backend)?;
    let mut out = Vec::new();
    for item in range.take(limit.max(1)) {
        let (k, v) = item.map_err(backend)?;
        let suffix = k.value().split_once('\0').map_or("", |(_, rest)| rest);
        out.push(decode(suffix, v.value())?);
    }
    Ok(out)
}

pub(super) fn app_exists(txn: &WriteTransaction, app_id: &str) -> Result<bool, StoreError> {
    Ok(txn.open_table(APPS).map_err(backend)?.get(app_id).map_err(backend)?.is_some())
}

fn read_app_exists(db: &Database, app_id: &str) -> Result<bool, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    Ok(txn.open_table(APPS).map_err(backend)?.get(app_id).map_err(backend)?.is_some())
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn shared(&self) -> bool {
        false
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db| db.begin_read().map(|_| ()).map_err(backend)).await
    }

    async fn create_app(&self, app: &App) -> Result<(), StoreError> {
        let app = app.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut apps = txn.open_table(APPS).map_err(backend)?;
                if apps.get(app.app_id.as_str()).map_err(backend)?.is_some() {
                    return Err(StoreError::AppExists(app.app_id.clone()));
                }
                apps.insert(app.app_id.as_str(), app.encode_to_vec().as_slice()).map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn get_app(&self, app_id: &str) -> Result<Option<App>, StoreError> {
        let app_id = app_id.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let apps = txn.open_table(APPS).map_err(backend)?;
            let found = apps.get(app_id.as_str()).map_err(backend)?;
            Ok(found.map(|g| App::decode(g.value())).transpose()?)
        })
        .await
    }

    async fn list_apps(&self, after: Option<&str>, limit: usize) -> Result<Vec<App>, StoreError> {
        let after = after.map(str::to_string);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let apps = txn.open_table(APPS).map_err(backend)?;
            let range = match &after {
                Some(a) => apps.range::<&str>((std::ops::Bound::Excluded(a.as_str()), std::ops::Bound::Unbounded)),
                None => apps.range::<&str>(..),
            }
            .map_err(backend)?;
            let mut out = Vec::new();
            for item in range.take(limit) {
                let (_, v) = item.map_err(backend)?;
                out.push(App::decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn put_app(&self, app: &App) -> Result<(), StoreError> {
        let app = app.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut apps = txn.open_table(APPS).map_err(backend)?;
                if apps.get(app.app_id.as_str()).map_err(backend)?.is_none() {
                    return Err(StoreError::AppNotFound(app.app_id.clone()));
                }
                apps.insert(app.app_id.as_str(), app.encode_to_vec().as_slice()).map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn delete_app(&self, app_id: &str) -> Result<Option<App>, StoreError> {
        let app_id = app_id.to_string();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            let app = {
                let mut apps = txn.open_table(APPS).map_err(backend)?;
                let removed = apps.remove(app_id.as_str()).map_err(backend)?;
                removed.map(|g| App::decode(g.value())).transpose()?
            };
            let (lo, hi) = app_range(&app_id);
            app_tables(&txn, Some((lo.as_str(), hi.as_str())))?;
            txn.open_table(EVENT_SEQ).map_err(backend)?.remove(app_id.as_str()).map_err(backend)?;
            txn.commit().map_err(backend)?;
            Ok(app)
        })
        .await
    }

    async fn write_endpoints(&self, app_id: &str, op: EndpointOp) -> Result<Plan, StoreError> {
        let app_id = app_id.to_string();
        self.blocking(move |db| embedded_endpoints::write_endpoints(db, &app_id, &op)).await
    }

    async fn endpoint_by_address(&self, app_id: &str, channel: i32, address: &str) -> Result<Option<String>, StoreError> {
        let k = key(app_id, &super::plan::address_key(channel, address));
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let addresses = txn.open_table(ADDRESSES).map_err(backend)?;
            Ok(addresses.get(k.as_str()).map_err(backend)?.map(|g| g.value().to_string()))
        })
        .await
    }

    async fn get_endpoint(&self, app_id: &str, endpoint_id: &str) -> Result<Option<Endpoint>, StoreError> {
        let (app_id, k) = (app_id.to_string(), key(app_id, endpoint_id));
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let endpoints = txn.open_table(ENDPOINTS).map_err(backend)?;
            match endpoints.get(k.as_str()).map_err(backend)? {
                Some(g) => Ok(Some(codec::decode_endpoint(&app_id, g.value())?)),
                None if read_app_exists(db, &app_id)? => Ok(None),
                None => Err(StoreError::AppNotFound(app_id)),
            }
        })
        .await
    }

    async fn user_endpoints(&self, app_id: &str, user_id: &str) -> Result<Vec<Endpoint>, StoreError> {
        let (app_id, user_id) = (app_id.to_string(), user_id.to_string());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            if txn.open_table(APPS).map_err(backend)?.get(app_id.as_str()).map_err(backend)?.is_none() {
                return Err(StoreError::AppNotFound(app_id));
            }
            let users = txn.open_table(USERS).map_err(backend)?;
            let list = users.get(key(&app_id, &user_id).as_str()).map_err(backend)?;
            let ids = plan::decode_user_list(list.as_ref().map(|g| g.value()));
            let endpoints = txn.open_table(ENDPOINTS).map_err(backend)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(g) = endpoints.get(key(&app_id, &id).as_str()).map_err(backend)? {
                    out.push(codec::decode_endpoint(&app_id, g.value())?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn scan_endpoints(
        &self,
        app_id: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Endpoint>, Option<String>), StoreError> {
        let app_id = app_id.to_string();
        self.blocking(move |db| {
            let limit = limit.max(1);
            let out = page(db, ENDPOINTS, &app_id, cursor.as_deref(), limit, |_, v| codec::decode_endpoint(&app_id, v))?;
            let next = (out.len() == limit).then(|| out.last().map(|e| e.id.clone())).flatten();
            Ok((out, next))
        })
        .await
    }

    async fn write_template(&self, app_id: &str, template: &Template, mode: TemplateWrite) -> Result<Template, StoreError> {
        let (app_id, template) = (app_id.to_string(), template.clone());
        self.blocking(move |db| embedded_templates::write_template(db, &app_id, &template, mode)).await
    }

    async fn get_template(&self, app_id: &str, name: &str, version: Option<i32>) -> Result<Option<Template>, StoreError> {
        let (app_id, name) = (app_id.to_string(), name.to_string());
        self.blocking(move |db| embedded_templates::get_template(db, &app_id, &name, version)).await
    }

    async fn list_templates(&self, app_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<Template>, StoreError> {
        let (app_id, after) = (app_id.to_string(), after.map(str::to_string));
        self.blocking(move |db| embedded_templates::list_templates(db, &app_id, after.as_deref(), limit)).await
    }

    async fn list_template_versions(&self, app_id: &str, name: &str, after: i32, limit: usize) -> Result<Vec<Template>, StoreError> {
        let (app_id, name) = (app_id.to_string(), name.to_string());
        self.blocking(move |db| embedded_templates::list_template_versions(db, &app_id, &name, after, limit)).await
    }

    async fn set_active_template_version(&self, app_id: &str, name: &str, version: Option<i32>) -> Result<Template, StoreError> {
        let (app_id, name) = (app_id.to_string(), name.to_string());
        self.blocking(move |db| embedded_templates::set_active_template_version(db, &app_id, &name, version)).await
    }

    async fn delete_template(&self, app_id: &str, name: &str, version: Option<i32>) -> Result<i32, StoreError> {
        let (app_id, name) = (app_id.to_string(), name.to_string());
        self.blocking(move |db| embedded_templates::delete_template(db, &app_id, &name, version)).await
    }

    async fn take_rate(&self, app_id: &str, channel: &str, window: i64, requested: u64, limit: u64) -> Result<u64, StoreError> {
        let mut rates = self.rates.lock();
        let used = rates.entry((app_id.to_string(), channel.to_string())).or_insert((window, 0));
        if used.0 != window {
            *used = (window, 0);
        }
        let grant = requested.min(limit.saturating_sub(used.1));
        used.1 += grant;
        Ok(grant)
    }

    async fn take_quota(
        &self,
        app_id: &str,
        channel: &str,
        requested: u64,
        daily: Option<u64>,
        total: Option<u64>,
        now_hour: i64,
    ) -> Result<u64, StoreError> {
        let prefix = format!("{app_id}\0{channel}\0");
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            let grant = {
                let mut quotas = txn.open_table(QUOTAS).map_err(backend)?;
                let hour_key = |h: i64| format!("{prefix}h{h:012}");
                let total_key = format!("{prefix}total");
                let mut grant = requested;
                let used_total = quotas.get(total_key.as_str()).map_err(backend)?.map_or(0, |g| g.value());
                if let Some(t) = total {
                    grant = grant.min(t.saturating_sub(used_total));
                }
                if let Some(d) = daily {
                    let mut used = 0;
                    for h in 0..24 {
                        used += quotas.get(hour_key(now_hour - h).as_str()).map_err(backend)?.map_or(0, |g| g.value());
                    }
                    grant = grant.min(d.saturating_sub(used));
                }
                // Buckets older than 24 hours no longer count.
                let (lo, hi) = (format!("{prefix}h"), hour_key(now_hour - 23));
                quotas.retain_in::<&str, _>(lo.as_str()..hi.as_str(), |_, _| false).map_err(backend)?;
                if grant > 0 {
                    quotas.insert(total_key.as_str(), used_total + grant).map_err(backend)?;
                    let current = hour_key(now_hour);
                    let now_used = quotas.get(current.as_str()).map_err(backend)?.map_or(0, |g| g.value());
                    quotas.insert(current.as_str(), now_used + grant).map_err(backend)?;
                }
                grant
            };
            txn.commit().map_err(backend)?;
            Ok(grant)
        })
        .await
    }

    async fn put_suppressions(&self, app_id: &str, entries: &[Suppression]) -> Result<(), StoreError> {
        let (app_id, entries) = (app_id.to_string(), entries.to_vec());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            if !app_exists(&txn, &app_id)? {
                return Err(StoreError::AppNotFound(app_id));
            }
            {
                let mut table = txn.open_table(SUPPRESSIONS).map_err(backend)?;
                for e in &entries {
                    table.insert(key(&app_id, &e.address).as_str(), e.encode_to_vec().as_slice()).map_err(backend)?;
                }
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn remove_suppression(&self, app_id: &str, address: &str) -> Result<bool, StoreError> {
        let (app_id, k) = (app_id.to_string(), key(app_id, address));
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            if !app_exists(&txn, &app_id)? {
                return Err(StoreError::AppNotFound(app_id));
            }
            let removed = txn.open_table(SUPPRESSIONS).map_err(backend)?.remove(k.as_str()).map_err(backend)?.is_some();
            txn.commit().map_err(backend)?;
            Ok(removed)
        })
        .await
    }

    async fn get_suppressions(&self, app_id: &str, addresses: &[String]) -> Result<Vec<Option<Suppression>>, StoreError> {
        let keys: Vec<String> = addresses.iter().map(|a| key(app_id, a)).collect();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(SUPPRESSIONS).map_err(backend)?;
            keys.iter()
                .map(|k| {
                    table.get(k.as_str()).map_err(backend)?.map(|g| Suppression::decode(g.value()).map_err(StoreError::from)).transpose()
                })
                .collect()
        })
        .await
    }

    async fn list_suppressions(
        &self,
        app_id: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Suppression>, Option<String>), StoreError> {
        let app_id = app_id.to_string();
        self.blocking(move |db| {
            let limit = limit.max(1);
            let out = page(db, SUPPRESSIONS, &app_id, cursor.as_deref(), limit, |_, v| Ok(Suppression::decode(v)?))?;
            let next = (out.len() == limit).then(|| out.last().map(|s| s.address.clone())).flatten();
            Ok((out, next))
        })
        .await
    }

    async fn run_outcomes(
        &self,
        app_id: &str,
        run: &str,
        endpoint_ids: &[String],
        _sent_since: Option<i64>,
    ) -> Result<Vec<Option<i32>>, StoreError> {
        self.embedded_run_outcomes(app_id, run, endpoint_ids).await
    }

    async fn record_outcomes(&self, app_id: &str, outcomes: &[MessageOutcome], events: &[Event], ttl_secs: u64) -> Result<(), StoreError> {
        self.embedded_record_outcomes(app_id, outcomes, events, ttl_secs).await
    }

    async fn list_outcomes(
        &self,
        app_id: &str,
        by: &super::OutcomeIndex,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<MessageOutcome>, StoreError> {
        self.embedded_list_outcomes(app_id, by, offset, limit).await
    }

    async fn get_outcome(&self, app_id: &str, message_id: &str) -> Result<Option<MessageOutcome>, StoreError> {
        self.embedded_get_outcome(app_id, message_id).await
    }

    async fn outcome_counts(&self, app_id: &str, day: &str) -> Result<Vec<(String, i32, u64)>, StoreError> {
        self.embedded_outcome_counts(app_id, day).await
    }

    async fn read_events(&self, app_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.embedded_read_events(app_id, after, limit).await
    }

    async fn last_event(&self, app_id: &str) -> Result<u64, StoreError> {
        self.embedded_last_event(app_id).await
    }

    async fn kpi_counters(&self, app_id: &str, days: &[String]) -> Result<Vec<Vec<(String, i64)>>, StoreError> {
        self.embedded_kpi_counters(app_id, days).await
    }

    async fn kpi_uniques(&self, app_id: &str, unions: &[Vec<(String, String)>]) -> Result<Vec<u64>, StoreError> {
        self.embedded_kpi_uniques(app_id, unions).await
    }

    async fn first_engagement(&self, app_id: &str, keys: &[String], ttl_secs: u64) -> Result<Vec<bool>, StoreError> {
        self.embedded_first_engagement(app_id, keys, ttl_secs).await
    }

    async fn trim_events(&self, app_id: &str, floor: u64) -> Result<(), StoreError> {
        self.embedded_trim_events(app_id, floor).await
    }

    async fn set_template_use(&self, app_id: &str, name: &str, user: &str, in_use: bool) -> Result<(), StoreError> {
        let (app_id, name, user) = (app_id.to_string(), name.to_string(), user.to_string());
        self.blocking(move |db| embedded_templates::set_template_use(db, &app_id, &name, &user, in_use)).await
    }

    async fn write_record(
        &self,
        app_id: &str,
        kind: &str,
        id: &str,
        expect_latest: i32,
        version: i32,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let (app, kind, id, body) = (app_id.to_string(), kind.to_string(), id.to_string(), body.to_vec());
        self.blocking(move |db| records::write_record(db, &app, &kind, &id, expect_latest, version, &body)).await
    }

    async fn get_record(&self, app_id: &str, kind: &str, id: &str, version: Option<i32>) -> Result<Option<Vec<u8>>, StoreError> {
        let (app, kind, id) = (app_id.to_string(), kind.to_string(), id.to_string());
        self.blocking(move |db| records::get_record(db, &app, &kind, &id, version)).await
    }

    async fn list_records(&self, app_id: &str, kind: &str, after: Option<&str>, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let (app, kind, after) = (app_id.to_string(), kind.to_string(), after.map(str::to_string));
        self.blocking(move |db| records::list_records(db, &app, &kind, after.as_deref(), limit)).await
    }

    async fn list_record_versions(&self, app_id: &str, kind: &str, id: &str, after: i32, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let (app, kind, id) = (app_id.to_string(), kind.to_string(), id.to_string());
        self.blocking(move |db| records::list_record_versions(db, &app, &kind, &id, after, limit)).await
    }

    async fn set_record_use(&self, app_id: &str, kind: &str, id: &str, user: &str, in_use: bool) -> Result<(), StoreError> {
        let (app, kind, id, user) = (app_id.to_string(), kind.to_string(), id.to_string(), user.to_string());
        self.blocking(move |db| records::set_record_use(db, &app, &kind, &id, &user, in_use)).await
    }

    async fn delete_record(&self, app_id: &str, kind: &str, id: &str) -> Result<Option<i32>, StoreError> {
        let (app, kind, id) = (app_id.to_string(), kind.to_string(), id.to_string());
        self.blocking(move |db| records::delete_record(db, &app, &kind, &id)).await
    }

    async fn put_blob(&self, app_id: &str, kind: &str, id: &str, body: &[u8]) -> Result<(), StoreError> {
        let (app, kind, id, body) = (app_id.to_string(), kind.to_string(), id.to_string(), body.to_vec());
        self.blocking(move |db| records::put_blob(db, &app, &kind, &id, &body)).await
    }

    async fn get_blob(&self, app_id: &str, kind: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (app, kind, id) = (app_id.to_string(), kind.to_string(), id.to_string());
        self.blocking(move |db| records::get_blob(db, &app, &kind, &id)).await
    }

    async fn add_members(&self, app_id: &str, set: &str, ids: &[String]) -> Result<(), StoreError> {
        let (app, set, ids) = (app_id.to_string(), set.to_string(), ids.to_vec());
        self.blocking(move |db| records::add_members(db, &app, &set, &ids)).await
    }

    async fn delete_members(&self, app_id: &str, set: &str) -> Result<(), StoreError> {
        let (app, set) = (app_id.to_string(), set.to_string());
        self.blocking(move |db| records::delete_members(db, &app, &set)).await
    }

    async fn count_members(&self, app_id: &str, set: &str) -> Result<u64, StoreError> {
        let (app, set) = (app_id.to_string(), set.to_string());
        self.blocking(move |db| records::count_members(db, &app, &set)).await
    }

    async fn scan_members(
        &self,
        app_id: &str,
        set: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<Endpoint>, Option<String>), StoreError> {
        let (app, set) = (app_id.to_string(), set.to_string());
        self.blocking(move |db| records::scan_members(db, ENDPOINTS, &app, &set, cursor.as_deref(), limit)).await
    }

    async fn members_contain(&self, app_id: &str, set: &str, ids: &[String]) -> Result<Vec<bool>, StoreError> {
        let (app, set, ids) = (app_id.to_string(), set.to_string(), ids.to_vec());
        self.blocking(move |db| records::members_contain(db, &app, &set, &ids)).await
    }

    async fn engaged(&self, app_id: &str, keys: &[String]) -> Result<Vec<bool>, StoreError> {
        self.embedded_engaged(app_id, keys).await
    }

    async fn journey_enter(
        &self,
        app_id: &str,
        journey: &str,
        ids: &[String],
        state: &str,
        due: i64,
        rule: super::Reentry,
        now_secs: i64,
    ) -> Result<Vec<super::Entry>, StoreError> {
        self.embedded_journey_enter(app_id, journey, ids, state, due, rule, now_secs).await
    }

    async fn journey_due(&self, app_id: &str, journey: &str, until: i64, limit: usize) -> Result<Vec<super::Participant>, StoreError> {
        self.embedded_journey_due(app_id, journey, until, limit).await
    }

    async fn journey_move(&self, app_id: &str, journey: &str, moves: &[super::Move], counters: &[(String, i64)]) -> Result<(), StoreError> {
        self.embedded_journey_move(app_id, journey, moves, counters).await
    }

    async fn journey_counters(&self, app_id: &str, journey: &str) -> Result<(u64, Vec<(String, i64)>), StoreError> {
        self.embedded_journey_counters(app_id, journey).await
    }

    async fn journey_drop(&self, app_id: &str, journey: &str) -> Result<(), StoreError> {
        self.embedded_journey_drop(app_id, journey).await
    }

    async fn take_endpoint_caps(
        &self,
        app_id: &str,
        scope: &str,
        ids: &[String],
        recent: Option<(u32, i64)>,
        total: Option<u32>,
        now_secs: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let (app, scope, ids) = (app_id.to_string(), scope.to_string(), ids.to_vec());
        self.blocking(move |db| records::take_endpoint_caps(db, &app, &scope, &ids, recent, total, now_secs)).await
    }

    async fn try_lease(&self, app_id: &str, name: &str, owner: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let (app, name, owner) = (app_id.to_string(), name.to_string(), owner.to_string());
        self.blocking(move |db| records::try_lease(db, &app, &name, &owner, ttl_ms)).await
    }

    async fn release_lease(&self, app_id: &str, name: &str, owner: &str) -> Result<(), StoreError> {
        let (app, name, owner) = (app_id.to_string(), name.to_string(), owner.to_string());
        self.blocking(move |db| records::release_lease(db, &app, &name, &owner)).await
    }

    async fn put_api_key(&self, key_id: &str, record: &[u8]) -> Result<(), StoreError> {
        let (k, record) = (key_id.to_string(), record.to_vec());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            txn.open_table(API_KEYS).map_err(backend)?.insert(k.as_str(), record.as_slice()).map_err(backend)?;
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn get_api_key(&self, key_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = key_id.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(API_KEYS).map_err(backend)?;
            let found = table.get(k.as_str()).map_err(backend)?;
            Ok(found.map(|g| g.value().to_vec()))
        })
        .await
    }

    async fn list_api_keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(API_KEYS).map_err(backend)?;
            let mut out = Vec::new();
            for item in table.iter().map_err(backend)? {
                out.push(item.map_err(backend)?.1.value().to_vec());
            }
            Ok(out)
        })
        .await
    }

    async fn put_channel(&self, app_id: &str, channel: &str, settings: &[u8]) -> Result<(), StoreError> {
        let (app_id, k, settings) = (app_id.to_string(), key(app_id, channel), settings.to_vec());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            if !app_exists(&txn, &app_id)? {
                return Err(StoreError::AppNotFound(app_id));
            }
            txn.open_table(CHANNELS).map_err(backend)?.insert(k.as_str(), settings.as_slice()).map_err(backend)?;
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn get_channel(&self, app_id: &str, channel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = key(app_id, channel);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(CHANNELS).map_err(backend)?;
            let found = table.get(k.as_str()).map_err(backend)?;
            Ok(found.map(|g| g.value().to_vec()))
        })
        .await
    }

    async fn delete_channel(&self, app_id: &str, channel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let k = key(app_id, channel);
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            let old = txn.open_table(CHANNELS).map_err(backend)?.remove(k.as_str()).map_err(backend)?.map(|g| g.value().to_vec());
            txn.commit().map_err(backend)?;
            Ok(old)
        })
        .await
    }

    async fn claim_idempotency(&self, app_id: &str, key: &str, ttl_secs: u64) -> Result<super::Idempotency, StoreError> {
        let k = self::key(app_id, key);
        self.blocking(move |db| {
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            let txn = db.begin_write().map_err(backend)?;
            let state = {
                let mut table = txn.open_table(IDEMPOTENCY).map_err(backend)?;
                let existing = table.get(k.as_str()).map_err(backend)?.map(|g| g.value().to_vec());
                match existing {
                    Some(v) if v.len() > 8 && u64::from_be_bytes(v[..8].try_into().expect("8 bytes")) >= now => {
                        if v[8] == b'D' {
                            super::Idempotency::Done(v[9..].to_vec())
                        } else {
                            super::Idempotency::InFlight
                        }
                    }
                    _ => {
                        let mut value = (now + ttl_secs).to_be_bytes().to_vec();
                        value.push(b'P');
                        table.insert(k.as_str(), value.as_slice()).map_err(backend)?;
                        super::Idempotency::Claimed
                    }
                }
            };
            txn.commit().map_err(backend)?;
            Ok(state)
        })
        .await
    }

    async fn complete_idempotency(&self, app_id: &str, key: &str, response: &[u8], ttl_secs: u64) -> Result<(), StoreError> {
        let (k, response) = (self::key(app_id, key), response.to_vec());
        self.blocking(move |db| {
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            let mut value = (now + ttl_secs).to_be_bytes().to_vec();
            value.push(b'D');
            value.extend_from_slice(&response);
            let txn = db.begin_write().map_err(backend)?;
            txn.open_table(IDEMPOTENCY).map_err(backend)?.insert(k.as_str(), value.as_slice()).map_err(backend)?;
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn release_idempotency(&self, app_id: &str, key: &str) -> Result<(), StoreError> {
        let k = self::key(app_id, key);
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            txn.open_table(IDEMPOTENCY).map_err(backend)?.remove(k.as_str()).map_err(backend)?;
            txn.commit().map_err(backend)
        })
        .await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.blocking(|db| {
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            let expired = |v: &[u8]| v.len() >= 8 && u64::from_be_bytes(v[..8].try_into().expect("8 bytes")) < now;
            let txn = db.begin_write().map_err(backend)?;
            let mut gone = 0u64;
            for table in [OUTCOMES, IDEMPOTENCY, RUN_OUTCOMES, ENGAGED] {
                txn.open_table(table)
                    .map_err(backend)?
                    .retain(|_, v| {
                        let keep = !expired(v);
                        gone += u64::from(!keep);
                        keep
                    })
                    .map_err(backend)?;
            }
            // KPI days past retention.
            let cutoff = (chrono::Utc::now() - chrono::Duration::days(crate::kpi::RETENTION_DAYS as i64)).format("%Y-%m-%d").to_string();
            let old = |k: &str| k.split('\0').nth(1).is_some_and(|day| day < cutoff.as_str());
            txn.open_table(KPI).map_err(backend)?.retain(|k, _| !old(k)).map_err(backend)?;
            txn.open_table(KPI_UNIQUE).map_err(backend)?.retain(|k, _| !old(k)).map_err(backend)?;
            txn.commit().map_err(backend)?;
            Ok(gone)
        })
        .await
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Every commit is already durable; dropping the last handle releases the file lock.
        Ok(())
    }
}
