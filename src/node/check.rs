//! What can be known of the Kubernetes side before any request, for `check-config`, for the
//! daemon before it tells systemd it is ready, and for a reload before it is signalled: which
//! kubeconfig, whether it parses and asks for nothing we refuse, whether the files it names are
//! there, whether a client can be built from it (TLS roots), and whether the service can see it
//! at all. Sends no request and runs no exec plugin; reads the kubeconfig and looks at the files
//! it names.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::connection::{self, Timeouts};
use super::credential::{self, Credential};
use super::error::{Error, list};
use super::exec;
use super::kubeconfig::{self, Located, locate};
use super::timing::Timing;
use crate::bounded::{self, Limit};

/// The directories the shipped unit's `ProtectHome=yes` hides from the service: it sees them
/// empty.
pub const HIDDEN_BY_PROTECT_HOME: [&str; 3] = ["/root", "/home", "/run/user"];

/// What the check found, short of an error that makes the configuration unusable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeconfigCheck {
    /// The kubeconfig found; `None` when none of the paths looked at exists (yet).
    pub found: Option<PathBuf>,
    /// The paths looked at when none exists.
    pub tried: Vec<PathBuf>,
    /// Worth a warning, not fatal: a kubeconfig the service cannot see, a credential file or a
    /// plugin not there (yet).
    pub warnings: Vec<String>,
}

/// The largest credential file the check reads (a token, a certificate, a key).
const CREDENTIAL_FILE_BYTES: u64 = 1 << 20;

/// Checks the kubeconfig `setting` (else `KUBECONFIG` as `env` gives it, else the defaults)
/// would select. `Err` when it exists and cannot be used as it is ([`Error::is_config`]); a
/// kubeconfig not there yet is not an error (a node image baked before it joins a cluster).
pub async fn check_kubeconfig(
    setting: Option<&Path>,
    env: Option<&OsStr>,
) -> Result<KubeconfigCheck, Error> {
    let mut out = KubeconfigCheck::default();
    let path = match locate(setting, env, Path::exists) {
        Located::Found(path) => path,
        Located::Missing(tried) => {
            out.warnings.extend(tried.iter().filter_map(|p| hidden(p)));
            out.tried = tried;
            return Ok(out);
        }
    };
    out.warnings.extend(hidden_from_service(&path));
    let loaded = kubeconfig::load(&path).await?;
    let user = &loaded.config.auth_info;
    // The credential's files: not there yet is waited for (TLS bootstrap writes the client
    // certificate after the kubelet joins), as at every call.
    let files = user
        .token_file
        .iter()
        .map(|f| ("token file", f))
        .chain(
            user.client_certificate
                .iter()
                .map(|f| ("client certificate", f)),
        )
        .chain(user.client_key.iter().map(|f| ("client key", f)));
    for (what, file) in files {
        let file = Path::new(file);
        // Bounded as every read: a FIFO or a device named by mistake neither hangs nor grows us.
        if let Err(e) =
            bounded::read_file_async(what, file, Limit::bytes(CREDENTIAL_FILE_BYTES)).await
        {
            out.warnings.push(format!(
                "kubeconfig {}: user \"{}\": cannot read its {what} {} ({e}): cordoning waits for it, tried again every pass",
                path.display(),
                loaded.user,
                file.display()
            ));
        }
        out.warnings.extend(hidden_from_service(file));
    }
    if let Some(plugin) = &user.exec
        && user.token.is_none()
        && user.token_file.is_none()
        && user.client_certificate.is_none()
        && user.client_certificate_data.is_none()
    {
        if let Some(why) = exec::refusal(plugin) {
            return Err(loaded.refused(format!("user \"{}\": {why}", loaded.user)));
        }
        let program = plugin.command.as_deref().unwrap_or_default();
        if !on_path(program) {
            out.warnings.push(format!(
                "kubeconfig {}: user \"{}\": credential plugin {program} is not found (PATH or the path given): cordoning waits for it, tried again every pass",
                path.display(),
                loaded.user
            ));
        }
    }
    // What the inline parts say is checked as every call checks it, without reading files or
    // running a plugin; then a client is built with no credential, which checks the TLS roots.
    credential::check_inline(&loaded)?;
    let timing = Timing::default();
    connection::client(
        &loaded,
        &Credential::none(),
        Timeouts {
            connect: timing.connect_timeout,
            request: timing.request_timeout,
        },
    )?;
    out.found = Some(path);
    Ok(out)
}

/// A warning when `path` lies where the shipped unit's `ProtectHome=yes` hides it.
pub fn hidden(path: &Path) -> Option<String> {
    let dir = HIDDEN_BY_PROTECT_HOME
        .iter()
        .find(|d| path.starts_with(d))?;
    Some(format!(
        "kubeconfig {} is under {dir}, which the unit's ProtectHome=yes hides from the service (it sees {dir} empty, and waits for ever): put it where the service can read it, e.g. install -D -m 0600 {} {}, or set kubeconfig (DOCKER_IMAGE_CLEANER_KUBECONFIG) to a path outside {}",
        path.display(),
        path.display(),
        kubeconfig::DEFAULT_KUBECONFIG,
        HIDDEN_BY_PROTECT_HOME.join(", ")
    ))
}

/// [`hidden`], unless this process is the service (systemd set `INVOCATION_ID`) and sees the
/// file: then `ProtectHome` was relaxed for it. From a shell, a file there is always worth the
/// warning, since the service may not see what the shell sees.
fn hidden_from_service(path: &Path) -> Option<String> {
    if std::env::var_os("INVOCATION_ID").is_some() && path.exists() {
        return None;
    }
    hidden(path)
}

/// True when `program` names a file that exists: as given when it has a `/`, else on `PATH`.
fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join(program).is_file()))
}

impl KubeconfigCheck {
    /// One line for `check-config`: where the kubeconfig is, or what was looked at.
    pub fn describe(&self) -> String {
        match &self.found {
            Some(path) => format!("kubeconfig {}: usable", path.display()),
            None => format!(
                "no kubeconfig yet (looked at {}): cordoning waits for one, looked for again every tick",
                list(&self.tried)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_home_are_named_with_the_unit_setting() {
        let w = hidden(Path::new("/root/.kube/config")).unwrap();
        assert!(w.contains("ProtectHome=yes") && w.contains("/root"), "{w}");
        assert!(hidden(Path::new("/home/ops/kc")).is_some());
        assert!(hidden(Path::new("/run/user/0/kc")).is_some());
        assert!(hidden(Path::new("/etc/docker-image-cleaner/kubeconfig")).is_none());
        assert!(hidden(Path::new("/rootfs/kc")).is_none());
    }
}
