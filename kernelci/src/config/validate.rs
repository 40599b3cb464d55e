//! Cross-reference checks of a typed configuration: every name an entry uses is defined.

use serde_json::Value;

use super::source::KeyPath;
use super::{ConfigError, ConfigErrorKind, PipelineConfig, parse_frequency};

pub(crate) fn cross_check(c: &PipelineConfig, errors: &mut Vec<ConfigError>) {
    let reference = |path: &KeyPath, msg: String| c.error_at(ConfigErrorKind::Reference, path, msg);
    let schema = |path: &KeyPath, msg: String| c.error_at(ConfigErrorKind::Schema, path, msg);

    for (i, entry) in c.scheduler.iter().enumerate() {
        let at = KeyPath::keys(["scheduler"]).index(i);
        if !c.jobs.contains_key(&entry.job) {
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
        match (&entry.runtime.name, &entry.runtime.lab_type) {
            (Some(name), _) => {
                if !c.runtimes.contains_key(name) {
                    errors.push(reference(
                        &at.key("runtime").key("name"),
                        format!("unknown runtime {name:?}"),
                    ));
                }
            }
            (None, Some(lab_type)) => {
                if !c.runtimes.values().any(|r| &r.lab_type == lab_type) {
                    errors.push(reference(
                        &at.key("runtime").key("type"),
                        format!("no runtime has lab_type {lab_type:?}"),
                    ));
                }
            }
            (None, None) => {
                errors.push(schema(&at.key("runtime"), "needs `name` or `type`".into()))
            }
        }
        for (j, platform) in entry.platforms.iter().enumerate() {
            if !c.platforms.contains_key(platform) {
                errors.push(reference(
                    &at.key("platforms").index(j),
                    format!("unknown platform {platform:?}"),
                ));
            }
        }
    }

    for (name, bc) in &c.build_configs {
        let at = KeyPath::keys(["build_configs", name.as_str()]);
        if !c.trees.contains_key(&bc.tree) {
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
            .filter(|r| !c.trees.contains_key(&r.tree))
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
        let fragments: Vec<(Option<usize>, &str)> = match job.params.get("fragments") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.as_str().map(|s| (Some(i), s)))
                .collect(),
            Some(Value::String(s)) => vec![(None, s.as_str())],
            _ => Vec::new(),
        };
        for (i, fragment) in fragments {
            if fragment.starts_with("CONFIG_") || c.fragments.contains_key(fragment) {
                continue;
            }
            let at = match i {
                Some(i) => params.key("fragments").index(i),
                None => params.key("fragments"),
            };
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
