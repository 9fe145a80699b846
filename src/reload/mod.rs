//! Live reload: the process's supervisor, which owns the running pipeline ([`Agent`]) and the
//! HTTP endpoint, and applies a changed configuration without losing or repeating a record.
//!
//! - `trigger`: SIGHUP and the watch of the configuration file's directory.
//!
//! A reload loads the configuration exactly as the start did (the file, `${VAR}`, `LOGSHIP_*`,
//! the command line's flags) and validates it. Then:
//!
//! 1. Invalid: every error is logged, the failure counted, the running pipeline untouched.
//! 2. The same effective configuration: nothing happens.
//! 3. A key that cannot change while running (`data_dir`): refused, as 1.
//! 4. A new `server.listen` is bound first: if it cannot be, refused, as 1.
//! 5. If anything the pipeline is built from changed, the pipeline is drained exactly as at
//!    shutdown (stop reading, deliver what is in flight, wait for the acknowledgements) and a
//!    new one takes over from its positions and its unfinished files: positions that move
//!    only on acknowledgement and idempotent ids (docs/ARCHITECTURE.md) make that lossless and
//!    free of repeats. If the new one cannot start (a certificate
//!    that cannot be read, say), the previous configuration starts again from the same
//!    positions and the reload counts as failed; if even that fails, the process exits 70 and
//!    its supervisor (the kubelet, systemd) restarts it.
//! 6. The endpoint moves to the new address, the log filter changes; `log.format` only applies
//!    at the next start (a warning says so).
//!
//! The endpoint stays up throughout: probes and `/metrics` answer during the drain.

pub mod trigger;

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, AgentError};
use crate::config::{self, Applies, LoadOptions, Loaded};
use crate::server::{Listener, Pipeline, Server, ServerError};
use crate::telemetry;
pub use trigger::{Cause, Triggers};

/// Errors starting the agent.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The pipeline cannot start.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The HTTP endpoint cannot listen on `server.listen`.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// A failed reload whose fallback to the previous configuration failed too: no pipeline runs.
#[derive(Debug, thiserror::Error)]
#[error("restarting the pipeline with the previous configuration after a failed reload: {0}")]
pub struct Fatal(#[source] pub AgentError);

/// The running agent: its configuration, its pipeline and its endpoint.
pub struct Supervisor {
    /// How the configuration was loaded, to load it again the same way.
    options: LoadOptions,
    /// The configuration running now.
    loaded: Loaded,
    agent: Agent,
    server: Server,
}

/// What a reload leaves.
enum Step {
    /// Running on (the new configuration, or the previous one).
    Running(Box<Supervisor>),
    /// The shutdown signal came during the drain: the pipeline is drained, the endpoint stopped.
    Stopped,
}

impl Supervisor {
    /// Binds the endpoint, starts the pipeline, then serves the endpoint. Must be called inside
    /// a tokio runtime.
    pub async fn start(loaded: Loaded, options: LoadOptions) -> Result<Supervisor, StartError> {
        // Before any stage runs: an address that cannot be bound stops the start cleanly.
        let listener = Listener::bind(loaded.settings.server.listen)?;
        let prepared = Agent::prepare(loaded.settings.clone()).await?;
        // Served once the positions are loaded (readiness says so from the first request), and
        // before the first file is read.
        let server = Server::start(listener, Pipeline::of(&loaded.settings, prepared.budget()));
        let agent = prepared.run();
        telemetry::config_loaded();
        Ok(Supervisor {
            options,
            loaded,
            agent,
            server,
        })
    }

    /// Runs until `shutdown` is cancelled (or a stage dies), applying reloads as `triggers` ask
    /// for them; then drains and stops the endpoint.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        mut triggers: Triggers,
    ) -> Result<(), Fatal> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.agent.failed() => break,
                Some(cause) = triggers.next() => {
                    match self.reload(cause, &shutdown).await? {
                        Step::Running(next) => self = *next,
                        Step::Stopped => return Ok(()),
                    }
                }
            }
        }
        tracing::info!("Shutting down.");
        self.agent.shutdown().await;
        self.server.stop().await;
        Ok(())
    }

    /// Loads the configuration again and applies it if it is valid and different.
    async fn reload(mut self, cause: Cause, shutdown: &CancellationToken) -> Result<Step, Fatal> {
        let new = match config::load(&self.options) {
            Ok(new) => new,
            Err(errors) => {
                for error in errors.errors() {
                    tracing::error!(error = %error, "The new configuration is invalid.");
                }
                telemetry::config_reload_failed("the new configuration is invalid");
                return Ok(Step::Running(Box::new(self)));
            }
        };
        let changes = config::compare(&self.loaded, &new);
        if changes.is_empty() {
            telemetry::config_unchanged(cause == Cause::Signal);
            return Ok(Step::Running(Box::new(self)));
        }
        let refused = changes.applying(Applies::Refused);
        if !refused.is_empty() {
            for key in refused {
                tracing::error!(key, "This setting cannot change while the agent runs; restart the agent to apply it.");
            }
            telemetry::config_reload_failed("a setting that cannot change while running changed");
            return Ok(Step::Running(Box::new(self)));
        }
        tracing::info!(changed = %changes.keys().join(", "), ?cause, "The configuration changed; applying it.");
        let began = Instant::now();
        let listener = if changes.any(Applies::Endpoint) {
            match Listener::bind(new.settings.server.listen) {
                Ok(listener) => Some(listener),
                Err(e) => {
                    tracing::error!(error = %e, "The new endpoint address cannot be used.");
                    telemetry::config_reload_failed("server.listen cannot be bound");
                    return Ok(Step::Running(Box::new(self)));
                }
            }
        } else {
            None
        };
        let mut drained = None;
        if changes.any(Applies::Pipeline) {
            let handover = self.agent.shutdown().await;
            drained = Some(began.elapsed());
            if shutdown.is_cancelled() {
                // Drained already: starting a pipeline only to drain it again would eat into
                // the grace period.
                tracing::info!("Shutdown signal received during the reload; not starting again.");
                self.server.stop().await;
                return Ok(Step::Stopped);
            }
            self.agent = match Agent::prepare_take_over(new.settings.clone(), handover).await {
                Ok(prepared) => prepared.run(),
                Err((e, handover)) => {
                    tracing::error!(error = %e, "Cannot start the pipeline with the new configuration; starting it again with the previous one.");
                    let previous = self.loaded.settings.clone();
                    let agent = Agent::prepare_take_over(previous, handover)
                        .await
                        .map_err(|(e, _)| Fatal(e))?
                        .run();
                    telemetry::config_reload_failed("the new pipeline cannot start");
                    return Ok(Step::Running(Box::new(Supervisor { agent, ..self })));
                }
            };
            self.server
                .show(Pipeline::of(&new.settings, self.agent.budget()));
        }
        if let Some(listener) = listener {
            self.server = self.server.move_to(listener).await;
        }
        if changes.any(Applies::LogFilter) && !telemetry::set_log_level(&new.settings.log.level) {
            tracing::info!("RUST_LOG is set and decides what is logged; log.level has no effect.");
        }
        let later = changes.applying(Applies::NextStart);
        if !later.is_empty() {
            tracing::warn!(keys = %later.join(", "), "These settings apply at the next start of the agent; the rest of the configuration is applied now.");
        }
        telemetry::config_reloaded(changes.keys(), drained, began.elapsed());
        self.loaded = new;
        Ok(Step::Running(Box::new(self)))
    }
}
