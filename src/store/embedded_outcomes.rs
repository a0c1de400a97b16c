//! Message outcomes, their indexes, per-day counters and the app's event stream in the
//! embedded store.

use redb::{ReadableDatabase, ReadableTable};

use super::embedded::{backend, key, page, EmbeddedStore};
use super::embedded_tables::{COUNTS, ENGAGED, EVENTS, EVENT_SEQ, KPI, KPI_UNIQUE, OUTCOMES, OUTCOME_INDEX, RUN_OUTCOMES};
use super::StoreError;
use crate::proto::v1::{Event, MessageOutcome};

/// A row of the per-run index: the run's request id, then the endpoint id.
fn run_key(app_id: &str, run: &str, endpoint_id: &str) -> String {
    format!("{app_id}\0{run}\0{endpoint_id}")
}

impl EmbeddedStore {
    pub(super) async fn embedded_record_outcomes(
        &self,
        app_id: &str,
        outcomes: &[MessageOutcome],
        events: &[Event],
        ttl_secs: u64,
    ) -> Result<(), StoreError> {
        if outcomes.is_empty() && events.is_empty() {
            return Ok(());
        }
        let kpi = crate::kpi::tally(outcomes, events);
        let marks = super::journey_marks(outcomes, events);
        let (app_id, outcomes, events) = (app_id.to_string(), outcomes.to_vec(), events.to_vec());
        self.blocking(move |db| {
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            let expires = now.saturating_add(ttl_secs);
            let txn = db.begin_write().map_err(backend)?;
            {
                if !marks.is_empty() {
                    let mut engaged = txn.open_table(ENGAGED).map_err(backend)?;
                    let until = now.saturating_add(super::mark_ttl(ttl_secs)).to_be_bytes();
                    for m in &marks {
                        engaged.insert(key(&app_id, m).as_str(), until.as_slice()).map_err(backend)?;
                    }
                }
                let mut table = txn.open_table(OUTCOMES).map_err(backend)?;
                for o in &outcomes {
                    let mut value = expires.to_be_bytes().to_vec();
                    value.extend(super::codec::encode_outcome(&app_id, o));
                    table.insert(key(&app_id, &o.message_id).as_str(), value.as_slice()).map_err(backend)?;
                }
                let mut index = txn.open_table(OUTCOME_INDEX).map_err(backend)?;
                for (seq, o) in outcomes.iter().enumerate() {
                    if !o.request_id.is_empty() {
                        // Within a request, in the order recorded (message ids sort by time only).
                        let n = chrono::Utc::now().timestamp_micros();
                        index
                            .insert(format!("{app_id}\0r{}\0{n:020}{seq:06}{}", o.request_id, o.message_id).as_str(), ())
                            .map_err(backend)?;
                    }
                    if !o.endpoint_id.is_empty() {
                        let inverted = u64::MAX - chrono::Utc::now().timestamp_micros().max(0) as u64;
                        index
                            .insert(format!("{app_id}\0e{}\0{inverted:020}{}", o.endpoint_id, o.message_id).as_str(), ())
                            .map_err(backend)?;
                    }
                }
                let mut by_run = txn.open_table(RUN_OUTCOMES).map_err(backend)?;
                for o in outcomes.iter().filter(|o| super::indexed_by_run(o)) {
                    let mut value = expires.to_be_bytes().to_vec();
                    value.extend(o.delivery_status.to_be_bytes());
                    by_run.insert(run_key(&app_id, &o.request_id, &o.endpoint_id).as_str(), value.as_slice()).map_err(backend)?;
                }
                let mut counts = txn.open_table(COUNTS).map_err(backend)?;
                for ((day, channel, status), n) in super::tally(&outcomes) {
                    let k = format!("{app_id}\0{day}\0{channel}\0{status}");
                    let now = counts.get(k.as_str()).map_err(backend)?.map_or(0, |g| g.value());
                    counts.insert(k.as_str(), now + n).map_err(backend)?;
                }
                let mut counters = txn.open_table(KPI).map_err(backend)?;
                for ((day, field), n) in &kpi.counts {
                    let k = format!("{app_id}\0{day}\0{field}");
                    let now = counters.get(k.as_str()).map_err(backend)?.map_or(0, |g| g.value());
                    counters.insert(k.as_str(), now + (*n).max(0) as u64).map_err(backend)?;
                }
                let mut uniques = txn.open_table(KPI_UNIQUE).map_err(backend)?;
                for ((day, scope), members) in &kpi.uniques {
                    let k = format!("{app_id}\0{day}\0{scope}");
                    let mut registers = uniques.get(k.as_str()).map_err(backend)?.map(|g| g.value().to_vec()).unwrap_or_default();
                    for m in members {
                        crate::kpi::hll::add(&mut registers, m);
                    }
                    uniques.insert(k.as_str(), registers.as_slice()).map_err(backend)?;
                }
                let mut seqs = txn.open_table(EVENT_SEQ).map_err(backend)?;
                let mut seq = seqs.get(app_id.as_str()).map_err(backend)?.map_or(0, |g| g.value());
                let mut stream = txn.open_table(EVENTS).map_err(backend)?;
                for e in &events {
                    seq += 1;
                    stream
                        .insert(format!("{app_id}\0{seq:020}").as_str(), super::codec::encode_event(&app_id, e).as_slice())
                        .map_err(backend)?;
                }
                seqs.insert(app_id.as_str(), seq).map_err(backend)?;
                if seq > super::MAX_EVENTS {
                    let (lo, hi) = (format!("{app_id}\0"), format!("{app_id}\0{:020}", seq - super::MAX_EVENTS + 1));
                    stream.retain_in::<&str, _>(lo.as_str()..hi.as_str(), |_, _| false).map_err(backend)?;
                }
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    pub(super) async fn embedded_run_outcomes(&self, app_id: &str, run: &str, ids: &[String]) -> Result<Vec<Option<i32>>, StoreError> {
        let keys: Vec<String> = ids.iter().map(|id| run_key(app_id, run, id)).collect();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(RUN_OUTCOMES).map_err(backend)?;
            keys.iter()
                .map(|k| {
                    let v = table.get(k.as_str()).map_err(backend)?;
                    Ok(v.and_then(|g| g.value().get(8..12).map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))))
                })
                .collect()
        })
        .await
    }

    pub(super) async fn embedded_list_outcomes(
        &self,
        app_id: &str,
        by: &super::OutcomeIndex,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<MessageOutcome>, StoreError> {
        let prefix = match by {
            super::OutcomeIndex::Request(r) => format!("{app_id}\0r{r}\0"),
            super::OutcomeIndex::Endpoint(e) => format!("{app_id}\0e{e}\0"),
        };
        let app_id = app_id.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let index = txn.open_table(OUTCOME_INDEX).map_err(backend)?;
            let outcomes = txn.open_table(OUTCOMES).map_err(backend)?;
            let hi = format!("{prefix}\u{10FFFF}");
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            let mut out = Vec::new();
            for item in index.range::<&str>(prefix.as_str()..hi.as_str()).map_err(backend)?.skip(offset).take(limit.max(1)) {
                let (k, _) = item.map_err(backend)?;
                let k = k.value();
                let message_id = &k[k.len().saturating_sub(32)..];
                if let Some(g) = outcomes.get(key(&app_id, message_id).as_str()).map_err(backend)? {
                    let v = g.value();
                    if v.len() > 8 && u64::from_be_bytes(v[..8].try_into().expect("8 bytes")) >= now {
                        out.push(super::codec::decode_outcome(&app_id, message_id, &v[8..])?);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn embedded_get_outcome(&self, app_id: &str, message_id: &str) -> Result<Option<MessageOutcome>, StoreError> {
        let k = key(app_id, message_id);
        let (app_id, message_id) = (app_id.to_string(), message_id.to_string());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(OUTCOMES).map_err(backend)?;
            let Some(g) = table.get(k.as_str()).map_err(backend)? else { return Ok(None) };
            let v = g.value();
            let expires =
                u64::from_be_bytes(v.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| StoreError::Corrupt("outcome".into()))?);
            if expires < chrono::Utc::now().timestamp().max(0) as u64 {
                return Ok(None);
            }
            Ok(Some(super::codec::decode_outcome(&app_id, &message_id, &v[8..])?))
        })
        .await
    }

    pub(super) async fn embedded_outcome_counts(&self, app_id: &str, day: &str) -> Result<Vec<(String, i32, u64)>, StoreError> {
        let prefix = format!("{app_id}\0{day}\0");
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(COUNTS).map_err(backend)?;
            let hi = format!("{prefix}\u{10FFFF}");
            let mut out = Vec::new();
            for item in table.range::<&str>(prefix.as_str()..hi.as_str()).map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let rest = &k.value()[prefix.len()..];
                if let Some((channel, status)) = rest.split_once('\0') {
                    out.push((channel.to_string(), status.parse().unwrap_or(0), v.value()));
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    pub(super) async fn embedded_read_events(&self, app_id: &str, after: Option<&str>, limit: usize) -> Result<Vec<Event>, StoreError> {
        let (app_id, after) = (app_id.to_string(), after.map(str::to_string));
        self.blocking(move |db| {
            page(db, EVENTS, &app_id, after.as_deref(), limit, |id, v| {
                let mut e = super::codec::decode_event(&app_id, v)?;
                e.event_id = id.to_string();
                Ok(e)
            })
        })
        .await
    }

    pub(super) async fn embedded_last_event(&self, app_id: &str) -> Result<u64, StoreError> {
        let app_id = app_id.to_string();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let seqs = txn.open_table(EVENT_SEQ).map_err(backend)?;
            Ok(seqs.get(app_id.as_str()).map_err(backend)?.map_or(0, |g| g.value()))
        })
        .await
    }

    pub(super) async fn embedded_trim_events(&self, app_id: &str, floor: u64) -> Result<(), StoreError> {
        let app_id = app_id.to_string();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut stream = txn.open_table(EVENTS).map_err(backend)?;
                let (lo, hi) = (format!("{app_id}\0"), format!("{app_id}\0{floor:020}"));
                stream.retain_in::<&str, _>(lo.as_str()..hi.as_str(), |_, _| false).map_err(backend)?;
            }
            txn.commit().map_err(backend)
        })
        .await
    }

    pub(super) async fn embedded_kpi_counters(&self, app_id: &str, days: &[String]) -> Result<Vec<Vec<(String, i64)>>, StoreError> {
        let (app_id, days) = (app_id.to_string(), days.to_vec());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(KPI).map_err(backend)?;
            days.iter()
                .map(|day| {
                    let prefix = format!("{app_id}\0{day}\0");
                    let hi = format!("{prefix}\u{10FFFF}");
                    let mut out = Vec::new();
                    for item in table.range::<&str>(prefix.as_str()..hi.as_str()).map_err(backend)? {
                        let (k, v) = item.map_err(backend)?;
                        out.push((k.value()[prefix.len()..].to_string(), v.value() as i64));
                    }
                    Ok(out)
                })
                .collect()
        })
        .await
    }

    pub(super) async fn embedded_kpi_uniques(&self, app_id: &str, unions: &[Vec<(String, String)>]) -> Result<Vec<u64>, StoreError> {
        let (app_id, unions) = (app_id.to_string(), unions.to_vec());
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(KPI_UNIQUE).map_err(backend)?;
            unions
                .iter()
                .map(|sets| {
                    let mut merged = Vec::new();
                    for (day, scope) in sets {
                        if let Some(g) = table.get(format!("{app_id}\0{day}\0{scope}").as_str()).map_err(backend)? {
                            crate::kpi::hll::merge(&mut merged, g.value());
                        }
                    }
                    Ok(crate::kpi::hll::count(&merged))
                })
                .collect()
        })
        .await
    }

    pub(super) async fn embedded_first_engagement(&self, app_id: &str, keys: &[String], ttl_secs: u64) -> Result<Vec<bool>, StoreError> {
        let (app_id, keys) = (app_id.to_string(), keys.to_vec());
        self.blocking(move |db| {
            let now = chrono::Utc::now().timestamp().max(0) as u64;
            let txn = db.begin_write().map_err(backend)?;
            let firsts = {
                let mut table = txn.open_table(ENGAGED).map_err(backend)?;
                let mut firsts = Vec::with_capacity(keys.len());
                for k in &keys {
                    let row = key(&app_id, k);
                    let seen = table
                        .get(row.as_str())
                        .map_err(backend)?
                        .is_some_and(|g| g.value().len() >= 8 && u64::from_be_bytes(g.value()[..8].try_into().expect("8 bytes")) >= now);
                    if !seen {
                        table.insert(row.as_str(), now.saturating_add(ttl_secs).to_be_bytes().as_slice()).map_err(backend)?;
                    }
                    firsts.push(!seen);
                }
                firsts
            };
            txn.commit().map_err(backend)?;
            Ok(firsts)
        })
        .await
    }
}
