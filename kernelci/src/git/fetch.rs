//! Fetching: the progress reports and the options of a repository update, and the fetch
//! itself (prune, tags, progress every [`UpdateOptions::progress_interval`]).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use git2::{AutotagOption, FetchOptions, FetchPrune, RemoteCallbacks};

use super::{Context, GitResult};

/// Progress of a fetch, handed to [`UpdateOptions::progress`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchProgress {
    /// Objects the remote will send.
    pub total_objects: usize,
    /// Objects received so far.
    pub received_objects: usize,
    /// Objects indexed so far.
    pub indexed_objects: usize,
    /// Bytes received so far.
    pub received_bytes: usize,
    /// Deltas to resolve.
    pub total_deltas: usize,
    /// Deltas resolved so far.
    pub indexed_deltas: usize,
}

impl fmt::Display for FetchProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |a: usize, b: usize| (a * 100).checked_div(b).unwrap_or(100);
        write!(
            f,
            "received {}/{} objects ({}%), {:.1} MiB, indexed {}/{}, deltas {}/{}",
            self.received_objects,
            self.total_objects,
            pct(self.received_objects, self.total_objects),
            self.received_bytes as f64 / (1024.0 * 1024.0),
            self.indexed_objects,
            self.total_objects,
            self.indexed_deltas,
            self.total_deltas,
        )
    }
}

/// A progress callback: the remote's URL and the progress so far.
pub type ProgressFn = dyn Fn(&str, &FetchProgress) + Send + Sync;

/// How [`KernelRepo::update`] fetches.
#[derive(Clone)]
pub struct UpdateOptions {
    /// Extra repositories whose tags are fetched too (upstream: mainline, so `describe` finds
    /// release tags on any tree). A failure there is logged, not fatal.
    pub extra_tag_urls: Vec<String>,
    /// Called with fetch progress, at most every [`UpdateOptions::progress_interval`] and at
    /// the end of each transfer; progress is also logged (`tracing`, info).
    pub progress: Option<Arc<ProgressFn>>,
    /// How often progress is reported during a long fetch.
    pub progress_interval: Duration,
}

impl fmt::Debug for UpdateOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateOptions")
            .field("extra_tag_urls", &self.extra_tag_urls)
            .field("progress", &self.progress.is_some())
            .field("progress_interval", &self.progress_interval)
            .finish()
    }
}

impl Default for UpdateOptions {
    fn default() -> Self {
        UpdateOptions {
            extra_tag_urls: Vec::new(),
            progress: None,
            progress_interval: Duration::from_secs(5),
        }
    }
}

/// Upstream's mainline URL, fetched for tags.
pub const MAINLINE_URL: &str = "git://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git";

pub(super) fn fetch(
    remote: &mut git2::Remote<'_>,
    refspecs: &[&str],
    tags: bool,
    prune: bool,
    opts: &UpdateOptions,
) -> GitResult<()> {
    let url = remote.url().unwrap_or("").to_owned();
    let mut last = Instant::now();
    let mut callbacks = RemoteCallbacks::new();
    let interval = opts.progress_interval;
    let hook = opts.progress.clone();
    let url_cb = url.clone();
    let mut reported_done = false;
    callbacks.transfer_progress(move |p| {
        let progress = FetchProgress {
            total_objects: p.total_objects(),
            received_objects: p.received_objects(),
            indexed_objects: p.indexed_objects(),
            received_bytes: p.received_bytes(),
            total_deltas: p.total_deltas(),
            indexed_deltas: p.indexed_deltas(),
        };
        let done = progress.total_objects > 0
            && progress.indexed_objects == progress.total_objects
            && progress.indexed_deltas == progress.total_deltas;
        if last.elapsed() >= interval || (done && !reported_done) {
            last = Instant::now();
            reported_done |= done;
            tracing::info!(url = %url_cb, "fetch: {progress}");
            if let Some(h) = &hook {
                h(&url_cb, &progress);
            }
        }
        true
    });
    callbacks.sideband_progress(|text| {
        let text = String::from_utf8_lossy(text);
        let text = text.trim();
        if !text.is_empty() {
            tracing::debug!("remote: {text}");
        }
        true
    });
    let mut fo = FetchOptions::new();
    fo.remote_callbacks(callbacks);
    fo.prune(if prune {
        FetchPrune::On
    } else {
        FetchPrune::Unspecified
    });
    fo.download_tags(if tags {
        AutotagOption::All
    } else {
        AutotagOption::Unspecified
    });
    tracing::info!(%url, "fetching");
    remote
        .fetch(refspecs, Some(&mut fo), None)
        .ctx(|| format!("fetch {url}"))
}
