//! Reloading: the inputs the configuration is read from, kept to read them again ([`Inputs`]);
//! the daemon's side of SIGHUP ([`Reloader`]: load, check, hand the new configuration to the
//! loop, write down how it went); and `docker-image-cleaner reload`, the unit's `ExecReload=`
//! ([`request_reload`]: check, signal, wait for that answer). The answer travels through a file
//! in the unit's `RuntimeDirectory=` ([`Answers`]), since systemd's reload job ends when
//! `ExecReload=` exits and systemd 252 has no `Type=notify-reload`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use super::preflight::preflight;
use crate::config::{self, Config, Env, EnvFile, Flags, Loaded};
use crate::error_chain;

/// How long `reload` waits for the daemon's answer.
pub const RELOAD_BOUND: Duration = Duration::from_secs(60);

/// What the configuration is read from: the file named (if any), the process's own environment
/// (without what the unit copied into it from the environment file), and the environment
/// file's path. The daemon keeps it to read the same inputs again on SIGHUP.
#[derive(Debug, Clone)]
pub struct Inputs {
    config: Option<PathBuf>,
    process: Env,
    env_file: Option<PathBuf>,
    dry_run: bool,
}

impl Inputs {
    /// The inputs of a process whose environment is `process`: the variables the environment
    /// file gives with the same value are the file's (see [`Env::with_file`]), so that an edit
    /// of the file shows on reload.
    pub fn new(
        config: Option<PathBuf>,
        process: Env,
        env_file: Option<PathBuf>,
        dry_run: bool,
    ) -> Result<Self, config::Error> {
        let file = read_env_file(env_file.as_deref())?;
        Ok(Inputs {
            config,
            process: process.with_file(file).without_file(),
            env_file,
            dry_run,
        })
    }

    /// Reads the environment file again and loads the configuration.
    pub fn load(&self) -> Result<Loaded, config::Error> {
        let file = read_env_file(self.env_file.as_deref())?;
        config::load(
            self.config.as_deref(),
            &self.process.clone().with_file(file),
            Flags {
                dry_run: self.dry_run,
            },
        )
    }
}

fn read_env_file(path: Option<&Path>) -> Result<Option<EnvFile>, config::Error> {
    match path {
        Some(p) => EnvFile::read(p),
        None => Ok(None),
    }
}

/// Where the daemon writes how its last reload went, for `reload` to wait on: the file `reload`
/// in the unit's `RuntimeDirectory=` (systemd names it in `$RUNTIME_DIRECTORY`, for the daemon
/// and its `ExecReload=` alike). One line: `PID SEQ ok|failed MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    path: PathBuf,
}

impl Answers {
    /// The answer file in the first directory of `runtime_directory` (`$RUNTIME_DIRECTORY`);
    /// `None` without one (not under systemd).
    pub fn from_env(runtime_directory: Option<&std::ffi::OsStr>) -> Option<Answers> {
        let dir = std::env::split_paths(runtime_directory?).next()?;
        (!dir.as_os_str().is_empty()).then(|| Answers {
            path: dir.join("reload"),
        })
    }

    /// The file's text, empty when it is absent (bounded: one short line is expected).
    fn read(&self) -> String {
        let mut text = String::new();
        if let Ok(f) = std::fs::File::open(&self.path) {
            let _ = f.take(64 * 1024).read_to_string(&mut text);
        }
        text
    }

    /// `(ok, message)` of a line written by process `pid`.
    fn parse(text: &str, pid: i32) -> Option<(bool, String)> {
        let mut parts = text.trim_end().splitn(4, ' ');
        let by: i32 = parts.next()?.parse().ok()?;
        let _seq = parts.next()?;
        let ok = match parts.next()? {
            "ok" => true,
            "failed" => false,
            _ => return None,
        };
        (by == pid).then(|| (ok, parts.next().unwrap_or_default().to_string()))
    }

    /// Writes the answer to reload number `seq` of this process (atomically: a temp file
    /// renamed over the answer).
    fn write(&self, seq: u64, ok: bool, message: &str) {
        let tmp = self.path.with_extension("tmp");
        let line = format!(
            "{} {seq} {} {}\n",
            std::process::id(),
            if ok { "ok" } else { "failed" },
            message.replace('\n', " ")
        );
        if let Err(e) = std::fs::write(&tmp, line).and_then(|()| std::fs::rename(&tmp, &self.path))
        {
            log::warn!(
                "cannot write the reload's answer to {} for `reload` to read: {e}",
                self.path.display()
            );
        }
    }
}

/// The daemon's side of SIGHUP: loads the configuration again the way it was loaded at
/// start, checks what it needs of the node, hands a good one to the loop, and answers.
pub struct Reloader {
    inputs: Inputs,
    tx: mpsc::UnboundedSender<Config>,
    answers: Option<Answers>,
    seq: u64,
}

impl Reloader {
    /// A reloader feeding the loop through `tx`, answering in `answers`.
    pub fn new(
        inputs: Inputs,
        tx: mpsc::UnboundedSender<Config>,
        answers: Option<Answers>,
    ) -> Self {
        Reloader {
            inputs,
            tx,
            answers,
            seq: 0,
        }
    }

    /// One SIGHUP.
    pub async fn reload(&mut self) {
        self.seq += 1;
        let result = match self.inputs.load() {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    log::warn!("{w}");
                }
                let checked = preflight(&loaded.config).await;
                for w in &checked.warnings {
                    log::warn!("{w}");
                }
                if checked.ok() {
                    Ok(loaded.config)
                } else {
                    Err(checked.fatal.join("; "))
                }
            }
            Err(e) => Err(error_chain(&e)),
        };
        let (ok, message) = match result {
            Ok(config) => {
                // The daemon is gone when this fails: nothing left to reload.
                let _ = self.tx.send(config);
                (
                    true,
                    "configuration reloaded (it applies once a pass in progress ends)".to_string(),
                )
            }
            Err(why) => {
                let message =
                    format!("keeping the running configuration, the new one is invalid: {why}");
                log::error!("SIGHUP: {message}");
                (false, message)
            }
        };
        if let Some(a) = &self.answers {
            a.write(self.seq, ok, &message);
        }
    }
}

/// Why `reload` did not reload.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration is invalid or cannot work here: the daemon was not signalled.
    #[error("not reloading, the running configuration stays: {0}")]
    Invalid(String),
    /// No process to signal was named.
    #[error("reload needs --pid (or $MAINPID, as systemd sets it)")]
    NoPid,
    /// The signal could not be sent.
    #[error("cannot signal process {pid}")]
    Signal {
        /// The process.
        pid: i32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The daemon refused the new configuration (a file changed after the check).
    #[error("{0}")]
    Refused(String),
    /// The daemon did not answer in time.
    #[error("process {pid} did not answer the reload within {} s", RELOAD_BOUND.as_secs())]
    NoAnswer {
        /// The process.
        pid: i32,
    },
}

impl ReloadError {
    /// True when the configuration is at fault (exit 78).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            ReloadError::Invalid(_) | ReloadError::Refused(_) | ReloadError::NoPid
        )
    }
}

/// What `reload` says when the daemon took the new configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The daemon's answer (or, without an answer file, what was done).
    pub message: String,
    /// Warnings of the checks (not fatal).
    pub warnings: Vec<String>,
}

/// `docker-image-cleaner reload`: checks `loaded` (the configuration as the daemon will read
/// it) with the same checks as a start; when it cannot work, fails without signalling. Else
/// sends SIGHUP to `pid` and, with `answers`, waits (at most [`RELOAD_BOUND`]) for its answer.
pub async fn request_reload(
    loaded: &Loaded,
    pid: Option<i32>,
    answers: Option<&Answers>,
) -> Result<Reloaded, ReloadError> {
    let checked = preflight(&loaded.config).await;
    let mut warnings = loaded.warnings.clone();
    warnings.extend(checked.warnings.iter().cloned());
    if !checked.ok() {
        return Err(ReloadError::Invalid(checked.fatal.join("; ")));
    }
    let pid = pid
        .and_then(rustix::process::Pid::from_raw)
        .ok_or(ReloadError::NoPid)?;
    let raw = pid.as_raw_nonzero().get();
    let before = answers.map(Answers::read);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).map_err(|e| {
        ReloadError::Signal {
            pid: raw,
            source: e.into(),
        }
    })?;
    let Some(answers) = answers else {
        return Ok(Reloaded {
            message: format!(
                "asked process {raw} to reload (SIGHUP); no RUNTIME_DIRECTORY to wait for its answer in"
            ),
            warnings,
        });
    };
    let deadline = tokio::time::Instant::now() + RELOAD_BOUND;
    loop {
        let now = answers.read();
        if Some(&now) != before.as_ref()
            && let Some((ok, message)) = Answers::parse(&now, raw)
        {
            return if ok {
                Ok(Reloaded { message, warnings })
            } else {
                Err(ReloadError::Refused(message))
            };
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ReloadError::NoAnswer { pid: raw });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_only_from_the_process_asked() {
        let dir = tempfile::tempdir().unwrap();
        let a = Answers::from_env(Some(dir.path().as_os_str())).unwrap();
        assert_eq!(a.read(), "");
        a.write(3, false, "keeping the running configuration:\nbad");
        let text = a.read();
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(
            Answers::parse(&text, me),
            Some((false, "keeping the running configuration: bad".into()))
        );
        assert_eq!(Answers::parse(&text, me + 1), None);
        assert_eq!(Answers::from_env(None), None);
    }
}
