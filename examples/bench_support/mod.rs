//! What the load generators (`api_load`, `event_load`) and `bench_plot` share: command-line
//! options, percentiles, the load average, the server's peak memory, and the CSV row that
//! `bench_plot` draws. A folder without `main.rs`, so Cargo does not take it for an example.

// Each example compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The value after `name` on the command line.
pub fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The number after `name` on the command line, else `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    arg_str(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0..=1) of `sorted`; 0 when empty.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Sorts latencies for [`pct`].
pub fn sort_ms(lat: &mut [f64]) {
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
}

/// The machine's 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The peak memory of the server processes, sampled every 100 ms while the generator runs:
/// `VmRSS`, `RssAnon` and `RssFile`, summed over the pids (an API server with its database
/// and Redis).
#[derive(Clone, Default)]
pub struct MemoryPeak {
    kib: Arc<[AtomicU64; 3]>,
}

impl MemoryPeak {
    /// Starts sampling `pids` (none: nothing is sampled, the peaks stay 0).
    pub fn start(pids: Vec<u32>) -> MemoryPeak {
        let m = MemoryPeak::default();
        let kib = m.kib.clone();
        if !pids.is_empty() {
            tokio::spawn(async move {
                loop {
                    for (slot, field) in kib.iter().zip(["VmRSS", "RssAnon", "RssFile"]) {
                        let sum: u64 = pids
                            .iter()
                            .filter_map(|p| {
                                kernelci::testsuite::peers::proc_status(Some(*p), field)
                            })
                            .sum();
                        slot.fetch_max(sum, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        m
    }

    /// The peaks since the last call (MiB: VmRSS, RssAnon, RssFile), and starts again.
    pub fn take(&self) -> (f64, f64, f64) {
        let mib = |i: usize| self.kib[i].swap(0, Ordering::Relaxed) as f64 / 1024.0;
        (mib(0), mib(1), mib(2))
    }
}

/// One result row: `label,scenario,nodes,listeners,rate,events,deliveries,lost,p50_ms,p99_ms,
/// max_ms,per_second,rss_mib,anon_mib,file_mib`.
pub struct CsvRow<'a> {
    /// Which server (`ours`, `upstream`).
    pub label: &'a str,
    /// The scenario (commas are written as `;`).
    pub scenario: &'a str,
    /// Nodes stored when the generator started.
    pub nodes: u64,
    /// Live listeners (fan-out), else 0.
    pub listeners: usize,
    /// Events per second published (fan-out), else 0.
    pub rate: u64,
    /// Events (or requests).
    pub events: u64,
    /// Deliveries (or requests).
    pub deliveries: u64,
    /// Events lost (or failed requests).
    pub lost: u64,
    /// Sorted latencies, ms.
    pub latencies_ms: &'a [f64],
    /// Throughput.
    pub per_second: f64,
    /// Peak memory (MiB: VmRSS, RssAnon, RssFile).
    pub memory: (f64, f64, f64),
}

impl CsvRow<'_> {
    /// Appends the row to `path`; a failure is printed, not fatal.
    pub fn append(&self, path: &str) {
        let l = self.latencies_ms;
        let line = format!(
            "{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{:.1},{:.1},{:.1},{:.1}\n",
            self.label,
            self.scenario.replace(',', ";"),
            self.nodes,
            self.listeners,
            self.rate,
            self.events,
            self.deliveries,
            self.lost,
            pct(l, 0.5),
            pct(l, 0.99),
            l.last().copied().unwrap_or(0.0),
            self.per_second,
            self.memory.0,
            self.memory.1,
            self.memory.2
        );
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        if let Err(e) = written {
            eprintln!("cannot append to {path}: {e}");
        }
    }
}
