//! The typed requests and answers of the API (serde), whose JSON Schema (schemars, 2020-12 =
//! OpenAPI 3.1) the route table puts in the OpenAPI document. The models that exist in the
//! library (`Node`, `NodePatch`, `UserRead`, `UserGroup`, the kind data) derive their schema
//! there (`kernelci` feature `schema`); the rest are here, by concern.

pub mod nodes;
pub mod params;
pub mod pubsub;
pub mod users;
