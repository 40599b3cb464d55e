//! Job retry: re-scheduling failed or incomplete jobs (upstream `job_retry`).
