//! The pipeline services as library types, each usable alone: trigger, tarball, scheduler,
//! timeout, regression tracker, report, LAVA callback, job retry, and the job runner that runs
//! inside a job. Each service is a client of the API and the storage.

pub mod fault;
pub mod job_retry;
pub mod jobrunner;
#[cfg(feature = "kcidb")]
pub mod kcidb_bridge;
pub mod ktap;
pub mod lava_callback;
pub mod lifecycle;
pub mod metrics;
pub mod regression;
pub mod reporter;
pub mod rules;
pub mod scheduler;
pub mod service;
pub mod setup;
pub mod tarball;
pub mod timeout;
pub mod trigger;
