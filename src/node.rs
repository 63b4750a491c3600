//! The Kubernetes Node cordon guard: cordon (or taint) the node while a pass removes things, only
//! when we own the cordon, and release it on every path; lift a cordon of ours left by a crash;
//! post an Event on the Node with the figures of a pass. Knows nothing about Docker.
//!
//! The cordon is taken the way `kubectl cordon` takes it: GET the Node, then one strategic-merge
//! PATCH that sets `spec.unschedulable` (or appends our own `NoSchedule` taint) together with our
//! ownership annotation [`ANNOTATION`]. Nothing is sent when the node is already in the wanted
//! state. A node cordoned by someone else is cleaned but never uncordoned, and a release removes
//! only what we added and only while our annotation is still there.
//!
//! A fresh `kube::Client` is built for every pass, so a rotated kubelet client certificate is
//! picked up, with connect and request timeouts so no call can hang a pass.
//!
//! - `patch`: the pure decisions on a Node and the patches (unit-tested).
//! - `guard`: the GET-then-PATCH sequences that cordon, release and recover.
//! - `event`: the Event posted on the Node.
//! - `kubeconfig`: which kubeconfig, and the client built from it.
//! - `error`: [`Error`] (log lines print it with [`crate::error_chain`]).

mod error;
mod event;
mod guard;
mod kubeconfig;
mod patch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Config, CordonMode, OnCordonFailure};

pub use crate::error_chain as chain;
pub use error::{Error, KubeError};
pub use event::node_event;
pub use kubeconfig::{DEFAULT_KUBECONFIG, KUBELET_KUBECONFIG, Located, locate};
pub use patch::{ANNOTATION, Hold, LEGACY_ANNOTATION, TAINT_EFFECT, TAINT_KEY};

/// Our name as field manager, Event source and reporting component.
pub const COMPONENT: &str = "docker-image-cleaner";
/// Events about a Node live in `default`, as the kubelet's do.
pub const EVENT_NAMESPACE: &str = "default";

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

/// Timeouts and retry bounds of the API calls. The defaults keep any one call under 10 s and a
/// release under about 12 s; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// TCP and TLS connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of each request (sending it and reading the answer).
    pub request_timeout: Duration,
    /// Tries of one release before it is left to later ticks.
    pub release_tries: u32,
    /// Pause after the first failed try; doubled after each further one.
    pub release_backoff: Duration,
    /// Time limit of one release, all tries included.
    pub release_budget: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            release_tries: 3,
            release_backoff: Duration::from_millis(500),
            release_budget: Duration::from_secs(12),
        }
    }
}

/// What `describe()` reports besides a held cordon.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Ready,
    Waiting(Vec<PathBuf>),
    Failed(String),
}

#[derive(Debug, Clone, Copy)]
struct Held {
    hold: Hold,
    since: Instant,
}

/// Holds the cordon state across passes (a release that failed is retried on later ticks).
pub struct Cordoner {
    node: Option<String>,
    mode: CordonMode,
    setting: Option<PathBuf>,
    max_cordon: Duration,
    on_failure: OnCordonFailure,
    dry_run: bool,
    timing: Timing,
    /// The pass's client; dropped at the end of every pass and after a failed call.
    client: Option<kube::Client>,
    /// The kubeconfig last used, to log a change once.
    used: Option<PathBuf>,
    /// The Node's uid from this pass's GET, for the Event.
    node_uid: Option<String>,
    held: Option<Held>,
    /// A leftover of ours may be on the node: at start until a GET has looked, and after a cordon
    /// PATCH whose outcome is unknown.
    recovery_pending: bool,
    /// The max_cordon release was tried in this pass (not again between every removal).
    deadline_tried: bool,
    status: Status,
}

impl std::fmt::Debug for Cordoner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cordoner")
            .field("node", &self.node)
            .field("mode", &self.mode)
            .field("held", &self.held)
            .field("recovery_pending", &self.recovery_pending)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Cordoner {
    /// Builds the guard from the configuration; with no `node_name` every call is a no-op.
    pub fn new(config: &Config) -> Self {
        Self {
            node: config.node_name.clone().filter(|n| !n.is_empty()),
            mode: config.cordon_mode,
            setting: config.kubeconfig.clone(),
            max_cordon: config.max_cordon,
            on_failure: config.on_cordon_failure,
            dry_run: config.dry_run,
            timing: Timing::default(),
            client: None,
            used: None,
            node_uid: None,
            held: None,
            recovery_pending: config.node_name.as_ref().is_some_and(|n| !n.is_empty()),
            deadline_tried: false,
            status: Status::Ready,
        }
    }

    /// Replaces the default timeouts and retry bounds.
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// One line for `status` and `STATUS=`: whether cordoning is on and what it holds.
    pub fn describe(&self) -> String {
        let Some(node) = &self.node else {
            return "cordoning off (no node_name)".to_string();
        };
        if self.dry_run {
            return format!("node {node}: cordoning off (dry run)");
        }
        if let Some(held) = &self.held {
            let secs = held.since.elapsed().as_secs();
            return match &self.status {
                Status::Failed(e) => format!(
                    "node {node}: {} held for {secs} s, release failed, retrying every tick: {e}",
                    held.hold
                ),
                _ => format!("node {node}: {} held for {secs} s", held.hold),
            };
        }
        match &self.status {
            Status::Waiting(tried) => {
                format!("node {node}: waiting for kubeconfig ({})", list(tried))
            }
            Status::Failed(e) => format!("node {node}: last Kubernetes call failed: {e}"),
            Status::Ready => {
                let env = std::env::var_os("KUBECONFIG");
                let kubeconfig = match locate(self.setting.as_deref(), env.as_deref(), Path::exists)
                {
                    Located::Found(path) => path,
                    Located::Missing(tried) => {
                        return format!("node {node}: waiting for kubeconfig ({})", list(&tried));
                    }
                };
                let what = match self.mode {
                    CordonMode::None => "cordoning off (cordon_mode = none)",
                    CordonMode::Cordon => "cordon ready",
                    CordonMode::Taint => "taint ready",
                };
                format!("node {node}: {what} (kubeconfig {})", kubeconfig.display())
            }
        }
    }

    /// At start: lift a cordon of ours (or of the original tool's) left by a crash, with a warning.
    ///
    /// Returns an error when the kubeconfig is invalid ([`Error::is_config`]) or the API server
    /// could not be asked; recovery is then retried by [`Cordoner::retry_release`] every tick. A
    /// missing kubeconfig is not an error: [`Cordoner::describe`] says it is awaited.
    pub async fn recover(&mut self) -> Result<(), Error> {
        let Some(node) = self.node.clone() else {
            log::info!("cordoning is off: no node_name set, nothing touches Kubernetes");
            return Ok(());
        };
        match self.mode {
            CordonMode::None => log::info!(
                "cordon_mode = none: node {node} is never cordoned; a cordon of ours left behind is still lifted"
            ),
            CordonMode::Cordon | CordonMode::Taint => {}
        }
        let result = self.try_recover(&node).await;
        self.client = None;
        match result {
            Err(Error::NoKubeconfig { tried }) => {
                log::info!(
                    "no kubeconfig yet for node {node} (looked at {}): cordoning waits, retried every tick",
                    list(&tried)
                );
                self.status = Status::Waiting(tried);
                Ok(())
            }
            other => other,
        }
    }

    /// Before the first removal of a pass: cordon when we may.
    pub async fn begin_pass(&mut self) -> PassStart {
        self.deadline_tried = false;
        let Some(node) = self.node.clone() else {
            return PassStart::Proceed;
        };
        let want = match self.mode {
            _ if self.dry_run => return PassStart::Proceed,
            CordonMode::None => return PassStart::Proceed,
            CordonMode::Cordon => Hold::Unschedulable,
            CordonMode::Taint => Hold::Taint,
        };
        let Err(e) = self.try_cordon(&node, want).await else {
            return PassStart::Proceed;
        };
        self.record(&e);
        self.client = None;
        let why = chain(&e);
        match self.on_failure {
            OnCordonFailure::Clean => {
                log::warn!("{why}; cleaning uncordoned (on_cordon_failure = clean)");
                PassStart::Proceed
            }
            OnCordonFailure::Skip => {
                log::warn!("{why}; skipping this pass (on_cordon_failure = skip)");
                PassStart::Skip
            }
        }
    }

    /// Between two removals: uncordon early once `max_cordon` has passed; the pass goes on.
    pub async fn check_deadline(&mut self) {
        let (Some(held), Some(node)) = (self.held, self.node.clone()) else {
            return;
        };
        let elapsed = held.since.elapsed();
        if self.deadline_tried || elapsed < self.max_cordon {
            return;
        }
        self.deadline_tried = true;
        log::warn!(
            "node {node}: {} held for {:.1} s, over max_cordon {:.1} s: releasing it, the pass goes on uncordoned",
            held.hold,
            elapsed.as_secs_f64(),
            self.max_cordon.as_secs_f64()
        );
        self.settle().await;
    }

    /// At the end of a pass, on every path: release what we hold, then post the Event if any.
    pub async fn end_pass(&mut self, event: Option<NodeEvent>) {
        self.settle().await;
        if let Some(event) = event {
            self.post(&event).await;
        }
        self.client = None;
        self.node_uid = None;
    }

    /// At every tick: retry a release that failed earlier, or a recovery not yet done.
    pub async fn retry_release(&mut self) {
        self.settle().await;
        self.client = None;
    }

    /// True while we hold a cordon: during a pass, and after a release that failed until a
    /// retry succeeds.
    pub fn holds_cordon(&self) -> bool {
        self.held.is_some()
    }

    /// Releases what we hold (bounded retries), or finishes a pending recovery.
    async fn settle(&mut self) {
        let Some(node) = self.node.clone() else {
            return;
        };
        if self.dry_run {
            return;
        }
        if let Some(held) = self.held {
            let budget = self.timing.release_budget;
            let result = tokio::time::timeout(budget, self.release(&node, held))
                .await
                .unwrap_or(Err(Error::ReleaseTimeout {
                    node: node.clone(),
                    after: budget,
                }));
            match result {
                Ok(()) => {
                    self.held = None;
                    self.status = Status::Ready;
                }
                Err(e) => {
                    self.client = None;
                    self.record(&e);
                    log::error!("{}; still held, retrying every tick", chain(&e));
                }
            }
        } else if self.recovery_pending {
            match self.try_recover(&node).await {
                Ok(()) => {}
                Err(e @ Error::NoKubeconfig { .. }) => {
                    log::debug!("{}", chain(&e));
                    self.record(&e);
                }
                Err(e) => {
                    self.client = None;
                    self.record(&e);
                    log::warn!("{}; retrying every tick", chain(&e));
                }
            }
        }
    }

    /// The pass's client, built on first use from the kubeconfig found now.
    async fn connect(&mut self) -> Result<kube::Client, Error> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let env = std::env::var_os("KUBECONFIG");
        let path = match locate(self.setting.as_deref(), env.as_deref(), Path::exists) {
            Located::Found(path) => path,
            Located::Missing(tried) => return Err(Error::NoKubeconfig { tried }),
        };
        let timeouts = kubeconfig::Timeouts {
            connect: self.timing.connect_timeout,
            request: self.timing.request_timeout,
        };
        let client = kubeconfig::client(&path, timeouts).await?;
        if self.used.as_deref() != Some(path.as_path()) {
            log::info!("using kubeconfig {}", path.display());
            self.used = Some(path);
        }
        self.client = Some(client.clone());
        Ok(client)
    }

    fn record(&mut self, e: &Error) {
        self.status = match e {
            Error::NoKubeconfig { tried } => Status::Waiting(tried.clone()),
            other => Status::Failed(chain(other)),
        };
    }
}

fn list(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}
