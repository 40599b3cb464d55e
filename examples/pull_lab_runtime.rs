//! A custom runtime for a "pull" lab, unit-tested with the library's mocks (feature
//! `kernelci/mock`): no API server and no storage run in its tests.
//!
//! The lab fetches its jobs itself; this runtime only publishes them and follows them:
//!
//! - `generate`: a JSON job description (the node, the kernel tarball, the command);
//! - `submit`: uploads the definition to `pull-labs/<lab>/<file>` through [`Storage`]; the job
//!   is known by its node id, and the definition's URL is its `job_definition_url`;
//! - `status`: the lab reports results to the API, so the job's state is its node's state
//!   (read through [`Api`]).
//!
//! Run it: `cargo run --example pull_lab_runtime` prints the definition of a sample job.
//! Test it: `cargo test --example pull_lab_runtime` runs the tests below against
//! `MockStorage` and `MockApi`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kernelci::ErrorKind;
use kernelci::client::Api;
use kernelci::models::{ErrorCode, Node, NodeKind, ObjectId, ResultValue, State};
use kernelci::runtime::{
    JobDefinition, JobHandle, JobParams, JobSpec, JobStatus, Runtime, RuntimeError,
    RuntimeErrorKind, async_trait,
};
use kernelci::storage::{Storage, StorageError, UploadFile};
use serde_json::{Map, Value, json};

/// The lab type this runtime registers as.
const LAB_TYPE: &str = "pull-lab";

/// Publishes job definitions for a pull lab and follows the jobs through the API.
#[derive(Debug)]
struct PullLabRuntime {
    name: String,
    storage: Arc<dyn Storage>,
    api: Arc<dyn Api>,
    /// The URL of each uploaded definition, by file name.
    published: Mutex<BTreeMap<String, String>>,
}

impl PullLabRuntime {
    fn new(name: &str, storage: Arc<dyn Storage>, api: Arc<dyn Api>) -> PullLabRuntime {
        PullLabRuntime {
            name: name.to_owned(),
            storage,
            api,
            published: Mutex::default(),
        }
    }

    fn folder(&self) -> String {
        format!("pull-labs/{}", self.name)
    }
}

fn runtime_error(kind: ErrorKind, message: String) -> RuntimeError {
    let kind = match kind {
        ErrorKind::Unavailable | ErrorKind::Timeout => RuntimeErrorKind::Unavailable,
        ErrorKind::Invalid => RuntimeErrorKind::Config,
        _ => RuntimeErrorKind::Internal,
    };
    RuntimeError::new(kind, message)
}

#[async_trait]
impl Runtime for PullLabRuntime {
    fn name(&self) -> &str {
        &self.name
    }

    fn lab_type(&self) -> &str {
        LAB_TYPE
    }

    fn generate(&self, job: &JobSpec, params: &JobParams) -> Result<JobDefinition, RuntimeError> {
        let id = job.node.id.ok_or_else(|| {
            RuntimeError::new(RuntimeErrorKind::InvalidParams, "the job node has no id")
        })?;
        let command = params
            .get("command")
            .and_then(Value::as_str)
            .or_else(|| job.params.get("command").and_then(Value::as_str))
            .ok_or_else(|| {
                RuntimeError::new(RuntimeErrorKind::InvalidParams, "no `command` parameter")
            })?;
        let tarball = job
            .node
            .artifacts
            .as_ref()
            .and_then(|a| a.get("tarball"))
            .cloned()
            .unwrap_or(Value::Null);
        let content = json!({"node": id.to_string(), "job": job.name, "platform": job.platform,
                             "tarball": tarball, "command": command});
        Ok(JobDefinition {
            file_name: format!("{}-{id}.json", job.name),
            content: content.to_string(),
            metadata: Value::Null,
        })
    }

    async fn submit(&self, definition: &JobDefinition) -> Result<Option<JobHandle>, RuntimeError> {
        let node: Value = serde_json::from_str(&definition.content)
            .map_err(|e| RuntimeError::new(RuntimeErrorKind::Generation, e.to_string()))?;
        let node = node
            .get("node")
            .and_then(Value::as_str)
            .ok_or_else(|| RuntimeError::new(RuntimeErrorKind::Generation, "no node id"))?
            .to_owned();
        let file = UploadFile::from_bytes(
            definition.content.clone().into_bytes(),
            &definition.file_name,
        );
        let url = self
            .storage
            .upload_single(file, &self.folder())
            .await
            .map_err(|e: StorageError| {
                runtime_error(e.kind(), format!("publishing the job: {e}"))
            })?;
        if let Ok(mut published) = self.published.lock() {
            published.insert(definition.file_name.clone(), url);
        }
        Ok(Some(JobHandle {
            id: node,
            context: None,
        }))
    }

    fn job_definition_url(&self, definition: &JobDefinition) -> Option<String> {
        self.published
            .lock()
            .ok()
            .and_then(|p| p.get(&definition.file_name).cloned())
    }

    async fn status(&self, handle: &JobHandle) -> Result<JobStatus, RuntimeError> {
        let id: ObjectId = handle.id.parse().map_err(|e| {
            RuntimeError::new(RuntimeErrorKind::InvalidParams, format!("job id: {e}"))
        })?;
        let node = self
            .api
            .get_node(id)
            .await
            .map_err(|e| runtime_error(e.kind(), format!("reading node {id}: {e}")))?;
        Ok(match node {
            None => JobStatus::Incomplete {
                error_code: ErrorCode::Infrastructure,
                message: format!("node {id} is gone"),
            },
            Some(n) if n.state != State::Done => match n.state {
                State::Running => JobStatus::Running,
                _ => JobStatus::Finished { exit_code: 0 },
            },
            Some(n) if n.result == Some(ResultValue::Incomplete) => JobStatus::Incomplete {
                error_code: n
                    .data_str("error_code")
                    .and_then(|c| serde_json::from_value(json!(c)).ok())
                    .unwrap_or(ErrorCode::Infrastructure),
                message: n.data_str("error_msg").unwrap_or("incomplete").to_owned(),
            },
            Some(_) => JobStatus::Finished { exit_code: 0 },
        })
    }

    async fn wait(&self, handle: &JobHandle, timeout: Duration) -> Result<JobStatus, RuntimeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status(handle).await?;
            if status.is_final() {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(JobStatus::Incomplete {
                    error_code: ErrorCode::NodeTimeout,
                    message: format!("no result within {timeout:?}"),
                });
            }
            tokio::time::sleep(Duration::from_secs(5).min(timeout)).await;
        }
    }

    async fn cancel(&self, _handle: &JobHandle) -> Result<(), RuntimeError> {
        // A pull lab cannot be told to stop; the timeout service ends the node.
        Ok(())
    }
}

/// A sample job for the printout and the tests.
fn sample_job() -> JobSpec {
    let mut node = Node::new(NodeKind::Job, "baseline-x86");
    node.id = Some(ObjectId::from_parts(1_700_000_000, 7));
    node.artifacts = Some(Map::from_iter([(
        "tarball".to_owned(),
        json!("https://storage.example.org/linux.tar.gz"),
    )]));
    JobSpec {
        node,
        name: "baseline-x86".into(),
        template: "baseline.jinja2".into(),
        kind: "job".into(),
        image: None,
        params: Map::from_iter([("command".to_owned(), json!("make selftests"))]),
        platform: "qemu-x86".into(),
        platform_config: Map::new(),
        storage_config_name: None,
        storage_config: None,
        api_config: Map::new(),
    }
}

fn main() {
    // Printing a definition calls neither the storage nor the API.
    let api = match kernelci::client::ApiClient::new("http://127.0.0.1:8001") {
        Ok(api) => api,
        Err(e) => return eprintln!("{e}"),
    };
    let runtime = PullLabRuntime::new("lab-a", Arc::new(NoStorage), Arc::new(api));
    let job = sample_job();
    match runtime.generate(&job, &job.params) {
        Ok(def) => println!("{}: {}", def.file_name, def.content),
        Err(e) => eprintln!("cannot generate: {e}"),
    }
}

/// The storage of `main`, which only prints.
#[derive(Debug)]
struct NoStorage;

#[async_trait]
impl Storage for NoStorage {
    fn base_url(&self) -> &str {
        "https://storage.example.org/"
    }

    async fn upload(
        &self,
        _files: Vec<UploadFile>,
        _dest_path: &str,
    ) -> Result<Option<kernelci::storage::UrlMap>, StorageError> {
        Err(StorageError::backend(
            "upload",
            ErrorKind::Unavailable,
            "the example has no storage",
        ))
    }

    async fn exists(&self, _dest_path: &str, _remote: &str) -> Result<bool, StorageError> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use kernelci::client::{ClientError, MockApi};
    use kernelci::storage::{MockStorage, UploadSource};

    use super::*;

    fn job_id() -> String {
        sample_job().node.id.expect("id").to_string()
    }

    fn runtime(storage: MockStorage, api: MockApi) -> PullLabRuntime {
        PullLabRuntime::new("lab-a", Arc::new(storage), Arc::new(api))
    }

    #[tokio::test]
    async fn submit_publishes_the_definition_in_the_lab_folder() {
        let job = sample_job();
        let mut storage = MockStorage::new();
        storage
            .expect_upload()
            .withf(|files, dest| {
                dest == "pull-labs/lab-a"
                    && files.len() == 1
                    && files[0].remote == format!("baseline-x86-{}.json", job_id())
                    && matches!(&files[0].source, UploadSource::Bytes(b)
                        if String::from_utf8_lossy(b).contains("make selftests"))
            })
            .times(1)
            .returning(|files, dest| {
                let url = format!("https://storage.example.org/{dest}/{}", files[0].remote);
                Ok(Some(BTreeMap::from([(files[0].remote.clone(), url)])))
            });
        let rt = runtime(storage, MockApi::new());
        let def = rt.generate(&job, &job.params).expect("generate");
        let handle = rt.submit(&def).await.expect("submit").expect("a handle");
        assert_eq!(handle.id, job_id());
        assert_eq!(
            rt.job_definition_url(&def),
            Some(format!(
                "https://storage.example.org/pull-labs/lab-a/baseline-x86-{}.json",
                job_id()
            ))
        );
    }

    #[tokio::test]
    async fn a_storage_outage_is_an_unavailable_runtime_error() {
        let mut storage = MockStorage::new();
        storage.expect_upload().returning(|_, _| {
            Err(StorageError::backend(
                "upload",
                ErrorKind::Unavailable,
                "connection refused",
            ))
        });
        let rt = runtime(storage, MockApi::new());
        let job = sample_job();
        let def = rt.generate(&job, &job.params).expect("generate");
        let err = rt.submit(&def).await.expect_err("no storage");
        assert_eq!(err.kind, RuntimeErrorKind::Unavailable);
        assert!(rt.job_definition_url(&def).is_none());
    }

    #[tokio::test]
    async fn status_follows_the_job_node() {
        let node = |state: State, result: Option<ResultValue>, code: Option<&str>| {
            let mut n = Node::new(NodeKind::Job, "baseline-x86");
            n.state = state;
            n.result = result;
            if let Some(code) = code {
                n.data = Some(Map::from_iter([("error_code".to_owned(), json!(code))]));
            }
            n
        };
        let answers = vec![
            Some(node(State::Running, None, None)),
            Some(node(State::Done, Some(ResultValue::Pass), None)),
            Some(node(
                State::Done,
                Some(ResultValue::Incomplete),
                Some("node_timeout"),
            )),
            None,
        ];
        let mut api = MockApi::new();
        let mut answers = answers.into_iter();
        api.expect_get_node()
            .withf(|id| id.to_string() == job_id())
            .times(4)
            .returning(move |_| Ok(answers.next().flatten()));
        let rt = runtime(MockStorage::new(), api);
        let handle = JobHandle {
            id: job_id(),
            context: None,
        };
        assert_eq!(rt.status(&handle).await.unwrap(), JobStatus::Running);
        assert_eq!(
            rt.status(&handle).await.unwrap(),
            JobStatus::Finished { exit_code: 0 }
        );
        assert!(matches!(
            rt.status(&handle).await.unwrap(),
            JobStatus::Incomplete {
                error_code: ErrorCode::NodeTimeout,
                ..
            }
        ));
        assert!(matches!(
            rt.status(&handle).await.unwrap(),
            JobStatus::Incomplete {
                error_code: ErrorCode::Infrastructure,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn an_unreachable_api_is_unavailable() {
        let mut api = MockApi::new();
        api.expect_get_node().returning(|_| {
            Err(ClientError::Http {
                method: "GET".into(),
                url: "http://api/latest/node/x".into(),
                status: 503,
                detail: "down".into(),
            })
        });
        let rt = runtime(MockStorage::new(), api);
        let handle = JobHandle {
            id: job_id(),
            context: None,
        };
        let err = rt.status(&handle).await.expect_err("API down");
        assert_eq!(err.kind, RuntimeErrorKind::Unavailable);
    }
}
