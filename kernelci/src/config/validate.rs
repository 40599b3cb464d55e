//! Cross-reference checks of a typed configuration: every name an entry uses is defined, or,
//! where upstream's loader and scheduler accept an undefined name, a warning.

use std::collections::HashSet;

use serde_json::Value;

use super::source::KeyPath;
use super::{CipFragment, ConfigError, ConfigErrorKind, PipelineConfig, parse_frequency};

/// The entry names of a mapping section as written (including entries that failed to type,
/// so one bad entry does not also make every reference to it an error).
fn names<'a>(c: &'a PipelineConfig, section: &str) -> HashSet<&'a str> {
    match c.raw.get(section) {
        Some(Value::Object(m)) => m.keys().map(String::as_str).collect(),
        _ => HashSet::new(),
    }
}

pub(crate) fn cross_check(
    c: &PipelineConfig,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) {
    let jobs = names(c, "jobs");
    let runtimes = names(c, "runtimes");
    let platforms = names(c, "platforms");
    let trees = names(c, "trees");
    let fragments = names(c, "fragments");
    let lab_types: HashSet<&str> = match c.raw.get("runtimes") {
        Some(Value::Object(m)) => m
            .values()
            .filter_map(|r| r.get("lab_type").and_then(Value::as_str))
            .collect(),
        _ => HashSet::new(),
    };
    let reference = |path: &KeyPath, msg: String| c.error_at(ConfigErrorKind::Reference, path, msg);
    let schema = |path: &KeyPath, msg: String| c.error_at(ConfigErrorKind::Schema, path, msg);

    for (i, entry) in c.scheduler.iter().enumerate() {
        let at = KeyPath::keys(["scheduler"]).index(i);
        if !jobs.contains(entry.job.as_str()) {
            errors.push(reference(
                &at.key("job"),
                format!("unknown job {:?}", entry.job),
            ));
        }
        match entry.event.get("channel") {
            Some(Value::String(_)) => {}
            Some(_) => errors.push(schema(
                &at.key("event").key("channel"),
                "the channel must be a string".into(),
            )),
            None => errors.push(schema(
                &at.key("event"),
                "missing `channel` (e.g. `channel: node`): the entry would never match".into(),
            )),
        }
        // Upstream's scheduler loads only the runtimes it is started with and skips entries for
        // the others, so an undefined runtime is a deployment choice, not a broken config.
        match (&entry.runtime.name, &entry.runtime.lab_type) {
            (Some(name), _) => {
                if !runtimes.contains(name.as_str()) {
                    warnings.push(reference(
                        &at.key("runtime").key("name"),
                        format!(
                            "runtime {name:?} is not defined in this deployment: the entry is skipped"
                        ),
                    ));
                }
            }
            (None, Some(lab_type)) => {
                if !lab_types.contains(lab_type.as_str()) {
                    warnings.push(reference(
                        &at.key("runtime").key("type"),
                        format!(
                            "no runtime of lab_type {lab_type:?} is defined in this deployment: \
                             the entry is skipped"
                        ),
                    ));
                }
            }
            (None, None) => {
                errors.push(schema(&at.key("runtime"), "needs `name` or `type`".into()))
            }
        }
        for (j, platform) in entry.platforms.iter().enumerate() {
            if !platforms.contains(platform.as_str()) {
                errors.push(reference(
                    &at.key("platforms").index(j),
                    format!("unknown platform {platform:?}"),
                ));
            }
        }
    }

    for (name, bc) in &c.build_configs {
        let at = KeyPath::keys(["build_configs", name.as_str()]);
        if !trees.contains(bc.tree.as_str()) {
            errors.push(reference(
                &at.key("tree"),
                format!("unknown tree {:?}", bc.tree),
            ));
        }
        if let Some(Err(e)) = bc.frequency.as_deref().map(parse_frequency) {
            errors.push(schema(&at.key("frequency"), e));
        }
        if let Some(r) = bc
            .reference
            .as_ref()
            .filter(|r| !trees.contains(r.tree.as_str()))
        {
            errors.push(reference(
                &at.key("reference").key("tree"),
                format!("unknown tree {:?}", r.tree),
            ));
        }
    }

    for (name, job) in &c.jobs {
        let params = KeyPath::keys(["jobs", name.as_str(), "params"]);
        match job.params.get("frequency") {
            None | Some(Value::Null) => {}
            Some(Value::String(f)) => {
                if let Err(e) = parse_frequency(f) {
                    errors.push(schema(&params.key("frequency"), e));
                }
            }
            Some(other) => errors.push(schema(
                &params.key("frequency"),
                format!("invalid frequency {other}: expected a string like 1d, 12h, 30m"),
            )),
        }
        let used: Vec<(Option<usize>, &str)> = match job.params.get("fragments") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.as_str().map(|s| (Some(i), s)))
                .collect(),
            Some(Value::String(s)) => vec![(None, s.as_str())],
            _ => Vec::new(),
        };
        for (i, fragment) in used {
            let at = match i {
                Some(i) => params.key("fragments").index(i),
                None => params.key("fragments"),
            };
            // `cip://<branch>/<path>`: fetched by kernelci-core from the CIP kernel-config
            // repository, not defined in `fragments:`.
            match CipFragment::parse(fragment) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    errors.push(schema(&at, e));
                    continue;
                }
                None => {}
            }
            if fragment.starts_with("CONFIG_") || fragments.contains(fragment) {
                continue;
            }
            errors.push(reference(&at, format!("unknown fragment {fragment:?}")));
        }
        if let Some(Value::String(r)) = job.params.get("rootfs_ref")
            && !c.rootfs.contains_key(r)
        {
            errors.push(reference(
                &params.key("rootfs_ref"),
                format!("unknown rootfs {r:?}"),
            ));
        }
    }
}
