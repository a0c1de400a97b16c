//! Pure rules with no I/O: what a valid endpoint or app setting is, how a write merges into a
//! stored endpoint, cohorts, and the shapes of Pinpoint's endpoint import files.

pub mod app;
pub mod countries;
pub mod endpoint;
pub mod import;
pub mod json;

use chrono::{DateTime, SecondsFormat, Utc};

/// One bad field of a request: the field's path (`endpoints[3].address`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl std::fmt::Display) -> Self {
        Self { field: field.into(), description: description.to_string() }
    }

    /// The same violation under a parent path: `address` under `endpoints[3]`.
    #[must_use]
    pub fn under(mut self, parent: &str) -> Self {
        if !parent.is_empty() {
            self.field = if self.field.is_empty() { parent.to_string() } else { format!("{parent}.{}", self.field) };
        }
        self
    }
}

/// Timestamps are ISO-8601 in UTC with milliseconds, so they also sort as strings.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A new message id: the creation time (unix seconds, 8 hex digits) then 24 random hex
/// digits. Ids sort by time, and a store can find a message's time bucket from its id alone.
pub fn new_message_id() -> String {
    use std::fmt::Write as _;
    let secs = chrono::Utc::now().timestamp().max(0) as u32;
    let random: u128 = rand::random();
    let mut id = String::with_capacity(32);
    let _ = write!(id, "{secs:08x}{:024x}", random >> 32);
    id
}

/// The creation time (unix seconds) a message id carries, if it is one of Herald's.
pub fn message_id_time(id: &str) -> Option<i64> {
    (id.len() == 32).then(|| id.get(..8)).flatten().and_then(|h| u32::from_str_radix(h, 16).ok()).map(i64::from)
}

/// A new random resource id: 32 lowercase hex digits, as Pinpoint's application ids.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
