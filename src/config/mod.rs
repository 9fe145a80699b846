//! Configuration: loading, validation and the typed settings.

mod settings;

pub use settings::*;
