//! `kci config ...`: check and inspect the pipeline YAML configuration.

use std::path::PathBuf;

use clap::Subcommand;
use kernelci::config::{ConfigError, ConfigErrorKind, PipelineConfig, yaml_files};
use serde_json::{Value, json};

/// `kci config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load every `*.yaml` under the given directories (default `config`), check schemas and
    /// cross references, and print a summary, or every error as `file:line: key: message`
    /// (exit status 1). With `--json`, print one JSON object.
    Validate {
        /// Config directories or files, merged in order.
        #[arg(default_value = "config")]
        paths: Vec<PathBuf>,
    },
    /// Print the merged configuration as JSON, or one section or dotted path of it
    /// (`jobs`, `jobs.kbuild-gcc-14-x86`, `runtimes.lava-collabora.url`).
    Dump {
        /// A section or dotted path.
        section: Option<String>,
        /// Config directories or files (repeatable; default `config`).
        #[arg(short = 'c', long = "yaml-config")]
        paths: Vec<PathBuf>,
    },
    /// List the YAML files that would be read, in merge order.
    ListFiles {
        /// Config directories or files (default `config`).
        #[arg(default_value = "config")]
        paths: Vec<PathBuf>,
    },
}

fn kind_name(kind: ConfigErrorKind) -> &'static str {
    match kind {
        ConfigErrorKind::NotFound => "not_found",
        ConfigErrorKind::Io => "io",
        ConfigErrorKind::Syntax => "syntax",
        ConfigErrorKind::Schema => "schema",
        ConfigErrorKind::Reference => "reference",
    }
}

fn error_json(e: &ConfigError) -> Value {
    json!({
        "file": e.file.as_ref().map(|f| f.display().to_string()),
        "line": e.line,
        "key": e.key,
        "kind": kind_name(e.kind),
        "message": e.message,
        "text": e.to_string(),
    })
}

/// Runs a `kci config` command; `json` is the global `--json` flag.
pub fn run(cmd: ConfigCommand, json: bool) -> Result<(), String> {
    match cmd {
        ConfigCommand::Validate { paths } => {
            let (config, errors) = PipelineConfig::load_lenient(&paths);
            let counts = config.counts();
            if json {
                let out = json!({
                    "ok": errors.is_empty(),
                    "files": config.files().len(),
                    "counts": counts,
                    "errors": errors.iter().map(error_json).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else if errors.is_empty() {
                println!("config OK: {} files", config.files().len());
                for (section, n) in &counts {
                    println!("  {section:<14} {n}");
                }
            } else {
                for e in &errors {
                    eprintln!("{e}");
                }
            }
            if errors.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} error{} in the configuration",
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" }
                ))
            }
        }
        ConfigCommand::Dump { section, paths } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from("config")]
            } else {
                paths
            };
            let (config, errors) = PipelineConfig::load_lenient(&paths);
            for e in &errors {
                eprintln!("warning: {e}");
            }
            let mut value = Value::Object(config.raw.clone());
            if let Some(section) = section {
                for part in section.split('.') {
                    value = match value {
                        Value::Object(mut m) => m
                            .remove(part)
                            .ok_or_else(|| format!("{section}: no such key {part:?}"))?,
                        Value::Array(mut a) => {
                            let i: usize = part
                                .parse()
                                .map_err(|_| format!("{section}: {part:?} is not a list index"))?;
                            if i >= a.len() {
                                return Err(format!("{section}: index {i} out of range"));
                            }
                            a.swap_remove(i)
                        }
                        _ => return Err(format!("{section}: {part:?} is below a scalar")),
                    };
                }
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            Ok(())
        }
        ConfigCommand::ListFiles { paths } => {
            for path in &paths {
                for f in yaml_files(path).map_err(|e| e.to_string())? {
                    println!("{}", f.display());
                }
            }
            Ok(())
        }
    }
}
