//! What the configuration needs of the node, checked as far as it can be without the network:
//! by `run` before it tells systemd it is ready (so `systemctl start` fails when the service
//! cannot do its job), by `reload` before it signals the daemon, by the daemon on SIGHUP, and
//! printed by `check-config`. Removes and writes nothing; sends no request to Kubernetes and
//! runs no credential plugin.
//!
//! Fatal, because waiting cannot fix them: a kubeconfig that exists but cannot be used (it does
//! not parse, asks for something refused, names a CA that is not there, or names none and the
//! system has no CA certificates), a watched path that does not exist, an engine's endpoint
//! (Docker's or a CRI runtime's) that is not a socket. Not yet, so the daemon starts and waits: no kubeconfig yet (a node image
//! baked before it joins a cluster), a credential file or plugin not there yet, Docker not
//! started yet, an endpoint reached over the network. A warning, not fatal: a kubeconfig where
//! the unit's `ProtectHome=yes` hides it.

use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, EngineKind};
use crate::docker::{AnyEngine, Engine};
use crate::error_chain;
use crate::node;

/// How long a local engine socket (Docker's, a CRI runtime's) gets to answer the check.
const PING_BOUND: Duration = Duration::from_secs(5);

/// What the checks found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preflight {
    /// What makes the configuration unusable here (exit 78).
    pub fatal: Vec<String>,
    /// What deserves an operator's attention but is waited for or lived with.
    pub warnings: Vec<String>,
    /// What was found fine, one line each (for `check-config`).
    pub notes: Vec<String>,
}

impl Preflight {
    /// True when nothing is fatal.
    pub fn ok(&self) -> bool {
        self.fatal.is_empty()
    }
}

/// Checks the kubeconfig (when `node_name` is set), every watched path and every engine's
/// endpoint.
pub async fn preflight(config: &Config) -> Preflight {
    let mut p = Preflight::default();
    kubeconfig(config, &mut p).await;
    paths(config, &mut p);
    engines(config, &mut p).await;
    p
}

async fn kubeconfig(config: &Config, p: &mut Preflight) {
    let Some(node) = &config.node_name else {
        p.notes
            .push("cordoning off: no node_name, nothing touches Kubernetes".into());
        return;
    };
    match node::check_kubeconfig(
        config.kubeconfig.as_deref(),
        config.kubeconfig_env.as_deref(),
    )
    .await
    {
        Ok(check) => {
            p.notes.push(format!("node {node}: {}", check.describe()));
            p.warnings.extend(check.warnings);
        }
        Err(e) => p.fatal.push(error_chain(&e)),
    }
}

/// Every path measured, the engines' own included: it must exist (nothing to measure else).
fn paths(config: &Config, p: &mut Preflight) {
    let mut all: Vec<&PathBuf> = config.paths.iter().collect();
    for path in config.engines.iter().flat_map(|e| &e.paths) {
        if !all.contains(&path) {
            all.push(path);
        }
    }
    for path in all {
        match std::fs::metadata(path) {
            Ok(_) => p.notes.push(format!("{}: present", path.display())),
            Err(e) if e.kind() == ErrorKind::NotFound => p.fatal.push(format!(
                "{} does not exist: nothing to measure there (path_to_check, or an [[engine]]'s paths: is the engine installed, and is this its data root?)",
                path.display()
            )),
            Err(e) => p
                .fatal
                .push(format!("cannot look at {}: {e}", path.display())),
        }
    }
}

/// Each engine's endpoint: a local socket must be a socket; whether it answers now is only
/// worth a warning (Docker may start after us).
async fn engines(config: &Config, p: &mut Preflight) {
    for engine in &config.engines {
        let host = engine.endpoint().to_string();
        let key = match engine.kind() {
            EngineKind::Docker => "docker_host",
            EngineKind::Cri => "cri_endpoint",
        };
        let Some(socket) = host.strip_prefix("unix://") else {
            // Only a Docker engine may be remote: a CRI endpoint is a unix socket (config).
            p.notes.push(format!(
                "engine {}: {host} is reached over the network: looked at once the daemon runs",
                engine.name
            ));
            continue;
        };
        match std::fs::metadata(socket) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                p.warnings.push(format!(
                    "engine {}: no socket at {socket} yet: waiting for the engine to start (is it installed and enabled?)",
                    engine.name
                ));
                continue;
            }
            Err(e) => {
                p.fatal.push(format!(
                    "engine {}: cannot look at {socket}: {e}",
                    engine.name
                ));
                continue;
            }
            Ok(m) if !m.file_type().is_socket() => {
                p.fatal.push(format!(
                    "engine {}: {socket} is not a socket: {key} must name the engine's API socket",
                    engine.name
                ));
                continue;
            }
            Ok(_) => {}
        }
        let timeout = config.timeout.min(PING_BOUND);
        match AnyEngine::connect(engine, timeout).await {
            Ok(e) => {
                p.notes.push(format!(
                    "engine {}: {host} answers{}: {}",
                    engine.name,
                    match &e {
                        AnyEngine::Docker(d) if d.is_podman() => " (Podman)",
                        _ => "",
                    },
                    e.storage().describe()
                ));
                for place in e.storage().counted_in(&engine.paths) {
                    p.notes.push(format!(
                        "engine {}: bytes counted in {} ({}: {})",
                        engine.name,
                        place.path.display(),
                        if place.walked {
                            "walked"
                        } else {
                            "by containerd"
                        },
                        place.holds
                    ));
                }
                p.warnings
                    .extend(crate::cycle::storage_warnings(engine, e.storage()));
            }
            Err(e) => p.warnings.push(format!(
                "engine {}: not answering yet, waited for: {}",
                engine.name,
                error_chain(&e)
            )),
        }
    }
}
