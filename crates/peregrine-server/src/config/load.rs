//! Loading the configuration: defaults < TOML file < environment < flags.
//!
//! Every layer is turned into key paths in one TOML table, which is then deserialized into
//! [`Config`] with `serde_path_to_error`: an unknown key or a bad value is reported with its
//! full path, the layer it came from, what was expected and, for a typo, the nearest key.
//!
//! * File: `--config PATH`, or `PEREGRINE_CONFIG=PATH`.
//! * Environment: `PEREGRINE_<KEY>`, with `__` between nested keys:
//!   `PEREGRINE_LISTEN=0.0.0.0:8080`, `PEREGRINE_CLIENT__PING_INTERVAL=30s`,
//!   `PEREGRINE_CHANNELS__NAMED__CHAT__PRESENCE=true`. Values parse as TOML when they can
//!   (numbers, booleans, `["a","b"]`) and are strings otherwise.
//! * Flags: `--set key.path=value` (same value rule) and the typed flags of `peregrine
//!   serve`, which become key paths too.
//!
//! Without a file the base is [`Config::development`], else [`Config::default`];
//! `development = true|false` in any layer chooses explicitly.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use toml::{Table, Value};

use super::Config;

/// Where configuration comes from, lowest precedence first.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file, if any (else `PEREGRINE_CONFIG` from `env`).
    pub file: Option<PathBuf>,
    /// Environment variables; only `PEREGRINE_*` ones are used.
    pub env: Vec<(String, String)>,
    /// `key.path=value` overrides from flags, in order.
    pub overrides: Vec<String>,
}

impl Sources {
    /// The process environment, no file, no overrides.
    pub fn from_env() -> Sources {
        Sources { env: std::env::vars().collect(), ..Sources::default() }
    }
}

/// The configuration is unusable. The message names the key, where it was set and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Key path → where it was set, for error messages.
type Origins = BTreeMap<String, String>;

fn parse_value(raw: &str) -> Value {
    // A bare word is a string; numbers, booleans, arrays and quoted strings parse as TOML.
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(raw.to_owned())),
        Err(_) => Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut current = table;
    for (i, key) in parents.iter().enumerate() {
        let entry = current.entry(key.clone()).or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(t) => t,
            _ => return Err(format!("`{}` is not a section", path[..=i].join("."))),
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

fn merge(base: &mut Table, layer: Table, prefix: &str, source: &str, origins: &mut Origins) {
    for (key, value) in layer {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(l)) => merge(b, l, &path, source, origins),
            (_, value) => {
                record(&value, &path, source, origins);
                base.insert(key, value);
            }
        }
    }
}

fn record(value: &Value, path: &str, source: &str, origins: &mut Origins) {
    origins.insert(path.to_owned(), source.to_owned());
    if let Value::Table(t) = value {
        for (k, v) in t {
            record(v, &format!("{path}.{k}"), source, origins);
        }
    }
}

impl Config {
    /// Loads the configuration from `sources` and checks it.
    ///
    /// ```
    /// use peregrine_server::config::{Config, Sources};
    /// let sources = Sources {
    ///     env: vec![("PEREGRINE_CLIENT__PING_INTERVAL".into(), "30s".into())],
    ///     overrides: vec!["listen=127.0.0.1:9000".into()],
    ///     ..Sources::default()
    /// };
    /// let config = Config::load(&sources).unwrap();
    /// assert!(config.development, "no file: the development base");
    /// assert_eq!(config.client.ping_interval.as_secs(), 30);
    /// assert_eq!(config.listen.port(), 9000);
    ///
    /// let typo = Sources { overrides: vec!["client.ping_intervl=30s".into()], ..Sources::default() };
    /// let error = Config::load(&typo).unwrap_err().to_string();
    /// assert!(error.contains("client.ping_intervl") && error.contains("did you mean `ping_interval`"), "{error}");
    /// ```
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut origins = Origins::new();
        let mut layers: Vec<(Table, String)> = Vec::new();

        let file = sources.file.clone().or_else(|| {
            sources.env.iter().find(|(k, _)| k == "PEREGRINE_CONFIG").map(|(_, v)| PathBuf::from(v))
        });
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!("cannot read the configuration file {}: {e}", path.display()))
            })?;
            let table: Table = text.parse().map_err(|e: toml::de::Error| {
                ConfigError(format!("{} is not valid TOML: {e}", path.display()))
            })?;
            layers.push((table, path.display().to_string()));
        }
        for (key, raw) in &sources.env {
            let Some(name) = key.strip_prefix("PEREGRINE_") else { continue };
            if name == "CONFIG" || name.is_empty() {
                continue;
            }
            let path: Vec<String> = name.split("__").map(str::to_ascii_lowercase).collect();
            let mut table = Table::new();
            set_path(&mut table, &path, parse_value(raw)).map_err(|e| ConfigError(format!("{key}: {e}")))?;
            layers.push((table, format!("environment variable {key}")));
        }
        for item in &sources.overrides {
            let (key, raw) = item.split_once('=').ok_or_else(|| {
                ConfigError(format!(
                    "--set {item:?}: expected KEY=VALUE, e.g. --set client.ping_interval=30s"
                ))
            })?;
            let path: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
            let mut table = Table::new();
            set_path(&mut table, &path, parse_value(raw.trim()))
                .map_err(|e| ConfigError(format!("--set {key}: {e}")))?;
            layers.push((table, format!("flag --set {key}")));
        }

        let development = layers
            .iter()
            .rev()
            .find_map(|(t, _)| t.get("development").and_then(Value::as_bool))
            .unwrap_or(file.is_none());
        let base = if development { Config::development() } else { Config::default() };
        let mut merged = Table::try_from(&base).map_err(|e| ConfigError(format!("internal: {e}")))?;
        for (layer, source) in layers {
            merge(&mut merged, layer, "", &source, &mut origins);
        }
        let config: Config =
            serde_path_to_error::deserialize(Value::Table(merged)).map_err(|e| describe(e, &origins))?;
        config.validate()?;
        Ok(config)
    }
}

/// Turns a deserialization error into a message with the key, its source and a fix.
fn describe(e: serde_path_to_error::Error<toml::de::Error>, origins: &Origins) -> ConfigError {
    let path = e.path().to_string();
    let inner = e.inner().message().to_owned();
    if let Some(rest) = inner.strip_prefix("unknown field `") {
        let (field, rest) = rest.split_once('`').unwrap_or((rest, ""));
        let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
        let full = if path == "." || path.is_empty() {
            field.to_owned()
        } else if path == field || path.ends_with(&format!(".{field}")) {
            path.clone()
        } else {
            format!("{path}.{field}")
        };
        let nearest = expected
            .iter()
            .map(|c| (strsim::levenshtein(field, c), *c))
            .min()
            .filter(|(d, _)| *d <= 3)
            .map(|(_, c)| format!(" did you mean `{c}`?"))
            .unwrap_or_default();
        let source = origins.get(&full).map(|s| format!(" (in {s})")).unwrap_or_default();
        return ConfigError(format!(
            "unknown key `{full}`{source}:{nearest} the keys here are: {}",
            expected.join(", ")
        ));
    }
    let source = origins.get(&path).map(|s| format!(" (in {s})")).unwrap_or_default();
    let hint = if inner.contains("duration") || inner.contains("time unit") {
        " (durations are written like \"25s\", \"500ms\", \"2m\")"
    } else {
        ""
    };
    ConfigError(format!(
        "bad value for `{path}`{source}: {inner}{hint}; see docs/configuration.md for the key"
    ))
}
