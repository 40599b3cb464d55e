//! The health view: node counts by kind and state, the runtimes, platforms and devices whose
//! failure or infrastructure rate stands out, stuck nodes and telemetry anomalies.

use kernelci::models::{State, Timestamp};
use kernelci::query::{Filter, Op, Operand, Scalar};
use kernelci::store::{FindOptions, ResultCounts, Sort, TelemetryQuery};
use serde_json::Value;

use super::data::{eq, since, str_list};
use super::model::{HealthResponse, HealthRow, ResultRow, StuckNode, TelemetryAnomaly, opt_str};
use crate::app::App;
use crate::http::ApiError;

/// The failure or infrastructure rate that flags a runtime, platform or device.
pub const ANOMALY_THRESHOLD: f64 = 0.5;
/// Groups smaller than this are never flagged.
const ANOMALY_MIN_TOTAL: u64 = 3;

fn health_row(keys: Vec<Value>, counts: kernelci::store::StatusCounts) -> HealthRow {
    let total = counts.total();
    let rate = |n: u64| {
        if total == 0 {
            0.0
        } else {
            (n as f64 / total as f64 * 1000.0).round() / 1000.0
        }
    };
    HealthRow {
        keys: keys.iter().map(opt_str).collect(),
        pass_rate: rate(counts.pass),
        fail_rate: rate(counts.fail),
        infra_rate: rate(counts.infra),
        anomaly: total >= ANOMALY_MIN_TOTAL
            && (rate(counts.fail) >= ANOMALY_THRESHOLD || rate(counts.infra) >= ANOMALY_THRESHOLD),
        counts,
    }
}

fn sorted(mut rows: Vec<HealthRow>) -> Vec<HealthRow> {
    rows.sort_by(|a, b| a.keys.cmp(&b.keys));
    rows
}

/// The pipeline's health over the last `hours`.
pub async fn health(app: &App, hours: u32) -> Result<HealthResponse, ApiError> {
    app.viewer
        .cache
        .get_or_try(format!("health:{hours}"), async {
            let from = since(i64::from(hours) * 3600);
            let window = Filter::all().and("created", Op::Gte, Operand::One(Scalar::Time(from)));
            let fields = |f: &[&str]| f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
            let by_kind = app
                .store
                .count_node_results(&window, &fields(&["kind", "state"]))
                .await?;
            let jobs = window.clone().and(
                "kind",
                Op::In,
                str_list(["kbuild".to_owned(), "job".to_owned()]),
            );
            let runtimes = app
                .store
                .count_node_results(&jobs, &fields(&["data.runtime"]))
                .await?;
            let platforms = app
                .store
                .count_node_results(&jobs, &fields(&["data.platform"]))
                .await?;
            let pending = Filter::all().and(
                "state",
                Op::In,
                str_list(["running", "available", "closing"].map(str::to_owned)),
            );
            let queue = app
                .store
                .count_node_results(&pending, &fields(&["kind", "state"]))
                .await?;
            let mut oldest = Vec::new();
            let now = Timestamp::now();
            for state in [State::Running, State::Available, State::Closing] {
                let page = app
                    .store
                    .find_nodes(
                        &eq(Filter::all(), "state", state.as_str()),
                        &FindOptions {
                            limit: Some(1),
                            sort: Some(Sort {
                                field: "created".into(),
                                descending: false,
                            }),
                            ..FindOptions::default()
                        },
                    )
                    .await?;
                if let Some(n) = page.items.first() {
                    oldest.push(StuckNode {
                        state: state.as_str().to_owned(),
                        node: ResultRow::of(n, None),
                        age_secs: (now.micros() - n.created.micros()) / 1_000_000,
                    });
                }
            }
            let tele = app
                .telemetry
                .telemetry_stats(
                    &TelemetryQuery {
                        since: Some(from),
                        ..TelemetryQuery::default()
                    },
                    &fields(&["runtime", "device_type"]),
                )
                .await?;
            let mut anomalies: Vec<TelemetryAnomaly> = tele
                .into_iter()
                .filter(|g| g.total >= ANOMALY_MIN_TOTAL)
                .map(|g| TelemetryAnomaly {
                    runtime: g.keys.first().and_then(opt_str),
                    device_type: g.keys.get(1).and_then(opt_str),
                    total: g.total,
                    fail_rate: (g.fail + g.incomplete) as f64 / g.total as f64,
                    infra_rate: g.infra_error as f64 / g.total as f64,
                })
                .filter(|a| a.fail_rate >= ANOMALY_THRESHOLD || a.infra_rate >= ANOMALY_THRESHOLD)
                .collect();
            anomalies.sort_by(|a, b| {
                (b.infra_rate, b.fail_rate)
                    .partial_cmp(&(a.infra_rate, a.fail_rate))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            let rows = |groups: Vec<kernelci::store::NodeGroup>| {
                sorted(
                    groups
                        .into_iter()
                        .map(|g| health_row(g.keys, g.counts))
                        .collect(),
                )
            };
            Ok(HealthResponse {
                hours,
                since: from.to_string(),
                by_kind: rows(by_kind),
                runtimes: rows(runtimes),
                platforms: rows(platforms),
                queue: rows(queue),
                oldest,
                anomalies,
                threshold: ANOMALY_THRESHOLD,
            })
        })
        .await
}

/// Counts for `/metrics`: builds, boots and tests created in the last 24 hours.
pub async fn metrics_counts(app: &App) -> Result<ResultCounts, ApiError> {
    app.viewer
        .cache
        .get_or_try("metrics:24h".to_owned(), async {
            let scope = Filter::all().and(
                "created",
                Op::Gte,
                Operand::One(Scalar::Time(since(86_400))),
            );
            let mut total = ResultCounts::default();
            for g in app.store.count_results(&scope, &[]).await? {
                total.merge(&g.counts);
            }
            Ok(total)
        })
        .await
}
