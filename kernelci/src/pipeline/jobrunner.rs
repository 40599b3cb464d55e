//! The job runner: what a job does once started, in any runtime.
