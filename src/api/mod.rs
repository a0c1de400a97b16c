//! The gRPC control plane: one tonic service per file, the one mapping from errors to
//! `Status` (authentication and scopes are `access`'s guard, in front of every service).

pub mod apps;
pub mod campaigns;
pub mod channels;
pub mod endpoints;
pub mod events;
pub mod journeys;
pub mod keys;
pub mod kpis;
pub mod messages;
pub mod segments;
pub mod suppressions;
pub mod tags;
pub mod templates;

use std::future::Future;
use std::time::Instant;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::FieldViolation;
use crate::store::StoreError;
use crate::telemetry;

/// INVALID_ARGUMENT carrying a `google.rpc.BadRequest` with one field violation per bad field.
pub fn invalid(violations: Vec<FieldViolation>) -> Status {
    let summary = match violations.as_slice() {
        [one] => format!("invalid {}: {}", if one.field.is_empty() { "request" } else { &one.field }, one.description),
        many => format!("{} invalid fields; see the BadRequest details", many.len()),
    };
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_bad_request_violation(v.field, v.description);
    }
    Status::with_error_details(Code::InvalidArgument, summary, details)
}

/// The one conversion from store errors to statuses. Internals are logged, not returned.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::AppNotFound(id) => Status::not_found(format!("app {id} not found")),
        StoreError::AppExists(id) => Status::already_exists(format!("app {id} already exists")),
        StoreError::NotFound(what) => Status::not_found(format!("{what} not found")),
        StoreError::Exists(what) => Status::already_exists(format!("{what} already exists")),
        StoreError::Precondition(why) => Status::failed_precondition(why),
        StoreError::Contention => {
            let mut details = ErrorDetails::new();
            details.set_retry_info(Some(std::time::Duration::from_millis(100)));
            Status::with_error_details(Code::Aborted, "the write conflicted with concurrent writes; retry it", details)
        }
        StoreError::Corrupt(why) => {
            tracing::error!(%why, "Stored record is corrupt.");
            Status::internal("a stored record could not be read")
        }
        StoreError::Backend(why) | StoreError::Unavailable(why) => {
            tracing::error!(%why, "Store failed.");
            metrics::counter!(telemetry::STORE_ERRORS).increment(1);
            let mut details = ErrorDetails::new();
            details.set_retry_info(Some(std::time::Duration::from_secs(1)));
            Status::with_error_details(Code::Unavailable, "the store is unavailable; retry later", details)
        }
    }
}

/// App ids are what Herald generates (hex) or what an operator chose when importing; they
/// must be usable inside store keys and glob patterns.
pub fn check_app_id(app_id: &str) -> Result<(), Status> {
    let ok = !app_id.is_empty() && app_id.len() <= 64 && app_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(vec![FieldViolation::new("app_id", "must be 1 to 64 letters, digits, '-' or '_'")]))
    }
}

/// Runs one store operation, recording its latency by backend and operation.
pub async fn timed<T>(backend: &'static str, op: &'static str, f: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let out = f.await;
    metrics::histogram!(telemetry::STORE_DURATION, "backend" => backend, "op" => op).record(start.elapsed().as_secs_f64());
    out
}

/// Runs one RPC, recording its count by status code and its latency.
pub async fn observe<T>(method: &'static str, call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    let start = Instant::now();
    let result = call.await;
    let code = match &result {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    metrics::histogram!(telemetry::GRPC_DURATION, "method" => method).record(start.elapsed().as_secs_f64());
    metrics::counter!(telemetry::GRPC_REQUESTS, "method" => method, "code" => code_name(code)).increment(1);
    result
}

pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_requests_carry_one_violation_per_field() {
        let status = invalid(vec![FieldViolation::new("a", "x"), FieldViolation::new("b", "y")]);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let br = details.bad_request().expect("BadRequest details");
        let fields: Vec<_> = br.field_violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["a", "b"]);
    }
}
