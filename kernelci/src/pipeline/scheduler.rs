//! The scheduler service: matching events to jobs and submitting them to runtimes.
