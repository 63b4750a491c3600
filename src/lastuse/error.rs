//! The errors of the state directory, its lock and the state file. Only two stop the cleaner: a
//! state directory that is not safe to write in (a configuration problem) and another instance
//! holding the lock; a state file that cannot be read or written is a warning (see
//! [`super::store`]).

use std::path::{Path, PathBuf};

/// Errors of the state directory, the lock and the state file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state directory, or a directory on its path, could be tampered with by another user
    /// (see [`super::dir`] for the rules).
    #[error("unsafe state directory {}", fault(.state_dir, .path, .why))]
    Unsafe {
        /// The configured state directory.
        state_dir: PathBuf,
        /// The directory at fault (the state directory or one of its ancestors).
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A directory on the way to the state directory cannot be opened or examined.
    #[error("cannot open {path}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another instance holds the single-instance lock.
    #[error("another docker-image-cleaner holds the lock on {path}; only one may clean at a time")]
    Locked {
        /// The directory locked.
        path: PathBuf,
    },
    /// The lock cannot be taken for another reason.
    #[error("cannot lock {path}")]
    Lock {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// One step of writing the state file failed; the previous file is intact.
    #[error("cannot save the state: {step} {path}")]
    Write {
        /// What was being done (`create`, `write`, `rename to`, …).
        step: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// `<state dir>: it …`, or `<state dir>: its ancestor <path> …`.
fn fault(state_dir: &Path, path: &Path, why: &str) -> String {
    if path == state_dir {
        format!("{}: it {why}", state_dir.display())
    } else {
        format!(
            "{}: {} on its path {why}",
            state_dir.display(),
            path.display()
        )
    }
}

impl Error {
    /// True when the configuration is at fault (exit 78): the state directory is unsafe.
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Unsafe { .. })
    }
}
