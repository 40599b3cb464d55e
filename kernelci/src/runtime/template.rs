//! Job templates: Jinja2 files rendered with `minijinja`, with upstream's search path and
//! globals (`spec/kernelci-pipeline.md` §4.6).
//!
//! The search path is, in order: `config/runtime`, `/etc/kernelci/runtime`, then a custom
//! template directory and its `runtime`, `runtime/base`, `runtime/boot` and `runtime/tests`
//! subdirectories when they exist. The first directory holding a template name wins, and
//! `{% extends %}`, `{% include %}` and `{% import %}` resolve across all of them, so a custom
//! directory can extend `base/shell.jinja2` from the main tree.
//!
//! Templates see the job parameters ([`crate::runtime::JobParams`]) as variables, plus:
//! - `kci_params`: the whole parameter map (to pass it on to the job runner as JSON);
//! - `kci_raise(msg)`: fails the rendering with `msg`;
//! - `kci_yaml_dump(data)`: `data` as YAML (indent 2, like upstream's `yaml.dump`).
//!
//! The `do` statement (upstream loads `jinja2.ext.do`) is built into minijinja, and Python's
//! string and dict methods (`.split()`, `.startswith()`, `.items()`, `.get()`, ...) work through
//! `minijinja-contrib`'s pycompat layer. One difference remains: minijinja values are immutable,
//! so `{% do list.append(x) %}` / `dict.update()` fail (use `{% set %}` with `+`). Errors become
//! [`RuntimeErrorKind::Generation`] errors naming the template and the line.
//!
//! ```
//! use kernelci::runtime::template::TemplateEngine;
//! let dir = std::env::temp_dir().join("kernelci-doc-templates");
//! std::fs::create_dir_all(dir.join("base")).unwrap();
//! std::fs::write(dir.join("base/hello.jinja2"), "{% block body %}{% endblock %}").unwrap();
//! std::fs::write(dir.join("job.jinja2"),
//!     "{% extends 'base/hello.jinja2' %}{% block body %}hello {{ name }}{% endblock %}").unwrap();
//! let engine = TemplateEngine::new(vec![dir]);
//! let params = serde_json::json!({"name": "kbuild"}).as_object().cloned().unwrap();
//! assert_eq!(engine.render("job.jinja2", &params).unwrap(), "hello kbuild");
//! ```

use std::path::{Component, Path, PathBuf};

use minijinja::{Environment, Error, ErrorKind, Value as JinjaValue};
use serde_json::Value;

use super::{JobParams, JobSpec, RuntimeError, RuntimeErrorKind};

/// The directories searched by default, before any custom directory.
pub const DEFAULT_TEMPLATE_DIRS: [&str; 2] = ["config/runtime", "/etc/kernelci/runtime"];

/// A template renderer over a search path of directories.
#[derive(Debug)]
pub struct TemplateEngine {
    search_path: Vec<PathBuf>,
    env: Environment<'static>,
}

impl TemplateEngine {
    /// An engine over exactly these directories (first match wins).
    pub fn new(search_path: Vec<PathBuf>) -> TemplateEngine {
        let mut env = Environment::new();
        let dirs = search_path.clone();
        env.set_loader(move |name| load(&dirs, name));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("kci_raise", kci_raise);
        env.add_function("kci_yaml_dump", kci_yaml_dump);
        // Jinja2 keeps scripts as written; no HTML escaping for any extension.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        TemplateEngine { search_path, env }
    }

    /// An engine over upstream's search path: `config/runtime`, `/etc/kernelci/runtime`, then
    /// `custom_dir` and its `runtime`, `runtime/base`, `runtime/boot`, `runtime/tests`
    /// subdirectories that exist.
    pub fn with_default_path(custom_dir: Option<&Path>) -> TemplateEngine {
        TemplateEngine::new(default_search_path(custom_dir))
    }

    /// The directories searched, in order.
    pub fn search_path(&self) -> &[PathBuf] {
        &self.search_path
    }

    /// Renders `template` with `params`. Fails with [`RuntimeErrorKind::Generation`] when the
    /// template is missing, does not parse, calls `kci_raise`, or hits an error.
    pub fn render(&self, template: &str, params: &JobParams) -> Result<String, RuntimeError> {
        let tmpl = self
            .env
            .get_template(template)
            .map_err(|e| self.error(template, e))?;
        let mut context = params.clone();
        context.insert("kci_params".into(), Value::Object(params.clone()));
        tmpl.render(JinjaValue::from(minijinja::value::Serde(&context)))
            .map_err(|e| self.error(template, e))
    }

    /// Renders `job`'s template with `params` into a job definition's text: [`Self::render`],
    /// and an error of kind [`RuntimeErrorKind::Generation`] when the template renders
    /// nothing but white space.
    pub fn render_job(&self, job: &JobSpec, params: &JobParams) -> Result<String, RuntimeError> {
        let text = self.render(&job.template, params)?;
        if text.trim().is_empty() {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Generation,
                format!("template {} rendered nothing", job.template),
            ));
        }
        Ok(text)
    }

    /// Renders template source text directly (tests, one-off definitions).
    pub fn render_str(&self, source: &str, params: &JobParams) -> Result<String, RuntimeError> {
        self.env
            .render_str(source, JinjaValue::from(minijinja::value::Serde(params)))
            .map_err(|e| self.error("<string>", e))
    }

    fn error(&self, template: &str, e: Error) -> RuntimeError {
        let mut message = format!("template {template}: ");
        if e.kind() == ErrorKind::TemplateNotFound {
            message.push_str(&format!(
                "{} (searched {})",
                e.detail().unwrap_or("template not found"),
                self.search_path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        } else {
            match (e.name(), e.line()) {
                (Some(name), Some(line)) => message.push_str(&format!("{name} line {line}: ")),
                (Some(name), None) => message.push_str(&format!("{name}: ")),
                _ => {}
            }
            message.push_str(e.detail().unwrap_or(&e.kind().to_string()));
        }
        RuntimeError::with_source(RuntimeErrorKind::Generation, message, e)
    }
}

/// Upstream's template search path (see [`TemplateEngine::with_default_path`]).
pub fn default_search_path(custom_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = DEFAULT_TEMPLATE_DIRS.iter().map(PathBuf::from).collect();
    if let Some(custom) = custom_dir {
        dirs.push(custom.to_path_buf());
        for sub in ["runtime", "runtime/base", "runtime/boot", "runtime/tests"] {
            let dir = custom.join(sub);
            if dir.is_dir() {
                dirs.push(dir);
            }
        }
    }
    dirs
}

/// Joins a template name below a directory, refusing absolute names and `..`.
fn safe_join(dir: &Path, name: &str) -> Option<PathBuf> {
    let rel = Path::new(name);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    Some(dir.join(rel))
}

fn load(dirs: &[PathBuf], name: &str) -> Result<Option<String>, Error> {
    for dir in dirs {
        let Some(path) = safe_join(dir, name) else {
            return Ok(None);
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok(Some(text)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) => {}
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("cannot read template {}: {e}", path.display()),
                ));
            }
        }
    }
    Ok(None)
}

fn kci_raise(message: String) -> Result<JinjaValue, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

fn kci_yaml_dump(data: JinjaValue) -> Result<String, Error> {
    serde_norway::to_string(&data).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("kci_yaml_dump: cannot dump as YAML: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> JobParams {
        v.as_object().cloned().unwrap_or_default()
    }

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn extends_and_includes_across_the_search_path() {
        let main = tempfile::tempdir().expect("tmp");
        let custom = tempfile::tempdir().expect("tmp");
        write(
            main.path(),
            "base/shell.jinja2",
            "#!/bin/sh\n{% block run %}{% endblock %}\n{% include 'footer.jinja2' %}",
        );
        write(main.path(), "footer.jinja2", "# end of {{ name }}");
        write(
            custom.path(),
            "runtime/tests/my-test.jinja2",
            "{% extends 'base/shell.jinja2' %}{% block run %}{% set xs = 'a b' %}\
             {% do xs.split() %}echo {{ xs.split() | length }} {{ node.id.upper() }}{% endblock %}",
        );
        let mut path = vec![main.path().to_path_buf()];
        path.extend(default_search_path(Some(custom.path())).into_iter().skip(2));
        let engine = TemplateEngine::new(path);
        assert!(
            engine
                .search_path()
                .iter()
                .any(|p| p.ends_with("runtime/tests"))
        );
        let out = engine
            .render(
                "my-test.jinja2",
                &params(json!({"name": "t1", "node": {"id": "abc"}})),
            )
            .expect("render");
        assert_eq!(out, "#!/bin/sh\necho 2 ABC\n# end of t1");
    }

    #[test]
    fn globals_raise_and_yaml_dump() {
        let engine = TemplateEngine::new(vec![]);
        let p = params(json!({"cfg": {"a": 1, "b": ["x", "y"]}}));
        let out = engine
            .render_str("{{ kci_yaml_dump(cfg) }}", &p)
            .expect("yaml");
        assert!(out.contains("a: 1"), "{out}");
        assert!(out.contains("- x"), "{out}");
        let err = engine
            .render_str("line one\n{{ kci_raise('no rootfs for ' ~ 'arm') }}", &p)
            .expect_err("raise");
        assert_eq!(err.kind, RuntimeErrorKind::Generation);
        assert!(err.message.contains("no rootfs for arm"), "{}", err.message);
        assert!(err.message.contains("line 2"), "{}", err.message);
    }

    #[test]
    fn missing_and_broken_templates_name_the_template() {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), "bad.jinja2", "ok\n\n{% if %}\n");
        let engine = TemplateEngine::new(vec![dir.path().to_path_buf()]);
        let err = engine
            .render("nope.jinja2", &JobParams::new())
            .expect_err("missing");
        assert_eq!(
            err.error_code(),
            crate::models::ErrorCode::JobGenerationError
        );
        assert!(err.message.contains("nope.jinja2"), "{}", err.message);
        let err = engine
            .render("bad.jinja2", &JobParams::new())
            .expect_err("syntax");
        assert!(err.message.contains("bad.jinja2 line 3"), "{}", err.message);
        assert!(engine.render("../etc/passwd", &JobParams::new()).is_err());
    }
}
