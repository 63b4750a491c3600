//! Errors of the Kubernetes side, each naming the operation and the node or file it was about:
//! [`Error`], and what it carries ([`CredentialError`], [`KubeError`], [`Verb`]). Imports no
//! module that makes them, so that every one of them can import it.

use std::fmt;
use std::path::PathBuf;

use super::exec::PluginError;
use super::patch::Hold;
use crate::bounded::ReadError;

/// Errors of the Kubernetes side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No kubeconfig yet (a node image baked before it joined a cluster): not fatal, retried.
    #[error("waiting for kubeconfig: none of {} exists", list(tried))]
    NoKubeconfig {
        /// The paths looked at, in order.
        tried: Vec<PathBuf>,
    },
    /// The kubeconfig exists but cannot be read or used.
    #[error("invalid kubeconfig {}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig, or the certificate authority its cluster names, cannot be read: missing,
    /// not a regular file (a FIFO would hang the read), too large, or not read in time.
    #[error("invalid kubeconfig {}", path.display())]
    KubeconfigFile {
        /// The kubeconfig.
        path: PathBuf,
        /// Which file, and why.
        #[source]
        source: ReadError,
    },
    /// The kubeconfig asks for something refused: a CA together with insecure-skip-tls-verify,
    /// an auth method not supported, an inline token that is not a valid header value.
    #[error("kubeconfig {}: {what}", path.display())]
    Refused {
        /// The file.
        path: PathBuf,
        /// What, naming the entry.
        what: String,
    },
    /// The user entry's credential cannot be had now (a token or certificate file missing or
    /// unreadable, an exec plugin that failed or hung): retried at the next call.
    #[error("no credential for user \"{user}\" of kubeconfig {}", path.display())]
    Credential {
        /// The kubeconfig.
        path: PathBuf,
        /// The user entry.
        user: String,
        /// Why.
        #[source]
        source: CredentialError,
    },
    /// `node_name` is not a Node name (checked again here, before it goes into any URL).
    #[error(
        "node_name {node:?} is not a valid Node name (an RFC 1123 subdomain: lowercase letters, digits, '-' and '.')"
    )]
    NodeName {
        /// The name as configured.
        node: String,
    },
    /// A call of the guard ran out of its time limit.
    #[error("{what} on node {node} gave up after {} s", after.as_secs_f32())]
    Timeout {
        /// What was being done.
        what: &'static str,
        /// Node name.
        node: String,
        /// The limit.
        after: std::time::Duration,
    },
    /// The kubeconfig parsed but no client could be built from it (TLS material, proxy).
    #[error("cannot build a Kubernetes client from kubeconfig {}", path.display())]
    Client {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KubeError,
    },
    /// The kubeconfig names no CA for an https:// server, and the system has no CA
    /// certificates to check the server's certificate with.
    #[error(
        "kubeconfig {}: cluster \"{cluster}\" names no certificate-authority, so the API server's certificate must be checked against the system's CA certificates, and this system has none: install ca-certificates, or add the cluster's CA to the kubeconfig (certificate-authority-data)",
        path.display()
    )]
    NoCaStore {
        /// The kubeconfig.
        path: PathBuf,
        /// The cluster entry.
        cluster: String,
    },
    /// GET of the Node failed.
    #[error("failed to read node {node}")]
    Get {
        /// Node name.
        node: String,
        /// The API call's failure.
        #[source]
        source: KubeError,
    },
    /// The PATCH that cordons (or taints) failed.
    #[error("failed to cordon node {node} ({hold})")]
    Cordon {
        /// Node name.
        node: String,
        /// What we tried to add.
        hold: Hold,
        /// The API call's failure.
        #[source]
        source: KubeError,
    },
    /// The PATCH that uncordons (or removes our taint, or our annotation) failed.
    #[error("failed to uncordon node {node} ({hold})")]
    Uncordon {
        /// Node name.
        node: String,
        /// What we tried to remove.
        hold: Hold,
        /// The API call's failure.
        #[source]
        source: KubeError,
    },
    /// Posting an Event on the Node failed.
    #[error("failed to post event {reason} on node {node}")]
    Event {
        /// Node name.
        node: String,
        /// The Event's reason.
        reason: &'static str,
        /// The API call's failure.
        #[source]
        source: KubeError,
    },
    /// A request on a fleet slot Lease failed.
    #[error("failed to {verb} cleaning slot Lease {lease}")]
    Slot {
        /// What was asked.
        verb: Verb,
        /// The Lease, `namespace/name`.
        lease: String,
        /// The API call's failure.
        #[source]
        source: KubeError,
    },
    /// The credential may not use the slot Leases (403): say which permission is missing and
    /// how to get it.
    #[error(
        "the Kubernetes credential may not {verb} Lease {lease}: fleet slots need get, create and update on leases (coordination.k8s.io) in namespace {}; the kubelet's own credential cannot have them (the Node authorizer allows a node only its own Lease in kube-node-lease): use a ServiceAccount with packaging/kubernetes/rbac.yaml (README, Kubernetes, \"Option B: a ServiceAccount\")",
        .lease.split('/').next().unwrap_or_default()
    )]
    SlotForbidden {
        /// What was asked.
        verb: Verb,
        /// The Lease, `namespace/name`.
        lease: String,
        /// The API server's answer.
        #[source]
        source: KubeError,
    },
    /// The bounded release retries ran out of time.
    #[error("gave up uncordoning node {node} for now after {} s", after.as_secs_f32())]
    ReleaseTimeout {
        /// Node name.
        node: String,
        /// The budget spent.
        after: std::time::Duration,
    },
}

impl Error {
    /// True when the error comes from the configuration (a kubeconfig that does not parse or
    /// asks for something refused, a node name that is not one): exit 78 at start. A
    /// credential that cannot be had now is not: it is tried again.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::Kubeconfig { .. }
                | Error::KubeconfigFile { .. }
                | Error::Refused { .. }
                | Error::Client { .. }
                | Error::NoCaStore { .. }
                | Error::NodeName { .. }
        )
    }

    /// True when trying again soon may succeed: the API server unreachable, slow, overloaded or
    /// in conflict (409), or a kubeconfig still to come.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::NoKubeconfig { .. }
            | Error::ReleaseTimeout { .. }
            | Error::Credential { .. }
            | Error::Timeout { .. } => true,
            Error::Kubeconfig { .. }
            | Error::KubeconfigFile { .. }
            | Error::Refused { .. }
            | Error::Client { .. }
            | Error::NoCaStore { .. }
            | Error::NodeName { .. } => false,
            Error::Get { source, .. }
            | Error::Cordon { source, .. }
            | Error::Uncordon { source, .. }
            | Error::Event { source, .. }
            | Error::Slot { source, .. } => source.is_transient(),
            Error::SlotForbidden { .. } => false,
        }
    }

    /// The HTTP status the API server answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Get { source, .. }
            | Error::Cordon { source, .. }
            | Error::Uncordon { source, .. }
            | Error::Event { source, .. }
            | Error::Slot { source, .. }
            | Error::SlotForbidden { source, .. } => source.status(),
            _ => None,
        }
    }
}

/// Why no credential could be had now; worth trying again later (a file not there yet, a
/// plugin that failed or hung).
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The token file, or a client certificate or key file, cannot be read: missing (not there
    /// yet, mid-rotation), not a regular file, too large or too slow. Names the file.
    #[error(transparent)]
    File(#[from] ReadError),
    /// The token file holds nothing but whitespace (client-go's message).
    #[error("read empty token from file {}", path.display())]
    EmptyTokenFile {
        /// The file.
        path: PathBuf,
    },
    /// The token file's token is not a valid HTTP header value.
    #[error("the token in file {} is not a valid HTTP header value (it contains a control character)", path.display())]
    InvalidTokenFile {
        /// The file.
        path: PathBuf,
    },
    /// The exec plugin gave no credential.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The plugin's token is not a valid HTTP header value.
    #[error("credential plugin {command} returned a token that is not a valid HTTP header value")]
    InvalidPluginToken {
        /// The command line, redacted.
        command: String,
    },
}

/// What was asked of a slot Lease (the RBAC verb).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET.
    Get,
    /// POST.
    Create,
    /// PUT.
    Update,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Get => "get",
            Verb::Create => "create",
            Verb::Update => "update",
        })
    }
}

/// A failed kube call. kube's own errors repeat their cause in the message and in `source()`;
/// this wrapper prints each cause once (`401 Unauthorized: ...` for an answer of the server).
#[derive(Debug)]
pub struct KubeError(pub kube::Error);

impl KubeError {
    /// The HTTP status of an answer of the API server.
    pub fn status(&self) -> Option<u16> {
        match &self.0 {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }

    fn is_transient(&self) -> bool {
        match &self.0 {
            kube::Error::Api(status) => matches!(status.code, 408 | 409 | 429 | 500..=599),
            kube::Error::HyperError(_) | kube::Error::Service(_) => true,
            _ => false,
        }
    }
}

impl fmt::Display for KubeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            kube::Error::Api(status) => {
                write!(f, "the API server answered {}", status.code)?;
                if !status.reason.is_empty() {
                    write!(f, " {}", status.reason)?;
                }
                if !status.message.is_empty() {
                    write!(f, ": {}", status.message)?;
                }
                Ok(())
            }
            // kube's message is "ServiceError: <cause>": print the cause alone.
            kube::Error::Service(e) => write!(f, "{e}"),
            kube::Error::HyperError(e) => write!(f, "{e}"),
            other => write!(f, "{other}"),
        }
    }
}

impl std::error::Error for KubeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            kube::Error::Api(_) => None,
            kube::Error::Service(e) => e.source(),
            kube::Error::HyperError(e) => e.source(),
            // The others print their direct cause already: go one further.
            other => std::error::Error::source(other).and_then(|cause| cause.source()),
        }
    }
}

/// The paths looked at, one line.
pub(super) fn list(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}
