//! Which kubeconfig to use, and a fresh `kube::Client` from it with bounded timeouts. Reads the
//! file and the TLS material it names; never logs their contents.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

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

/// Builds a client from `path`. Called once per pass so a rotated client certificate (the
/// kubelet's `kubelet-client-current.pem`) is read again.
pub async fn client(path: &Path, timeouts: Timeouts) -> Result<kube::Client, Error> {
    let invalid = |source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(invalid)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(invalid)?;
    config.connect_timeout = Some(timeouts.connect);
    config.read_timeout = Some(timeouts.request);
    config.write_timeout = Some(timeouts.request);
    // A pass may keep a pooled connection idle for minutes: count from each request instead.
    config.reset_reader_on_write = true;
    // kube 5 retries 429/503/504 by itself up to 15 times with backoff up to 1000 s (honouring
    // Retry-After): that would unbound a pass. Our own retries are bounded instead.
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|source| Error::Client {
        path: path.to_path_buf(),
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
