//! The embedded store's tables, every one in this file, and the list of those keyed by app
//! that DeleteApp empties.

use redb::{TableDefinition, WriteTransaction};

use super::embedded::backend;
use super::embedded_records as records;
use super::StoreError;

pub(super) const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
pub(super) const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");
pub(super) const ADDRESSES: TableDefinition<&str, &str> = TableDefinition::new("addresses");
pub(super) const USERS: TableDefinition<&str, &str> = TableDefinition::new("users");
/// Suppression list: `app\0address` → `Suppression`.
pub(super) const SUPPRESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("suppressions");
/// Outcomes: `app\0message_id` → 8-byte big-endian expiry (unix seconds) + `MessageOutcome`.
pub(super) const OUTCOMES: TableDefinition<&str, &[u8]> = TableDefinition::new("outcomes");
/// Outcome listings: `app\0r{request}\0{message_id}` and `app\0e{endpoint}\0{inverted time}{message_id}` → ().
pub(super) const OUTCOME_INDEX: TableDefinition<&str, ()> = TableDefinition::new("outcome_index");
/// Outcome counts: `app\0day\0channel\0status` → messages.
pub(super) const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("outcome_counts");
/// Events: `app\0{sequence:020}` → `Event`; `EVENT_SEQ` holds each app's last sequence.
pub(super) const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
pub(super) const EVENT_SEQ: TableDefinition<&str, u64> = TableDefinition::new("event_seq");
/// Channel settings: `app\0channel` → protobuf.
/// Per campaign run, each endpoint's delivery status: expiry (8 bytes, big endian), status (4).
pub(super) const RUN_OUTCOMES: TableDefinition<&str, &[u8]> = TableDefinition::new("run_outcomes");
pub(super) const CHANNELS: TableDefinition<&str, &[u8]> = TableDefinition::new("channels");
/// API key records by key id (global, not an app's).
pub(super) const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
/// Idempotency keys: `app\0key` → 8-byte big-endian expiry + `P` (in flight) or `D` + response.
pub(super) const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// Quota use: `app\0channel\0total` and `app\0channel\0h{hour:012}` → messages.
pub(super) const QUOTAS: TableDefinition<&str, u64> = TableDefinition::new("quotas");
/// KPI counters: `app\0day\0{counter}|{scope}` → count.
pub(super) const KPI: TableDefinition<&str, u64> = TableDefinition::new("kpi");
/// KPI unique endpoints: `app\0day\0scope` → HyperLogLog registers.
pub(super) const KPI_UNIQUE: TableDefinition<&str, &[u8]> = TableDefinition::new("kpi_unique");
/// Engagement seen per message: `app\0{kind}:{message}` → 8-byte big-endian expiry.
pub(super) const ENGAGED: TableDefinition<&str, &[u8]> = TableDefinition::new("engaged");

/// The key range holding every row of an app.
pub(super) fn app_range(app_id: &str) -> (String, String) {
    (format!("{app_id}\0"), format!("{app_id}\u{1}"))
}

/// Opens one table (creating it when new) and, given an app's key range, deletes its rows.
fn clear_app<V: redb::Value + 'static>(
    txn: &WriteTransaction,
    table: TableDefinition<&str, V>,
    range: Option<(&str, &str)>,
) -> Result<(), StoreError> {
    let mut t = txn.open_table(table).map_err(backend)?;
    if let Some((lo, hi)) = range {
        t.retain_in::<&str, _>(lo..hi, |_, _| false).map_err(backend)?;
    }
    Ok(())
}

/// Every table whose rows are keyed `{app}\0…`, in one place: opened when the store opens
/// (`range` `None`) and emptied of one app's rows by DeleteApp. A new table goes here, so
/// DeleteApp cannot leave it behind. (`apps` and `event_seq`, keyed by the bare app id, are
/// handled beside it.)
pub(super) fn app_tables(txn: &WriteTransaction, range: Option<(&str, &str)>) -> Result<(), StoreError> {
    clear_app(txn, ENDPOINTS, range)?;
    clear_app(txn, ADDRESSES, range)?;
    clear_app(txn, USERS, range)?;
    clear_app(txn, QUOTAS, range)?;
    clear_app(txn, SUPPRESSIONS, range)?;
    clear_app(txn, OUTCOMES, range)?;
    clear_app(txn, OUTCOME_INDEX, range)?;
    clear_app(txn, RUN_OUTCOMES, range)?;
    clear_app(txn, COUNTS, range)?;
    clear_app(txn, EVENTS, range)?;
    clear_app(txn, CHANNELS, range)?;
    clear_app(txn, IDEMPOTENCY, range)?;
    clear_app(txn, super::embedded_templates::TEMPLATES, range)?;
    clear_app(txn, super::embedded_templates::TEMPLATE_VERSIONS, range)?;
    clear_app(txn, records::RECORDS, range)?;
    clear_app(txn, records::RECORD_VERSIONS, range)?;
    clear_app(txn, records::RECORD_USES, range)?;
    clear_app(txn, records::BLOBS, range)?;
    clear_app(txn, records::MEMBERS, range)?;
    clear_app(txn, records::CAPS, range)?;
    clear_app(txn, records::LEASES, range)?;
    clear_app(txn, KPI, range)?;
    clear_app(txn, KPI_UNIQUE, range)?;
    clear_app(txn, ENGAGED, range)?;
    clear_app(txn, super::embedded_journeys::PARTICIPANTS, range)?;
    clear_app(txn, super::embedded_journeys::DUE, range)?;
    clear_app(txn, super::embedded_journeys::COUNTERS, range)?;
    Ok(())
}
