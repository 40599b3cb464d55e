//! [`LavaCallbackService`]: the receiver (`POST /node/<id>`): token check, a `202` at once,
//! then, one callback at a time per node, the logs to storage and the results to the API.

use super::*;

/// The tokens of one lab, from its `[runtime.<name>]` settings table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabTokens {
    /// `runtime_token`: the REST token, also accepted on callbacks (as upstream).
    pub runtime_token: Option<String>,
    /// `callback_token`: the value LAVA sends for the job's `notify.callback.token` name.
    pub callback_token: Option<String>,
}

/// Counters of the receiver (`GET /api/metrics`, Prometheus text).
#[derive(Debug, Default)]
pub struct CallbackMetrics {
    /// Every HTTP request.
    pub http_requests_total: AtomicU64,
    /// Callbacks received.
    pub lava_callback_requests_total: AtomicU64,
    /// Callbacks refused for their token.
    pub lava_callback_requests_authfail_total: AtomicU64,
    /// Callbacks whose background processing failed (or uploaded no log).
    pub lava_callback_late_fail_total: AtomicU64,
    /// Callbacks processed to the end.
    pub lava_callback_processed_total: AtomicU64,
}

impl CallbackMetrics {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters in Prometheus text format, labelled `kind="pipeline_callback"`.
    pub fn export(&self) -> String {
        let mut out = String::new();
        for (name, counter) in [
            ("http_requests_total", &self.http_requests_total),
            (
                "lava_callback_requests_total",
                &self.lava_callback_requests_total,
            ),
            (
                "lava_callback_requests_authfail_total",
                &self.lava_callback_requests_authfail_total,
            ),
            (
                "lava_callback_late_fail_total",
                &self.lava_callback_late_fail_total,
            ),
            (
                "lava_callback_processed_total",
                &self.lava_callback_processed_total,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {name}\n# TYPE {name} counter\n{name}{{kind=\"pipeline_callback\"}} {}\n",
                counter.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// What the receiver needs: lab tokens, API clients and storages by config name.
#[derive(Debug, Default)]
pub struct LavaCallbackConfig {
    /// Tokens by lab name (`[runtime.<lab>]`).
    pub labs: BTreeMap<String, LabTokens>,
    /// API clients (with their token, `KCI_API_TOKEN` upstream) by API config name.
    pub apis: BTreeMap<String, Arc<dyn Api>>,
    /// The API used when the job metadata names none (`[DEFAULT].api_config`).
    pub default_api: Option<String>,
    /// Storages by storage config name.
    pub storages: BTreeMap<String, Arc<dyn Storage>>,
    /// The storage used when the job metadata names none (`[DEFAULT].storage_config`).
    pub default_storage: Option<String>,
    /// How many callbacks are processed at once (upstream: 16 threads).
    pub workers: usize,
}

/// The LAVA callback receiver (upstream's `lava-callback` service, callback part).
#[derive(Debug)]
pub struct LavaCallbackService {
    config: LavaCallbackConfig,
    node_locks: Mutex<HashMap<ObjectId, Arc<tokio::sync::Mutex<()>>>>,
    permits: Arc<Semaphore>,
    tasks: TaskTracker,
    /// The service counters.
    pub metrics: CallbackMetrics,
}

impl LavaCallbackService {
    /// A receiver with `config`.
    pub fn new(config: LavaCallbackConfig) -> Arc<LavaCallbackService> {
        let workers = config.workers.max(1);
        Arc::new(LavaCallbackService {
            config,
            node_locks: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(workers)),
            tasks: TaskTracker::new(),
            metrics: CallbackMetrics::default(),
        })
    }

    /// The lab whose `callback_token` or `runtime_token` equals the `Authorization` header.
    pub fn authorize(&self, header: Option<&str>) -> Result<&str, CallbackError> {
        let header = header.filter(|h| !h.is_empty());
        let Some(header) = header else {
            return Err(CallbackError::Unauthorized);
        };
        self.config
            .labs
            .iter()
            .find(|(_, t)| {
                t.runtime_token.as_deref() == Some(header)
                    || t.callback_token.as_deref() == Some(header)
            })
            .map(|(lab, _)| lab.as_str())
            .ok_or(CallbackError::Unauthorized)
    }

    fn api_for(&self, callback: &Callback) -> Result<&dyn Api, CallbackError> {
        let name = callback
            .meta_str("api_config_name")
            .or(self.config.default_api.as_deref())
            .or_else(|| {
                (self.config.apis.len() == 1)
                    .then(|| self.config.apis.keys().next().map(String::as_str))
                    .flatten()
            })
            .unwrap_or("");
        self.config
            .apis
            .get(name)
            .map(|api| &**api)
            .ok_or_else(|| CallbackError::UnknownConfig {
                what: "api",
                name: name.to_owned(),
            })
    }

    fn storage_for(&self, callback: &Callback) -> Result<Arc<dyn Storage>, CallbackError> {
        let name = callback
            .meta_str("storage_config_name")
            .or(self.config.default_storage.as_deref())
            .or_else(|| {
                (self.config.storages.len() == 1)
                    .then(|| self.config.storages.keys().next().map(String::as_str))
                    .flatten()
            })
            .unwrap_or("");
        self.config
            .storages
            .get(name)
            .cloned()
            .ok_or_else(|| CallbackError::UnknownConfig {
                what: "storage",
                name: name.to_owned(),
            })
    }

    /// Processes one callback for `node_id` now (what the background task does): uploads the
    /// logs and the callback, then `PUT /nodes/<id>`. Returns the written nodes.
    pub async fn process(
        &self,
        node_id: ObjectId,
        callback: &Callback,
    ) -> Result<Vec<Node>, CallbackError> {
        let api = self.api_for(callback)?;
        let mut node = api
            .get_node(node_id)
            .await?
            .ok_or_else(|| CallbackError::NodeNotFound(node_id.to_string()))?;
        let storage = self.storage_for(callback)?;
        let dir = format!("{}-{}", node.name, node_id);
        let artifacts = node.artifacts.get_or_insert_with(Map::new);
        match callback.log_text()? {
            Some(text) => {
                let url = storage
                    .upload_single(
                        UploadFile::from_bytes(gzip(text.as_bytes())?, "log.txt.gz"),
                        &dir,
                    )
                    .await?;
                artifacts.insert("lava_log".into(), Value::String(url));
            }
            None => CallbackMetrics::add(&self.metrics.lava_callback_late_fail_total),
        }
        let lines = callback.log_lines()?;
        if !lines.is_empty() {
            let yaml = serde_norway::to_string(&lines).map_err(|e| yaml_error("log", e))?;
            let url = storage
                .upload_single(
                    UploadFile::from_bytes(yaml.into_bytes(), "lava-logs.yaml"),
                    &dir,
                )
                .await?;
            artifacts.insert("lava_logs".into(), Value::String(url));
        }
        let body = serde_json::to_vec_pretty(&callback.body_without_token())
            .map_err(|e| CallbackError::Invalid(e.to_string()))?;
        let url = storage
            .upload_single(
                UploadFile::from_bytes(gzip(&body)?, "lava_callback.json.gz"),
                &dir,
            )
            .await?;
        artifacts.insert("callback_data".into(), Value::String(url));
        // Upstream: a passing upload-suite case `artifact-upload:<name>:<url>` is an artifact.
        for (suite, cases) in callback.suites() {
            if suite.split_once('_').map_or("", |(_, s)| s) != "upload" {
                continue;
            }
            for case in cases.iter().filter(|c| c.result == "pass") {
                if let Some(rest) = case.name.strip_prefix("artifact-upload:")
                    && let Some((name, url)) = rest.split_once(':')
                {
                    artifacts.insert(name.to_owned(), Value::String(url.to_owned()));
                }
            }
        }
        let hierarchy = callback.hierarchy(node);
        Ok(api.submit_results(&hierarchy).await?)
    }

    /// Accepts a callback: checks the token, parses the body, picks the API, and starts the
    /// background processing (serialised per node). What `POST /node/<id>` does before its
    /// `202`.
    pub fn accept(
        self: &Arc<Self>,
        node_id: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<(), CallbackError> {
        CallbackMetrics::add(&self.metrics.lava_callback_requests_total);
        if let Err(e) = self.authorize(authorization) {
            CallbackMetrics::add(&self.metrics.lava_callback_requests_authfail_total);
            return Err(e);
        }
        let node_id: ObjectId = node_id
            .parse()
            .map_err(|_| CallbackError::Invalid(format!("{node_id:?} is not a node id")))?;
        let callback = Callback::parse(body)?;
        self.api_for(&callback)?;
        let lock = {
            let mut locks = self
                .node_locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(node_id).or_default().clone()
        };
        let this = self.clone();
        self.tasks.spawn(async move {
            let _node = lock.lock().await;
            let Ok(_permit) = this.permits.clone().acquire_owned().await else {
                return;
            };
            match this.process(node_id, &callback).await {
                Ok(_) => {
                    CallbackMetrics::add(&this.metrics.lava_callback_processed_total);
                    tracing::info!(node = %node_id, job = ?callback.job_id(), "LAVA callback processed");
                }
                Err(e) => {
                    CallbackMetrics::add(&this.metrics.lava_callback_late_fail_total);
                    tracing::error!(node = %node_id, job = ?callback.job_id(), "LAVA callback failed: {e}");
                }
            }
        });
        Ok(())
    }

    /// Waits until every accepted callback has been processed (for shutdown and tests); new
    /// callbacks can still be accepted afterwards.
    pub async fn wait_idle(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }

    /// The HTTP routes: `GET /`, `POST /node/<id>` and `GET /api/metrics`.
    pub fn routes(
        self: &Arc<Self>,
    ) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone + use<>
    {
        let this = self.clone();
        let callback = warp::post()
            .and(warp::path("node"))
            .and(warp::path::param::<String>())
            .and(warp::path::end())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::content_length_limit(256 * 1024 * 1024))
            .and(warp::body::bytes())
            .map(
                move |id: String, auth: Option<String>, body: bytes::Bytes| {
                    CallbackMetrics::add(&this.metrics.http_requests_total);
                    let (status, message) = if this.config.labs.is_empty() {
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "No tokens configured".to_owned(),
                        )
                    } else {
                        match this.accept(&id, auth.as_deref(), &body) {
                            Ok(()) => (StatusCode::ACCEPTED, "OK".to_owned()),
                            Err(CallbackError::Unauthorized) => {
                                (StatusCode::UNAUTHORIZED, "Unauthorized".to_owned())
                            }
                            Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
                        }
                    };
                    json_reply(status, &json!({ "message": message }))
                },
            );
        let this = self.clone();
        let metrics = warp::get()
            .and(warp::path!("api" / "metrics"))
            .map(move || {
                CallbackMetrics::add(&this.metrics.http_requests_total);
                let mut resp = warp::reply::Response::new(this.metrics.export().into());
                resp.headers_mut().insert(
                    warp::http::header::CONTENT_TYPE,
                    warp::http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                resp
            });
        let root = warp::get().and(warp::path::end()).map(|| {
            let mut resp = warp::reply::Response::new(
                "<html><head><title>KernelCI Pipeline Callback</title></head><body>\
                 <h1>KernelCI Pipeline Callback</h1>\
                 <p>This is a callback endpoint for the KernelCI pipeline.</p></body></html>"
                    .into(),
            );
            resp.headers_mut().insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            resp
        });
        callback.or(metrics).unify().or(root).unify()
    }

    /// Serves the routes on `addr` until `shutdown` resolves, then waits for the callbacks in
    /// progress. Returns the bound address through `bound` as soon as it listens.
    pub async fn serve(
        self: &Arc<Self>,
        addr: SocketAddr,
        bound: impl FnOnce(SocketAddr),
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        bound(listener.local_addr()?);
        warp::serve(self.routes())
            .incoming(listener)
            .graceful(shutdown)
            .run()
            .await;
        self.wait_idle().await;
        Ok(())
    }
}

fn json_reply(status: StatusCode, body: &Value) -> warp::reply::Response {
    let mut resp = warp::reply::Response::new(body.to_string().into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, CallbackError> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes)
        .and_then(|()| enc.finish())
        .map_err(|e| CallbackError::Storage(StorageError::io("gzip", e)))
}
