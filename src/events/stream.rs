//! StreamEvents: an app's events from a position, in batches, following new ones. A consumer
//! that reconnects with the last id it saw (or the batch's `position`) misses nothing the
//! stream still keeps and sees nothing twice: ids only grow and each batch ends at its
//! position.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{event_id, event_number, Filter};
use crate::proto::v1::StreamEventsResponse;
use crate::store::{Store, StoreError};

/// Events read from the store per page.
pub const PAGE: usize = 1_000;

/// Where a stream starts.
#[derive(Debug, Clone)]
pub enum From {
    Oldest,
    After(u64),
    Time(chrono::DateTime<chrono::Utc>),
    Latest,
}

/// Resolves a start into the number the stream reads after.
pub async fn start(store: &dyn Store, app: &str, from: &From) -> Result<u64, StoreError> {
    Ok(match from {
        From::Oldest => 0,
        From::After(n) => *n,
        From::Latest => store.last_event(app).await?,
        From::Time(t) => super::position_at(store, app, *t).await?,
    })
}

/// Sends batches into `tx` from after `position` until the receiver goes away (or, with
/// `stop_at_end`, once caught up). A store outage pauses the stream; it goes on when the store
/// answers again.
pub async fn pump(
    store: Arc<dyn Store>,
    app: String,
    mut position: u64,
    filter: Filter,
    stop_at_end: bool,
    include_endpoint: bool,
    tx: mpsc::Sender<Result<StreamEventsResponse, StoreError>>,
) {
    let mut wake = super::subscribe();
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        let after = (position > 0).then(|| event_id(position));
        let page = match store.read_events(&app, after.as_deref(), PAGE).await {
            Ok(p) => p,
            Err(e) if e.is_transient() => {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = tx.closed() => return,
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
                continue;
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        backoff = std::time::Duration::from_millis(100);
        let Some(last) = page.last().and_then(|e| event_number(&e.event_id)) else {
            if stop_at_end {
                return;
            }
            tokio::select! {
                _ = super::wait_for_more(&mut wake) => {}
                _ = tx.closed() => return,
            }
            continue;
        };
        position = last;
        let mut events: Vec<_> = page.into_iter().filter(|e| filter.matches(e)).collect();
        if events.is_empty() {
            continue;
        }
        if include_endpoint {
            if let Err(e) = super::attach_endpoints(store.as_ref(), &app, &mut events).await {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
        if tx.send(Ok(StreamEventsResponse { events, position: event_id(position) })).await.is_err() {
            return;
        }
    }
}
