//! The query language.
