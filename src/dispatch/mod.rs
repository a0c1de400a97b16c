//! Dispatch: the policy side of sending — retries, limits and quotas — applied by the shard
//! workers to what channels report. (The shard router and the Messages service build on these.)

pub mod engine;
pub mod quota;
pub mod reply;
pub mod retry;
