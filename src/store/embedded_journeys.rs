//! Journey participants in the embedded store: `journey_participants`
//! (`app\0{journey}\0{endpoint}` → `"{entries} {last entry}"`, then `" {due} {state}"` while
//! it is in the journey), `journey_due` (`app\0{journey}\0{due:020}\0{endpoint}` → (), the
//! participants in due order) and `journey_counters` (`app\0{journey}\0{name}` → count). Each
//! call is one write transaction.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::embedded::{backend, EmbeddedStore};
use super::embedded_tables::ENGAGED;
use super::{Entry, Move, Participant, Reentry, StoreError};

pub(super) const PARTICIPANTS: TableDefinition<&str, &str> = TableDefinition::new("journey_participants");
pub(super) const DUE: TableDefinition<&str, ()> = TableDefinition::new("journey_due");
pub(super) const COUNTERS: TableDefinition<&str, i64> = TableDefinition::new("journey_counters");

/// A stored participant: entries, last entry, and (while in the journey) due and state.
struct Row {
    entries: u32,
    last: i64,
    active: Option<(i64, String)>,
}

impl Row {
    fn parse(v: &str) -> Self {
        let mut parts = v.splitn(4, ' ');
        let entries = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let last = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let active = match (parts.next().and_then(|p| p.parse().ok()), parts.next()) {
            (Some(due), state) => Some((due, state.unwrap_or("").to_string())),
            _ => None,
        };
        Row { entries, last, active }
    }

    fn encode(&self) -> String {
        match &self.active {
            Some((due, state)) => format!("{} {} {due} {state}", self.entries, self.last),
            None => format!("{} {}", self.entries, self.last),
        }
    }
}

fn prefix(app: &str, journey: &str) -> String {
    format!("{app}\0{journey}\0")
}

fn due_key(app: &str, journey: &str, due: i64, id: &str) -> String {
    format!("{app}\0{journey}\0{:020}\0{id}", due.max(0))
}

fn add(txn: &WriteTransaction, app: &str, journey: &str, counters: &[(String, i64)]) -> Result<(), StoreError> {
    let mut t = txn.open_table(COUNTERS).map_err(backend)?;
    for (name, n) in counters {
        let k = format!("{}{name}", prefix(app, journey));
        let old = t.get(k.as_str()).map_err(backend)?.map_or(0, |g| g.value());
        t.insert(k.as_str(), old + n).map_err(backend)?;
    }
    Ok(())
}

/// Sets a participant's row and its place in the due order.
fn put(txn: &WriteTransaction, app: &str, journey: &str, id: &str, old: Option<&Row>, row: &Row) -> Result<(), StoreError> {
    let mut due = txn.open_table(DUE).map_err(backend)?;
    if let Some((d, _)) = old.and_then(|o| o.active.as_ref()) {
        due.remove(due_key(app, journey, *d, id).as_str()).map_err(backend)?;
    }
    if let Some((d, _)) = &row.active {
        due.insert(due_key(app, journey, *d, id).as_str(), ()).map_err(backend)?;
    }
    let k = format!("{}{id}", prefix(app, journey));
    txn.open_table(PARTICIPANTS).map_err(backend)?.insert(k.as_str(), row.encode().as_str()).map_err(backend)?;
    Ok(())
}

fn get(txn: &WriteTransaction, app: &str, journey: &str, id: &str) -> Result<Option<Row>, StoreError> {
    let k = format!("{}{id}", prefix(app, journey));
    let t = txn.open_table(PARTICIPANTS).map_err(backend)?;
    let row = t.get(k.as_str()).map_err(backend)?.map(|g| Row::parse(g.value()));
    Ok(row)
}

/// Deletes every row of `table` under the journey.
fn clear<V: redb::Value + 'static>(
    txn: &WriteTransaction,
    table: TableDefinition<&str, V>,
    app: &str,
    journey: &str,
) -> Result<(), StoreError> {
    let lo = prefix(app, journey);
    let hi = format!("{app}\0{journey}\u{1}");
    txn.open_table(table).map_err(backend)?.retain_in::<&str, _>(lo.as_str()..hi.as_str(), |_, _| false).map_err(backend)?;
    Ok(())
}

impl EmbeddedStore {
    pub(super) async fn embedded_engaged(&self, app_id: &str, keys: &[String]) -> Result<Vec<bool>, StoreError> {
        let (app, keys) = (app_id.to_string(), keys.to_vec());
        self.blocking(move |db: &Database| {
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(ENGAGED).map_err(backend)?;
            keys.iter()
                .map(|k| {
                    let row = super::embedded::key(&app, k);
                    Ok(table
                        .get(row.as_str())
                        .map_err(backend)?
                        .is_some_and(|g| g.value().len() >= 8 && u64::from_be_bytes(g.value()[..8].try_into().expect("8 bytes")) >= now))
                })
                .collect()
        })
        .await
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn embedded_journey_enter(
        &self,
        app_id: &str,
        journey: &str,
        ids: &[String],
        state: &str,
        due: i64,
        rule: Reentry,
        now_secs: i64,
    ) -> Result<Vec<Entry>, StoreError> {
        let (app, journey, ids, state) = (app_id.to_string(), journey.to_string(), ids.to_vec(), state.to_string());
        self.blocking(move |db: &Database| {
            let txn = db.begin_write().map_err(backend)?;
            if !super::embedded::app_key_exists(&txn, &app)? {
                return Err(StoreError::AppNotFound(app));
            }
            let mut out = Vec::with_capacity(ids.len());
            let mut counts: std::collections::BTreeMap<&'static str, i64> = Default::default();
            for id in &ids {
                let old = get(&txn, &app, &journey, id)?;
                let entry = match &old {
                    Some(o) if o.active.is_some() => Entry::Active,
                    Some(o) if rule.cap > 0 && o.entries >= rule.cap => Entry::CapExceeded,
                    Some(o) if rule.interval_secs > 0 && o.entries > 0 && now_secs - o.last < rule.interval_secs => Entry::TooSoon,
                    _ => Entry::Entered(old.as_ref().map_or(0, |o| o.entries) + 1),
                };
                if let Entry::Entered(entries) = entry {
                    let row = Row { entries, last: now_secs, active: Some((due, state.clone())) };
                    put(&txn, &app, &journey, id, old.as_ref(), &row)?;
                }
                *counts.entry(entry.metric()).or_default() += 1;
                out.push(entry);
            }
            let counters: Vec<(String, i64)> = counts.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            add(&txn, &app, &journey, &counters)?;
            txn.commit().map_err(backend)?;
            Ok(out)
        })
        .await
    }

    pub(super) async fn embedded_journey_due(
        &self,
        app_id: &str,
        journey: &str,
        until: i64,
        limit: usize,
    ) -> Result<Vec<Participant>, StoreError> {
        let (app, journey) = (app_id.to_string(), journey.to_string());
        self.blocking(move |db: &Database| {
            let txn = db.begin_read().map_err(backend)?;
            let due = txn.open_table(DUE).map_err(backend)?;
            let participants = txn.open_table(PARTICIPANTS).map_err(backend)?;
            let lo = prefix(&app, &journey);
            let hi = format!("{lo}{:020}\u{1}", until.max(0));
            let mut out = Vec::new();
            for item in due.range::<&str>(lo.as_str()..hi.as_str()).map_err(backend)?.take(limit.max(1)) {
                let (k, _) = item.map_err(backend)?;
                let rest = &k.value()[lo.len()..];
                let Some((at, id)) = rest.split_once('\0') else { continue };
                let row = participants.get(format!("{lo}{id}").as_str()).map_err(backend)?.map(|g| Row::parse(g.value()));
                let entries = row.as_ref().map_or(1, |r| r.entries);
                let state = row.and_then(|r| r.active).map(|(_, s)| s).unwrap_or_default();
                out.push(Participant { endpoint_id: id.to_string(), due: at.parse().unwrap_or(0), state, entries });
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn embedded_journey_move(
        &self,
        app_id: &str,
        journey: &str,
        moves: &[Move],
        counters: &[(String, i64)],
    ) -> Result<(), StoreError> {
        let (app, journey, moves, counters) = (app_id.to_string(), journey.to_string(), moves.to_vec(), counters.to_vec());
        self.blocking(move |db: &Database| {
            let txn = db.begin_write().map_err(backend)?;
            if !super::embedded::app_key_exists(&txn, &app)? {
                return Err(StoreError::AppNotFound(app));
            }
            for (id, next) in &moves {
                let old = get(&txn, &app, &journey, id)?;
                let row =
                    Row { entries: old.as_ref().map_or(1, |o| o.entries), last: old.as_ref().map_or(0, |o| o.last), active: next.clone() };
                put(&txn, &app, &journey, id, old.as_ref(), &row)?;
            }
            add(&txn, &app, &journey, &counters)?;
            txn.commit().map_err(backend)
        })
        .await
    }

    pub(super) async fn embedded_journey_counters(&self, app_id: &str, journey: &str) -> Result<(u64, Vec<(String, i64)>), StoreError> {
        let (app, journey) = (app_id.to_string(), journey.to_string());
        self.blocking(move |db: &Database| {
            let txn = db.begin_read().map_err(backend)?;
            let lo = prefix(&app, &journey);
            let hi = format!("{app}\0{journey}\u{1}");
            let active = txn.open_table(DUE).map_err(backend)?.range::<&str>(lo.as_str()..hi.as_str()).map_err(backend)?.count() as u64;
            let table = txn.open_table(COUNTERS).map_err(backend)?;
            let mut counters = Vec::new();
            for item in table.range::<&str>(lo.as_str()..hi.as_str()).map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                counters.push((k.value()[lo.len()..].to_string(), v.value()));
            }
            Ok((active, counters))
        })
        .await
    }

    pub(super) async fn embedded_journey_drop(&self, app_id: &str, journey: &str) -> Result<(), StoreError> {
        let (app, journey) = (app_id.to_string(), journey.to_string());
        self.blocking(move |db: &Database| {
            let txn = db.begin_write().map_err(backend)?;
            clear(&txn, PARTICIPANTS, &app, &journey)?;
            clear(&txn, DUE, &app, &journey)?;
            clear(&txn, COUNTERS, &app, &journey)?;
            txn.commit().map_err(backend)
        })
        .await
    }
}
