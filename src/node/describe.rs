//! What the guard says of itself: [`Cordoner::describe`], one line for `status` and `STATUS=`
//! (cordoning on or off, what it holds and for how long, what it waits for), and the outcome of
//! the last call kept for it ([`Report`]). Reads the guard's state and looks whether the
//! kubeconfig exists; sends nothing.

use std::path::{Path, PathBuf};

use super::error::{Error, list};
use super::kubeconfig::{Located, locate};
use super::lifecycle::Lifecycle;
use super::{Cordoner, chain};
use crate::config::CordonMode;

/// The outcome of the last call, for `describe()` (besides what the lifecycle says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Report {
    Ready,
    Waiting(Vec<PathBuf>),
    NoCredential(String),
    Failed(String),
}

impl Cordoner {
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
                let retry = if self.ticks_follow() {
                    ", retrying every tick"
                } else {
                    ""
                };
                return format!(
                    "node {node}: {hold} held for {} s, release failed{retry}: {error}",
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
                let kubeconfig = match locate(
                    self.setting.as_deref(),
                    self.kubeconfig_env.as_deref(),
                    Path::exists,
                ) {
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

    /// Notes a failed call for `describe()`; a credential the API server refused is dropped.
    pub(super) fn record(&mut self, e: &Error) {
        if e.status() == Some(401) {
            self.link.forget();
        }
        self.report = match e {
            Error::NoKubeconfig { tried } => Report::Waiting(tried.clone()),
            Error::Credential { .. } => Report::NoCredential(chain(e)),
            other => Report::Failed(chain(other)),
        };
    }
}
