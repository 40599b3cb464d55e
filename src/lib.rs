//! Workspace tests and benches.
