//! Loading: from the command line's options to validated [`Settings`], or to every error at once.
//!
//! Layers, lowest to highest: the defaults, the file (parsed as TOML or YAML by its extension,
//! `${VAR}` substituted into its values), `LOGSHIP_*` variables, command-line overrides. The `config` crate
//! merges them; `schema` checks the keys and types of the result, `validate` its values. Every
//! stage reports all it finds, and only a file that could not be read or parsed stops the later
//! stages (what they would report about a half-read file would mislead). Loading reads the file
//! and, when `node_name` is empty and `NODE_NAME` unset, the hostname; nothing else.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use config::{FileFormat, Source};
use serde_json::Value;

use super::error::{ConfigError, ConfigErrors};
use super::layer::{self, Layer};
use super::raw::RawConfig;
use super::schema::Schema;
use super::substitute::substitute;
use super::validate::validate;
use super::{effective, env, Settings};

/// Where the hostname is read from, in order.
const HOSTNAME_FILES: [&str; 2] = ["/proc/sys/kernel/hostname", "/etc/hostname"];

/// What to load the configuration from.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The file (`--config`); `None` for the built-in defaults.
    pub path: Option<PathBuf>,
    /// Command-line settings, highest priority, applied in order: a dotted key and its value
    /// (`("tail.include", json!(["/a/*.log"]))`, `("data_dir", json!("/tmp/x"))`).
    pub overrides: Vec<(String, Value)>,
    /// The process environment: `LOGSHIP_*` overrides, `${VAR}` in the file, `NODE_NAME`.
    /// Tests pass their own.
    pub env: HashMap<String, String>,
}

/// A configuration that validated.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// What the agent runs with.
    pub settings: Settings,
    /// The merged configuration as the user would write it, `node_name` resolved: what
    /// [`Loaded::effective_toml`] prints, and what a reload compares (`change`).
    pub(super) effective: RawConfig,
}

impl Loaded {
    /// The effective configuration (defaults, file, environment and flags merged) as TOML in
    /// the shape of the file, every key present, secrets masked.
    pub fn effective_toml(&self) -> String {
        effective::render(&self.effective)
    }
}

/// Loads and validates the configuration, reporting every error found.
pub fn load(options: &LoadOptions) -> Result<Loaded, ConfigErrors> {
    let schema = Schema::new();
    let mut errors = Vec::new();

    let file = match &options.path {
        Some(path) => match read_file(path, &options.env, &schema) {
            Ok(layer) => Some(layer),
            Err(file_errors) => {
                errors.extend(file_errors);
                None
            }
        },
        None => None,
    };
    let (env_settings, env_errors) = env::settings(&options.env, &schema);
    errors.extend(env_errors);
    if options.path.is_some() && file.is_none() {
        return Err(ConfigErrors::new(errors));
    }

    let mut layers = vec![Layer::new("the default", schema.defaults().clone())];
    layers.extend(file);
    for setting in env_settings {
        layers.extend(Layer::single(setting.var, &setting.key, setting.value));
    }
    for (key, value) in &options.overrides {
        match Layer::single("the command line", key, value.clone()) {
            Some(layer) => layers.push(layer),
            None => errors.push(ConfigError::invalid(
                key.clone(),
                "is not a key (set on the command line)",
            )),
        }
    }
    let (tree, origins) = match merge(layers) {
        Ok(merged) => merged,
        Err(e) => {
            errors.push(e);
            return Err(ConfigErrors::new(errors));
        }
    };

    let checked = schema.check(&tree);
    errors.extend(checked.errors);
    let mut raw = checked.raw;
    let fallback = if raw.node_name.trim().is_empty() {
        fallback_node_name(&options.env)
    } else {
        None
    };
    // Inside a pod the kubelet sets this for every container; `kubernetes.enabled = "auto"`
    // follows it.
    let in_cluster = options.env.contains_key("KUBERNETES_SERVICE_HOST");
    match validate(&raw, fallback.as_deref(), in_cluster) {
        Ok(settings) if errors.is_empty() => {
            raw.node_name.clone_from(&settings.node_name);
            return Ok(Loaded {
                settings,
                effective: raw,
            });
        }
        Ok(_) => {}
        Err(value_errors) => errors.extend(value_errors),
    }
    for error in &mut errors {
        let origin = error.key().and_then(|key| origin_of(&origins, key));
        error.set_origin(origin);
    }
    Err(ConfigErrors::new(errors))
}

/// Reads, substitutes and parses the file into a layer.
fn read_file(
    path: &Path,
    env: &HashMap<String, String>,
    schema: &Schema,
) -> Result<Layer, Vec<ConfigError>> {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => FileFormat::Toml,
        Some("yaml" | "yml") => FileFormat::Yaml,
        _ => {
            return Err(vec![ConfigError::UnknownFormat {
                path: path.to_path_buf(),
            }])
        }
    };
    let text = std::fs::read_to_string(path).map_err(|source| {
        vec![ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }]
    })?;
    let substituted = substitute(&text, env, path)?;
    let text = &substituted.text;
    let parsed = config::File::from_str(text, format)
        .collect()
        .map_err(|e| vec![syntax_error(path, text, e)])?;
    let (mut tree, _) = layer::to_json(&parsed);
    let errors = substituted.fill(&mut tree, schema);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Layer::new(path.display().to_string(), tree))
}

/// A parse failure as one line naming the file and, where the parser says, the line.
fn syntax_error(path: &Path, text: &str, error: config::ConfigError) -> ConfigError {
    let source: Box<dyn std::error::Error + Send + Sync> = match error {
        config::ConfigError::FileParse { cause, .. } => cause,
        other => Box::new(other),
    };
    // TOML errors draw the line with a caret over several lines; keep the message and turn the
    // span into a line and column. YAML errors are one line that already names the line.
    let (position, message) = match source.downcast_ref::<toml::de::Error>() {
        Some(e) => (
            e.span().map(|span| line_and_column(text, span.start)),
            e.message().trim().replace('\n', "; "),
        ),
        None => (None, source.to_string().trim().replace('\n', "; ")),
    };
    ConfigError::Syntax {
        path: path.to_path_buf(),
        position,
        message,
        source,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    // Parsers report spans on character boundaries; anything else counts as the end.
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A merged tree, and the origin of every key in it.
type Merged = (serde_json::Map<String, Value>, BTreeMap<String, String>);

/// Merges the layers, lowest first, into one tree and the origin of every key.
fn merge(layers: Vec<Layer>) -> Result<Merged, ConfigError> {
    let mut builder = config::Config::builder();
    for layer in layers {
        builder = builder.add_source(layer);
    }
    let merged = builder
        .build()
        .and_then(|c| c.collect())
        .map_err(ConfigError::Merge)?;
    Ok(layer::to_json(&merged))
}

/// Where a key's value came from; for a table, where its first key came from.
fn origin_of<'a>(origins: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    origins.get(key).map(String::as_str).or_else(|| {
        let prefix = format!("{key}.");
        origins
            .range(prefix.clone()..)
            .next()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.as_str())
    })
}

/// `node_name` when the configuration leaves it empty: `NODE_NAME` (the downward API's
/// `spec.nodeName` in a DaemonSet), else the hostname.
fn fallback_node_name(env: &HashMap<String, String>) -> Option<String> {
    let from_env = env
        .get("NODE_NAME")
        .map(|n| n.trim())
        .filter(|n| !n.is_empty());
    from_env.map(str::to_string).or_else(|| {
        HOSTNAME_FILES.iter().find_map(|file| {
            let name = std::fs::read_to_string(file).ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
    })
}
