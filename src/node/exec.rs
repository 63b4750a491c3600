//! Exec credential plugins (`users[].user.exec`), run the way client-go runs them in a
//! non-interactive process: `KUBERNETES_EXEC_INFO` in the environment, stdin closed, an
//! `ExecCredential` JSON on stdout. Unlike kube-rs (which runs the plugin synchronously, several
//! times per client, and puts its whole output into the error), the plugin runs as an async child
//! in its own process group with a time limit; the group is killed on timeout and when the call
//! is dropped (SIGTERM). Its output is read bounded ([`crate::bounded::read_capped`]): at most
//! [`MAX_STDOUT_BYTES`] on stdout (past that it is killed at once), and of its stderr, drained
//! to the end, only the head is kept. Nothing it prints on stdout is ever logged. Its stderr is
//! shown, at debug level only, when it failed, and then scrubbed of every word it printed on
//! stdout and redacted; of a plugin that succeeded only its size is logged (it may have printed
//! its credential there).

use std::fmt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::config::{ExecConfig, ExecInteractiveMode};
use secrecy::SecretString;
use serde::Deserialize;

use super::redact::{MARK, redact};
use crate::bounded::read_capped;

/// The most a plugin may print on stdout: an ExecCredential with a certificate chain and its key
/// is a few KiB.
pub const MAX_STDOUT_BYTES: usize = 1 << 20;
/// How much of a plugin's stderr is kept (the rest is read and dropped).
const STDERR_KEPT_BYTES: usize = 16 * 1024;
/// How much of a failed plugin's stderr, scrubbed and redacted, is shown at debug level.
const STDERR_SHOWN_CHARS: usize = 2048;

/// The apiVersions of `ExecCredential` client-go still speaks.
pub const API_VERSIONS: [&str; 2] = [
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
];

/// What a plugin returned.
pub struct Issued {
    /// A bearer token.
    pub token: Option<SecretString>,
    /// A client certificate and its key, PEM.
    pub identity: Option<(String, SecretString)>,
    /// When the credential expires.
    pub expires: Option<Timestamp>,
}

/// A plugin that could not give a credential. Never carries what it printed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The program could not be started.
    #[error("cannot start credential plugin {command}")]
    Start {
        /// The command line, redacted.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It did not finish in time; its process group was killed.
    #[error("credential plugin {command} timed out after {} s and was killed", after.as_secs_f32())]
    Timeout {
        /// The command line, redacted.
        command: String,
        /// The limit.
        after: Duration,
    },
    /// It failed.
    #[error("credential plugin {command} {}", Exit(*status))]
    Failed {
        /// The command line, redacted.
        command: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// It succeeded but printed no usable credential.
    #[error("credential plugin {command} printed no usable ExecCredential: {why}")]
    Output {
        /// The command line, redacted.
        command: String,
        /// What is wrong (never the output itself).
        why: String,
    },
}

/// "exited with status 1" / "was killed by signal 9".
struct Exit(ExitStatus);

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        match (self.0.code(), self.0.signal()) {
            (Some(code), _) => write!(f, "exited with status {code}"),
            (None, Some(signal)) => write!(f, "was killed by signal {signal}"),
            (None, None) => write!(f, "ended with {}", self.0),
        }
    }
}

/// The kubeconfig settings a daemon cannot honour; `None` when the plugin may run.
pub fn refusal(exec: &ExecConfig) -> Option<String> {
    if exec.command.as_deref().is_none_or(str::is_empty) {
        return Some("exec has no command".to_string());
    }
    match exec.api_version.as_deref() {
        Some(v) if API_VERSIONS.contains(&v) => {}
        other => {
            return Some(format!(
                "exec apiVersion {other:?} is not one of {}",
                API_VERSIONS.join(", ")
            ));
        }
    }
    if exec.interactive_mode == Some(ExecInteractiveMode::Always) {
        return Some("exec interactiveMode Always needs a terminal, which a daemon has not".into());
    }
    None
}

/// The command line as shown in logs and errors: the program as the kubeconfig names it, and
/// its arguments redacted (an argument may carry a secret; the program's path does not).
pub fn shown(exec: &ExecConfig) -> String {
    let mut line = exec.command.clone().unwrap_or_default();
    for arg in exec.args.iter().flatten() {
        line.push(' ');
        line.push_str(&redact(arg));
    }
    line
}

/// Kills the plugin's process group when dropped before it was disarmed: on timeout, and when
/// the call is abandoned (SIGTERM). `kill_on_drop` alone would spare the plugin's children.
struct Group(Option<rustix::process::Pid>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // Gone already is fine.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Runs the plugin (checked with [`refusal`] first) and reads its credential, within `limit`.
pub async fn run(exec: &ExecConfig, limit: Duration) -> Result<Issued, PluginError> {
    let command = shown(exec);
    let program = exec.command.clone().unwrap_or_default();
    let api_version = exec.api_version.clone().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(exec.args.iter().flatten());
    for pair in exec.env.iter().flatten() {
        if let (Some(name), Some(value)) = (pair.get("name"), pair.get("value")) {
            cmd.env(name, value);
        }
    }
    for name in exec.drop_env.iter().flatten() {
        cmd.env_remove(name);
    }
    let mut spec = serde_json::json!({ "interactive": false });
    if exec.provide_cluster_info
        && let Some(cluster) = &exec.cluster
    {
        spec["cluster"] = serde_json::to_value(cluster).unwrap_or_default();
    }
    let info =
        serde_json::json!({ "apiVersion": api_version, "kind": "ExecCredential", "spec": spec });
    cmd.env("KUBERNETES_EXEC_INFO", info.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| PluginError::Start {
        command: command.clone(),
        source,
    })?;
    let mut group = Group(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw),
    );
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let finished = async {
        // Both pipes at once: a plugin blocked on a full stderr must not stall its stdout.
        let out = async {
            let Some(pipe) = stdout else {
                return Ok(Vec::new());
            };
            let read = read_capped(pipe, MAX_STDOUT_BYTES, true).await?;
            if read.truncated() {
                return Err(Ended::TooMuch);
            }
            Ok(read.head)
        };
        let err = async {
            match stderr {
                Some(pipe) => Ok(read_capped(pipe, STDERR_KEPT_BYTES, false).await?),
                None => Ok(crate::bounded::Capped {
                    head: Vec::new(),
                    total: 0,
                }),
            }
        };
        let (out, err) = tokio::try_join!(out, err)?;
        let status = child.wait().await?;
        Ok::<_, Ended>((status, out, err))
    };
    let (status, stdout, stderr) = match tokio::time::timeout(limit, finished).await {
        Ok(Ok(done)) => done,
        Ok(Err(Ended::Io(source))) => return Err(PluginError::Start { command, source }),
        // Dropping `group` kills it.
        Ok(Err(Ended::TooMuch)) => {
            return Err(PluginError::Output {
                command,
                why: format!(
                    "it printed more than {MAX_STDOUT_BYTES} bytes on stdout and was killed"
                ),
            });
        }
        Err(_) => {
            return Err(PluginError::Timeout {
                command,
                after: limit,
            });
        }
    };
    // Finished and reaped: whatever it left running in its group is its own business.
    group.0 = None;
    if stderr.total > 0 {
        if status.success() {
            log::debug!(
                "credential plugin {command} wrote {stderr} on stderr (not shown: a plugin that succeeded may have printed its credential there)"
            );
        } else {
            log::debug!(
                "credential plugin {command} wrote {stderr} on stderr: {}",
                scrubbed(&stderr.head, &stdout)
            );
        }
    }
    if !status.success() {
        return Err(PluginError::Failed { command, status });
    }
    parse(&stdout, &api_version).map_err(|why| PluginError::Output { command, why })
}

/// The words of an ExecCredential's own structure, which stay readable in a plugin's stderr.
const EXEC_CREDENTIAL_WORDS: [&str; 8] = [
    "apiVersion",
    "ExecCredential",
    "status",
    "expirationTimestamp",
    "clientCertificateData",
    "clientKeyData",
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
];

/// How reading a plugin's output ended early.
enum Ended {
    Io(std::io::Error),
    TooMuch,
}

impl From<std::io::Error> for Ended {
    fn from(e: std::io::Error) -> Self {
        Ended::Io(e)
    }
}

/// A failed plugin's stderr as it may be logged: every word of 6 characters or more it printed
/// on stdout (a token, a key, in JSON or not) replaced by [`MARK`] wherever it appears, then
/// everything token-shaped ([`redact`]), cut to [`STDERR_SHOWN_CHARS`].
fn scrubbed(stderr: &[u8], stdout: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(stdout);
    let mut words: Vec<&str> = stdout
        .split(|c: char| c.is_whitespace() || "\"',:{}[]".contains(c))
        .filter(|w| w.chars().count() >= 6 && !EXEC_CREDENTIAL_WORDS.contains(w))
        .collect();
    // Longest first: a word inside another is replaced after it.
    words.sort_by_key(|w| std::cmp::Reverse(w.len()));
    for word in words {
        text = text.replace(word, MARK);
    }
    let text = redact(&text);
    match text.char_indices().nth(STDERR_SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The ExecCredential as printed; only what we read. No `Debug`: it holds the secret.
#[derive(Deserialize)]
struct Printed {
    kind: Option<String>,
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    status: Option<PrintedStatus>,
}

#[derive(Deserialize)]
struct PrintedStatus {
    token: Option<String>,
    #[serde(rename = "clientCertificateData")]
    certificate: Option<String>,
    #[serde(rename = "clientKeyData")]
    key: Option<String>,
    #[serde(rename = "expirationTimestamp")]
    expires: Option<String>,
}

/// Reads stdout as client-go does; the error says what is wrong, never what was printed.
fn parse(stdout: &[u8], api_version: &str) -> Result<Issued, String> {
    let printed: Printed = serde_json::from_slice(stdout).map_err(|e| {
        format!(
            "not an ExecCredential JSON object (at line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    if printed.kind.as_deref() != Some("ExecCredential") {
        return Err(format!(
            "kind is {:?}, not \"ExecCredential\"",
            printed.kind
        ));
    }
    if printed.api_version.as_deref() != Some(api_version) {
        return Err(format!(
            "apiVersion is {:?}, but the kubeconfig asks for {api_version:?}",
            printed.api_version
        ));
    }
    let status = printed.status.ok_or("no status")?;
    let expires = match status.expires.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<Timestamp>()
                .map_err(|_| format!("expirationTimestamp {text:?} is not an RFC 3339 time"))?,
        ),
    };
    let identity = match (status.certificate, status.key) {
        (Some(cert), Some(key)) => Some((cert, SecretString::from(key))),
        (None, None) => None,
        _ => {
            return Err(
                "clientCertificateData without clientKeyData, or the other way round".into(),
            );
        }
    };
    let token = status
        .token
        .filter(|t| !t.is_empty())
        .map(SecretString::from);
    if token.is_none() && identity.is_none() {
        return Err("neither a token nor a client certificate and key".into());
    }
    Ok(Issued {
        token,
        identity,
        expires,
    })
}

#[cfg(test)]
mod tests;
