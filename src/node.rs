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
//! One `kube::Client` is kept between calls and passes (`connection`): rebuilt when the
//! kubeconfig or a file it names changes (a rotated kubelet client certificate), when an exec
//! plugin's credential expires, at the next pass for a plugin credential without expiry, and after
//! a 401. Every call of the guard has a hard time limit, [`Cordoner::max_call_time`] at most, so the
//! daemon can promise the watchdog to be back in time.
//!
//! With `fleet_max_cordoned` = N > 0 the cordon needs a fleet slot first: one of N Leases in
//! `fleet_namespace` (`lease`, `slot`), held from before the cordon until after the uncordon, so
//! that at most N nodes of the cluster are cordoned for cleaning at once. Without a free slot
//! [`Cordoner::begin`] answers [`PassStart::NoSlot`] and the pass waits (in `cycle`), unless
//! usage is critical: then it cleans without a slot and without cordoning, with a Warning Event.
//!
//! - `patch`: the pure decisions on a Node and the patches (unit-tested).
//! - `lifecycle`: what we know of our cordon, and every transition in one table.
//! - `held`: [`CordonClock`], how long we have held the node, for the metrics.
//! - `api`: escaped request URLs, and `update`, the read-decide-send-retry shape.
//! - `guard`: cordon, release and recover, through `update`.
//! - `event`: the Event posted on the Node.
//! - `lease`: the pure half of fleet slots (what a slot Lease means, what we write to it).
//! - `slot`: taking, renewing (a small task) and releasing a slot; slots left by a crash.
//! - `kubeconfig`: which kubeconfig, what it says, and the client built from it.
//! - `credential`, `exec`, `redact`: the user's credential, exec plugins, and keeping secrets out
//!   of logs.
//! - `connection`: the cached client.
//! - `error`: [`Error`] (log lines print it with [`crate::error_chain`]).

mod api;
mod connection;
mod credential;
mod error;
mod event;
mod exec;
mod guard;
mod held;
mod kubeconfig;
mod lease;
mod lifecycle;
mod patch;
mod redact;
mod slot;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, CordonMode, OnCordonFailure};

use connection::Link;
use lease::WithoutSlot;
use lifecycle::{Lifecycle, Transition};
use slot::{Fleet, Taken};

pub use crate::error_chain as chain;
pub use api::is_subdomain;
pub use credential::CredentialError;
pub use error::{Error, KubeError, Verb};
pub use event::node_event;
pub use exec::PluginError;
pub use held::CordonClock;
pub use kubeconfig::{DEFAULT_KUBECONFIG, KUBELET_KUBECONFIG, Located, locate};
pub use lease::{SLOT_PREFIX, skew_margin, slot_name};
pub use patch::{ANNOTATION, Hold, LEGACY_ANNOTATION, TAINT_EFFECT, TAINT_KEY};
pub use redact::redact;

/// Our name as field manager, Event source and reporting component.
pub const COMPONENT: &str = "docker-image-cleaner";
/// Events about a Node live in `default`, as the kubelet's do.
pub const EVENT_NAMESPACE: &str = "default";

/// Why a pass may not go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassStart {
    /// Clean (cordoned, or not, as the configuration allows).
    Proceed,
    /// Cordoning (or taking a fleet slot) failed and `on_cordon_failure = "skip"`: wait for the
    /// next tick.
    Skip,
    /// Every fleet slot is held (`N of N held by …`): nothing was cordoned; try again later.
    NoSlot(String),
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

/// Timeouts and retry bounds of the API calls. Every public call of [`Cordoner`] is cut short
/// at its limit, whatever the API server or a credential plugin does: see
/// [`Cordoner::max_call_time`]. Tests shorten them.
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
    /// Time limit of one release, all tries and the credential included.
    pub release_budget: Duration,
    /// Time limit of an exec credential plugin; it is killed then.
    pub exec_timeout: Duration,
    /// Time limit of one cordon, recovery or Event post, the credential included.
    pub call_budget: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            release_tries: 3,
            release_backoff: Duration::from_millis(500),
            release_budget: Duration::from_secs(12),
            exec_timeout: Duration::from_secs(10),
            call_budget: Duration::from_secs(15),
        }
    }
}

/// The outcome of the last call, for `describe()` (besides what the lifecycle says).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Report {
    Ready,
    Waiting(Vec<PathBuf>),
    NoCredential(String),
    Failed(String),
}

/// The guard of one node: cordons around passes, releases on every path, recovers leftovers.
/// Holds the cordon state across passes (a release that failed is retried on later ticks).
pub struct Cordoner {
    node: Option<String>,
    mode: CordonMode,
    setting: Option<PathBuf>,
    max_cordon: Duration,
    on_failure: OnCordonFailure,
    dry_run: bool,
    timing: Timing,
    /// What we know of our cordon; changed only through [`Lifecycle::next`].
    life: Lifecycle,
    /// The last call's outcome.
    report: Report,
    /// The cached client and credential.
    link: Link,
    /// The Node's uid from this pass's GET, for the Event.
    pass_uid: Option<String>,
    /// How long we have held the node, kept in step with `life` by [`Cordoner::apply`].
    clock: CordonClock,
    /// The fleet slots, when `fleet_max_cordoned` > 0 and this node cordons.
    fleet: Option<Fleet>,
}

impl std::fmt::Debug for Cordoner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cordoner")
            .field("node", &self.node)
            .field("mode", &self.mode)
            .field("life", &self.life)
            .field("report", &self.report)
            .field("slot", &self.slot())
            .finish_non_exhaustive()
    }
}

impl Cordoner {
    /// Builds the guard from the configuration; with no `node_name` every call is a no-op.
    pub fn new(config: &Config) -> Self {
        let node = config.node_name.clone().filter(|n| !n.is_empty());
        Self {
            life: match node {
                // Until a GET has looked, a cordon of ours may be left from a crash; a name that
                // is not a Node name never reaches a URL (recover() says so).
                Some(ref n) if is_subdomain(n) => Lifecycle::RecoveryPending,
                _ => Lifecycle::Idle,
            },
            mode: config.cordon_mode,
            setting: config.kubeconfig.clone(),
            max_cordon: config.max_cordon,
            on_failure: config.on_cordon_failure,
            dry_run: config.dry_run,
            timing: Timing::default(),
            report: Report::Ready,
            link: Link::default(),
            pass_uid: None,
            clock: CordonClock::default(),
            fleet: Fleet::new(config, node.as_deref()),
            node,
        }
    }

    /// Keeps counting on `clock` (the previous guard's, when the configuration is reloaded).
    /// Only for a guard that holds nothing yet.
    pub fn with_clock(mut self, clock: CordonClock) -> Self {
        self.clock = clock;
        self
    }

    /// How long we have held the node cordoned, and whether we hold it now (shared: the
    /// metrics read it while a pass runs).
    pub fn clock(&self) -> CordonClock {
        self.clock.clone()
    }

    /// Replaces the default timeouts and retry bounds.
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// The longest any one call of the guard (`recover`, `begin`, `check_deadline`,
    /// `end_pass`, `retry_release`) can take: three calls each cut short at its limit (`begin`:
    /// a slot, the cordon and the slot's release after a failed cordon; `end_pass`: the release,
    /// the slot's, and the Event). The daemon extends its watchdog promise by this before
    /// calling the guard.
    pub fn max_call_time(&self) -> Duration {
        self.timing.release_budget.max(self.timing.call_budget) * 3
    }

    /// One line for `status` and `STATUS=`: whether cordoning is on and what it holds (and the
    /// fleet slot, with slots).
    pub fn describe(&self) -> String {
        let cordon = self.describe_cordon();
        match &self.fleet {
            Some(f) => format!("{cordon}; {}", f.describe()),
            None => cordon,
        }
    }

    fn describe_cordon(&self) -> String {
        let Some(node) = &self.node else {
            return "cordoning off (no node_name)".to_string();
        };
        if self.dry_run {
            return format!("node {node}: cordoning off (dry run)");
        }
        match &self.life {
            Lifecycle::Held { hold, since, .. } => {
                return format!(
                    "node {node}: {hold} held for {} s",
                    since.elapsed().as_secs()
                );
            }
            Lifecycle::ReleaseFailed { hold, since, error } => {
                return format!(
                    "node {node}: {hold} held for {} s, release failed, retrying every tick: {error}",
                    since.elapsed().as_secs()
                );
            }
            Lifecycle::Idle | Lifecycle::RecoveryPending => {}
        }
        match &self.report {
            Report::Waiting(tried) => {
                format!("node {node}: waiting for kubeconfig ({})", list(tried))
            }
            Report::NoCredential(e) => {
                format!("node {node}: no Kubernetes credential, tried again every pass: {e}")
            }
            Report::Failed(e) => format!("node {node}: last Kubernetes call failed: {e}"),
            Report::Ready => {
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
    /// Returns an error when the kubeconfig or `node_name` is invalid ([`Error::is_config`]), or
    /// the API server or a credential could not be had (transient); recovery is then retried by
    /// [`Cordoner::retry_release`] every tick. A missing kubeconfig is not an error:
    /// [`Cordoner::describe`] says it is awaited.
    pub async fn recover(&mut self) -> Result<(), Error> {
        let Some(node) = self.node.clone() else {
            log::info!("cordoning is off: no node_name set, nothing touches Kubernetes");
            return Ok(());
        };
        if self.mode == CordonMode::None {
            log::info!(
                "cordon_mode = none: node {node} is never cordoned; a cordon of ours left behind is still lifted"
            );
        }
        let result = self.bounded_recover(&node).await;
        if result.is_ok() && self.life == Lifecycle::Idle {
            self.settle_slots(&node).await;
        }
        self.link.end_pass();
        match result {
            Err(Error::NoKubeconfig { tried }) => {
                log::info!(
                    "no kubeconfig yet for node {node} (looked at {}): cordoning waits, retried every tick",
                    list(&tried)
                );
                self.report = Report::Waiting(tried);
                Ok(())
            }
            Err(e) => {
                self.record(&e);
                Err(e)
            }
            Ok(()) => Ok(()),
        }
    }

    /// Before the first removal of a pass that is not critical: [`Cordoner::begin`].
    pub async fn begin_pass(&mut self) -> PassStart {
        self.begin(false).await
    }

    /// Before the first removal of a pass: take a fleet slot (with slots), then cordon, when
    /// we may. Every slot held: [`PassStart::NoSlot`], unless the pass is `critical` (at or above
    /// the critical watermark): then it proceeds without a slot and without cordoning, and a
    /// Warning Event says so. A slot that cannot be had (403, the API server away) is a cordon
    /// failure: `on_cordon_failure` decides, and a pass that goes on is not cordoned.
    pub async fn begin(&mut self, critical: bool) -> PassStart {
        let start = self.begin_unpublished(critical).await;
        self.publish_slot();
        start
    }

    async fn begin_unpublished(&mut self, critical: bool) -> PassStart {
        self.apply(Transition::PassBegins);
        let Some(node) = self.node.clone() else {
            return PassStart::Proceed;
        };
        let want = match self.mode {
            _ if self.dry_run => return PassStart::Proceed,
            CordonMode::None => return PassStart::Proceed,
            CordonMode::Cordon => Hold::Unschedulable,
            CordonMode::Taint => Hold::Taint,
        };
        if self.fleet.is_some()
            && self.life.held().is_none()
            && let Some(start) = self.begin_slot(&node, critical).await
        {
            return start;
        }
        let budget = self.timing.call_budget;
        let result = tokio::time::timeout(budget, self.cordon(&node, want))
            .await
            .unwrap_or_else(|_| Err(timed_out("cordoning", &node, budget)));
        // A slot is held only while our cordon is (or may be) on the node: after someone
        // else's cordon, or a cordon refused, it goes at once.
        if self.life == Lifecycle::Idle {
            self.release_slot(&node).await;
        }
        let Err(e) = result else {
            return PassStart::Proceed;
        };
        self.record(&e);
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

    /// Between two removals: uncordon early once `max_cordon` has passed, or once the fleet
    /// slot was lost; the pass goes on.
    pub async fn check_deadline(&mut self) {
        let (Some((hold, since)), Some(node)) = (self.life.held(), self.node.clone()) else {
            return;
        };
        if self.slot_lost() && self.life.deadline_due() {
            self.apply(Transition::DeadlineTried);
            log::warn!(
                "node {node}: lost its cleaning slot while holding {hold}: releasing it, the pass goes on uncordoned"
            );
            self.settle().await;
            return self.publish_slot();
        }
        let elapsed = since.elapsed();
        if !self.life.deadline_due() || elapsed < self.max_cordon {
            return;
        }
        self.apply(Transition::DeadlineTried);
        log::warn!(
            "node {node}: {hold} held for {:.1} s, over max_cordon {:.1} s: releasing it, the pass goes on uncordoned",
            elapsed.as_secs_f64(),
            self.max_cordon.as_secs_f64()
        );
        self.settle().await;
        self.publish_slot();
    }

    /// At the end of a pass, on every path: release what we hold (the cordon, then the slot),
    /// then post the Event if any.
    pub async fn end_pass(&mut self, event: Option<NodeEvent>) {
        self.finish_wait();
        self.settle().await;
        if let Some(event) = event {
            self.post(&event).await;
        }
        self.link.end_pass();
        self.pass_uid = None;
        self.publish_slot();
    }

    /// At every tick: retry a release that failed earlier, or a recovery not yet done.
    pub async fn retry_release(&mut self) {
        self.settle().await;
        self.link.end_pass();
        self.publish_slot();
    }

    /// True while we hold a cordon: during a pass, and after a release that failed until a
    /// retry succeeds.
    pub fn holds_cordon(&self) -> bool {
        self.life.held().is_some()
    }

    /// The slot part of [`Cordoner::begin`]: `None` when a slot is held now (go on and
    /// cordon), else how the pass starts without one.
    async fn begin_slot(&mut self, node: &str, critical: bool) -> Option<PassStart> {
        let held = match self.take_slot(node).await {
            Ok(Taken::Slot) => return None,
            Ok(Taken::Full(held)) => held,
            Err(e) => {
                self.finish_wait();
                self.record(&e);
                let why = chain(&e);
                return Some(match self.on_failure {
                    OnCordonFailure::Clean => {
                        log::warn!(
                            "{why}; cleaning without a slot, uncordoned (on_cordon_failure = clean)"
                        );
                        PassStart::Proceed
                    }
                    OnCordonFailure::Skip => {
                        log::warn!("{why}; skipping this pass (on_cordon_failure = skip)");
                        PassStart::Skip
                    }
                });
            }
        };
        Some(match lease::without_slot(critical) {
            WithoutSlot::Wait => PassStart::NoSlot(held),
            WithoutSlot::CleanUncordoned => {
                self.finish_wait();
                log::warn!(
                    "node {node}: usage is at or above the critical watermark and no cleaning slot is free ({held}): cleaning now, without a slot and without cordoning"
                );
                let event = NodeEvent {
                    warning: true,
                    reason: "CleaningWithoutSlot",
                    message: format!(
                        "usage is at or above the critical watermark and every cleaning slot is taken ({held}): cleaning without cordoning the node"
                    ),
                };
                self.post(&event).await;
                PassStart::Proceed
            }
        })
    }

    /// The one place the lifecycle changes.
    fn apply(&mut self, t: Transition) {
        let now = tokio::time::Instant::now();
        self.life.apply(t, now);
        self.clock
            .note(self.life.held().map(|(_, since)| since), now);
    }

    /// Notes a failed call for `describe()`; a credential the API server refused is dropped.
    fn record(&mut self, e: &Error) {
        if e.status() == Some(401) {
            self.link.forget();
        }
        self.report = match e {
            Error::NoKubeconfig { tried } => Report::Waiting(tried.clone()),
            Error::Credential { .. } => Report::NoCredential(chain(e)),
            other => Report::Failed(chain(other)),
        };
    }

    /// The client for the next request: the node name checked, the cached client or a new one.
    async fn client(&mut self) -> Result<kube::Client, Error> {
        match &self.node {
            Some(node) if !is_subdomain(node) => Err(Error::NodeName { node: node.clone() }),
            _ => {
                self.link
                    .client(self.setting.as_deref(), &self.timing)
                    .await
            }
        }
    }
}

/// The error of a call cut short at its limit.
fn timed_out(what: &'static str, node: &str, after: Duration) -> Error {
    Error::Timeout {
        what,
        node: node.to_string(),
        after,
    }
}

fn list(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}
