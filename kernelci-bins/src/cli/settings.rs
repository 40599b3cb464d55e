//! `kernelci.toml` settings, found as upstream finds them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Parsed settings: `[section] key = value` (string values).
#[derive(Debug, Default, Clone)]
pub struct Settings {
    sections: BTreeMap<String, BTreeMap<String, String>>,
    /// The file read, if any.
    pub path: Option<PathBuf>,
}

impl Settings {
    /// Reads `explicit` (an error if missing), else the first of `./kernelci.toml`,
    /// `~/.config/kernelci/kernelci.toml`, `/etc/kernelci/kernelci.toml` that exists, else none.
    pub fn load(explicit: Option<&Path>) -> Result<Settings, String> {
        let candidates: Vec<PathBuf> = match explicit {
            Some(p) => {
                if !p.exists() {
                    return Err(format!("{}: settings file not found", p.display()));
                }
                vec![p.to_path_buf()]
            }
            None => {
                let mut v = vec![PathBuf::from("kernelci.toml")];
                if let Some(home) = std::env::var_os("HOME") {
                    v.push(PathBuf::from(home).join(".config/kernelci/kernelci.toml"));
                }
                v.push(PathBuf::from("/etc/kernelci/kernelci.toml"));
                v
            }
        };
        for p in candidates {
            if p.exists() {
                let text =
                    std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                let mut s = Settings::parse(&text).map_err(|e| format!("{}:{e}", p.display()))?;
                s.path = Some(p);
                return Ok(s);
            }
        }
        Ok(Settings::default())
    }

    /// Parses the TOML subset upstream's settings use: sections (dotted names allowed), and
    /// `key = value` with quoted strings, numbers or booleans. Errors say `line: what`.
    pub fn parse(text: &str) -> Result<Settings, String> {
        let mut s = Settings::default();
        let mut section = "DEFAULT".to_owned();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[') {
                let name = name
                    .strip_suffix(']')
                    .ok_or_else(|| format!("{}: unclosed section header", i + 1))?;
                section = name.trim().trim_matches('"').to_owned();
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("{}: expected key = value", i + 1))?;
            let v = v.trim();
            let v = v.split(" #").next().unwrap_or(v).trim();
            let value = if let Some(q) = v.strip_prefix('"') {
                q.strip_suffix('"')
                    .ok_or_else(|| format!("{}: unterminated string for '{}'", i + 1, k.trim()))?
                    .to_owned()
            } else if let Some(q) = v.strip_prefix('\'') {
                q.strip_suffix('\'')
                    .ok_or_else(|| format!("{}: unterminated string for '{}'", i + 1, k.trim()))?
                    .to_owned()
            } else {
                v.to_owned()
            };
            s.sections
                .entry(section.clone())
                .or_default()
                .insert(k.trim().to_owned(), value);
        }
        Ok(s)
    }

    /// The section names, in order (`DEFAULT`, `runtime.lava-collabora`, ...).
    pub fn section_names(&self) -> impl Iterator<Item = &str> {
        self.sections.keys().map(String::as_str)
    }

    /// `[section] key`, falling back to `[DEFAULT] key`.
    pub fn get(&self, section: &str, key: &str) -> Option<String> {
        self.sections
            .get(section)
            .and_then(|m| m.get(key))
            .or_else(|| self.sections.get("DEFAULT").and_then(|m| m.get(key)))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_fallback() {
        let s = Settings::parse("[DEFAULT]\napi_url = \"http://a:8001\"\n[trigger]\npoll_period = 60\n[storage.docker-host]\nstorage_cred = '/k'\n").unwrap();
        assert_eq!(s.get("trigger", "poll_period").as_deref(), Some("60"));
        assert_eq!(
            s.get("trigger", "api_url").as_deref(),
            Some("http://a:8001")
        );
        assert_eq!(
            s.get("storage.docker-host", "storage_cred").as_deref(),
            Some("/k")
        );
        let err = Settings::parse("[DEFAULT]\nbroken\n").unwrap_err();
        assert_eq!(err, "2: expected key = value");
    }
}
