//! Which kubeconfig to use, what it says (the current context's cluster and user entries, checked
//! for what we refuse), and a `kube::Client` from it with bounded timeouts and a credential
//! resolved by `credential`. Reads the file and the CA it names; never logs their contents.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{AuthInfo, Kubeconfig};
use secrecy::{ExposeSecret, SecretString};

use super::credential::{Credential, to_base64};
use super::error::{Error, KubeError};

/// Our own kubeconfig, for a ServiceAccount made with `packaging/kubernetes/`.
pub const DEFAULT_KUBECONFIG: &str = "/etc/docker-image-cleaner/kubeconfig";
/// The kubelet's credential: may cordon its own Node, may not change its taints.
pub const KUBELET_KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";

/// Where the kubeconfig is, or the paths that were looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// This file exists.
    Found(PathBuf),
    /// None of these exists (yet).
    Missing(Vec<PathBuf>),
}

/// The first of: the `kubeconfig` setting, `KUBECONFIG` (the first existing file of the list),
/// [`DEFAULT_KUBECONFIG`], [`KUBELET_KUBECONFIG`]. A path set explicitly (setting or environment)
/// is waited for rather than silently replaced by the kubelet's credential.
pub fn locate(
    setting: Option<&Path>,
    env: Option<&OsStr>,
    exists: impl Fn(&Path) -> bool,
) -> Located {
    let candidates: Vec<PathBuf> = if let Some(path) = setting {
        vec![path.to_path_buf()]
    } else {
        let listed: Vec<PathBuf> = env
            .map(|v| {
                std::env::split_paths(v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if listed.is_empty() {
            vec![DEFAULT_KUBECONFIG.into(), KUBELET_KUBECONFIG.into()]
        } else {
            listed
        }
    };
    match candidates.iter().find(|p| exists(p)) {
        Some(path) => Located::Found(path.clone()),
        None => Located::Missing(candidates),
    }
}

/// Timeouts of one client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP and TLS connect.
    pub connect: Duration,
    /// Each request: sending it, and waiting for the answer.
    pub request: Duration,
}

/// A kubeconfig read and checked: the entries its current context names, and kube's
/// configuration from it (the user entry not resolved yet: see `credential`).
pub struct Loaded {
    /// The file.
    pub path: PathBuf,
    /// The name of the user entry, for messages.
    pub user: String,
    /// The name of the cluster entry, for messages.
    pub cluster: String,
    /// kube's configuration; `auth_info` is the raw user entry.
    pub config: kube::Config,
    /// The files the cluster entry names (its CA), to notice a change.
    pub files: Vec<PathBuf>,
}

impl Loaded {
    /// A configuration error about this kubeconfig.
    pub fn refused(&self, what: String) -> Error {
        Error::Refused {
            path: self.path.clone(),
            what,
        }
    }
}

/// Reads and checks the kubeconfig at `path`; runs nothing and reads no credential.
pub fn load(path: &Path) -> Result<Loaded, Error> {
    let invalid = |source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(invalid)?;
    // The entries the current context names, as kube (and kubectl) select them.
    let context = kubeconfig.current_context.as_ref().and_then(|name| {
        kubeconfig
            .contexts
            .iter()
            .find(|c| &c.name == name)
            .and_then(|c| c.context.clone())
    });
    let user = context
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default();
    let cluster_name = context
        .as_ref()
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.clone());
    let config = kube::Config::try_from(kubeconfig).map_err(invalid)?;
    let loaded = Loaded {
        path: path.to_path_buf(),
        user,
        files: cluster
            .as_ref()
            .and_then(|c| c.certificate_authority.clone())
            .map(PathBuf::from)
            .into_iter()
            .collect(),
        cluster: cluster_name,
        config,
    };
    if let Some(cluster) = &cluster
        && cluster.insecure_skip_tls_verify == Some(true)
        && (cluster.certificate_authority.is_some() || cluster.certificate_authority_data.is_some())
    {
        // kubectl's (client-go's) own words for this.
        return Err(loaded.refused(format!(
            "cluster \"{}\": specifying a root certificates file with the insecure flag is not allowed",
            loaded.cluster
        )));
    }
    Ok(loaded)
}

/// Builds a client for `loaded` presenting `credential`, with bounded timeouts and no retries
/// of kube's own.
pub fn client(
    loaded: &Loaded,
    credential: &Credential,
    timeouts: Timeouts,
) -> Result<kube::Client, Error> {
    let mut config = loaded.config.clone();
    config.auth_info = AuthInfo {
        token: credential.token.clone(),
        client_certificate_data: credential.identity.as_ref().map(|(c, _)| to_base64(c)),
        client_key_data: credential
            .identity
            .as_ref()
            .map(|(_, k)| SecretString::from(to_base64(k.expose_secret().as_bytes()))),
        ..AuthInfo::default()
    };
    config.connect_timeout = Some(timeouts.connect);
    config.read_timeout = Some(timeouts.request);
    config.write_timeout = Some(timeouts.request);
    // A pass may keep a pooled connection idle for minutes: count from each request instead.
    config.reset_reader_on_write = true;
    // kube 5 retries 429/503/504 by itself up to 15 times with backoff up to 1000 s (honouring
    // Retry-After): that would unbound a pass. Our own retries are bounded instead.
    config.default_retry = false;
    if config.accept_invalid_certs {
        log::warn!(
            "kubeconfig {}: cluster \"{}\" sets insecure-skip-tls-verify: the API server's certificate is not checked, anyone on the path can act as it",
            loaded.path.display(),
            loaded.cluster
        );
    }
    kube::Client::try_from(config).map_err(|source| Error::Client {
        path: loaded.path.clone(),
        source: KubeError(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(p: &str) -> Located {
        Located::Found(p.into())
    }

    #[test]
    fn setting_wins_and_is_waited_for() {
        let all = |_: &Path| true;
        let none = |_: &Path| false;
        let env = Some(OsStr::new("/env/kc"));
        assert_eq!(
            locate(Some(Path::new("/set/kc")), env, all),
            found("/set/kc")
        );
        assert_eq!(
            locate(Some(Path::new("/set/kc")), env, none),
            Located::Missing(vec!["/set/kc".into()])
        );
    }

    #[test]
    fn env_list_takes_the_first_existing_file() {
        let env = Some(OsStr::new("/a::/b:/c"));
        assert_eq!(locate(None, env, |p| p != Path::new("/a")), found("/b"));
        assert_eq!(
            locate(None, env, |_| false),
            Located::Missing(vec!["/a".into(), "/b".into(), "/c".into()])
        );
    }

    #[test]
    fn defaults_prefer_our_own_then_the_kubelets() {
        assert_eq!(
            locate(None, Some(OsStr::new("")), |_| true),
            found(DEFAULT_KUBECONFIG)
        );
        let kubelet_only = |p: &Path| p == Path::new(KUBELET_KUBECONFIG);
        assert_eq!(locate(None, None, kubelet_only), found(KUBELET_KUBECONFIG));
        assert_eq!(
            locate(None, None, |_| false),
            Located::Missing(vec![DEFAULT_KUBECONFIG.into(), KUBELET_KUBECONFIG.into()])
        );
    }
}
