//! logship: a node log agent for Kubernetes.
#![forbid(unsafe_code)]

pub mod buffer;
pub mod config;
pub mod parse;
pub mod record;
pub mod source;
pub mod telemetry;
pub mod timestamp;
