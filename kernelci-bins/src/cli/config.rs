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
    /// (exit status 1). Warnings (what upstream accepts but this deployment cannot use, such
    /// as a scheduler entry for a runtime not defined here) are printed as
    /// `warning: file:line: key: message` and keep the exit status 0 unless `--strict`.
    /// With `--json`, print one JSON object.
    Validate {
        /// Config directories or files, merged in order.
        #[arg(default_value = "config")]
        paths: Vec<PathBuf>,
        /// Treat warnings as errors (exit status 1 when there is any).
        #[arg(long)]
        strict: bool,
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

/// `3 errors`, `1 warning`.
fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// `<lead><n> <what>s` when `n > 0`, else nothing.
fn plural_suffix(lead: &str, n: usize, what: &str) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("{lead}{}", plural(n, what))
    }
}

/// Runs a `kci config` command; `json` is the global `--json` flag.
pub fn run(cmd: ConfigCommand, json: bool) -> Result<(), String> {
    match cmd {
        ConfigCommand::Validate { paths, strict } => {
            let (config, errors) = PipelineConfig::load_lenient(&paths);
            let warnings = config.warnings();
            let counts = config.counts();
            let failed = !errors.is_empty() || (strict && !warnings.is_empty());
            if json {
                let out = json!({
                    "ok": !failed,
                    "strict": strict,
                    "files": config.files().len(),
                    "counts": counts,
                    "errors": errors.iter().map(error_json).collect::<Vec<_>>(),
                    "warnings": warnings.iter().map(error_json).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else {
                for e in &errors {
                    eprintln!("{e}");
                }
                for w in warnings {
                    if strict {
                        eprintln!("{w}");
                    } else {
                        eprintln!("warning: {w}");
                    }
                }
                if !failed {
                    println!(
                        "config OK: {} files{}",
                        config.files().len(),
                        plural_suffix(", ", warnings.len(), "warning")
                    );
                    for (section, n) in &counts {
                        println!("  {section:<14} {n}");
                    }
                }
            }
            if !failed {
                return Ok(());
            }
            let mut counted = Vec::new();
            if !errors.is_empty() {
                counted.push(plural(errors.len(), "error"));
            }
            if strict && !warnings.is_empty() {
                counted.push(plural(warnings.len(), "warning"));
            }
            Err(format!(
                "{} in the configuration{}",
                counted.join(" and "),
                if strict { " (--strict)" } else { "" }
            ))
        }
        ConfigCommand::Dump { section, paths } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from("config")]
            } else {
                paths
            };
            let (config, errors) = PipelineConfig::load_lenient(&paths);
            for e in errors.iter().chain(config.warnings()) {
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
