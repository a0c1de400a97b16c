//! Segments with Pinpoint's semantics. A definition is validated ([`validate`]) and compiled
//! into a pure matcher ([`rule`]); membership is computed by streaming the app's endpoints (or
//! an imported segment's member set) page by page from the store and filtering in the daemon
//! ([`MemberStream`]), so memory stays flat whatever the segment's size and a consumer gets
//! the first members after one page.

pub mod import;
pub mod jobs;
pub mod json;
pub mod rule;
pub mod validate;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use prost::Message as _;
use tokio::sync::mpsc;

use crate::proto::v1::{Endpoint, Segment, SegmentType};
use crate::store::{Store, StoreError};
pub use rule::{member_set, Rule};

/// The store record kind of segments.
pub const KIND: &str = "segment";

/// Backoff of a member scan while the store is unreachable: first and largest wait.
const BACKOFF: (std::time::Duration, std::time::Duration) = (std::time::Duration::from_millis(100), std::time::Duration::from_secs(2));

/// Endpoints per page of a scan.
pub const PAGE: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("segment {0} not found")]
    NotFound(String),
    #[error("segment {0} version {1} not found")]
    VersionNotFound(String, i32),
    #[error("{0}")]
    Invalid(#[from] rule::RuleError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A segment version from the store (`version` 0: the latest).
pub async fn load(store: &dyn Store, app: &str, id: &str, version: i32) -> Result<Segment, SegmentError> {
    let raw = store.get_record(app, KIND, id, (version > 0).then_some(version)).await?;
    match raw {
        Some(b) => Ok(Segment::decode(b.as_slice()).map_err(StoreError::from)?),
        None if version > 0 && store.get_record(app, KIND, id, None).await?.is_some() => {
            Err(SegmentError::VersionNotFound(id.into(), version))
        }
        None => Err(SegmentError::NotFound(id.into())),
    }
}

/// Loads every segment `segment` refers to (and theirs), keyed as referenced.
pub async fn sources(store: &dyn Store, app: &str, segment: &Segment) -> Result<HashMap<(String, i32), Segment>, SegmentError> {
    let mut out = HashMap::new();
    let mut todo: Vec<(String, i32)> = refs(segment);
    while let Some(key) = todo.pop() {
        if out.contains_key(&key) {
            continue;
        }
        if out.len() > 100 {
            return Err(SegmentError::Invalid(rule::RuleError::TooDeep));
        }
        let s = load(store, app, &key.0, key.1).await?;
        todo.extend(refs(&s));
        out.insert(key, s);
    }
    Ok(out)
}

fn refs(s: &Segment) -> Vec<(String, i32)> {
    s.segment_groups.iter().flat_map(|l| &l.groups).flat_map(|g| &g.source_segments).map(|r| (r.id.clone(), r.version)).collect()
}

/// Compiles a stored segment with its sources from the store.
pub async fn compile(store: &dyn Store, app: &str, segment: &Segment) -> Result<Rule, SegmentError> {
    let sources = sources(store, app, segment).await?;
    rule::compile(segment, &sources).map_err(SegmentError::Invalid)
}

/// Ranges of the index one scan reads concurrently (where the store can split it): enough to
/// keep Redis busy while pages are decoded and filtered.
pub const READERS: usize = 4;

/// Reads one range of the index page by page into `tx`; stops when the stream is dropped.
async fn read_range(
    store: Arc<dyn Store>,
    app: String,
    set: Option<String>,
    range: (Option<String>, Option<String>),
    after: Option<String>,
    page: usize,
    tx: mpsc::Sender<Result<Vec<Endpoint>, StoreError>>,
) {
    let mut cursor = after;
    let mut backoff = BACKOFF.0;
    loop {
        let r = store.scan_encoded(&app, set.as_deref(), cursor.clone(), (range.0.as_deref(), range.1.as_deref()), page).await;
        if let Err(e) = &r {
            if e.is_transient() && !tx.is_closed() {
                // The store is unreachable: the scan pauses at its cursor and goes on when it
                // answers again (whoever reads the stream waits meanwhile).
                tracing::debug!(error = %e, "Store unreachable; the member scan waits.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
                continue;
            }
        }
        backoff = BACKOFF.0;
        // Decoded here, in the reader's task: it runs beside the consumer's filtering.
        let r = r.and_then(|(raw, next)| {
            let page = raw.iter().map(|b| crate::store::codec::decode_endpoint(&app, b)).collect::<Result<Vec<_>, _>>()?;
            Ok((page, next))
        });
        match r {
            Ok((endpoints, next)) => {
                if tx.send(Ok(endpoints)).await.is_err() {
                    return;
                }
                match next {
                    Some(c) => cursor = Some(c),
                    None => return,
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// A segment's members, page by page. A reader task fetches the next page from the store while
/// the current one is filtered; dropping the stream stops it.
pub struct MemberStream {
    rx: mpsc::Receiver<Result<Vec<Endpoint>, StoreError>>,
    store: Arc<dyn Store>,
    app: String,
    rule: Arc<Rule>,
    sets: Vec<String>,
    now: chrono::DateTime<chrono::Utc>,
    /// Endpoints read so far.
    pub scanned: u64,
    /// The id of the last endpoint read (in id order for an ordered stream).
    pub last_scanned: Option<String>,
}

impl MemberStream {
    /// Streams the members of `rule`, reading [`READERS`] ranges of the index concurrently
    /// where the store can split it (pages then arrive in no particular order).
    pub fn open(store: Arc<dyn Store>, app: &str, rule: Arc<Rule>, page: usize) -> Self {
        let (tx, rx) = mpsc::channel(2 * READERS);
        let (reader_store, reader_app) = (store.clone(), app.to_string());
        let set = rule.narrowest_set().map(str::to_string);
        tokio::spawn(async move {
            let cuts = match reader_store.scan_splits(&reader_app, set.as_deref(), READERS).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let mut bounds: Vec<Option<String>> = vec![None];
            bounds.extend(cuts.into_iter().map(Some));
            bounds.push(None);
            for w in bounds.windows(2) {
                let (from, until) = (w[0].clone(), w[1].clone());
                let (store, app, set, tx) = (reader_store.clone(), reader_app.clone(), set.clone(), tx.clone());
                tokio::spawn(read_range(store, app, set, (from, until), None, page, tx));
            }
        });
        let sets = rule.member_sets();
        Self { rx, store, app: app.to_string(), rule, sets, now: chrono::Utc::now(), scanned: 0, last_scanned: None }
    }

    /// Streams the members of `rule` in endpoint id order, after `after` (a resumed run): one
    /// reader, so that "every member up to this id" is a checkpoint.
    pub fn open_ordered(store: Arc<dyn Store>, app: &str, rule: Arc<Rule>, page: usize, after: Option<String>) -> Self {
        let (tx, rx) = mpsc::channel(2);
        let set = rule.narrowest_set().map(str::to_string);
        tokio::spawn(read_range(store.clone(), app.to_string(), set, (None, None), after, page, tx));
        let sets = rule.member_sets();
        Self { rx, store, app: app.to_string(), rule, sets, now: chrono::Utc::now(), scanned: 0, last_scanned: None }
    }

    /// As [`MemberStream::open_ordered`], within one range of the index: ids from `range.0`
    /// (inclusive) up to `range.1` (exclusive), cut by [`Store::scan_splits`] — a work unit of
    /// a run that several daemons share.
    pub fn open_range(
        store: Arc<dyn Store>,
        app: &str,
        rule: Arc<Rule>,
        page: usize,
        range: (Option<String>, Option<String>),
        after: Option<String>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(2);
        let set = rule.narrowest_set().map(str::to_string);
        tokio::spawn(read_range(store.clone(), app.to_string(), set, range, after, page, tx));
        let sets = rule.member_sets();
        Self { rx, store, app: app.to_string(), rule, sets, now: chrono::Utc::now(), scanned: 0, last_scanned: None }
    }

    /// The members of `rule` among the endpoints `ids` (ascending), after `after`: each
    /// endpoint is read by id and tested alone — no scan of the segment.
    pub fn listed(store: Arc<dyn Store>, app: &str, rule: Arc<Rule>, ids: Vec<String>, after: Option<String>) -> Self {
        let (tx, rx) = mpsc::channel(2);
        let (reader, reader_app) = (store.clone(), app.to_string());
        tokio::spawn(async move {
            let ids: Vec<String> = ids.into_iter().filter(|id| after.as_ref().is_none_or(|a| id > a)).collect();
            for chunk in ids.chunks(PAGE) {
                let mut backoff = BACKOFF.0;
                let page = loop {
                    let reads = chunk.iter().map(|id| reader.get_endpoint(&reader_app, id));
                    match futures::future::join_all(reads).await.into_iter().collect::<Result<Vec<_>, _>>() {
                        Ok(found) => break Ok(found.into_iter().flatten().collect::<Vec<_>>()),
                        Err(e) if e.is_transient() && !tx.is_closed() => {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(BACKOFF.1);
                        }
                        Err(e) => break Err(e),
                    }
                };
                let failed = page.is_err();
                if tx.send(page).await.is_err() || failed {
                    return;
                }
            }
        });
        let sets = rule.member_sets();
        Self { rx, store, app: app.to_string(), rule, sets, now: chrono::Utc::now(), scanned: 0, last_scanned: None }
    }

    /// The members of the next page (possibly none), or `None` once the scan is over.
    pub async fn next_page(&mut self) -> Option<Result<Vec<Endpoint>, StoreError>> {
        let page = match self.rx.recv().await? {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        self.scanned += page.len() as u64;
        if let Some(last) = page.last() {
            self.last_scanned = Some(last.id.clone());
        }
        let mut members: HashMap<String, HashSet<String>> = HashMap::new();
        if !self.sets.is_empty() && !page.is_empty() {
            let ids: Vec<String> = page.iter().map(|e| e.id.clone()).collect();
            for set in &self.sets {
                let mut backoff = BACKOFF.0;
                let found = loop {
                    match self.store.members_contain(&self.app, set, &ids).await {
                        Ok(f) => break f,
                        Err(e) if e.is_transient() => {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(BACKOFF.1);
                        }
                        Err(e) => return Some(Err(e)),
                    }
                };
                members.insert(set.clone(), ids.iter().zip(found).filter(|(_, f)| *f).map(|(id, _)| id.clone()).collect());
            }
        }
        let (rule, now) = (&self.rule, self.now);
        Some(Ok(page.into_iter().filter(|e| rule.matches(e, now, &members)).collect()))
    }
}

/// Whether a segment is imported.
pub fn is_imported(s: &Segment) -> bool {
    s.segment_type == SegmentType::Import as i32
}
