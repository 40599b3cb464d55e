//! Counters for `/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Requests counted the upstream way (all but `/nodes/fast`).
    pub http_requests_total: AtomicU64,
    /// Nodes purged by maintenance.
    pub nodes_purged: AtomicU64,
    /// Requests answered with a 5xx.
    pub errors_5xx: AtomicU64,
    /// Stale subscriptions removed.
    pub subscriptions_cleaned: AtomicU64,
    /// Nodes created.
    pub nodes_created: AtomicU64,
    /// Events appended.
    pub events_published: AtomicU64,
}

impl Metrics {
    /// Counts one request.
    pub fn request(&self, method: &str, route: &str, status: u16) {
        if route != "/nodes/fast" {
            self.http_requests_total.fetch_add(1, Ordering::Relaxed);
        }
        if status >= 500 {
            self.errors_5xx.fetch_add(1, Ordering::Relaxed);
        }
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self, subscriptions: usize) -> String {
        let mut out = String::new();
        // Upstream's three lines first, in its format.
        out.push_str(&format!(
            "http_requests_total{{instance=\"api\"}} {}\n",
            self.http_requests_total.load(Ordering::Relaxed)
        ));
        out.push_str(&format!(
            "subscriptions_cleaned{{instance=\"api\"}} {}\n",
            self.subscriptions_cleaned.load(Ordering::Relaxed)
        ));
        out.push_str(&format!(
            "nodes_purged{{instance=\"api\"}} {}\n",
            self.nodes_purged.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP kernelci_http_requests_total HTTP requests by route and status\n# TYPE kernelci_http_requests_total counter\n");
        let m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((method, route, status), n) in m.iter() {
            out.push_str(&format!(
                "kernelci_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}\n"
            ));
        }
        let gauges = [
            (
                "kernelci_http_5xx_total",
                "counter",
                self.errors_5xx.load(Ordering::Relaxed),
            ),
            (
                "kernelci_subscriptions_cleaned_total",
                "counter",
                self.subscriptions_cleaned.load(Ordering::Relaxed),
            ),
            (
                "kernelci_nodes_created_total",
                "counter",
                self.nodes_created.load(Ordering::Relaxed),
            ),
            (
                "kernelci_events_published_total",
                "counter",
                self.events_published.load(Ordering::Relaxed),
            ),
            ("kernelci_subscriptions", "gauge", subscriptions as u64),
        ];
        for (name, ty, v) in gauges {
            out.push_str(&format!("# TYPE {name} {ty}\n{name} {v}\n"));
        }
        out
    }
}
