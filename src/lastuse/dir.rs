//! The state directory, opened safely: checked as sshd's `StrictModes` checks a home directory,
//! created 0700 when missing, and held as a directory descriptor that every file operation of
//! [`super::store`] and the lock of [`super::lock`] go through (`openat`, `renameat`,
//! `unlinkat`), so nothing under it is reached by a path someone could swap for a symlink.
//!
//! The rules, for the user running the cleaner (its effective uid; root under systemd):
//! - the state directory is a directory, not a symlink to one, owned by that user, and writable
//!   by nobody else (no group or other write bit);
//! - every ancestor (after resolving symlinks) is owned by root or that user and is writable by
//!   nobody else, unless it has the sticky bit (`/tmp`): there others may create entries but not
//!   rename or remove ours.
//!
//! A directory that breaks a rule is a configuration problem ([`Error::Unsafe`], exit 78). One
//! that is missing and cannot be created (a read-only or full filesystem) is not: the caller
//! gets its nearest existing ancestor instead and keeps working in memory. Must not: read or
//! write the state file (that is [`super::store`]), or decide what a failure costs.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::Error;

/// Mode of a directory we create, whatever the umask.
const DIR_MODE: u32 = 0o700;
const GROUP_WRITE: u32 = 0o020;
const OTHER_WRITE: u32 = 0o002;
const STICKY: u32 = 0o1000;

/// A directory held open: its path (for messages) and its descriptor.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    path: PathBuf,
    fd: Arc<OwnedFd>,
}

impl StateDir {
    /// The path it was opened at.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor, for `*at` calls.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What [`open`] found.
#[derive(Debug)]
pub(crate) enum Opened {
    /// The state directory, checked.
    Dir(StateDir),
    /// The state directory is not there: not asked to create it (`why` is `None`), or it could
    /// not be created or opened (`why` says why). `ancestor` is the nearest directory on its
    /// path that exists, checked like every ancestor.
    Missing {
        ancestor: StateDir,
        why: Option<io::Error>,
    },
}

/// Who runs the cleaner.
fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Opens the state directory `state_dir`, creating it and the directories leading to it (mode
/// 0700) when `create` is set. Reading only (`create` unset), a state directory owned by root is
/// accepted too: it is as trustworthy as one of our own, we just cannot write there.
pub(crate) fn open(state_dir: &Path, create: bool) -> Result<Opened, Error> {
    let unsafe_dir = |path: &Path, why: String| Error::Unsafe {
        state_dir: state_dir.to_path_buf(),
        path: path.to_path_buf(),
        why,
    };
    let Some(parent) = state_dir.parent() else {
        return Err(unsafe_dir(state_dir, "is the root directory".into()));
    };
    // The nearest existing ancestor of the parent, and the names from there to the state dir.
    let mut base = parent;
    let mut names: Vec<&OsStr> = Vec::new();
    while !exists(base).map_err(|source| Error::Open {
        path: base.to_path_buf(),
        source,
    })? {
        match (base.file_name(), base.parent()) {
            (Some(name), Some(up)) => {
                names.push(name);
                base = up;
            }
            // `..` at the end, or a relative path with nothing left: resolved below.
            _ => break,
        }
    }
    names.reverse();
    match state_dir.components().next_back() {
        Some(Component::Normal(name)) => names.push(name),
        _ => {
            return Err(unsafe_dir(
                state_dir,
                "does not end in a directory name".into(),
            ));
        }
    }
    if names
        .iter()
        .any(|n| n.is_empty() || *n == ".." || *n == ".")
    {
        return Err(unsafe_dir(state_dir, "contains `.` or `..`".into()));
    }
    let real = std::fs::canonicalize(base).map_err(|source| Error::Open {
        path: base.to_path_buf(),
        source,
    })?;
    for dir in real.ancestors() {
        let meta = std::fs::symlink_metadata(dir).map_err(|source| Error::Open {
            path: dir.to_path_buf(),
            source,
        })?;
        use std::os::unix::fs::MetadataExt;
        if let Some(why) = ancestor_fault(meta.uid(), meta.mode()) {
            return Err(unsafe_dir(dir, why));
        }
    }
    let fd = match rustix::fs::open(&real, dir_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOTDIR) => return Err(unsafe_dir(&real, "is not a directory".into())),
        Err(e) => {
            return Err(Error::Open {
                path: real,
                source: e.into(),
            });
        }
    };
    let mut current = StateDir {
        path: real,
        fd: Arc::new(fd),
    };
    // The base again, through its descriptor: what we hold is what was checked.
    check(&current, Rule::Ancestor).map_err(|why| unsafe_dir(&current.path, why))?;
    let last = names.len() - 1;
    for (i, name) in names.iter().enumerate() {
        let rule = match (i == last, create) {
            (false, _) => Rule::Ancestor,
            (true, true) => Rule::Owned,
            (true, false) => Rule::Readable,
        };
        let path = current.path.join(name);
        let next = match open_child(&current, name, create) {
            Ok(fd) => StateDir {
                path,
                fd: Arc::new(fd),
            },
            // With O_DIRECTORY, a symlink gives ENOTDIR (ELOOP without it).
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let link = rustix::fs::statat(current.fd(), *name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
                let why = if link {
                    "is a symbolic link (give its target as state_dir)"
                } else {
                    "is not a directory"
                };
                return Err(unsafe_dir(&path, why.into()));
            }
            Err(Errno::NOENT) if !create => {
                return Ok(Opened::Missing {
                    ancestor: current,
                    why: None,
                });
            }
            Err(e) => {
                return Ok(Opened::Missing {
                    ancestor: current,
                    why: Some(e.into()),
                });
            }
        };
        check(&next, rule).map_err(|why| unsafe_dir(&next.path, why))?;
        current = next;
    }
    Ok(Opened::Dir(current))
}

fn exists(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A directory descriptor that does not follow a symlink and is not inherited.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the directory `name` in `parent`; when missing and `create` is set, creates it 0700
/// (fchmod after the umask had its say).
fn open_child(parent: &StateDir, name: &OsStr, create: bool) -> Result<OwnedFd, Errno> {
    match rustix::fs::openat(parent.fd(), name, dir_flags(), Mode::empty()) {
        Err(Errno::NOENT) if create => {}
        other => return other,
    }
    match rustix::fs::mkdirat(parent.fd(), name, Mode::from_raw_mode(DIR_MODE)) {
        // Made by someone else meanwhile: it is checked like any existing one.
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    let fd = rustix::fs::openat(parent.fd(), name, dir_flags(), Mode::empty())?;
    let stat = rustix::fs::fstat(&fd)?;
    if stat.st_uid == euid() {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE))?;
    }
    Ok(fd)
}

/// What a directory must satisfy.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// On the way to the state directory.
    Ancestor,
    /// The state directory, to be written.
    Owned,
    /// The state directory, only read.
    Readable,
}

/// Checks the directory held by `dir` against `rule`; `Err` says what is wrong.
fn check(dir: &StateDir, rule: Rule) -> Result<(), String> {
    let stat = rustix::fs::fstat(dir.fd()).map_err(|e| format!("cannot be examined: {e}"))?;
    let mode = Mode::from_raw_mode(stat.st_mode).bits();
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        return Err("is not a directory".into());
    }
    match rule {
        Rule::Ancestor => ancestor_fault(stat.st_uid, mode).map_or(Ok(()), Err),
        Rule::Owned | Rule::Readable => {
            let me = euid();
            let owner_ok =
                stat.st_uid == me || (matches!(rule, Rule::Readable) && stat.st_uid == 0);
            if !owner_ok {
                return Err(format!(
                    "is owned by uid {}, not by uid {me} which runs the cleaner",
                    stat.st_uid
                ));
            }
            writable_by_others(mode, false).map_or(Ok(()), Err)
        }
    }
}

/// What is wrong with an ancestor owned by `uid` with `mode`, if anything.
fn ancestor_fault(uid: u32, mode: u32) -> Option<String> {
    let me = euid();
    if uid != 0 && uid != me {
        return Some(format!(
            "is owned by uid {uid}, neither root nor uid {me} which runs the cleaner"
        ));
    }
    writable_by_others(mode, true)
}

/// Why `mode` lets someone other than the owner write, if it does. With `sticky_ok`, the sticky
/// bit makes shared write access safe (others cannot rename or remove what is ours).
fn writable_by_others(mode: u32, sticky_ok: bool) -> Option<String> {
    if sticky_ok && mode & STICKY != 0 {
        return None;
    }
    let perms = mode & 0o7777;
    let without = if sticky_ok {
        " without the sticky bit"
    } else {
        ""
    };
    if mode & OTHER_WRITE != 0 {
        Some(format!("is writable by others{without} (mode {perms:04o})"))
    } else if mode & GROUP_WRITE != 0 {
        Some(format!(
            "is writable by its group{without} (mode {perms:04o})"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn missing_dirs_are_created_0700_and_held() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("a/b/state");
        let Opened::Dir(dir) = open(&state, true).unwrap() else {
            panic!("not created");
        };
        assert_eq!(dir.path(), std::fs::canonicalize(&state).unwrap());
        for p in [tmp.path().join("a"), tmp.path().join("a/b"), state.clone()] {
            assert_eq!(mode_of(&p), 0o700, "{}", p.display());
        }
    }

    #[test]
    fn reading_does_not_create() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let Opened::Missing { ancestor, why } = open(&state, false).unwrap() else {
            panic!("created");
        };
        assert!(why.is_none());
        assert_eq!(ancestor.path(), std::fs::canonicalize(tmp.path()).unwrap());
        assert!(!state.exists());
    }

    #[test]
    fn unsafe_dirs_are_refused_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        set_mode(&state, 0o770);
        let e = open(&state, true).unwrap_err();
        assert!(e.is_config());
        assert!(e.to_string().contains("writable by its group"), "{e}");
        set_mode(&state, 0o700);

        set_mode(tmp.path(), 0o757);
        let e = open(&state, true).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!(
                "{} on its path is writable by others",
                tmp.path().display()
            )),
            "{text}"
        );
        set_mode(tmp.path(), 0o1777);
        assert!(matches!(open(&state, true), Ok(Opened::Dir(_))));
        set_mode(tmp.path(), 0o700);

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&state, &link).unwrap();
        let e = open(&link, true).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");

        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = open(&file, true).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
        let e = open(&file.join("state"), true).unwrap_err();
        assert!(e.is_config(), "{e}");
    }

    #[test]
    fn the_rules() {
        assert_eq!(writable_by_others(0o40700, false), None);
        assert_eq!(writable_by_others(0o40755, true), None);
        assert_eq!(writable_by_others(0o41777, true), None);
        assert!(writable_by_others(0o41777, false).is_some());
        assert!(writable_by_others(0o40775, true).unwrap().contains("group"));
        assert!(
            writable_by_others(0o40757, true)
                .unwrap()
                .contains("others")
        );
        assert!(ancestor_fault(0, 0o40755).is_none());
        assert!(
            ancestor_fault(65534, 0o40755)
                .unwrap()
                .contains("owned by uid 65534")
        );
    }
}
