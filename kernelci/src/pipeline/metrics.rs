//! Service metrics: named counters and gauges a service updates as it works, served in the
//! Prometheus text format at `GET /metrics` by the health endpoint of the service skeleton
//! ([`super::service::ServiceContext::serve_health`]).
//!
//! ```
//! use kernelci::pipeline::metrics::Metrics;
//!
//! let m = Metrics::default();
//! m.add("kcidb_objects_sent_total", "Objects KCIDB took", 3);
//! m.set("kcidb_queue_nodes", "Nodes waiting", 7.0);
//! let text = m.render();
//! assert!(text.contains("# TYPE kcidb_objects_sent_total counter\nkcidb_objects_sent_total 3\n"));
//! assert_eq!(m.counter("kcidb_objects_sent_total"), 3);
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
enum Value {
    Counter(u64),
    Gauge(f64),
}

#[derive(Debug, Clone)]
struct Metric {
    help: String,
    value: Value,
}

/// A register of counters and gauges. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    metrics: Arc<Mutex<BTreeMap<String, Metric>>>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, Metric>) -> R) -> Option<R> {
        self.metrics.lock().ok().map(|mut m| f(&mut m))
    }

    /// Adds `n` to the counter `name` (created at 0 with `help` on first use).
    pub fn add(&self, name: &str, help: &str, n: u64) {
        self.with(|m| {
            let metric = m.entry(name.to_owned()).or_insert_with(|| Metric {
                help: help.to_owned(),
                value: Value::Counter(0),
            });
            if let Value::Counter(c) = &mut metric.value {
                *c = c.saturating_add(n);
            }
        });
    }

    /// Sets the gauge `name`.
    pub fn set(&self, name: &str, help: &str, value: f64) {
        self.with(|m| {
            m.insert(
                name.to_owned(),
                Metric {
                    help: help.to_owned(),
                    value: Value::Gauge(value),
                },
            )
        });
    }

    /// A counter's value (0 when unknown).
    pub fn counter(&self, name: &str) -> u64 {
        self.with(|m| match m.get(name).map(|m| &m.value) {
            Some(Value::Counter(c)) => *c,
            _ => 0,
        })
        .unwrap_or(0)
    }

    /// Every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.with(|m| {
            let mut out = String::new();
            for (name, metric) in m.iter() {
                let (kind, value) = match metric.value {
                    Value::Counter(c) => ("counter", c.to_string()),
                    Value::Gauge(g) => ("gauge", g.to_string()),
                };
                let help = metric.help.replace('\\', "\\\\").replace('\n', "\\n");
                out.push_str(&format!(
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
                ));
            }
            out
        })
        .unwrap_or_default()
    }
}
