//! Kubeconfigs for the fake API server: the plain one, variants with any cluster and user
//! entry, and exec credential plugins (shell scripts) to put in them.

use std::path::{Path, PathBuf};

use super::FakeKube;

impl FakeKube {
    /// Writes a kubeconfig for this server at `path` presenting `token`.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: fake\n  user:\n    token: {token}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n",
            self.url(),
            self.dir.path().join("ca.crt").display(),
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    /// The CA file that signs this server's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Writes a kubeconfig for this server at `path` whose cluster entry has the `server` line
    /// plus `cluster` (YAML lines indented by 4, e.g. a CA or `insecure-skip-tls-verify`) and
    /// whose user entry `fake` is `user` (YAML lines indented by 4).
    pub fn write_kubeconfig_raw(&self, path: &Path, cluster: &str, user: &str) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n{cluster}users:\n- name: fake\n  user:\n{user}contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n",
            self.url(),
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    /// Writes a kubeconfig with this server's CA and the user entry `user` (YAML lines
    /// indented by 4).
    pub fn write_kubeconfig_user(&self, path: &Path, user: &str) {
        let ca = format!("    certificate-authority: {}\n", self.ca_path().display());
        self.write_kubeconfig_raw(path, &ca, user);
    }

    /// Writes an executable shell script `name` in the scratch directory with `body` after the
    /// `#!/bin/sh` line; returns its path.
    pub fn write_script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod script");
        path
    }

    /// An exec credential plugin that appends a line to `runs` each time it runs and prints an
    /// ExecCredential (`client.authentication.k8s.io/v1`) with the accepted token, expiring at
    /// `expires` (RFC 3339) when given. Returns the user entry (YAML lines indented by 4).
    pub fn exec_plugin(&self, runs: &Path, expires: Option<&str>) -> String {
        let expiry = expires
            .map(|e| format!(",\"expirationTimestamp\":\"{e}\""))
            .unwrap_or_default();
        let script = self.write_script(
            "plugin.sh",
            &format!(
                "echo run >> '{}'\necho '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{}\"{expiry}}}}}'\n",
                runs.display(),
                self.token()
            ),
        );
        exec_user(&script)
    }
}

/// The user entry (YAML lines indented by 4) running `command` as a non-interactive
/// `client.authentication.k8s.io/v1` exec credential plugin.
pub fn exec_user(command: &Path) -> String {
    format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      interactiveMode: Never\n",
        command.display()
    )
}
