//! The result report: gathering a checkout's jobs and failures, rendering the upstream
//! subject and body, and sending it over SMTP (lettre, feature `email`).
//!
//! The format is upstream's removed `test_report` service (`spec/kernelci-pipeline.md` §6),
//! byte for byte:
//!
//! ```text
//! [STAGING] mainline/master v6.5-11329-g708283abf896: 4 runs 0 failures
//!
//! Summary
//! =======
//!
//! Tree:     mainline
//! Branch:   master
//! ...
//! Name              | Result   | Total    | Failures
//! ------------------+----------+----------+---------
//! kver              | pass     |        0 |        0
//! ```
//!
//! - [`Report`] holds the data; [`Report::subject`] and [`Report::body`] render it;
//! - `gather` (feature `client`) builds it from the API for a checkout node;
//! - `SmtpConfig` and `send` (feature `email`) mail it: port 465 with implicit TLS, any other
//!   port with STARTTLS when the server offers it, login when a user is set, one
//!   `text/plain; charset=utf-8` part in quoted-printable.
//!
//! Differences from upstream: a missing `describe` prints as an empty string in the body too
//! (Jinja2 would print `None`); a job's total and failures count its builds and leaf test
//! cases by the one definition the web views and `/metrics` use ([`crate::store::results`]),
//! so a failing case is listed once, by its path below the job, and neither the job node above
//! it nor its group of tests is listed beside it (upstream counted every node of the group).

use crate::ErrorKind;
use crate::models::ResultValue;

/// Errors of building and sending reports.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The checkout lacks what a report needs.
    #[error("{0}")]
    Invalid(String),
    /// The node asked for does not exist.
    #[error("node {0} not found")]
    NotFound(String),
    /// An API call failed.
    #[cfg(feature = "client")]
    #[error("API: {0}")]
    Api(#[from] crate::client::ClientError),
    /// The message could not be built (a bad address).
    #[error("message: {0}")]
    Message(String),
    /// The SMTP server refused the message or could not be reached.
    #[error("SMTP {host}:{port}: {message}")]
    Smtp {
        /// The SMTP host.
        host: String,
        /// The port.
        port: u16,
        /// What went wrong.
        message: String,
    },
}

impl ReportError {
    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReportError::Invalid(_) | ReportError::Message(_) => ErrorKind::Invalid,
            ReportError::NotFound(_) => ErrorKind::NotFound,
            #[cfg(feature = "client")]
            ReportError::Api(e) => e.kind(),
            ReportError::Smtp { .. } => ErrorKind::Unavailable,
        }
    }
}

/// One job of a report: the counted items of a `group`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    /// The job (group) name.
    pub name: String,
    /// The result of the job's root node (the node named like the job); `None` prints "None".
    pub result: Option<ResultValue>,
    /// How many builds and test cases of the group are counted (see the module doc).
    pub total: u64,
    /// The failing ones' paths, dot-joined below the job's root.
    pub failures: Vec<String>,
}

/// The data of one report: a checkout's revision and its jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Tree name.
    pub tree: String,
    /// Branch.
    pub branch: String,
    /// `git describe`, when known.
    pub describe: Option<String>,
    /// Repository URL.
    pub url: String,
    /// Commit.
    pub commit: String,
    /// The jobs, in first-seen order.
    pub jobs: Vec<JobSummary>,
}

impl Report {
    /// How many jobs ran.
    pub fn total_runs(&self) -> usize {
        self.jobs.len()
    }

    /// How many jobs' root nodes failed (not leaf failures: upstream's meaning).
    pub fn failed_runs(&self) -> usize {
        self.jobs
            .iter()
            .filter(|j| j.result == Some(ResultValue::Fail))
            .count()
    }

    /// `[STAGING] <tree>/<branch> <describe>: <total> runs <failures> failures`.
    pub fn subject(&self) -> String {
        format!(
            "[STAGING] {}/{} {}: {} runs {} failures",
            self.tree,
            self.branch,
            self.describe.as_deref().unwrap_or(""),
            self.total_runs(),
            self.failed_runs()
        )
    }

    /// The plain-text body (upstream `test-report.jinja2`), ending with a newline.
    pub fn body(&self) -> String {
        let mut lines: Vec<String> = vec![
            self.subject(),
            String::new(),
            "Summary".into(),
            "=======".into(),
            String::new(),
            format!("{:<10}{}", "Tree:", self.tree),
            format!("{:<10}{}", "Branch:", self.branch),
            format!(
                "{:<10}{}",
                "Describe:",
                self.describe.as_deref().unwrap_or("")
            ),
            format!("{:<10}{}", "URL:", self.url),
            format!("{:<10}{}", "SHA1:", self.commit),
        ];
        if !self.jobs.is_empty() {
            lines.push(String::new());
            lines.push(format!(
                "{:<17} {} {:<8} {} {:<8} {} {:<8}",
                "Name", "|", "Result", "|", "Total", "|", "Failures"
            ));
            lines.push(format!(
                "{}+{}+{}+{}",
                "-".repeat(18),
                "-".repeat(10),
                "-".repeat(10),
                "-".repeat(9)
            ));
            for job in &self.jobs {
                lines.push(format!(
                    "{:<17} {} {:<8} {} {:>8} {} {:>8}",
                    job.name,
                    "|",
                    job.result.map_or("None", ResultValue::as_str),
                    "|",
                    job.total,
                    "|",
                    job.failures.len()
                ));
            }
        }
        lines.push(String::new());
        lines.push(String::new());
        lines.push("Failing tests".into());
        lines.push("=============".into());
        for job in self.jobs.iter().filter(|j| !j.failures.is_empty()) {
            lines.push(String::new());
            lines.push(job.name.clone());
            lines.push("-".repeat(job.name.chars().count()));
            lines.push(String::new());
            for path in &job.failures {
                lines.push(format!("* {path}"));
            }
        }
        let mut body = lines.join("\n");
        body.push('\n');
        body
    }
}

#[cfg(feature = "client")]
mod gather;
#[cfg(feature = "client")]
pub use gather::{gather, summarize};

#[cfg(feature = "email")]
mod smtp;
#[cfg(feature = "email")]
pub use smtp::{SmtpConfig, build_message, send};

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example (kernelci-api `doc/design.md`, spec §6).
    pub(crate) const EXAMPLE: &str = "\
[STAGING] mainline/master v6.5-11329-g708283abf896: 4 runs 0 failures

Summary
=======

Tree:     mainline
Branch:   master
Describe: v6.5-11329-g708283abf896
URL:      https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git
SHA1:     708283abf896dd4853e673cc8cba70acaf9bf4ea

Name              | Result   | Total    | Failures
------------------+----------+----------+---------
kver              | pass     |        0 |        0
kbuild-gcc-10-x86 | pass     |        5 |        0
kunit             | None     |        0 |        0
kunit-x86_64      | pass     |      104 |        2


Failing tests
=============

kunit-x86_64
------------

* exec.example.example_skip_test # SKIP this test should be skipped
* exec.example.example_mark_skipped_test # SKIP this test should be skipped
";

    #[test]
    fn renders_the_documented_example() {
        let job = |name: &str, result, total, failures: &[&str]| JobSummary {
            name: name.into(),
            result,
            total,
            failures: failures.iter().map(|s| (*s).to_owned()).collect(),
        };
        let report = Report {
            tree: "mainline".into(),
            branch: "master".into(),
            describe: Some("v6.5-11329-g708283abf896".into()),
            url: "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git".into(),
            commit: "708283abf896dd4853e673cc8cba70acaf9bf4ea".into(),
            jobs: vec![
                job("kver", Some(ResultValue::Pass), 0, &[]),
                job("kbuild-gcc-10-x86", Some(ResultValue::Pass), 5, &[]),
                job("kunit", None, 0, &[]),
                job(
                    "kunit-x86_64",
                    Some(ResultValue::Pass),
                    104,
                    &[
                        "exec.example.example_skip_test # SKIP this test should be skipped",
                        "exec.example.example_mark_skipped_test # SKIP this test should be skipped",
                    ],
                ),
            ],
        };
        assert_eq!(
            report.subject(),
            "[STAGING] mainline/master v6.5-11329-g708283abf896: 4 runs 0 failures"
        );
        assert_eq!(report.body(), EXAMPLE);
    }

    #[test]
    fn counts_failed_roots_and_renders_without_jobs() {
        let report = Report {
            tree: "t".into(),
            branch: "b".into(),
            describe: None,
            url: "u".into(),
            commit: "c".into(),
            jobs: vec![JobSummary {
                name: "a-very-long-job-name-indeed".into(),
                result: Some(ResultValue::Fail),
                total: 123456789,
                failures: vec![],
            }],
        };
        assert_eq!(report.subject(), "[STAGING] t/b : 1 runs 1 failures");
        assert!(
            report
                .body()
                .contains("a-very-long-job-name-indeed | fail     | 123456789 |        0\n")
        );
        let empty = Report {
            jobs: vec![],
            ..report
        };
        assert_eq!(
            empty.body(),
            "[STAGING] t/b : 0 runs 0 failures\n\nSummary\n=======\n\nTree:     t\nBranch:   b\n\
             Describe: \nURL:      u\nSHA1:     c\n\n\nFailing tests\n=============\n"
        );
    }
}
