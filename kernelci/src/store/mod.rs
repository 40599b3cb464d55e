//! Node stores.
