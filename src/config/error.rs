//! What can be wrong with a configuration. Loading never stops at the first problem: every stage
//! collects what it finds, and [`ConfigErrors`] carries all of them to `main`, which prints them
//! one per line and exits 64. Every error names what the user has to change: a file and a line,
//! an environment variable, or a dotted key (with where its value came from).

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("reading configuration file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file's name ends in nothing we know how to parse.
    #[error(
        "configuration file {}: unknown format; the name must end in .toml, .yaml or .yml",
        .path.display()
    )]
    UnknownFormat { path: PathBuf },

    /// The file is not valid TOML or YAML.
    #[error("parsing configuration file {}{}: {message}", .path.display(), at_line(*.position))]
    Syntax {
        path: PathBuf,
        /// Line and column (1-based), when the parser tells them.
        position: Option<(usize, usize)>,
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// `${VAR}` names a variable that is not set, and gives no default.
    #[error(
        "configuration file {}, line {line}: ${{{var}}} is not set and has no default \
         (write ${{{var}:-default}} to give one)",
        .path.display()
    )]
    UnsetVariable {
        path: PathBuf,
        line: usize,
        var: String,
    },

    /// A `${` that is not a well-formed reference.
    #[error("configuration file {}, line {line}: {message}", .path.display())]
    BadReference {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// A `LOGSHIP_*` variable that names no configuration key.
    #[error("environment variable {var}: names no configuration key{}", did_you_mean(.suggestion))]
    UnknownVariable {
        var: String,
        /// The variable for the closest key, when one is close enough to be a likely typo.
        suggestion: Option<String>,
    },

    /// A `LOGSHIP_*` value that cannot be read as its key's type.
    #[error("environment variable {var} ({key}): {message}")]
    VariableValue {
        var: String,
        key: String,
        message: String,
    },

    /// A key the configuration does not have, at any level.
    #[error("{key}: unknown key{}{}", did_you_mean(.suggestion), from(.origin))]
    UnknownKey {
        /// The full dotted key (`tail.max_line_byte`).
        key: String,
        /// The closest known key, when one is close enough to be a likely typo.
        suggestion: Option<String>,
        /// Where the key was set: a file, a variable, the command line.
        origin: Option<String>,
    },

    /// A value of the wrong type, or one outside what the key allows. Rules between keys are
    /// reported against one key and name the others in the message.
    #[error("{key}: {message}{}", from(.origin))]
    Invalid {
        key: String,
        message: String,
        /// Where the value came from: a file, a variable, the command line, the default.
        origin: Option<String>,
    },

    /// The `config` crate failed to merge the layers. Our layers are plain trees, so this is
    /// not expected; it is reported rather than unwrapped all the same.
    #[error("merging configuration layers: {0}")]
    Merge(#[source] config::ConfigError),
}

impl ConfigError {
    /// A value error against `key`; the loader fills in the origin.
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
            origin: None,
        }
    }

    /// The dotted configuration key this error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::Invalid { key, .. }
            | ConfigError::VariableValue { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Records where the value of this error's key came from, unless already known.
    pub(crate) fn set_origin(&mut self, from: Option<&str>) {
        if let ConfigError::UnknownKey { origin, .. } | ConfigError::Invalid { origin, .. } = self {
            if origin.is_none() {
                *origin = from.map(str::to_string);
            }
        }
    }
}

fn at_line(position: Option<(usize, usize)>) -> String {
    position.map_or_else(String::new, |(line, column)| {
        format!(", line {line}, column {column}")
    })
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map_or_else(String::new, |s| format!("; did you mean {s}?"))
}

fn from(origin: &Option<String>) -> String {
    origin
        .as_ref()
        .map_or_else(String::new, |o| format!(" (from {o})"))
}

/// Everything wrong with a configuration, in the order found: the file, the environment, then
/// the keys. Displayed one error per line.
#[derive(Debug)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// Wraps a non-empty list of errors.
    pub(crate) fn new(errors: Vec<ConfigError>) -> Self {
        debug_assert!(!errors.is_empty(), "ConfigErrors without an error");
        ConfigErrors(errors)
    }

    /// Every error, in the order found.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
