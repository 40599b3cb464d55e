//! Configuration: the `kernelci.toml` settings and the pipeline YAML configs (trees, build
//! configs, jobs, platforms, scheduler, runtimes, storage, API), loaded with upstream's merge
//! rules and validated with errors that name the file, the line and the key.
//!
//! - [`Settings`]: `kernelci.toml`, found as upstream finds it (`--settings`, `$KCI_SETTINGS`,
//!   `./kernelci.toml`, `~/.config/kernelci/kernelci.toml`, `/etc/kernelci/kernelci.toml`),
//!   looked up per program section with a `[DEFAULT]` fallback and `KCI_*` environment
//!   overrides; secrets are [`Secret`]s that never show in `Debug` output or logs.
//! - [`PipelineConfig`]: every `*.yaml` under the given directories, merged as upstream
//!   (`kernelci.config.load`), YAML anchors, aliases and merge keys (`<<: *anchor`) resolved,
//!   then typed section by section. [`PipelineConfig::load`] collects every error (syntax,
//!   schema, cross references) instead of stopping at the first, each as
//!   `file:line: key.path: message`; what upstream accepts but this deployment cannot use
//!   (a scheduler entry for a runtime not defined here) is a warning
//!   ([`PipelineConfig::warnings`]). `cip://<branch>/<arch>/<file>` fragments
//!   ([`CipFragment`]) are valid, as they are for kernelci-core.
//! - [`format_params`], [`resolve_rootfs_params`] and [`parse_frequency`]: the small helpers
//!   the scheduler and `kci job` share.
//!
//! ```
//! use kernelci::config::PipelineConfig;
//!
//! let config = PipelineConfig::from_yaml_str("jobs.yaml", r#"
//! _anchors:
//!   kbuild: &kbuild
//!     template: kbuild.jinja2
//!     kind: kbuild
//! jobs:
//!   kbuild-gcc-14-x86:
//!     <<: *kbuild
//!     params: {arch: x86_64, compiler: gcc-14}
//! "#).unwrap();
//! assert_eq!(config.jobs["kbuild-gcc-14-x86"].kind, "kbuild");
//! ```
//!
//! The YAML parser is `serde_norway` (the maintained fork of `serde_yaml`); merge keys are
//! resolved by this module (chained merges included), and the line of every key is found by a
//! small indentation scanner over the source text, so errors found after merging still point
//! into the file that defined the value.

mod entries;
mod format;
mod jobs;
mod pipeline;
mod rules;
mod settings;
mod source;
mod validate;

use std::fmt;
use std::path::PathBuf;

pub use entries::{
    ApiConfig, BuildConfig, CIP_CONFIG_URL, CipFragment, Fragment, Priority, ReferenceBranch, Tree,
};
pub use format::{format_params, format_string, parse_frequency, resolve_rootfs_params};
pub use jobs::{JobConfig, PlatformConfig, RuntimeConfig, RuntimeSelector, SchedulerEntry};
pub use pipeline::PipelineConfig;
pub use rules::{RuleEntry, Rules, VersionRule};

pub use settings::{RuntimeCredentials, Secret, Settings};
pub use source::{KeyPath, KeySeg, Origin, yaml_files};

use crate::ErrorKind;

/// What kind of configuration problem an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigErrorKind {
    /// A file or directory named explicitly does not exist.
    NotFound,
    /// A file could not be read.
    Io,
    /// The file is not valid YAML or TOML.
    Syntax,
    /// A value has the wrong shape: a missing or unknown field, a wrong type, a bad priority,
    /// frequency or version rule.
    Schema,
    /// A name refers to something that is not defined (a job, runtime, platform, tree,
    /// fragment or rootfs).
    Reference,
}

/// One configuration error: where it is (file, line, key path) and what is wrong.
///
/// Displayed as `file:line: key.path: message`, leaving out the parts that are unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// What kind of problem this is.
    pub kind: ConfigErrorKind,
    /// The file the problem is in.
    pub file: Option<PathBuf>,
    /// The 1-based line in `file`.
    pub line: Option<usize>,
    /// The key path, e.g. `jobs.kbuild-gcc-14-x86.params.frequency` or `scheduler[3].job`.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error with a kind and message, without a location.
    pub fn new(kind: ConfigErrorKind, message: impl Into<String>) -> ConfigError {
        ConfigError {
            kind,
            file: None,
            line: None,
            key: None,
            message: message.into(),
        }
    }

    /// The same error at `file` (and `line`).
    pub fn at(mut self, file: impl Into<PathBuf>, line: Option<usize>) -> ConfigError {
        self.file = Some(file.into());
        self.line = line;
        self
    }

    /// The same error about `key`.
    pub fn with_key(mut self, key: impl Into<String>) -> ConfigError {
        self.key = Some(key.into());
        self
    }

    /// The cross-module kind of this error.
    pub fn error_kind(&self) -> ErrorKind {
        match self.kind {
            ConfigErrorKind::NotFound => ErrorKind::NotFound,
            ConfigErrorKind::Io => ErrorKind::Unavailable,
            ConfigErrorKind::Syntax | ConfigErrorKind::Schema | ConfigErrorKind::Reference => {
                ErrorKind::Invalid
            }
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
            if let Some(line) = self.line {
                write!(f, "{line}:")?;
            }
            f.write_str(" ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every error found while loading a configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// The cross-module kind: that of the first error (`Invalid` when empty).
    pub fn error_kind(&self) -> ErrorKind {
        self.0
            .first()
            .map_or(ErrorKind::Invalid, ConfigError::error_kind)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}
