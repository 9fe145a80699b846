//! logship: a node log agent for Kubernetes.
// No unsafe code, but for one `unsafe impl Send` of a measured win (sink::elasticsearch::igzip).
#![deny(unsafe_code)]

pub mod ack;
pub mod agent;
pub mod buffer;
pub mod config;
pub mod credentials;
pub mod document;
pub mod enrich;
pub mod import;
pub mod journald;
pub mod parse;
pub mod process;
pub mod record;
pub mod reload;
pub mod server;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod status;
pub mod tail;
pub mod telemetry;
pub mod timestamp;
pub mod tls;
