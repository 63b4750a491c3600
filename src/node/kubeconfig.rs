//! Which kubeconfig to use, and what it says (the current context's cluster and user entries,
//! checked for what we refuse). Reads the file, and the certificate authority file its cluster
//! names, through [`crate::bounded`] (regular files only, bounded in size and time: kube would
//! read them unbounded, and hang on a FIFO); never logs their contents. The credential it names
//! is `credential`'s, the client built from both `connection`'s.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use kube::config::Kubeconfig;

use super::credential::{MAX_PEM_BYTES, to_base64};
use super::error::Error;
use crate::bounded::{self, Limit};

/// The largest kubeconfig read: one with a few clusters and embedded certificates is tens of
/// KiB.
pub const MAX_KUBECONFIG_BYTES: u64 = 4 << 20;

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

/// Reads and checks the kubeconfig at `path`, and the certificate authority file its current
/// cluster names; runs nothing and reads no credential.
pub async fn load(path: &Path) -> Result<Loaded, Error> {
    let invalid = |source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let unreadable = |source| Error::KubeconfigFile {
        path: path.to_path_buf(),
        source,
    };
    let bytes = bounded::read_file_async("kubeconfig", path, Limit::bytes(MAX_KUBECONFIG_BYTES))
        .await
        .map_err(unreadable)?;
    let text = decode(bytes).map_err(|why| Error::Refused {
        path: path.to_path_buf(),
        what: why.to_string(),
    })?;
    let mut kubeconfig = Kubeconfig::from_yaml(&text).map_err(invalid)?;
    absolute_paths(&mut kubeconfig, path.parent());
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
    // The certificate authority file, read here so that kube reads none: data wins over a
    // file, as in kube and client-go.
    if let Some(named) = kubeconfig
        .clusters
        .iter_mut()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_mut())
        && named.certificate_authority_data.is_none()
        && let Some(file) = named.certificate_authority.take()
    {
        let ca = bounded::read_file_async(
            "certificate authority",
            Path::new(&file),
            Limit::bytes(MAX_PEM_BYTES),
        )
        .await
        .map_err(unreadable)?;
        named.certificate_authority_data = Some(to_base64(&ca));
    }
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

/// The kubeconfig's text: UTF-8 (a byte order mark skipped), or UTF-16 with a byte order mark,
/// as kube and kubectl read it.
fn decode(bytes: Vec<u8>) -> Result<String, &'static str> {
    let utf16 = |pairs: &[u8], unit: fn([u8; 2]) -> u16| {
        let units: Vec<u16> = pairs.chunks_exact(2).map(|c| unit([c[0], c[1]])).collect();
        String::from_utf16(&units).map_err(|_| "is not valid UTF-16")
    };
    match bytes.as_slice() {
        [0xFF, 0xFE, rest @ ..] => utf16(rest, u16::from_le_bytes),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, u16::from_be_bytes),
        [0xEF, 0xBB, 0xBF, rest @ ..] => {
            String::from_utf8(rest.to_vec()).map_err(|_| "is not valid UTF-8")
        }
        _ => String::from_utf8(bytes).map_err(|_| "is not valid UTF-8"),
    }
}

/// Makes the files the kubeconfig names relative to its own directory absolute (certificate
/// authority, client certificate and key, token file, and an exec command with a path
/// separator), as client-go (and kube's `read_from`) do.
fn absolute_paths(kubeconfig: &mut Kubeconfig, dir: Option<&Path>) {
    let Some(dir) = dir else {
        return;
    };
    let fix = |file: &mut Option<String>| {
        if let Some(f) = file.as_deref()
            && Path::new(f).is_relative()
            && let Some(abs) = dir.join(f).to_str()
        {
            *file = Some(abs.to_string());
        }
    };
    for cluster in kubeconfig
        .clusters
        .iter_mut()
        .filter_map(|c| c.cluster.as_mut())
    {
        fix(&mut cluster.certificate_authority);
    }
    for user in kubeconfig
        .auth_infos
        .iter_mut()
        .filter_map(|u| u.auth_info.as_mut())
    {
        fix(&mut user.client_certificate);
        fix(&mut user.client_key);
        fix(&mut user.token_file);
        if let Some(exec) = user.exec.as_mut()
            && exec
                .command
                .as_deref()
                .is_some_and(|c| c.contains(std::path::MAIN_SEPARATOR))
        {
            fix(&mut exec.command);
        }
    }
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
