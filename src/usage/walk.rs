//! The `du -sxB1` walk: the allocated bytes and inodes of one or more directory trees, hard links
//! once, never crossing into another filesystem, never following a symlink. Expensive: for
//! absolute mode and for an engine's footprint, never for the relative trigger.

use std::collections::HashSet;
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, Stat};

use super::Error;

/// Allocated size of one or more trees, as `du -sxB1` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TreeUsage {
    /// Allocated bytes (`st_blocks * 512`) of every inode counted, directories included.
    pub bytes: u64,
    /// Inodes counted, the roots included (what `du -sx --inodes` reports).
    pub inodes: u64,
    /// Entries that could not be stat'ed and directories that could not be read, for reasons other
    /// than having vanished during the walk. Their bytes are missing from `bytes`.
    pub unreadable: u64,
}

/// Walks `roots` and adds up the space they allocate, with `du -sxB1` semantics: `st_blocks * 512`
/// of every inode once (hard-linked files once per `(st_dev, st_ino)`), directories and the roots
/// included, symlinks not followed (a root that is a symlink counts as the link), and nothing on
/// another filesystem than its root: such an entry, a mount point, is neither counted nor entered.
///
/// Several roots add up; an inode reachable from two roots (hard links, nested roots) counts once.
/// Every directory is counted and entered once even for a single root, which also makes the walk
/// safe from bind-mount cycles (`du` with one operand would count a same-filesystem bind mount
/// inside the tree twice).
///
/// Entries that vanish during the walk are skipped silently; other failures are counted in
/// [`TreeUsage::unreadable`] and the walk goes on. Fails only when a root itself cannot be
/// `lstat`ed or the walk threads cannot start.
///
/// Runs on a dedicated pool of threads, more than the CPUs because a cold walk waits on the disk,
/// and blocks the caller until done (call it from `spawn_blocking`).
pub fn tree_usage(roots: &[PathBuf]) -> Result<TreeUsage, Error> {
    tree_usage_excluding(roots, &[])
}

/// [`tree_usage`] that neither counts nor enters `exclude` (nor anything under it): for a
/// directory another measurement covers (containerd's root inside a watched path, whose bytes
/// are counted per namespace). An excluded path that does not exist is ignored.
pub fn tree_usage_excluding(roots: &[PathBuf], exclude: &[PathBuf]) -> Result<TreeUsage, Error> {
    let walk = Walk::new(roots.len() > 1);
    for path in exclude {
        if let Ok(st) = rustix::fs::lstat(path) {
            // Seen already: the walk skips it like a directory reached twice.
            walk.first_visit(&Entry::from_stat(&st));
        }
    }
    let mut dirs = Vec::new();
    for root in roots {
        let st = rustix::fs::lstat(root).map_err(|errno| Error::StatRoot {
            path: root.clone(),
            source: errno.into(),
        })?;
        let entry = Entry::from_stat(&st);
        // A root is always remembered, so that a root given twice or nested counts once (and
        // an excluded root not at all).
        if !walk.first_visit(&entry) {
            continue;
        }
        walk.add(entry.bytes(), 1, 0);
        if entry.is_dir {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::open(root, flags, Mode::empty()) {
                Ok(fd) => dirs.push((fd, entry.dev)),
                Err(errno) => walk.failed(errno),
            }
        }
    }
    if !dirs.is_empty() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(walk_threads())
            .thread_name(|i| format!("usage-walk-{i}"))
            .build()
            .map_err(|source| Error::ThreadPool {
                path: roots.first().cloned().unwrap_or_default(),
                source,
            })?;
        let walk = &walk;
        pool.scope(move |scope| {
            for (fd, dev) in dirs {
                scope.spawn(move |scope| walk.scan_dir(scope, fd, dev));
            }
        });
    }
    Ok(walk.usage())
}

/// Threads of the walk. With a warm cache the walk is bound by system calls and more threads
/// than CPUs cost next to nothing (measured: 1 vs 4 threads on one CPU, 2 vs 8 on two); with a cold
/// cache they keep more reads in flight (measured on two CPUs, 445k entries: 8 threads 3.7-5.6 s,
/// 2 threads 6.4-7.1 s, `du` 10.5 s). Capped so that a large node does not get a thread herd.
fn walk_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus * 4).clamp(4, 32)
}

/// Bytes for `getdents64(2)`: a few hundred entries per call.
const DIRENT_BUF_BYTES: usize = 32 * 1024;
/// Shards of the set of visited inodes, so that threads rarely wait for each other.
const SEEN_SHARDS: usize = 64;

/// What the walk needs from one `lstat`.
struct Entry {
    dev: u64,
    ino: u64,
    nlink: u64,
    blocks: u64,
    is_dir: bool,
}

impl Entry {
    // The field types of `struct stat` differ between architectures; the casts are widening.
    #[allow(clippy::unnecessary_cast)]
    fn from_stat(st: &Stat) -> Entry {
        Entry {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
            blocks: st.st_blocks as u64,
            is_dir: FileType::from_raw_mode(st.st_mode) == FileType::Directory,
        }
    }

    /// `st_blocks` is in 512-byte units whatever the filesystem's block size (stat(2)).
    fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(512)
    }
}

/// Shared state of one [`tree_usage`] call.
struct Walk {
    bytes: AtomicU64,
    inodes: AtomicU64,
    unreadable: AtomicU64,
    /// `(st_dev, st_ino)` of directories, of files with several links, and with several roots of
    /// everything (as `du` does), so that nested roots count once.
    seen: Vec<Mutex<HashSet<(u64, u64)>>>,
    remember_all: bool,
}

impl Walk {
    fn new(remember_all: bool) -> Walk {
        Walk {
            bytes: AtomicU64::new(0),
            inodes: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
            seen: (0..SEEN_SHARDS).map(|_| Mutex::default()).collect(),
            remember_all,
        }
    }

    /// Records the inode; false when it was recorded before and must be skipped.
    fn first_visit(&self, entry: &Entry) -> bool {
        // Fibonacci hashing of the inode number spreads sequential inodes over the shards.
        let shard = (entry.ino.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SEEN_SHARDS;
        self.seen[shard]
            .lock()
            // A panic while holding the lock cannot leave a half-inserted pair behind.
            .unwrap_or_else(PoisonError::into_inner)
            .insert((entry.dev, entry.ino))
    }

    fn add(&self, bytes: u64, inodes: u64, unreadable: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.inodes.fetch_add(inodes, Ordering::Relaxed);
        self.unreadable.fetch_add(unreadable, Ordering::Relaxed);
    }

    /// Counts a failure unless the entry merely vanished (or was replaced by a non-directory)
    /// while we walked: Docker deletes layers during the walk.
    fn failed(&self, errno: rustix::io::Errno) {
        if !vanished(errno) {
            self.add(0, 0, 1);
        }
    }

    fn usage(&self) -> TreeUsage {
        TreeUsage {
            bytes: self.bytes.load(Ordering::Relaxed),
            inodes: self.inodes.load(Ordering::Relaxed),
            unreadable: self.unreadable.load(Ordering::Relaxed),
        }
    }

    /// Counts the entries of the open directory `dir` and spawns a task per subdirectory.
    /// `root_dev` is the `st_dev` of the root this directory was reached from.
    fn scan_dir<'scope>(&'scope self, scope: &rayon::Scope<'scope>, dir: OwnedFd, root_dev: u64) {
        // Children open themselves relative to this descriptor: no path resolution from the
        // root, and at most one descriptor per directory with pending children.
        let dir = Arc::new(dir);
        let mut buf = [MaybeUninit::<u8>::uninit(); DIRENT_BUF_BYTES];
        let mut entries = RawDir::new(dir.as_fd(), &mut buf);
        let (mut bytes, mut inodes, mut unreadable) = (0, 0, 0);
        while let Some(next) = entries.next() {
            let dirent = match next {
                Ok(dirent) => dirent,
                Err(errno) => {
                    // Reading the rest of this directory is hopeless; what was read counts.
                    if !vanished(errno) {
                        unreadable += 1;
                    }
                    break;
                }
            };
            let name = dirent.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let entry = match rustix::fs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Entry::from_stat(&st),
                Err(errno) => {
                    if !vanished(errno) {
                        unreadable += 1;
                    }
                    continue;
                }
            };
            // Another filesystem (a mount point): neither counted nor entered, like `du -x`.
            if entry.dev != root_dev {
                continue;
            }
            let remember = entry.is_dir || entry.nlink > 1 || self.remember_all;
            if remember && !self.first_visit(&entry) {
                continue;
            }
            bytes += entry.bytes();
            inodes += 1;
            if entry.is_dir {
                let parent = Arc::clone(&dir);
                let name = name.to_owned();
                scope.spawn(move |scope| self.open_and_scan(scope, parent, &name, root_dev));
            }
        }
        self.add(bytes, inodes, unreadable);
    }

    fn open_and_scan<'scope>(
        &'scope self,
        scope: &rayon::Scope<'scope>,
        parent: Arc<OwnedFd>,
        name: &CStr,
        root_dev: u64,
    ) {
        // NOFOLLOW: if the directory was replaced by a symlink since its stat, do not follow it.
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let opened = rustix::fs::openat(&*parent, name, flags, Mode::empty());
        // Let the parent's descriptor close as soon as its last child is open, not when the
        // child's whole subtree is done.
        drop(parent);
        match opened {
            Ok(dir) => self.scan_dir(scope, dir, root_dev),
            Err(errno) => self.failed(errno),
        }
    }
}

/// The entry disappeared, or was replaced by something that is not a directory (`ENOTDIR`, or
/// `ELOOP` for a symlink under `O_NOFOLLOW`), between two system calls of the walk.
fn vanished(errno: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    errno == Errno::NOENT || errno == Errno::NOTDIR || errno == Errno::LOOP
}
