//! Versioned records, blobs and member sets in the embedded store.

use std::ops::Bound;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::embedded::{app_key_exists, backend};
use super::StoreError;
use crate::proto::v1::Endpoint;

/// Latest version of each record: `app\0kind\0id` → body.
pub(super) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// Every version: `app\0kind\0id\0{version:010}` → body.
pub(super) const RECORD_VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("record_versions");
/// Who uses a record: `app\0kind\0id\0user` → ().
pub(super) const RECORD_USES: TableDefinition<&str, ()> = TableDefinition::new("record_uses");
/// Unversioned state: `app\0kind\0id` → body.
pub(super) const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// Member sets: `app\0set\0endpoint_id` → ().
pub(super) const MEMBERS: TableDefinition<&str, ()> = TableDefinition::new("members");
/// Per-endpoint caps: `app\0scope\0endpoint_id` → "total t1 t2 ..." (send times in the last
/// 24 hours).
pub(super) const CAPS: TableDefinition<&str, &str> = TableDefinition::new("caps");
/// Leases: `app\0name` → "expiry_ms owner".
pub(super) const LEASES: TableDefinition<&str, &str> = TableDefinition::new("leases");

fn record_key(app: &str, kind: &str, id: &str) -> String {
    format!("{app}\0{kind}\0{id}")
}

fn version_key(app: &str, kind: &str, id: &str, v: i32) -> String {
    format!("{app}\0{kind}\0{id}\0{v:010}")
}

/// The keys starting with `prefix` (which ends with `\0`): `[prefix, prefix with \0 → \1)`.
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix[..prefix.len() - 1].to_string();
    end.push('\u{1}');
    end
}

fn latest_version(txn_table: &impl ReadableTable<&'static str, &'static [u8]>, app: &str, kind: &str, id: &str) -> Result<i32, StoreError> {
    let prefix = format!("{}\0", record_key(app, kind, id));
    let end = prefix_end(&prefix);
    let last = txn_table.range::<&str>(prefix.as_str()..end.as_str()).map_err(backend)?.next_back().transpose().map_err(backend)?;
    Ok(last.map(|(k, _)| k.value().rsplit('\0').next().and_then(|v| v.parse().ok()).unwrap_or(0)).unwrap_or(0))
}

pub(super) fn write_record(
    db: &Database,
    app: &str,
    kind: &str,
    id: &str,
    expect: i32,
    version: i32,
    body: &[u8],
) -> Result<(), StoreError> {
    if version != expect + 1 && !(version == expect && version > 0) {
        return Err(StoreError::Backend(format!("version {version} cannot follow {expect}")));
    }
    let txn = db.begin_write().map_err(backend)?;
    if !app_key_exists(&txn, app)? {
        return Err(StoreError::AppNotFound(app.to_string()));
    }
    {
        let mut versions = txn.open_table(RECORD_VERSIONS).map_err(backend)?;
        let latest = latest_version(&versions, app, kind, id)?;
        if latest != expect {
            return Err(match (expect, latest) {
                (0, _) => StoreError::Exists(format!("{kind} {id}")),
                (_, 0) => StoreError::NotFound(format!("{kind} {id}")),
                _ => StoreError::Contention,
            });
        }
        versions.insert(version_key(app, kind, id, version).as_str(), body).map_err(backend)?;
        txn.open_table(RECORDS).map_err(backend)?.insert(record_key(app, kind, id).as_str(), body).map_err(backend)?;
    }
    txn.commit().map_err(backend)
}

pub(super) fn get_record(db: &Database, app: &str, kind: &str, id: &str, version: Option<i32>) -> Result<Option<Vec<u8>>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let found = match version {
        None => {
            txn.open_table(RECORDS).map_err(backend)?.get(record_key(app, kind, id).as_str()).map_err(backend)?.map(|g| g.value().to_vec())
        }
        Some(v) => txn
            .open_table(RECORD_VERSIONS)
            .map_err(backend)?
            .get(version_key(app, kind, id, v).as_str())
            .map_err(backend)?
            .map(|g| g.value().to_vec()),
    };
    Ok(found)
}

pub(super) fn list_records(db: &Database, app: &str, kind: &str, after: Option<&str>, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(RECORDS).map_err(backend)?;
    let prefix = format!("{app}\0{kind}\0");
    let end = prefix_end(&prefix);
    let start = after.map(|a| format!("{prefix}{a}"));
    let range = match &start {
        Some(s) => table.range::<&str>((Bound::Excluded(s.as_str()), Bound::Excluded(end.as_str()))),
        None => table.range::<&str>(prefix.as_str()..end.as_str()),
    }
    .map_err(backend)?;
    range.take(limit).map(|item| item.map(|(_, v)| v.value().to_vec()).map_err(backend)).collect()
}

pub(super) fn list_record_versions(
    db: &Database,
    app: &str,
    kind: &str,
    id: &str,
    after: i32,
    limit: usize,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(RECORD_VERSIONS).map_err(backend)?;
    let prefix = format!("{}\0", record_key(app, kind, id));
    let end = prefix_end(&prefix);
    let start = version_key(app, kind, id, after.max(0));
    let range = table.range::<&str>((Bound::Excluded(start.as_str()), Bound::Excluded(end.as_str()))).map_err(backend)?;
    range.take(limit).map(|item| item.map(|(_, v)| v.value().to_vec()).map_err(backend)).collect()
}

pub(super) fn set_record_use(db: &Database, app: &str, kind: &str, id: &str, user: &str, in_use: bool) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    {
        let key = format!("{}\0{user}", record_key(app, kind, id));
        let mut uses = txn.open_table(RECORD_USES).map_err(backend)?;
        if in_use {
            if txn.open_table(RECORDS).map_err(backend)?.get(record_key(app, kind, id).as_str()).map_err(backend)?.is_none() {
                return Err(StoreError::NotFound(format!("{kind} {id}")));
            }
            uses.insert(key.as_str(), ()).map_err(backend)?;
        } else {
            uses.remove(key.as_str()).map_err(backend)?;
        }
    }
    txn.commit().map_err(backend)
}

pub(super) fn delete_record(db: &Database, app: &str, kind: &str, id: &str) -> Result<Option<i32>, StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    let latest = {
        let prefix = format!("{}\0", record_key(app, kind, id));
        let end = prefix_end(&prefix);
        let uses = txn.open_table(RECORD_USES).map_err(backend)?;
        if let Some(first) = uses.range::<&str>(prefix.as_str()..end.as_str()).map_err(backend)?.next() {
            let (k, _) = first.map_err(backend)?;
            let user = k.value().rsplit('\0').next().unwrap_or("").to_string();
            return Err(StoreError::Precondition(format!("{kind} {id} is in use by {user}")));
        }
        let mut versions = txn.open_table(RECORD_VERSIONS).map_err(backend)?;
        let latest = latest_version(&versions, app, kind, id)?;
        versions.retain_in::<&str, _>(prefix.as_str()..end.as_str(), |_, _| false).map_err(backend)?;
        txn.open_table(RECORDS).map_err(backend)?.remove(record_key(app, kind, id).as_str()).map_err(backend)?;
        latest
    };
    txn.commit().map_err(backend)?;
    Ok((latest > 0).then_some(latest))
}

pub(super) fn put_blob(db: &Database, app: &str, kind: &str, id: &str, body: &[u8]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    if !app_key_exists(&txn, app)? {
        return Err(StoreError::AppNotFound(app.to_string()));
    }
    txn.open_table(BLOBS).map_err(backend)?.insert(record_key(app, kind, id).as_str(), body).map_err(backend)?;
    txn.commit().map_err(backend)
}

pub(super) fn get_blob(db: &Database, app: &str, kind: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let found =
        txn.open_table(BLOBS).map_err(backend)?.get(record_key(app, kind, id).as_str()).map_err(backend)?.map(|g| g.value().to_vec());
    Ok(found)
}

fn member_key(app: &str, set: &str, id: &str) -> String {
    format!("{app}\0{set}\0{id}")
}

pub(super) fn add_members(db: &Database, app: &str, set: &str, ids: &[String]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    {
        let mut members = txn.open_table(MEMBERS).map_err(backend)?;
        for id in ids {
            members.insert(member_key(app, set, id).as_str(), ()).map_err(backend)?;
        }
    }
    txn.commit().map_err(backend)
}

pub(super) fn delete_members(db: &Database, app: &str, set: &str) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    {
        let prefix = format!("{app}\0{set}\0");
        let end = prefix_end(&prefix);
        txn.open_table(MEMBERS).map_err(backend)?.retain_in::<&str, _>(prefix.as_str()..end.as_str(), |_, _| false).map_err(backend)?;
    }
    txn.commit().map_err(backend)
}

pub(super) fn count_members(db: &Database, app: &str, set: &str) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let table = txn.open_table(MEMBERS).map_err(backend)?;
    let prefix = format!("{app}\0{set}\0");
    let end = prefix_end(&prefix);
    Ok(table.range::<&str>(prefix.as_str()..end.as_str()).map_err(backend)?.count() as u64)
}

pub(super) fn scan_members(
    db: &Database,
    endpoints_table: TableDefinition<&str, &[u8]>,
    app: &str,
    set: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<Endpoint>, Option<String>), StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let members = txn.open_table(MEMBERS).map_err(backend)?;
    let endpoints = txn.open_table(endpoints_table).map_err(backend)?;
    let prefix = format!("{app}\0{set}\0");
    let end = prefix_end(&prefix);
    let start = cursor.map(|c| format!("{prefix}{c}"));
    let range = match &start {
        Some(s) => members.range::<&str>((Bound::Excluded(s.as_str()), Bound::Excluded(end.as_str()))),
        None => members.range::<&str>(prefix.as_str()..end.as_str()),
    }
    .map_err(backend)?;
    let limit = limit.max(1);
    let (mut out, mut read, mut last) = (Vec::new(), 0, None);
    for item in range.take(limit) {
        let (k, _) = item.map_err(backend)?;
        let id = &k.value()[prefix.len()..];
        read += 1;
        if let Some(v) = endpoints.get(format!("{app}\0{id}").as_str()).map_err(backend)? {
            out.push(super::codec::decode_endpoint(app, v.value())?);
        }
        last = Some(id.to_string());
    }
    Ok((out, if read == limit { last } else { None }))
}

pub(super) fn members_contain(db: &Database, app: &str, set: &str, ids: &[String]) -> Result<Vec<bool>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let members = txn.open_table(MEMBERS).map_err(backend)?;
    ids.iter().map(|id| Ok(members.get(member_key(app, set, id).as_str()).map_err(backend)?.is_some())).collect()
}

pub(super) fn take_endpoint_caps(
    db: &Database,
    app: &str,
    scope: &str,
    ids: &[String],
    recent_cap: Option<(u32, i64)>,
    total: Option<u32>,
    now: i64,
) -> Result<Vec<bool>, StoreError> {
    let (daily, window) = (recent_cap.map(|r| r.0), recent_cap.map_or(86_400, |r| r.1));
    let txn = db.begin_write().map_err(backend)?;
    let mut out = Vec::with_capacity(ids.len());
    {
        let mut caps = txn.open_table(CAPS).map_err(backend)?;
        for id in ids {
            let key = format!("{app}\0{scope}\0{id}");
            let old = caps.get(key.as_str()).map_err(backend)?.map(|g| g.value().to_string()).unwrap_or_default();
            let mut parts = old.split_whitespace();
            let count: u32 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            let mut recent: Vec<i64> = parts.filter_map(|t| t.parse().ok()).filter(|t| *t > now - window).collect();
            let ok = total.is_none_or(|t| count < t) && daily.is_none_or(|d| (recent.len() as u32) < d);
            if ok {
                if daily.is_some() {
                    recent.push(now);
                }
                let mut value = (count + 1).to_string();
                for t in &recent {
                    value.push(' ');
                    value.push_str(&t.to_string());
                }
                caps.insert(key.as_str(), value.as_str()).map_err(backend)?;
            }
            out.push(ok);
        }
    }
    txn.commit().map_err(backend)?;
    Ok(out)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(super) fn try_lease(db: &Database, app: &str, name: &str, owner: &str, ttl_ms: u64) -> Result<bool, StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    let held = {
        let mut leases = txn.open_table(LEASES).map_err(backend)?;
        let key = format!("{app}\0{name}");
        let now = now_ms();
        let current = leases.get(key.as_str()).map_err(backend)?.map(|g| g.value().to_string());
        let free = match current.as_deref().and_then(|v| v.split_once(' ')) {
            Some((expiry, holder)) => holder == owner || expiry.parse::<u64>().unwrap_or(0) <= now,
            None => true,
        };
        if free {
            leases.insert(key.as_str(), format!("{} {owner}", now + ttl_ms.max(1)).as_str()).map_err(backend)?;
        }
        free
    };
    txn.commit().map_err(backend)?;
    Ok(held)
}

pub(super) fn release_lease(db: &Database, app: &str, name: &str, owner: &str) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    {
        let mut leases = txn.open_table(LEASES).map_err(backend)?;
        let key = format!("{app}\0{name}");
        let mine = leases.get(key.as_str()).map_err(backend)?.is_some_and(|g| g.value().split_once(' ').is_some_and(|(_, h)| h == owner));
        if mine {
            leases.remove(key.as_str()).map_err(backend)?;
        }
    }
    txn.commit().map_err(backend)
}
