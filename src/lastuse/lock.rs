//! The single-instance lock: an exclusive, non-blocking `flock` on the state directory itself,
//! held for the life of the process. Locking the directory needs no file of its own, so a
//! filesystem out of inodes or blocks cannot stop the cleaner from starting (a lock file would);
//! and it is released by the kernel whatever way the process ends. Must not: read or write the
//! state file.
//!
//! When the state directory does not exist and cannot be created (its filesystem is read-only or
//! full), the lock is taken on its nearest existing ancestor instead, and last use is kept in
//! memory for the life of the process. Two cleaners configured alike see the same ancestor, so
//! they still exclude each other; running unlocked would let a manual `once` clean beside the
//! daemon. The cost: someone who can open that ancestor (usually world-readable, such as
//! `/var/lib`) and flock it can hold a degraded cleaner off, which no one can do to the
//! state directory itself (0700).

use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use rustix::io::Errno;

use super::Error;
use super::dir::{self, Opened, StateDir};
use super::store::Store;

/// Holds the single-instance lock until dropped, and the state directory it locks.
#[derive(Debug)]
pub struct InstanceLock {
    /// The configured state directory.
    state_dir: PathBuf,
    /// The state directory, `None` when it could not be created (then `locked` is an ancestor).
    dir: Option<StateDir>,
    /// The directory whose descriptor carries the flock.
    locked: StateDir,
}

impl InstanceLock {
    /// Opens (creating it, 0700, when missing) and checks `state_dir`, then takes the lock or
    /// fails at once: [`Error::Locked`] when another instance holds it, [`Error::Unsafe`] when
    /// the directory could be tampered with.
    pub fn take(state_dir: &Path) -> Result<Self, Error> {
        let (dir, locked, why) = match dir::open(state_dir, true)? {
            Opened::Dir(d) => (Some(d.clone()), d, None),
            Opened::Missing { ancestor, why } => (None, ancestor, why),
        };
        match rustix::fs::flock(locked.fd(), FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(Error::Locked {
                    path: locked.path().to_path_buf(),
                });
            }
            Err(e) => {
                return Err(Error::Lock {
                    path: locked.path().to_path_buf(),
                    source: e.into(),
                });
            }
        }
        if dir.is_none() {
            let why = why.map_or_else(|| "missing".to_string(), |e| e.to_string());
            log::warn!(
                "cannot create or open the state directory {} ({why}): last use is kept in \
                 memory until the next start, and the single-instance lock is on {}",
                state_dir.display(),
                locked.path().display()
            );
        }
        Ok(InstanceLock {
            state_dir: state_dir.to_path_buf(),
            dir,
            locked,
        })
    }

    /// The directory the lock is on: the state directory, or its nearest existing ancestor.
    pub fn locked_path(&self) -> &Path {
        self.locked.path()
    }

    /// The store in the locked state directory, the one that may write.
    pub fn store(&self) -> Store {
        Store::writable(&self.state_dir, self.dir.clone())
    }
}

impl Drop for InstanceLock {
    /// Unlocks explicitly. A flock belongs to the open file description, not to this
    /// descriptor: a child forked by another thread at that moment (an exec credential plugin,
    /// a test's command) shares the description until it execs, and closing our descriptor
    /// alone would leave the lock held by it for that window, so a lock taken again at once
    /// fails with `Locked`. Unlocking releases it whatever else shares the description.
    fn drop(&mut self) {
        // Nothing to do about a failure: closing the descriptor releases it in the end anyway.
        let _ = rustix::fs::flock(self.locked.fd(), FlockOperation::Unlock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_directory_and_no_file_is_made() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let first = InstanceLock::take(&state).unwrap();
        assert_eq!(first.locked_path(), state);
        match InstanceLock::take(&state) {
            Err(Error::Locked { path }) => assert_eq!(path, state),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
        drop(first);
        InstanceLock::take(&state).unwrap();
    }

    #[test]
    fn a_dropped_lock_is_free_at_once_even_while_its_description_is_shared() {
        let tmp = tempfile::tempdir().unwrap();
        let first = InstanceLock::take(tmp.path()).unwrap();
        // What a child forked by another thread holds until it execs: the same open file
        // description (the cause of a flaky `Locked` in tests that take the lock again).
        let shared = rustix::io::dup(first.locked.fd()).unwrap();
        drop(first);
        let again = InstanceLock::take(tmp.path());
        assert!(again.is_ok(), "{again:?}");
        drop(shared);
    }
}
