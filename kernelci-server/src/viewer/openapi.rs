//! The viewer's data endpoints in the OpenAPI document (our extension, tagged `viewer`):
//! parameters, and response schemas derived from each typed answer (an example value of the
//! type, serialised, gives the shape).

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::model::{
    CheckoutSummary, CompareResponse, FACETS, HealthResponse, HistoryResponse, LogResponse,
    ResultDetail, ResultsResponse, TreesResponse,
};

/// One data endpoint: path, summary, the query parameters it takes, an example of its answer.
struct Endpoint {
    path: &'static str,
    summary: &'static str,
    filters: bool,
    query: &'static [(&'static str, &'static str)],
    example: fn() -> Value,
}

fn example<T: Serialize + Default>() -> Value {
    serde_json::to_value(T::default()).unwrap_or(Value::Null)
}

fn trees_example() -> Value {
    let mut v = example::<TreesResponse>();
    v["items"] = json!([example::<super::model::TreeRow>()]);
    v
}

fn results_example() -> Value {
    let mut v = example::<ResultsResponse>();
    v["items"] = json!([example::<super::model::ResultRow>()]);
    v
}

fn history_example() -> Value {
    let mut v = example::<HistoryResponse>();
    v["items"] = json!([example::<super::model::TreeRow>()]);
    v
}

fn detail_example() -> Value {
    let mut v = example::<ResultDetail>();
    v["history"] = json!([example::<super::model::RunEntry>()]);
    v["artifacts"] = json!([example::<super::model::ArtifactLink>()]);
    v
}

fn log_example() -> Value {
    let mut v = example::<LogResponse>();
    v["lines"] = json!([example::<super::model::LogLine>()]);
    v
}

fn compare_example() -> Value {
    let mut v = example::<CompareResponse>();
    v["changes"] = json!([example::<super::model::Change>()]);
    v
}

fn health_example() -> Value {
    let mut v = example::<HealthResponse>();
    for k in ["by_kind", "runtimes", "platforms", "queue"] {
        v[k] = json!([example::<super::model::HealthRow>()]);
    }
    v["oldest"] = json!([example::<super::model::StuckNode>()]);
    v["anomalies"] = json!([example::<super::model::TelemetryAnomaly>()]);
    v
}

const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        path: "/viewer/api/trees",
        summary: "Viewer: the latest revision of each tree/branch in the window, with build, boot and test counts",
        filters: false,
        query: &[
            ("days", "integer 1-365, default 7"),
            ("tree", "tree name contains"),
        ],
        example: trees_example,
    },
    Endpoint {
        path: "/viewer/api/checkout/{id}",
        summary: "Viewer: a revision's counts, per-facet breakdowns and facet values, under the filters",
        filters: true,
        query: &[],
        example: example::<CheckoutSummary>,
    },
    Endpoint {
        path: "/viewer/api/checkout/{id}/results",
        summary: "Viewer: a page of a revision's builds, boots or tests, failures first",
        filters: true,
        query: &[
            ("category", "build, boot or test (default test)"),
            ("offset", "integer >= 0"),
            ("limit", "integer 1-1000, default 100"),
        ],
        example: results_example,
    },
    Endpoint {
        path: "/viewer/api/checkout/{id}/history",
        summary: "Viewer: this revision and the ones before it on its branch, with counts under the filters",
        filters: true,
        query: &[("limit", "integer 1-50, default 10")],
        example: history_example,
    },
    Endpoint {
        path: "/viewer/api/result/{id}",
        summary: "Viewer: a build or test, its context, its last runs and their label (regression, fixed, unstable)",
        filters: false,
        query: &[("limit", "integer 1-50, default 10")],
        example: detail_example,
    },
    Endpoint {
        path: "/viewer/api/log/{id}",
        summary: "Viewer: a node's log from storage (size-capped, error and warning lines marked)",
        filters: false,
        query: &[("artifact", "artifact key (default: the first log)")],
        example: log_example,
    },
    Endpoint {
        path: "/viewer/api/log",
        summary: "Viewer: a log from storage by URL (only this server's storage or a configured one; else 403)",
        filters: false,
        query: &[("url", "the log URL")],
        example: log_example,
    },
    Endpoint {
        path: "/viewer/api/compare/{base}/{target}",
        summary: "Viewer: two revisions compared: regressions, new failures, fixes, still failing",
        filters: true,
        query: &[],
        example: compare_example,
    },
    Endpoint {
        path: "/viewer/api/health",
        summary: "Viewer: nodes per kind/state/result, pass and infrastructure-error rates per runtime and platform, queue, anomalies",
        filters: false,
        query: &[("hours", "integer 1-48, default 24")],
        example: health_example,
    },
];

/// The JSON schema of a value's shape (types of scalars, properties of objects, items of the
/// first element of arrays; nulls allowed wherever a value may be missing).
pub fn schema_of(v: &Value) -> Value {
    match v {
        Value::Null => json!({}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Number(n) if n.is_f64() => json!({"type": "number"}),
        Value::Number(_) => json!({"type": "integer"}),
        Value::String(_) => json!({"type": "string"}),
        Value::Array(items) => match items.first() {
            Some(first) => json!({"type": "array", "items": schema_of(first)}),
            None => json!({"type": "array"}),
        },
        Value::Object(map) => {
            let props: Map<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), schema_of(v))).collect();
            json!({"type": "object", "properties": props})
        }
    }
}

fn param(name: &str, place: &str, description: &str, required: bool) -> Value {
    let schema = match name {
        "id" | "base" | "target" => json!({"type": "string", "pattern": "^[0-9a-f]{24}$"}),
        "days" => json!({"type": "integer", "minimum": 1, "maximum": 365}),
        "hours" => json!({"type": "integer", "minimum": 1, "maximum": 48}),
        "limit" => json!({"type": "integer", "minimum": 1, "maximum": 1000}),
        "offset" => json!({"type": "integer", "minimum": 0}),
        "category" => json!({"enum": ["build", "boot", "test"]}),
        "status" => json!({"type": "array", "items": {"enum": ["pass", "fail", "inconclusive"]}}),
        n if FACETS.iter().any(|(f, _)| *f == n) => {
            json!({"type": "array", "items": {"type": "string"}})
        }
        _ => json!({"type": "string"}),
    };
    let mut p = json!({"name": name, "in": place, "required": required, "description": description, "schema": schema});
    if schema_is_array(&p) {
        p["style"] = json!("form");
        p["explode"] = json!(true);
    }
    p
}

fn schema_is_array(p: &Value) -> bool {
    p["schema"]["type"] == "array"
}

/// Adds the viewer's parameters, answer schemas and tag to its operations in `paths` (the
/// operations themselves come from the route table, `crate::openapi::ROUTES`).
pub fn enrich(paths: &mut Map<String, Value>) {
    for e in ENDPOINTS {
        let Some(op) = paths.get_mut(e.path).and_then(|p| p.get_mut("get")) else {
            continue;
        };
        op["summary"] = json!(e.summary);
        op["tags"] = json!(["viewer"]);
        op["x-kernelci-extension"] = json!(true);
        let mut params: Vec<Value> = e
            .path
            .split('/')
            .filter(|s| s.starts_with('{'))
            .map(|s| param(s.trim_matches(['{', '}']), "path", "a node id", true))
            .collect();
        for (name, description) in e.query {
            params.push(param(name, "query", description, false));
        }
        if e.filters {
            params.push(param(
                "status",
                "query",
                "pass, fail, inconclusive (repeatable: OR)",
                false,
            ));
            for (name, field) in FACETS {
                params.push(param(
                    name,
                    "query",
                    &format!("{field} equals (repeatable: OR)"),
                    false,
                ));
            }
        }
        op["parameters"] = json!(params);
        op["responses"]["200"]["content"]["application/json"]["schema"] = schema_of(&(e.example)());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_has_a_derived_schema() {
        let doc = crate::openapi::document();
        let p = doc["paths"].as_object().unwrap();
        for e in ENDPOINTS {
            assert_eq!(p[e.path]["get"]["tags"], json!(["viewer"]), "{}", e.path);
        }
        let trees = &p["/viewer/api/trees"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"];
        assert_eq!(trees["properties"]["items"]["type"], "array");
        assert_eq!(
            trees["properties"]["items"]["items"]["properties"]["counts"]["properties"]["builds"]["properties"]
                ["fail"]["type"],
            "integer"
        );
        let filters = p["/viewer/api/checkout/{id}"]["get"]["parameters"]
            .as_array()
            .unwrap();
        assert!(filters.iter().any(|q| q["name"] == "platform"));
    }
}
