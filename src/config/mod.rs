//! Configuration: from a file, the environment and the command line to validated [`Settings`].
//!
//! # Layout
//!
//! - `raw`: the configuration as written, one documented serde struct per table, with the
//!   defaults. The keys are the fields: nothing else lists them.
//! - `units`: human-readable sizes and durations.
//! - `substitute`: `${VAR}` in the file, substituted into its parsed values.
//! - `env`: `LOGSHIP_*` variables as settings.
//! - `layer`: one layer of values as a `config` crate source, and back.
//! - `schema`: the known keys; unknown keys and wrong types in a merged tree.
//! - `elasticsearch`: the `[output.elasticsearch]` section, validated.
//! - `journald`: the `[journald]` section, validated (matches parsed).
//! - `kubernetes`: the `[kubernetes]` section, validated (enrichment on or off).
//! - `multiline`: the `[multiline]` section, validated (rules compiled).
//! - `processing`: the `[processing]` section, validated (filters compiled, hints parsed).
//! - `validate`: `RawConfig` -> [`Settings`], every range and cross-key rule, pure.
//! - `effective`: the effective configuration as TOML, secrets masked.
//! - `load`: the steps in order; [`load`] is the entry point.
//! - `change`: what a reloaded configuration changes, and whether it can be applied live.
//! - `error`: [`ConfigError`], and [`ConfigErrors`] that carries all of them.
//! - `settings`: the validated, typed [`Settings`] the agent is built from.

mod change;
mod effective;
mod elasticsearch;
mod env;
mod error;
mod journald;
mod kubernetes;
mod layer;
mod load;
mod multiline;
mod processing;
mod raw;
mod schema;
mod settings;
mod substitute;
#[cfg(test)]
mod tests;
mod units;
mod validate;

pub use change::{compare, Applies, Changes};
pub use error::{ConfigError, ConfigErrors};
pub use load::{load, LoadOptions, Loaded};
pub use settings::*;
