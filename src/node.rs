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
//! This file holds the guard itself ([`Cordoner`]: its state, its construction, recovery at
//! start and the release retried every tick) and the module's public face.
//!
//! - `patch`: the pure decisions on a Node and the patches (unit-tested).
//! - `lifecycle`: what we know of our cordon, and every transition in one table.
//! - `held`: [`CordonClock`], how long we have held the node, for the metrics.
//! - `timing`: [`Timing`], the time limits of every call, and the error of a call cut short.
//! - `api`: escaped request URLs, and `update`, the read-decide-send-retry shape.
//! - `pass`: the guard around one pass: slot then cordon, the deadline, the end.
//! - `guard`: cordon, release and recover, through `update`.
//! - `describe`: the guard's one line for `status` and `STATUS=`.
//! - `event`: the Event posted on the Node.
//! - `lease`: the pure half of fleet slots (what a slot Lease means, what we write to it).
//! - `slot`: taking, renewing (a small task, `slot/renew`) and releasing a slot; slots left by a
//!   crash.
//! - `kubeconfig`: which kubeconfig, and what it says.
//! - `check`: what can be known of it before any request (files, TLS roots, visibility to the
//!   service).
//! - `credential`, `exec`, `redact`: the user's credential, exec plugins, and keeping secrets out
//!   of logs.
//! - `connection`: the client built from the kubeconfig and the credential, and its cache.
//! - `error`: [`Error`] and the errors it carries (log lines print it with
//!   [`crate::error_chain`]).

mod api;
mod check;
mod connection;
mod credential;
mod describe;
mod error;
mod event;
mod exec;
mod guard;
mod held;
mod kubeconfig;
mod lease;
mod lifecycle;
mod pass;
mod patch;
mod redact;
mod slot;
mod timing;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, CordonMode, OnCordonFailure};

use connection::Link;
use describe::Report;
use error::list;
use lifecycle::{Lifecycle, Transition};
use slot::Fleet;

pub use crate::error_chain as chain;
pub use api::is_subdomain;
pub use check::{HIDDEN_BY_PROTECT_HOME, KubeconfigCheck, check_kubeconfig, hidden};
pub use error::{CredentialError, Error, KubeError, Verb};
pub use event::node_event;
pub use exec::PluginError;
pub use held::CordonClock;
pub use kubeconfig::{DEFAULT_KUBECONFIG, KUBELET_KUBECONFIG, Located, locate};
pub use lease::{SLOT_PREFIX, skew_margin, slot_name};
pub use patch::{ANNOTATION, Hold, LEGACY_ANNOTATION, TAINT_EFFECT, TAINT_KEY};
pub use redact::redact;
pub use timing::Timing;

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

/// The guard of one node: cordons around passes, releases on every path, recovers leftovers.
/// Holds the cordon state across passes (a release that failed is retried on later ticks).
pub struct Cordoner {
    node: Option<String>,
    mode: CordonMode,
    setting: Option<PathBuf>,
    /// `KUBECONFIG`, from the configuration's environment.
    kubeconfig_env: Option<OsString>,
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
    /// No tick follows (`once`), or not once this is cancelled (the daemon's shutdown): a
    /// release that fails is not "retried every tick" then.
    exit: (bool, Option<tokio_util::sync::CancellationToken>),
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
            kubeconfig_env: config.kubeconfig_env.clone(),
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
            exit: (false, None),
        }
    }

    /// Says when no tick will retry a release that failed: never (`one_pass`, for `once`), or
    /// once `shutdown` is cancelled. Messages then promise no retry at every tick.
    pub fn with_exit(
        mut self,
        one_pass: bool,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        self.exit = (one_pass, Some(shutdown));
        self
    }

    /// Whether a later tick retries a release that fails now.
    fn ticks_follow(&self) -> bool {
        let (one_pass, shutdown) = &self.exit;
        !one_pass && !shutdown.as_ref().is_some_and(|s| s.is_cancelled())
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

    /// The one place the lifecycle changes.
    fn apply(&mut self, t: Transition) {
        let now = tokio::time::Instant::now();
        self.life.apply(t, now);
        self.clock
            .note(self.life.held().map(|(_, since)| since), now);
    }

    /// The client for the next request: the node name checked, the cached client or a new one.
    async fn client(&mut self) -> Result<kube::Client, Error> {
        match &self.node {
            Some(node) if !is_subdomain(node) => Err(Error::NodeName { node: node.clone() }),
            _ => {
                self.link
                    .client(
                        self.setting.as_deref(),
                        self.kubeconfig_env.as_deref(),
                        &self.timing,
                    )
                    .await
            }
        }
    }
}
