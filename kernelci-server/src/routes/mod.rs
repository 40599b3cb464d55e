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

/// Parses an object id from a path, with upstream's 400 text.
pub fn object_id(s: &str) -> Result<ObjectId, ApiError> {
    ObjectId::parse_str(s).map_err(|e| ApiError::bad_request(e.to_string()))
}
