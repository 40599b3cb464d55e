//! [`Callback`]: a parsed callback body, pure and synchronous: LAVA's results as the upstream
//! result tree, the job outcome with upstream's rules, the result hierarchy and the logs.

use super::*;

/// A parsed LAVA notify callback body.
#[derive(Debug, Clone)]
pub struct Callback {
    body: Map<String, Value>,
    meta: Map<String, Value>,
    suites: Vec<(String, Vec<TestCase>)>,
}

impl Callback {
    /// Parses a callback body (JSON). The definition's `metadata` and every results suite are
    /// parsed here, so later steps cannot fail on them.
    pub fn parse(body: &[u8]) -> Result<Callback, CallbackError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| CallbackError::Invalid(format!("body is not JSON: {e}")))?;
        Callback::from_value(value)
    }

    /// Like [`Callback::parse`], from a JSON value.
    pub fn from_value(value: Value) -> Result<Callback, CallbackError> {
        let Value::Object(body) = value else {
            return Err(CallbackError::Invalid("body is not a JSON object".into()));
        };
        let meta = match body.get("definition") {
            Some(Value::String(def)) => {
                let def: serde_norway::Value =
                    serde_norway::from_str(def).map_err(|e| yaml_error("definition", e))?;
                match def.get("metadata") {
                    Some(m @ serde_norway::Value::Mapping(_)) => {
                        let mut out = Map::new();
                        if let serde_norway::Value::Mapping(map) = m {
                            for (k, v) in map {
                                if let (Some(k), Ok(v)) =
                                    (yaml_str(Some(k)), serde_json::to_value(v))
                                {
                                    out.insert(k, v);
                                }
                            }
                        }
                        out
                    }
                    _ => Map::new(),
                }
            }
            Some(Value::Null) | None => Map::new(),
            Some(_) => return Err(CallbackError::Invalid("definition is not a string".into())),
        };
        let mut suites = Vec::new();
        match body.get("results") {
            Some(Value::Object(results)) => {
                for (name, yaml) in results {
                    let cases = match yaml {
                        Value::String(text) => parse_suite(text)
                            .map_err(|e| CallbackError::Invalid(format!("results.{name}: {e}")))?,
                        Value::Null => Vec::new(),
                        _ => {
                            return Err(CallbackError::Invalid(format!(
                                "results.{name} is not a YAML string"
                            )));
                        }
                    };
                    suites.push((name.clone(), cases));
                }
            }
            Some(Value::Null) | None => {}
            Some(_) => return Err(CallbackError::Invalid("results is not an object".into())),
        }
        if let Some(v) = body.get("status")
            && !v.is_i64()
        {
            return Err(CallbackError::Invalid("status is not an integer".into()));
        }
        Ok(Callback { body, meta, suites })
    }

    /// The raw body.
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }

    /// The LAVA job id (`id`).
    pub fn job_id(&self) -> Option<i64> {
        self.body.get("id").and_then(Value::as_i64)
    }

    /// LAVA's legacy status number (see [`status`]).
    pub fn status(&self) -> Option<i64> {
        self.body.get("status").and_then(Value::as_i64)
    }

    /// The job result from the status: complete → pass; incomplete, canceled, canceling →
    /// incomplete; anything else → none.
    pub fn job_status(&self) -> Option<ResultValue> {
        match self.status()? {
            status::COMPLETE => Some(ResultValue::Pass),
            status::INCOMPLETE | status::CANCELED | status::CANCELING => {
                Some(ResultValue::Incomplete)
            }
            _ => None,
        }
    }

    /// The device the job ran on (`actual_device_id`).
    pub fn device_id(&self) -> Option<&str> {
        self.body
            .get("actual_device_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A key of the job definition's `metadata` (`node_id`, `api_config_name`,
    /// `storage_config_name`, ...).
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.meta.get(key)
    }

    /// A metadata key as a string.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.meta(key).and_then(Value::as_str)
    }

    /// The results suites in callback order, each with its parsed cases.
    pub fn suites(&self) -> &[(String, Vec<TestCase>)] {
        &self.suites
    }

    fn lava_suite(&self) -> Option<&[TestCase]> {
        self.suites
            .iter()
            .find(|(n, _)| n == "lava")
            .map(|(_, c)| c.as_slice())
    }

    /// The `lava` suite's `job` case (it carries `error_type`/`error_msg`).
    pub fn job_case(&self) -> Option<&TestCase> {
        // Upstream indexes the stages by name, so the last `job` case wins.
        self.lava_suite()?.iter().rev().find(|c| c.name == "job")
    }

    fn login_case(cases: &[TestCase]) -> Option<&'static str> {
        let mut logins = cases
            .iter()
            .filter(|c| c.name == "auto-login-action" || c.name == "login-action")
            .peekable();
        logins.peek()?;
        Some(if logins.any(|c| c.result == "pass") {
            "pass"
        } else {
            "fail"
        })
    }

    fn kernelmsg_case(cases: &[TestCase]) -> Option<&'static str> {
        let mut msgs = cases
            .iter()
            .filter(|c| c.name == "kernel-messages")
            .peekable();
        msgs.peek()?;
        Some(if msgs.any(|c| c.result == "fail") {
            "fail"
        } else {
            "pass"
        })
    }

    fn suite_tree(cases: &[TestCase]) -> ResultTree {
        let mut entries: Vec<(String, ResultTree)> = Vec::new();
        for case in cases.iter().rev() {
            let leaf = ResultTree::Case(case.result.clone());
            match &case.set {
                Some(set) => {
                    let pos = match entries.iter().position(|(n, _)| n == set) {
                        Some(pos) => pos,
                        None => {
                            entries.push((set.clone(), ResultTree::Group(Vec::new())));
                            entries.len() - 1
                        }
                    };
                    if !matches!(entries[pos].1, ResultTree::Group(_)) {
                        entries[pos].1 = ResultTree::Group(Vec::new());
                    }
                    if let ResultTree::Group(group) = &mut entries[pos].1 {
                        ResultTree::set(group, &case.name, leaf);
                    }
                }
                None => ResultTree::set(&mut entries, &case.name, leaf),
            }
        }
        ResultTree::Group(entries)
    }

    /// The plain result tree (upstream `get_results`): `setup` from the `lava` suite (only
    /// when it has login or kernel-messages cases), then one group per other suite, named
    /// after the part following the first `_` of the suite name.
    pub fn results(&self) -> ResultTree {
        let mut top: Vec<(String, ResultTree)> = Vec::new();
        for (suite, cases) in &self.suites {
            if suite == "lava" {
                let mut setup = Vec::new();
                if let Some(login) = Self::login_case(cases) {
                    setup.push(("login".to_owned(), ResultTree::Case(login.into())));
                }
                if let Some(msg) = Self::kernelmsg_case(cases) {
                    setup.push(("kernelmsg".to_owned(), ResultTree::Case(msg.into())));
                }
                if !setup.is_empty() {
                    ResultTree::set(&mut top, "setup", ResultTree::Group(setup));
                }
            } else {
                let name = suite.split_once('_').map_or("", |(_, rest)| rest);
                ResultTree::set(&mut top, name, Self::suite_tree(cases));
            }
        }
        ResultTree::Group(top)
    }

    /// The `lava` suite's stage result for a suite name (stages `<n>_<name>`; the last match
    /// wins, as upstream's dict walk).
    fn stage_result(&self, suite: &str) -> Option<&str> {
        let cases = self.lava_suite()?;
        // Upstream builds {name: case} (later duplicates win) and walks it in order.
        let mut stages: Vec<(&str, &str)> = Vec::new();
        for case in cases {
            match stages.iter_mut().find(|(n, _)| *n == case.name) {
                Some(entry) => entry.1 = &case.result,
                None => stages.push((&case.name, &case.result)),
            }
        }
        stages
            .iter()
            .filter(|(name, _)| name.split_once('_').map_or("", |(_, rest)| rest) == suite)
            .map(|(_, result)| *result)
            .next_back()
    }

    fn os_release_measurement(&self) -> Option<f64> {
        self.suites
            .iter()
            .find(|(n, _)| n == "0_tast")
            .and_then(|(_, cases)| {
                // Upstream maps by name: the last `os-release` case wins.
                cases.iter().rev().find(|c| c.name == "os-release")
            })
            .and_then(|c| c.measurement)
    }

    fn result_nodes(&self, tree: &[(String, ResultTree)]) -> Vec<ResultNode> {
        tree.iter()
            .map(|(name, value)| match value {
                ResultTree::Group(entries) => {
                    let children = self.result_nodes(entries);
                    let stage = self.stage_result(name).and_then(result_value);
                    let result = match stage {
                        None | Some(ResultValue::Pass) => evaluate_suite(&children),
                        other => other,
                    };
                    ResultNode {
                        name: name.clone(),
                        kind: NodeKind::Job,
                        result,
                        data: None,
                        children,
                    }
                }
                ResultTree::Case(result) => {
                    let data = (name == "os-release").then(|| {
                        let measurement = self
                            .os_release_measurement()
                            .and_then(serde_json::Number::from_f64)
                            .map_or(Value::Null, Value::Number);
                        let mut data = Map::new();
                        data.insert("misc".into(), json!({ "measurement": measurement }));
                        data
                    });
                    ResultNode {
                        name: name.clone(),
                        kind: NodeKind::Test,
                        result: result_value(result),
                        data,
                        children: Vec::new(),
                    }
                }
            })
            .collect()
    }

    /// The job outcome for a job node named `job_name` whose result so far is
    /// `job_result` (normally [`Callback::job_status`], forced to incomplete when the callback
    /// has no log). Upstream `get_hierarchy` rules:
    ///
    /// - incomplete: `error_code`/`error_msg` from the `lava` suite's `job` case metadata
    ///   (`error_type`/`error_msg`), or `Infrastructure`/"Unknown infrastructure error" when
    ///   there is none; a `baseline*` job whose `setup` failed becomes `fail`;
    /// - pass: any failed suite makes it `fail`, but a failed `setup` makes it `incomplete`.
    pub fn outcome(&self, job_name: &str, job_result: Option<ResultValue>) -> JobOutcome {
        let mut error_code = None;
        let mut error_msg = None;
        if job_result == Some(ResultValue::Incomplete) {
            match self.job_case() {
                Some(job) => {
                    error_code.clone_from(&job.error_type);
                    error_msg.clone_from(&job.error_msg);
                }
                None => {
                    error_code = Some("Infrastructure".to_owned());
                    error_msg = Some("Unknown infrastructure error".to_owned());
                }
            }
            // Keep the PUT valid: the API only takes its own error codes.
            if let Some(code) = &error_code
                && code.parse::<ErrorCode>().is_err()
            {
                error_msg = Some(match &error_msg {
                    Some(msg) => format!("{code}: {msg}"),
                    None => code.clone(),
                });
                error_code = Some("Infrastructure".to_owned());
            }
        }
        let children = match self.results() {
            ResultTree::Group(entries) => self.result_nodes(&entries),
            ResultTree::Case(_) => Vec::new(),
        };
        let setup_failed = children
            .iter()
            .any(|c| c.name == "setup" && c.result == Some(ResultValue::Fail));
        let mut result = job_result;
        if result == Some(ResultValue::Incomplete) && job_name.contains("baseline") && setup_failed
        {
            result = Some(ResultValue::Fail);
        }
        if result == Some(ResultValue::Pass) {
            for suite in &children {
                if suite.result == Some(ResultValue::Fail) {
                    if suite.name == "setup" {
                        result = Some(ResultValue::Incomplete);
                        break;
                    }
                    result = Some(ResultValue::Fail);
                }
            }
        }
        JobOutcome {
            result,
            error_code,
            error_msg,
            children,
        }
    }

    /// The hierarchy to `PUT /nodes/<id>` for `job_node` (as fetched from the API, with any
    /// artifacts already added): the node becomes `done` with the outcome's result,
    /// `data.device`, `data.error_code`/`error_msg`; a `node_timeout` error is cleared unless
    /// the result is incomplete; children follow upstream's `submit_results` (inherited
    /// `data` keys, `group` = job name, `path` = parent path + name, state `done`).
    ///
    /// The result starts from [`Callback::job_status`], forced to incomplete when the callback
    /// carries no log (upstream's rule for jobs that never ran).
    pub fn hierarchy(&self, mut job_node: Node) -> Hierarchy {
        let mut job_result = self.job_status();
        if !self.has_log() {
            job_result = Some(ResultValue::Incomplete);
        }
        let outcome = self.outcome(&job_node.name, job_result);
        let data = job_node.data.get_or_insert_with(Map::new);
        if let Some(device) = self.device_id() {
            data.insert("device".into(), Value::String(device.to_owned()));
        }
        if outcome.result == Some(ResultValue::Incomplete) {
            data.insert(
                "error_code".into(),
                outcome
                    .error_code
                    .clone()
                    .map_or(Value::Null, Value::String),
            );
            data.insert(
                "error_msg".into(),
                outcome.error_msg.clone().map_or(Value::Null, Value::String),
            );
        } else if data.get("error_code").and_then(Value::as_str) == Some("node_timeout") {
            data.insert("error_code".into(), Value::Null);
            data.insert("error_msg".into(), Value::Null);
        }
        job_node.result = outcome.result;
        job_node.state = State::Done;
        job_node.processed_by_kcidb_bridge = false;
        job_node.artifacts.get_or_insert_with(Map::new);
        let inherited: Map<String, Value> = job_node
            .data
            .iter()
            .flatten()
            .filter(|(k, _)| INHERITED_DATA.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let child_nodes = outcome
            .children
            .iter()
            .map(|c| child_hierarchy(c, &job_node.path, &job_node.name, &inherited))
            .collect();
        Hierarchy {
            node: job_node,
            child_nodes,
        }
    }

    /// Whether the callback carries a log (`dataset: logs` or `all`).
    pub fn has_log(&self) -> bool {
        matches!(self.body.get("log"), Some(Value::String(s)) if !s.trim().is_empty())
    }

    /// The structured log: every line whose message is text, stripped, ESC as `^[`, empty
    /// lines left out (upstream `LogParser`).
    pub fn log_lines(&self) -> Result<Vec<LogLine>, CallbackError> {
        let Some(Value::String(text)) = self.body.get("log") else {
            return Ok(Vec::new());
        };
        let items: Vec<serde_norway::Value> =
            serde_norway::from_str(text).map_err(|e| yaml_error("log", e))?;
        let mut lines = Vec::with_capacity(items.len());
        for item in items {
            let Some(serde_norway::Value::String(msg)) = item.get("msg") else {
                continue;
            };
            let msg = msg.trim().replace('\x1b', "^[");
            if msg.is_empty() {
                continue;
            }
            lines.push(LogLine {
                dt: yaml_str(item.get("dt")),
                lvl: yaml_str(item.get("lvl")),
                msg,
            });
        }
        Ok(lines)
    }

    /// The serial console output (`target` lines, one per line), with NUL removed and other
    /// non-printable characters but newlines replaced by `?`; `None` when there is none.
    pub fn log_text(&self) -> Result<Option<String>, CallbackError> {
        let mut out = String::new();
        for line in self.log_lines()? {
            if line.lvl.as_deref() == Some("target") {
                out.push_str(&line.msg);
                out.push('\n');
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            out.chars()
                .filter(|c| *c != '\0')
                .map(|c| {
                    if c == '\n' || !(c.is_control() || (c.is_whitespace() && c != ' ')) {
                        c
                    } else {
                        '?'
                    }
                })
                .collect(),
        ))
    }

    /// The body without its `token` (the lab's secret), as stored next to the results.
    pub fn body_without_token(&self) -> Value {
        let mut body = self.body.clone();
        body.remove("token");
        Value::Object(body)
    }
}

fn child_hierarchy(
    node: &ResultNode,
    parent_path: &[String],
    group: &str,
    inherited: &Map<String, Value>,
) -> Hierarchy {
    let mut child = Node::new(node.kind, node.name.clone());
    child.path = parent_path.to_vec();
    child.path.push(node.name.clone());
    child.group = Some(group.to_owned());
    child.state = State::Done;
    child.result = node.result;
    let mut data = inherited.clone();
    if let Some(extra) = &node.data {
        data.extend(extra.clone());
    }
    child.data = Some(data);
    let child_nodes = node
        .children
        .iter()
        .map(|c| child_hierarchy(c, &child.path, group, inherited))
        .collect();
    Hierarchy {
        node: child,
        child_nodes,
    }
}
