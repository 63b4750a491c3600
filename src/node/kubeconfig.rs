//! Which kubeconfig to use, and what it says (the current context's cluster and user entries,
//! checked for what we refuse). Reads the file; never logs its contents. The credential it names
//! is `credential`'s, the client built from both `connection`'s.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use kube::config::Kubeconfig;

use super::error::Error;

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
