//! Reading the YAML files: discovery, parsing (anchors, aliases, merge keys), upstream's merge
//! rules, and where each key came from (file and line).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use serde_norway::Value as YValue;

use super::{ConfigError, ConfigErrorKind};

/// One step of a [`KeyPath`]: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeySeg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path to a value in the configuration, shown as `jobs.kbuild-gcc-14-x86.params` or
/// `scheduler[3].platforms[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPath(pub Vec<KeySeg>);

impl KeyPath {
    /// The path of the given keys.
    pub fn keys<I, S>(keys: I) -> KeyPath
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        KeyPath(keys.into_iter().map(|k| KeySeg::Key(k.into())).collect())
    }

    /// This path with a key appended.
    pub fn key(&self, key: impl Into<String>) -> KeyPath {
        let mut p = self.clone();
        p.0.push(KeySeg::Key(key.into()));
        p
    }

    /// This path with an index appended.
    pub fn index(&self, index: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(KeySeg::Index(index));
        p
    }

    /// This path with every step of `other` appended.
    pub fn join(&self, other: &KeyPath) -> KeyPath {
        let mut p = self.clone();
        p.0.extend(other.0.iter().cloned());
        p
    }

    /// The path from a `serde_path_to_error` path.
    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> KeyPath {
        use serde_path_to_error::Segment;
        KeyPath(
            path.iter()
                .filter_map(|s| match s {
                    Segment::Seq { index } => Some(KeySeg::Index(*index)),
                    Segment::Map { key } => Some(KeySeg::Key(key.clone())),
                    Segment::Enum { variant } => Some(KeySeg::Key(variant.clone())),
                    Segment::Unknown => None,
                })
                .collect(),
        )
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                KeySeg::Key(k) if i == 0 => f.write_str(k)?,
                KeySeg::Key(k) => write!(f, ".{k}")?,
                KeySeg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Where a configuration entry was defined: the file and the path inside that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The YAML file.
    pub file: PathBuf,
    /// The 1-based line of the entry's key (or list item) in `file`, when found.
    pub line: Option<usize>,
}

/// The line of every key of one file, found by an indentation scanner over the text.
///
/// Block-style YAML (what KernelCI configs use) is covered exactly; keys inside flow
/// collections (`{a: 1}`) or reached through aliases and merge keys resolve to the nearest
/// enclosing key that is written out in the file.
#[derive(Debug, Default, Clone)]
pub(crate) struct LineIndex {
    lines: HashMap<KeyPath, usize>,
}

struct Frame {
    indent: usize,
    seg: KeySeg,
    seq_item: bool,
}

impl LineIndex {
    pub(crate) fn scan(text: &str) -> LineIndex {
        let mut lines = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut counters: HashMap<KeyPath, usize> = HashMap::new();
        let mut block_indent: Option<usize> = None;
        for (n, raw) in text.lines().enumerate() {
            let lineno = n + 1;
            let trimmed = raw.trim_start_matches(' ');
            let indent = raw.len() - trimmed.len();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some(bi) = block_indent {
                if indent > bi {
                    continue;
                }
                block_indent = None;
            }
            if indent == 0 && (trimmed.starts_with("---") || trimmed.starts_with("...")) {
                stack.clear();
                continue;
            }
            let mut col = indent;
            let mut rest = trimmed;
            // Sequence items: "- " (possibly several on one line: "- - x").
            while rest == "-" || rest.starts_with("- ") {
                while stack
                    .last()
                    .is_some_and(|f| f.indent > col || (f.indent == col && f.seq_item))
                {
                    stack.pop();
                }
                let parent = KeyPath(stack.iter().map(|f| f.seg.clone()).collect());
                let counter = counters.entry(parent.clone()).or_insert(0);
                let index = *counter;
                *counter += 1;
                lines.entry(parent.index(index)).or_insert(lineno);
                stack.push(Frame {
                    indent: col,
                    seg: KeySeg::Index(index),
                    seq_item: true,
                });
                let after = &rest[1..];
                let skipped = after.len() - after.trim_start_matches(' ').len();
                col += 1 + skipped;
                rest = after.trim_start_matches(' ');
                if rest.is_empty() {
                    break;
                }
                if starts_block_scalar(rest) {
                    block_indent = Some(col.saturating_sub(1));
                }
            }
            let Some((key, value)) = split_key(rest) else {
                continue;
            };
            while stack.last().is_some_and(|f| f.indent >= col) {
                stack.pop();
            }
            let path = KeyPath(
                stack
                    .iter()
                    .map(|f| f.seg.clone())
                    .chain(std::iter::once(KeySeg::Key(key.clone())))
                    .collect(),
            );
            // A key seen again under a new parent list item gets a fresh child counter.
            counters.remove(&path);
            lines.entry(path).or_insert(lineno);
            stack.push(Frame {
                indent: col,
                seg: KeySeg::Key(key),
                seq_item: false,
            });
            if starts_block_scalar(value) {
                block_indent = Some(col);
            }
        }
        LineIndex { lines }
    }

    /// The line of `path`, or of its longest prefix written out in the file.
    pub(crate) fn line(&self, path: &KeyPath) -> Option<usize> {
        let mut p = path.0.as_slice();
        loop {
            if let Some(l) = self.lines.get(&KeyPath(p.to_vec())) {
                return Some(*l);
            }
            if p.is_empty() {
                return None;
            }
            p = &p[..p.len() - 1];
        }
    }
}

fn starts_block_scalar(value: &str) -> bool {
    let mut v = value.trim();
    // Skip an anchor or a tag before the indicator.
    while v.starts_with('&') || v.starts_with('!') {
        v = v.split_once(' ').map_or("", |(_, r)| r.trim_start());
    }
    (v.starts_with('|') || v.starts_with('>'))
        && v[1..]
            .trim_start_matches(['-', '+', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
            .trim_start()
            .chars()
            .next()
            .is_none_or(|c| c == '#')
}

/// `key: value` → (key, value) for a block mapping line.
fn split_key(s: &str) -> Option<(String, &str)> {
    let first = s.chars().next()?;
    if first == '"' || first == '\'' {
        let close = s[1..].find(first)? + 1;
        let key = &s[1..close];
        let after = &s[close + 1..];
        let after = after.trim_start_matches(' ');
        let value = after.strip_prefix(':')?;
        if !(value.is_empty() || value.starts_with(' ')) {
            return None;
        }
        return Some((key.to_owned(), value.trim_start()));
    }
    if "#{[&*!|>%@`,?".contains(first) {
        return None;
    }
    let mut search = 0;
    loop {
        let pos = s[search..].find(':')? + search;
        let after = &s[pos + 1..];
        if after.is_empty() || after.starts_with(' ') || after.starts_with('\t') {
            let key = s[..pos].trim_end();
            if key.contains(" #") {
                return None;
            }
            return Some((key.to_owned(), after.trim_start()));
        }
        search = pos + 1;
    }
}

/// One YAML file that was read.
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub(crate) path: PathBuf,
    pub(crate) index: LineIndex,
}

/// The merged document of every file, and where each entry came from.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    pub(crate) files: Vec<SourceFile>,
    /// `(section, key)` → file index, for mapping sections (`jobs`, `trees`, ...).
    entries: HashMap<(String, String), usize>,
    /// section → (file index, index in that file) per item, for list sections (`scheduler`).
    items: HashMap<String, Vec<(usize, usize)>>,
    /// section → the last file that defined it.
    sections: HashMap<String, usize>,
}

impl Sources {
    /// The file, line and file-local key path of a path into the merged document.
    pub(crate) fn locate(&self, path: &KeyPath) -> (Option<PathBuf>, Option<usize>, KeyPath) {
        let Some(KeySeg::Key(section)) = path.0.first() else {
            return (None, None, path.clone());
        };
        let (file, local) = match path.0.get(1) {
            Some(KeySeg::Key(k)) => (
                self.entries
                    .get(&(section.clone(), k.clone()))
                    .or_else(|| self.sections.get(section))
                    .copied(),
                path.clone(),
            ),
            Some(KeySeg::Index(g)) => match self.items.get(section).and_then(|v| v.get(*g)) {
                Some((f, l)) => {
                    let mut local = path.clone();
                    local.0[1] = KeySeg::Index(*l);
                    (Some(*f), local)
                }
                None => (self.sections.get(section).copied(), path.clone()),
            },
            None => (self.sections.get(section).copied(), path.clone()),
        };
        match file.and_then(|f| self.files.get(f)) {
            Some(sf) => (Some(sf.path.clone()), sf.index.line(&local), local),
            None => (None, None, local),
        }
    }

    /// Where the entry at `path` was defined.
    pub(crate) fn origin(&self, path: &KeyPath) -> Option<Origin> {
        let (file, line, _) = self.locate(path);
        file.map(|file| Origin { file, line })
    }

    /// An error about `path` in the merged document, located in its file.
    pub(crate) fn error(
        &self,
        kind: ConfigErrorKind,
        path: &KeyPath,
        message: impl Into<String>,
    ) -> ConfigError {
        let (file, line, local) = self.locate(path);
        let mut e = ConfigError::new(kind, message).with_key(local.to_string());
        if let Some(file) = file {
            e = e.at(file, line);
        }
        e
    }
}

/// Every `*.yaml` under `path` (recursively, sorted, skipping `/debos/`), or `path` itself
/// when it is a file: the files [`super::PipelineConfig::load`] reads, in merge order.
pub fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ConfigErrorKind::NotFound
        } else {
            ConfigErrorKind::Io
        };
        ConfigError::new(kind, format!("cannot read config path: {e}")).at(path, None)
    })?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| {
            ConfigError::new(ConfigErrorKind::Io, format!("cannot list directory: {e}"))
                .at(&dir, None)
        })?;
        for entry in rd.flatten() {
            let p = entry.path();
            if p.to_string_lossy().contains("/debos/") {
                continue;
            }
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() || (ft.is_symlink() && p.is_dir()) {
                if p.file_name().is_some_and(|n| n == "debos") {
                    continue;
                }
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Parses one YAML document into JSON values, resolving merge keys.
pub(crate) fn parse_yaml(file: &Path, text: &str) -> Result<Value, ConfigError> {
    let doc: YValue = serde_norway::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        let msg = e.to_string();
        // The message already ends with "at line L column C"; keep it, it has the column.
        ConfigError::new(ConfigErrorKind::Syntax, msg).at(file, line)
    })?;
    let index = LineIndex::scan(text);
    to_json(doc, &KeyPath::default()).map_err(|(path, msg)| {
        ConfigError::new(ConfigErrorKind::Syntax, msg)
            .at(file, index.line(&path))
            .with_key(path.to_string())
    })
}

fn key_string(k: YValue, path: &KeyPath) -> Result<String, (KeyPath, String)> {
    match k {
        YValue::String(s) => Ok(s),
        YValue::Number(n) => Ok(n.to_string()),
        YValue::Bool(b) => Ok(b.to_string()),
        YValue::Null => Ok("null".into()),
        YValue::Tagged(t) => key_string(t.value, path),
        _ => Err((path.clone(), "a mapping key must be a scalar".into())),
    }
}

fn to_json(v: YValue, path: &KeyPath) -> Result<Value, (KeyPath, String)> {
    Ok(match v {
        YValue::Null => Value::Null,
        YValue::Bool(b) => Value::Bool(b),
        YValue::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        YValue::String(s) => Value::String(s),
        YValue::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| to_json(item, &path.index(i)))
                .collect::<Result<_, _>>()?,
        ),
        YValue::Mapping(m) => {
            let mut own = Map::new();
            let mut merged: Vec<Map<String, Value>> = Vec::new();
            for (k, v) in m {
                if k.as_str() == Some("<<") {
                    let mpath = path.key("<<");
                    match to_json(v, &mpath)? {
                        Value::Object(o) => merged.push(o),
                        Value::Array(items) => {
                            for item in items {
                                match item {
                                    Value::Object(o) => merged.push(o),
                                    _ => {
                                        return Err((
                                            mpath,
                                            "a merge key (<<) list may only hold mappings".into(),
                                        ));
                                    }
                                }
                            }
                        }
                        _ => {
                            return Err((
                                mpath,
                                "a merge key (<<) needs a mapping or a list of mappings".into(),
                            ));
                        }
                    }
                    continue;
                }
                let key = key_string(k, path)?;
                let value = to_json(v, &path.key(key.clone()))?;
                own.insert(key, value);
            }
            // Explicit keys win; among merged mappings the first one wins (YAML merge spec).
            for source in merged {
                for (k, v) in source {
                    own.entry(k).or_insert(v);
                }
            }
            Value::Object(own)
        }
        YValue::Tagged(t) => to_json(t.value, path)?,
    })
}

/// Reads and merges every file under `paths` as upstream's `kernelci.config.load_yaml`:
/// within one path, top-level dicts are updated and lists extended; across paths, a deep merge
/// (dicts unioned recursively, lists concatenated, scalars replaced).
///
/// Returns the merged document, the sources, and the errors of files that could not be read
/// (those files are left out; loading goes on).
pub(crate) fn load_paths(paths: &[PathBuf]) -> (Map<String, Value>, Sources, Vec<ConfigError>) {
    let mut sources = Sources::default();
    let mut errors = Vec::new();
    let mut config = Map::new();
    for root in paths {
        let files = match yaml_files(root) {
            Ok(f) => f,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let mut data = Map::new();
        for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(
                        ConfigError::new(ConfigErrorKind::Io, format!("cannot read: {e}"))
                            .at(&file, None),
                    );
                    continue;
                }
            };
            add_document(&mut data, &mut sources, &mut errors, &file, &text);
        }
        deep_merge(&mut config, data);
    }
    (config, sources, errors)
}

/// Parses `text` (the content of `file`) and merges it into `data` with the same-directory
/// rules.
pub(crate) fn add_document(
    data: &mut Map<String, Value>,
    sources: &mut Sources,
    errors: &mut Vec<ConfigError>,
    file: &Path,
    text: &str,
) {
    let doc = match parse_yaml(file, text) {
        Ok(Value::Object(doc)) => doc,
        Ok(Value::Null) => return,
        Ok(_) => {
            errors.push(
                ConfigError::new(
                    ConfigErrorKind::Schema,
                    "a config file must hold a mapping at the top level",
                )
                .at(file, Some(1)),
            );
            return;
        }
        Err(e) => {
            errors.push(e);
            return;
        }
    };
    let fidx = sources.files.len();
    sources.files.push(SourceFile {
        path: file.to_path_buf(),
        index: LineIndex::scan(text),
    });
    for (section, value) in doc {
        sources.sections.insert(section.clone(), fidx);
        match value {
            Value::Object(entries) => {
                for key in entries.keys() {
                    sources.entries.insert((section.clone(), key.clone()), fidx);
                }
                match data.get_mut(&section) {
                    Some(Value::Object(existing)) => existing.extend(entries),
                    Some(Value::Null) | None => {
                        data.insert(section, Value::Object(entries));
                    }
                    Some(_) => errors.push(type_clash(sources, file, &section)),
                }
            }
            Value::Array(items) => {
                let origin = sources.items.entry(section.clone()).or_default();
                // Items already merged from other paths are accounted for by deep_merge's
                // order: this file's items are appended after them.
                origin.extend((0..items.len()).map(|i| (fidx, i)));
                match data.get_mut(&section) {
                    Some(Value::Array(existing)) => existing.extend(items),
                    Some(Value::Null) | None => {
                        data.insert(section, Value::Array(items));
                    }
                    Some(_) => errors.push(type_clash(sources, file, &section)),
                }
            }
            other => {
                data.insert(section, other);
            }
        }
    }
}

fn type_clash(sources: &Sources, file: &Path, section: &str) -> ConfigError {
    let line = sources
        .files
        .last()
        .and_then(|f| f.index.line(&KeyPath::keys([section])));
    ConfigError::new(
        ConfigErrorKind::Schema,
        "this section is a mapping in one file and a list in another",
    )
    .at(file, line)
    .with_key(section)
}

/// Upstream's cross-path merge: dicts unioned recursively, lists concatenated, scalars replaced.
pub(crate) fn deep_merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => deep_merge(a, b),
            (Some(Value::Array(a)), Value::Array(b)) => a.extend(b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_follows_block_yaml() {
        let text = "\
# comment
trees:
  mainline:
    url: https://git.kernel.org/x
jobs:
  kbuild: &kb
    template: kbuild.jinja2
    params:
      arch: x86_64
      script: |
        echo a: b
        weird: line
      defconfig: x
scheduler:
- job: kbuild
  event:
    channel: node
  platforms:
    - qemu
    - 'docker'
- job: other
  rules:
    tree: ['!android']
\"quoted key\": 1
";
        let idx = LineIndex::scan(text);
        let l = |p: KeyPath| idx.line(&p);
        assert_eq!(l(KeyPath::keys(["trees", "mainline", "url"])), Some(4));
        assert_eq!(
            l(KeyPath::keys(["jobs", "kbuild", "params", "arch"])),
            Some(9)
        );
        assert_eq!(
            l(KeyPath::keys(["jobs", "kbuild", "params", "defconfig"])),
            Some(13)
        );
        assert_eq!(
            l(KeyPath::keys(["jobs", "kbuild", "params", "weird"])),
            Some(8),
            "block scalar content is not a key: falls back to params"
        );
        let s0 = KeyPath::keys(["scheduler"]).index(0);
        assert_eq!(l(s0.key("job")), Some(15));
        assert_eq!(l(s0.key("event").key("channel")), Some(17));
        assert_eq!(l(s0.key("platforms").index(1)), Some(20));
        let s1 = KeyPath::keys(["scheduler"]).index(1);
        assert_eq!(l(s1.clone()), Some(21));
        assert_eq!(l(s1.key("rules").key("tree").index(0)), Some(23));
        assert_eq!(l(KeyPath::keys(["quoted key"])), Some(24));
    }

    #[test]
    fn merge_keys_chain_and_explicit_keys_win() {
        let v = parse_yaml(
            Path::new("x.yaml"),
            "a: &a {x: 1, y: 1}\nb: &b\n  <<: *a\n  y: 2\nc:\n  <<: [*b, {z: 3, x: 9}]\n  w: 4\n",
        )
        .expect("valid");
        assert_eq!(v["c"], serde_json::json!({"w": 4, "x": 1, "y": 2, "z": 3}));
        let e = parse_yaml(Path::new("x.yaml"), "a:\n  b:\n    <<: 3\n").expect_err("bad");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key.as_deref(), Some("a.b.<<"));
        let e = parse_yaml(Path::new("x.yaml"), "a: [1\nb: 2\n").expect_err("syntax");
        assert_eq!(e.kind, ConfigErrorKind::Syntax);
        assert!(e.line.is_some());
    }
}
