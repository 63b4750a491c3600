//! The Kubernetes Node cordon guard: cordon (or taint) the node while a pass removes things, only
//! when we own the cordon, and release it on every path. Knows nothing about Docker.
//!
//! STUB (issue 2): every call is a no-op; issue 3 fills it in behind the same signatures.

use crate::config::Config;

/// Why a pass may not go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassStart {
    /// Clean (cordoned, or not, as the configuration allows).
    Proceed,
    /// Cordoning failed and `on_cordon_failure = "skip"`: wait for the next tick.
    Skip,
}

/// An Event to post on the Node at the end of a pass (the kubelet's `FreeDiskSpaceFailed` style).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// `Warning` when true, `Normal` otherwise.
    pub warning: bool,
    /// CamelCase reason, e.g. `ImagesRemoved` or `FreeDiskSpaceFailed`.
    pub reason: &'static str,
    /// One line with the figures.
    pub message: String,
}

/// Errors of the Kubernetes side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Placeholder until issue 3.
    #[error("kubernetes: {0}")]
    Other(String),
}

impl Error {
    /// True when the error comes from the configuration (an invalid kubeconfig): exit 78.
    pub fn is_config(&self) -> bool {
        false
    }
}

/// Holds the cordon state across passes (a release that failed is retried on later ticks).
#[derive(Debug)]
pub struct Cordoner {
    _node_name: Option<String>,
}

impl Cordoner {
    /// Builds the guard from the configuration; with no `node_name` every call is a no-op.
    pub fn new(config: &Config) -> Self {
        Self {
            _node_name: config.node_name.clone(),
        }
    }

    /// One line for `status` and `STATUS=`: whether cordoning is on and what it holds.
    pub fn describe(&self) -> String {
        "cordoning off".to_string()
    }

    /// At start: lift a cordon of ours (or of the original tool's) left by a crash.
    pub async fn recover(&mut self) -> Result<(), Error> {
        Ok(())
    }

    /// Before the first removal of a pass: cordon when we may.
    pub async fn begin_pass(&mut self) -> PassStart {
        PassStart::Proceed
    }

    /// Between two removals: uncordon early once `max_cordon_seconds` has passed.
    pub async fn check_deadline(&mut self) {}

    /// At the end of a pass, on every path: release what we hold, then post the Event if any.
    pub async fn end_pass(&mut self, _event: Option<NodeEvent>) {}

    /// At every tick: retry a release that failed earlier.
    pub async fn retry_release(&mut self) {}

    /// True while we hold a cordon we could not release yet.
    pub fn holds_cordon(&self) -> bool {
        false
    }
}
