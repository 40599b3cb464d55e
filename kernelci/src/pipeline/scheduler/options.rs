//! [`SchedulerOptions`]: upstream's `[scheduler]` settings and command line.

use std::path::PathBuf;

use crate::pipeline::service::ServiceResult;
use crate::pipeline::setup::ServiceSetup;

/// How the scheduler runs (upstream's `[scheduler]` settings and command line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Where a copy of each generated job definition is written (`<output>/<node id>/<file>`);
    /// `None` writes nothing.
    pub output: Option<PathBuf>,
    /// Substituted for `{image_prefix}` in job images.
    pub image_prefix: String,
    /// The name of the storage config jobs upload to (`[DEFAULT] storage_config`).
    pub storage_config: Option<String>,
    /// The name of the API config jobs talk to (`[DEFAULT] api_config`).
    pub api_config: Option<String>,
    /// Receive every owner's events (`--promisc`).
    pub promiscuous: bool,
    /// Only node events whose `owner` is this (`--event-owner`).
    pub event_owner: Option<String>,
    /// Only node events whose `submitter` is this (`--event-submitter`).
    pub event_submitter: Option<String>,
    /// Schedule LAVA jobs even when no device of the type is online.
    pub disable_device_health_check: bool,
}

impl SchedulerOptions {
    /// The job output directory when `[scheduler] output` is not set.
    pub const DEFAULT_OUTPUT: &str = "/tmp/kci/scheduler";

    /// Reads the options from `setup` (section `scheduler`, then `[DEFAULT]`): `output`
    /// (default [`SchedulerOptions::DEFAULT_OUTPUT`]), `image_prefix`, `storage_config`,
    /// `api_config`, `promisc`, `event_owner`, `event_submitter` and
    /// `disable_device_health_check`.
    pub fn from_settings(setup: &ServiceSetup) -> ServiceResult<SchedulerOptions> {
        Ok(SchedulerOptions {
            output: Some(PathBuf::from(
                setup
                    .get(None, "output")
                    .unwrap_or_else(|| Self::DEFAULT_OUTPUT.into()),
            )),
            image_prefix: setup.get(None, "image_prefix").unwrap_or_default(),
            storage_config: setup.get(None, "storage_config"),
            api_config: setup.get(None, "api_config"),
            promiscuous: setup.flag(false, "promisc")?,
            event_owner: setup.get(None, "event_owner"),
            event_submitter: setup.get(None, "event_submitter"),
            disable_device_health_check: setup.flag(false, "disable_device_health_check")?,
        })
    }
}
