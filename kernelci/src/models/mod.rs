//! The data models, with exactly the upstream JSON shapes.
//!
//! - [`Node`] with its 23 fields, [`State`] and its state machine, [`ResultValue`];
//! - the kinds ([`NodeKind`]) and the models of their `data` ([`kinds`]);
//! - [`User`], [`UserRead`], [`UserGroup`];
//! - [`ObjectId`] (24-hex ids) and [`Timestamp`] (naive-UTC ISO times).
//!
//! Decoding never panics: [`Node::from_json`] and [`Node::validate`] return a [`ModelError`]
//! that names every failing field.

pub mod ids;
pub mod kinds;
pub mod node;
pub mod sample;
pub mod time;
pub mod user;
pub mod validate;

pub use ids::{InvalidObjectId, ObjectId};
pub use kinds::{
    CheckoutData, ErrorCode, KbuildData, KernelVersion, NodeKind, RegressionData, Revision,
    TestData,
};
pub use node::{DEFAULT_TIMEOUT_SECS, Node, NodePatch, ResultValue, State, normalise_http_url};
pub use time::{InvalidTimestamp, Timestamp};
pub use user::{User, UserGroup, UserRead};
pub use validate::{ModelError, ValidationError, ValidationErrors};
