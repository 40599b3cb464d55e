//! Route handlers, one file per concern.

pub mod events;
pub mod kv;
pub mod nodes;
pub mod pages;
pub mod pubsub;
pub mod telemetry;
pub mod users;

use kernelci::models::ObjectId;

use crate::http::ApiError;

/// The largest `limit` of the list routes that build their page in memory (`/users`,
/// `/user-groups`, `/telemetry`); above it, 422 naming the maximum. Upstream's clients page
/// with `limit=100`. (`/nodes`, `/nodes/fast` and `/events` stream instead: no maximum.)
pub const MAX_PAGE_LIMIT: u64 = 1000;

/// A page size: `limit` (default `default`), at most [`MAX_PAGE_LIMIT`].
pub fn capped_limit(limit: Option<u64>, default: u64) -> Result<u64, ApiError> {
    match limit {
        Some(l) if l > MAX_PAGE_LIMIT => Err(ApiError::above_maximum("limit", l, MAX_PAGE_LIMIT)),
        Some(l) => Ok(l),
        None => Ok(default),
    }
}

/// Parses an object id from a path, with upstream's 400 text.
pub fn object_id(s: &str) -> Result<ObjectId, ApiError> {
    ObjectId::parse_str(s).map_err(|e| ApiError::bad_request(e.to_string()))
}
