//! `kernelci.toml`: the settings of the services and of `kci` (upstream
//! `kernelci/legacy/cli/base.py` and `kernelci/cli`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use toml::{Table, Value};

use super::{ConfigError, ConfigErrorKind};

/// A secret value (a token, a password, a credential). `Debug` and `Display` print
/// `[redacted]`; [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The credentials of one runtime (`[runtime.<name>]`), given to the runtime factories of
/// [`crate::runtime::registry`] (which re-exports this type). `Debug` hides the tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeCredentials {
    /// `user` (LAVA user name).
    pub user: Option<String>,
    /// `runtime_token` (LAVA API token).
    pub runtime_token: Option<Secret>,
    /// `callback_token` (the secret LAVA sends back with callbacks).
    pub callback_token: Option<Secret>,
}

impl RuntimeCredentials {
    /// Reads `user`, `runtime_token` and `callback_token` of `[runtime.<name>]` through a
    /// settings lookup `(section, key) -> value` (e.g. `|s, k| settings.get_str(s, k)`).
    pub fn from_settings(
        name: &str,
        lookup: impl Fn(&str, &str) -> Option<String>,
    ) -> RuntimeCredentials {
        let section = format!("runtime.{name}");
        RuntimeCredentials {
            user: lookup(&section, "user"),
            runtime_token: lookup(&section, "runtime_token").map(Secret),
            callback_token: lookup(&section, "callback_token").map(Secret),
        }
    }

    /// The runtime token's value, if set. Do not log it.
    pub fn token(&self) -> Option<&str> {
        self.runtime_token.as_ref().map(Secret::expose)
    }
}

/// The parsed `kernelci.toml`, with environment overrides.
///
/// Lookup of `key` for a program section (`trigger`, `tarball`, `scheduler`, `timeout`, ...),
/// first match wins:
/// 1. the environment variable `KCI_<SECTION>_<KEY>` (upper case, every character that is not
///    a letter or digit becomes `_`; e.g. `KCI_SCHEDULER_OUTPUT`,
///    `KCI_STORAGE_DOCKER_HOST_STORAGE_CRED`);
/// 2. `[section] key` (a dotted section such as `storage.docker-host` is a nested table);
/// 3. `KCI_DEFAULT_<KEY>`, then `[DEFAULT] key`.
///
/// `Debug` shows the file and the section and key names, never the values.
#[derive(Clone, Default)]
pub struct Settings {
    path: Option<PathBuf>,
    table: Table,
    env: BTreeMap<String, String>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        collect_keys(&self.table, "", &mut keys);
        f.debug_struct("Settings")
            .field("path", &self.path)
            .field("keys", &keys)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn collect_keys(table: &Table, prefix: &str, out: &mut BTreeMap<String, Vec<String>>) {
    for (k, v) in table {
        match v {
            Value::Table(t) => {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                collect_keys(t, &name, out);
            }
            _ => out
                .entry(if prefix.is_empty() {
                    "(top)".into()
                } else {
                    prefix.to_owned()
                })
                .or_default()
                .push(k.clone()),
        }
    }
}

fn env_name(section: &str, key: &str) -> String {
    let mut s = String::from("KCI_");
    for c in section
        .chars()
        .chain(std::iter::once('_'))
        .chain(key.chars())
    {
        s.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        });
    }
    s
}

fn kci_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("KCI_"))
        .collect()
}

impl Settings {
    /// Finds and reads the settings file as upstream does: `explicit` (the `--settings`
    /// option; an error when missing), else `$KCI_SETTINGS` (also an error when missing), else
    /// the first of `./kernelci.toml`, `~/.config/kernelci/kernelci.toml`,
    /// `/etc/kernelci/kernelci.toml` that exists, else empty settings. The `KCI_*`
    /// environment variables are captured for overrides.
    pub fn load(explicit: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load_with_env(explicit, kci_env())
    }

    /// [`Settings::load`] with an explicit environment (`KCI_SETTINGS` and the overrides are
    /// read from `env` instead of the process environment).
    pub fn load_with_env(
        explicit: Option<&Path>,
        env: BTreeMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let from_env = env
            .get("KCI_SETTINGS")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let path = match explicit.map(Path::to_path_buf).or(from_env) {
            Some(p) => {
                if !p.is_file() {
                    return Err(ConfigError::new(
                        ConfigErrorKind::NotFound,
                        "settings file not found",
                    )
                    .at(p, None));
                }
                Some(p)
            }
            None => Settings::default_paths(&env)
                .into_iter()
                .find(|p| p.is_file()),
        };
        let mut settings = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigError::new(ConfigErrorKind::Io, format!("cannot read: {e}")).at(p, None)
                })?;
                Settings::from_toml_str(&text, Some(p))?
            }
            None => Settings::default(),
        };
        settings.env = env;
        Ok(settings)
    }

    /// The places searched when no file is named: `./kernelci.toml`,
    /// `~/.config/kernelci/kernelci.toml`, `/etc/kernelci/kernelci.toml`.
    pub fn default_paths(env: &BTreeMap<String, String>) -> Vec<PathBuf> {
        let _ = env;
        let mut v = vec![PathBuf::from("kernelci.toml")];
        if let Some(home) = std::env::var_os("HOME") {
            v.push(PathBuf::from(home).join(".config/kernelci/kernelci.toml"));
        }
        v.push(PathBuf::from("/etc/kernelci/kernelci.toml"));
        v
    }

    /// Parses settings from TOML text; `path` is used in error messages.
    pub fn from_toml_str(text: &str, path: Option<&Path>) -> Result<Settings, ConfigError> {
        let table = text.parse::<Table>().map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let mut err = ConfigError::new(ConfigErrorKind::Syntax, e.message().trim().to_owned());
            if let Some(p) = path {
                err = err.at(p, line);
            } else {
                err.line = line;
            }
            err
        })?;
        Ok(Settings {
            path: path.map(Path::to_path_buf),
            table,
            env: BTreeMap::new(),
        })
    }

    /// The same settings with `env` as the environment overrides.
    pub fn with_env(mut self, env: BTreeMap<String, String>) -> Settings {
        self.env = env;
        self
    }

    /// The file read, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Every section name of the file, dotted for nested tables (`DEFAULT`, `trigger`,
    /// `runtime.lava-collabora`, `storage.docker-host`), in file order of the top level.
    pub fn section_names(&self) -> Vec<String> {
        fn walk(table: &Table, prefix: &str, out: &mut Vec<String>) {
            for (key, value) in table {
                if let Value::Table(t) = value {
                    let name = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    out.push(name.clone());
                    walk(t, &name, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.table, "", &mut out);
        out
    }

    /// The table of a section (`trigger`, `storage.docker-host`), without fallback.
    pub fn section(&self, section: &str) -> Option<&Table> {
        if let Some(Value::Table(t)) = self.table.get(section) {
            return Some(t);
        }
        let mut table = &self.table;
        for part in section.split('.') {
            match table.get(part) {
                Some(Value::Table(t)) => table = t,
                _ => return None,
            }
        }
        Some(table)
    }

    /// `[section] key` only: the environment override `KCI_<SECTION>_<KEY>`, then the file.
    pub fn get_in(&self, section: &str, key: &str) -> Option<Value> {
        if let Some(v) = self.env.get(&env_name(section, key)) {
            return Some(Value::String(v.clone()));
        }
        self.section(section).and_then(|t| t.get(key)).cloned()
    }

    /// `key` for a program section, falling back to `[DEFAULT]` (see [`Settings`]).
    pub fn get(&self, section: &str, key: &str) -> Option<Value> {
        self.get_in(section, key)
            .or_else(|| self.get_in("DEFAULT", key))
    }

    /// [`Settings::get`] as a string (numbers and booleans are written out).
    pub fn get_str(&self, section: &str, key: &str) -> Option<String> {
        self.get(section, key).and_then(value_string)
    }

    /// [`Settings::get`] parsed into `T`; an error names the file, the section and the key.
    pub fn get_parsed<T: FromStr>(&self, section: &str, key: &str) -> Result<Option<T>, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.get_str(section, key) {
            None => Ok(None),
            Some(s) => s.parse::<T>().map(Some).map_err(|e| {
                let mut err =
                    ConfigError::new(ConfigErrorKind::Schema, format!("invalid value {s:?}: {e}"))
                        .with_key(format!("{section}.{key}"));
                err.file = self.path.clone();
                err
            }),
        }
    }

    /// [`Settings::get`] as a boolean (`true`/`false`, `1`/`0`, `yes`/`no`).
    pub fn get_bool(&self, section: &str, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(section, key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(b)),
            Some(v) => match value_string(v)
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("true" | "1" | "yes" | "on") => Ok(Some(true)),
                Some("false" | "0" | "no" | "off" | "") => Ok(Some(false)),
                other => {
                    let mut err = ConfigError::new(
                        ConfigErrorKind::Schema,
                        format!("expected a boolean, found {other:?}"),
                    )
                    .with_key(format!("{section}.{key}"));
                    err.file = self.path.clone();
                    Err(err)
                }
            },
        }
    }

    /// [`Settings::get`] as a [`Secret`].
    pub fn secret(&self, section: &str, key: &str) -> Option<Secret> {
        self.get_str(section, key).map(Secret)
    }

    /// The API token: `$KCI_API_TOKEN`, else `[DEFAULT] api_token`.
    pub fn api_token(&self) -> Option<Secret> {
        self.env
            .get("KCI_API_TOKEN")
            .filter(|s| !s.is_empty())
            .cloned()
            .map(Secret)
            .or_else(|| self.secret("DEFAULT", "api_token"))
    }

    /// The credential of a storage config: `[storage.<name>] storage_cred` (or its
    /// `KCI_STORAGE_<NAME>_STORAGE_CRED` override), else `$KCI_STORAGE_CREDENTIALS`.
    pub fn storage_cred(&self, storage: &str) -> Option<Secret> {
        self.get_in(&format!("storage.{storage}"), "storage_cred")
            .and_then(value_string)
            .or_else(|| self.env.get("KCI_STORAGE_CREDENTIALS").cloned())
            .map(Secret)
    }

    /// The credentials of a runtime: `[runtime.<name>] user, runtime_token, callback_token`.
    pub fn runtime_credentials(&self, runtime: &str) -> RuntimeCredentials {
        RuntimeCredentials::from_settings(runtime, |section, key| {
            self.get_in(section, key).and_then(value_string)
        })
    }

    /// A `kci` default: `[kci.<group>.<command>] key`, then `[kci.<group>]`, then `[kci]`.
    pub fn kci_default(&self, group: &str, command: &str, key: &str) -> Option<Value> {
        [
            format!("kci.{group}.{command}"),
            format!("kci.{group}"),
            "kci".to_owned(),
        ]
        .iter()
        .find_map(|s| self.section(s).and_then(|t| t.get(key)).cloned())
    }

    /// A `kci` secret from `[kci.secrets]`, by dotted name (`api.<name>.token`,
    /// `storage.<name>.credentials`), written either as nested tables or as a quoted key.
    pub fn kci_secret(&self, name: &str) -> Option<Secret> {
        let secrets = self.section("kci.secrets")?;
        if let Some(v) = secrets.get(name) {
            return value_string(v.clone()).map(Secret);
        }
        let mut parts = name.split('.').peekable();
        let mut table = secrets;
        while let Some(part) = parts.next() {
            match (table.get(part), parts.peek()) {
                (Some(Value::Table(t)), Some(_)) => table = t,
                (Some(v), None) => return value_string(v.clone()).map(Secret),
                _ => return None,
            }
        }
        None
    }
}

fn value_string(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Integer(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        Value::Datetime(d) => Some(d.to_string()),
        Value::Array(_) | Value::Table(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[DEFAULT]
api_config = "docker-host"
storage_config = "docker-host"
verbose = true

[trigger]
poll_period = 60
timeout = 180.5

[scheduler]
output = "/tmp/kci/scheduler"

[storage.docker-host]
storage_cred = "/home/kernelci/.ssh/id_rsa_tarball"

[runtime.lava-collabora]
runtime_token = "lava-secret"
callback_token = "cb-secret"
user = "kernelci"

[kci]
api = "local"

[kci.node]
indent = 4

[kci.secrets]
api.local.token = "api-secret"
"#;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn sections_fallback_and_env_overrides() {
        let s = Settings::from_toml_str(TOML, Some(Path::new("kernelci.toml"))).expect("valid");
        assert_eq!(s.get_str("trigger", "poll_period").as_deref(), Some("60"));
        assert_eq!(
            s.get_str("trigger", "api_config").as_deref(),
            Some("docker-host")
        );
        assert_eq!(
            s.get_parsed::<f64>("trigger", "timeout").ok(),
            Some(Some(180.5))
        );
        assert_eq!(s.get_bool("tarball", "verbose").ok(), Some(Some(true)));
        assert_eq!(s.get_str("tarball", "kdir"), None);
        let e = s
            .get_parsed::<u32>("trigger", "timeout")
            .expect_err("not an int");
        assert!(
            e.to_string()
                .starts_with("kernelci.toml: trigger.timeout: invalid value"),
            "{e}"
        );

        let s = s.with_env(env(&[
            ("KCI_TRIGGER_POLL_PERIOD", "5"),
            ("KCI_DEFAULT_API_CONFIG", "prod"),
            ("KCI_API_TOKEN", "env-token"),
        ]));
        assert_eq!(s.get_str("trigger", "poll_period").as_deref(), Some("5"));
        assert_eq!(s.get_str("tarball", "api_config").as_deref(), Some("prod"));
        assert_eq!(
            s.api_token().map(|t| t.expose().to_owned()).as_deref(),
            Some("env-token")
        );
    }

    #[test]
    fn credentials_and_kci_sections() {
        let s = Settings::from_toml_str(TOML, None).expect("valid");
        assert_eq!(
            s.storage_cred("docker-host")
                .map(|c| c.expose().to_owned())
                .as_deref(),
            Some("/home/kernelci/.ssh/id_rsa_tarball")
        );
        assert_eq!(s.storage_cred("other"), None);
        let rc = s.runtime_credentials("lava-collabora");
        assert_eq!(rc.user.as_deref(), Some("kernelci"));
        assert_eq!(
            rc.runtime_token.as_ref().map(Secret::expose),
            Some("lava-secret")
        );
        assert_eq!(
            s.kci_default("node", "find", "indent")
                .and_then(|v| v.as_integer()),
            Some(4)
        );
        assert_eq!(
            s.kci_default("event", "send", "api")
                .and_then(|v| v.as_str().map(str::to_owned)),
            Some("local".into())
        );
        assert_eq!(
            s.kci_secret("api.local.token")
                .map(|t| t.expose().to_owned())
                .as_deref(),
            Some("api-secret")
        );
        // Secrets never show in Debug output.
        let debug = format!("{s:?} {rc:?}");
        for secret in ["lava-secret", "cb-secret", "api-secret", "id_rsa_tarball"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        assert!(debug.contains("runtime.lava-collabora"));
    }

    #[test]
    fn search_order_and_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "[trigger]\npoll_period = 7\n").expect("write");
        let s = Settings::load_with_env(
            None,
            env(&[("KCI_SETTINGS", file.to_str().unwrap_or_default())]),
        )
        .expect("found through KCI_SETTINGS");
        assert_eq!(s.path(), Some(file.as_path()));
        assert_eq!(s.get_str("trigger", "poll_period").as_deref(), Some("7"));
        let missing = dir.path().join("missing.toml");
        let e = Settings::load_with_env(Some(&missing), BTreeMap::new()).expect_err("missing");
        assert_eq!(e.kind, ConfigErrorKind::NotFound);
        std::fs::write(&file, "[trigger]\npoll_period = 7\nbroken =\n").expect("write");
        let e = Settings::load_with_env(Some(&file), BTreeMap::new()).expect_err("syntax");
        assert_eq!((e.kind, e.line), (ConfigErrorKind::Syntax, Some(3)));
        assert!(
            e.to_string()
                .starts_with(&format!("{}:3: ", file.display())),
            "{e}"
        );
    }
}
