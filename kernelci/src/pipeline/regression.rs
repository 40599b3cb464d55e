//! The regression tracker: comparing finished tests with their previous run.
