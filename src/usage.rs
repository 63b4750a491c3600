//! Native measurement of the Docker storage: `statvfs` percentages and a `du -sx`-style walk.
//! Knows nothing about Docker.
//!
//! Two measurements, for two purposes:
//! - [`statvfs`] is cheap and relative: how full the filesystem holding a path is, in blocks and in
//!   inodes. The cleaning trigger and the stop condition use it ([`FsUsage::used_pct`]).
//! - [`tree_usage`] is expensive and absolute: the allocated bytes and inodes of one or more
//!   directory trees, with `du -sxB1` semantics. It is for reporting, never for the trigger.
//!
//! This module must not shell out, follow symlinks, cross into other filesystems or delete
//! anything.

use std::collections::HashSet;
use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, Stat};

/// Errors of the measurements. Each names the operation and the path; the cause is the source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `statvfs(2)` of a path failed.
    #[error("failed to statvfs {}", path.display())]
    Statvfs {
        /// The path whose filesystem was queried.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A root given to [`tree_usage`] could not be `lstat`ed.
    #[error("failed to stat {}", path.display())]
    StatRoot {
        /// The root that could not be measured.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The threads of the walk could not be started.
    #[error("failed to start the threads to walk {}", path.display())]
    ThreadPool {
        /// The first root of the walk.
        path: PathBuf,
        /// Why the pool could not be built.
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
}

impl Error {
    /// Whether trying again later may succeed: a missing thread or an interrupted call may be
    /// transient; a missing or forbidden path is not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Statvfs { source, .. } | Error::StatRoot { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::OutOfMemory
            ),
            Error::ThreadPool { .. } => true,
        }
    }
}

/// How full the filesystem holding a path is, from `statvfs(2)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FsUsage {
    /// The path that was measured (any path on the filesystem).
    pub path: PathBuf,
    /// Size of the filesystem: `f_blocks * f_frsize`.
    pub total_bytes: u64,
    /// Bytes available to unprivileged users: `f_bavail * f_frsize`.
    pub avail_bytes: u64,
    /// `100 * (1 - f_bavail / f_blocks)`, the kubelet's formula; 0 when `f_blocks == 0`.
    pub blocks_used_pct: f64,
    /// Number of inodes: `f_files`; 0 on filesystems without a fixed inode table (btrfs).
    pub total_inodes: u64,
    /// Inodes available to unprivileged users: `f_favail`.
    pub avail_inodes: u64,
    /// `100 * (1 - f_favail / f_files)`; 0 when `f_files == 0`.
    pub inodes_used_pct: f64,
}

impl FsUsage {
    /// The trigger figure: the larger of `blocks_used_pct` and `inodes_used_pct`.
    pub fn used_pct(&self) -> f64 {
        self.blocks_used_pct.max(self.inodes_used_pct)
    }

    /// Pure arithmetic from the `statvfs` counts: used % = `100 * (1 - f_bavail / f_blocks)`,
    /// likewise `f_favail / f_files`; 0 % when `f_blocks == 0` or `f_files == 0` (btrfs).
    pub fn from_counts(
        path: PathBuf,
        frsize: u64,
        blocks: u64,
        bavail: u64,
        files: u64,
        favail: u64,
    ) -> FsUsage {
        let total_bytes = blocks.saturating_mul(frsize);
        let avail_bytes = bavail.saturating_mul(frsize);
        FsUsage {
            path,
            total_bytes,
            avail_bytes,
            // From bytes rather than blocks so that `bytes_to_reach` agrees to the last bit; the
            // ratio is the same (exactly so below 2^53 bytes).
            blocks_used_pct: used_pct(total_bytes, avail_bytes),
            total_inodes: files,
            avail_inodes: favail,
            inodes_used_pct: used_pct(files, favail),
        }
    }

    /// Bytes that must be freed so that `blocks_used_pct` drops below `low_pct` (strictly: a usage
    /// equal to `low_pct` is not below); 0 when already below. When no amount is enough
    /// (`low_pct <= 0`), all used bytes.
    pub fn bytes_to_reach(&self, low_pct: f64) -> u64 {
        amount_to_reach(self.total_bytes, self.avail_bytes, low_pct)
    }

    /// Inodes that must be freed so that `inodes_used_pct` drops below `low_pct` (strictly); 0 when
    /// already below or when the filesystem has no inode count. When no amount is enough
    /// (`low_pct <= 0`), all used inodes.
    pub fn inodes_to_reach(&self, low_pct: f64) -> u64 {
        amount_to_reach(self.total_inodes, self.avail_inodes, low_pct)
    }
}

/// `100 * (1 - avail / total)`, clamped to 0..=100; 0 when `total == 0`.
fn used_pct(total: u64, avail: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (100.0 * (1.0 - avail as f64 / total as f64)).clamp(0.0, 100.0)
}

/// The smallest `x` with `used_pct(total, avail + x) < low_pct`, found by bisection over the very
/// formula that reports the usage, so "freed that much" and "is now below" never disagree by a
/// rounding. `used_pct` is monotonic in `avail`, which makes the bisection valid.
fn amount_to_reach(total: u64, avail: u64, low_pct: f64) -> u64 {
    let used = total.saturating_sub(avail);
    let below = |freed: u64| used_pct(total, avail.saturating_add(freed)) < low_pct;
    if below(0) {
        return 0;
    }
    if !below(used) {
        return used;
    }
    // Invariant: !below(not_enough) && below(enough).
    let (mut not_enough, mut enough) = (0, used);
    while enough - not_enough > 1 {
        let mid = not_enough + (enough - not_enough) / 2;
        if below(mid) {
            enough = mid;
        } else {
            not_enough = mid;
        }
    }
    enough
}

/// Measures the filesystem holding `path` with `statvfs(2)`.
pub fn statvfs(path: &Path) -> Result<FsUsage, Error> {
    let st = rustix::fs::statvfs(path).map_err(|errno| Error::Statvfs {
        path: path.to_owned(),
        source: errno.into(),
    })?;
    Ok(FsUsage::from_counts(
        path.to_owned(),
        st.f_frsize,
        st.f_blocks,
        st.f_bavail,
        st.f_files,
        st.f_favail,
    ))
}

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
    let walk = Walk::new(roots.len() > 1);
    let mut dirs = Vec::new();
    for root in roots {
        let st = rustix::fs::lstat(root).map_err(|errno| Error::StatRoot {
            path: root.clone(),
            source: errno.into(),
        })?;
        let entry = Entry::from_stat(&st);
        // A root is always remembered, so that a root given twice or nested counts once.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(frsize: u64, blocks: u64, bavail: u64, files: u64, favail: u64) -> FsUsage {
        FsUsage::from_counts(PathBuf::from("/x"), frsize, blocks, bavail, files, favail)
    }

    #[test]
    fn from_counts_computes_kubelet_percentages() {
        // (frsize, blocks, bavail, files, favail) -> (blocks %, inodes %, used_pct)
        let cases = [
            (
                "quarter free",
                (4096, 1000, 250, 100, 90),
                (75.0, 10.0, 75.0),
            ),
            (
                "inodes dominate",
                (4096, 1000, 900, 100, 5),
                (10.0, 95.0, 95.0),
            ),
            (
                "btrfs: no inode count",
                (4096, 1000, 500, 0, 0),
                (50.0, 0.0, 50.0),
            ),
            ("no blocks", (4096, 0, 0, 10, 10), (0.0, 0.0, 0.0)),
            ("full", (4096, 1000, 0, 100, 0), (100.0, 100.0, 100.0)),
            ("empty", (1024, 1000, 1000, 100, 100), (0.0, 0.0, 0.0)),
            (
                "avail above total is clamped",
                (4096, 10, 20, 10, 20),
                (0.0, 0.0, 0.0),
            ),
        ];
        for (name, (frsize, blocks, bavail, files, favail), (b_pct, i_pct, pct)) in cases {
            let u = usage(frsize, blocks, bavail, files, favail);
            let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
            assert!(close(u.blocks_used_pct, b_pct), "{name}: blocks % {u:?}");
            assert!(close(u.inodes_used_pct, i_pct), "{name}: inodes % {u:?}");
            assert!(close(u.used_pct(), pct), "{name}: used % {u:?}");
            assert_eq!(u.total_bytes, blocks * frsize, "{name}: total bytes");
            assert_eq!(u.avail_bytes, bavail * frsize, "{name}: avail bytes");
            assert_eq!((u.total_inodes, u.avail_inodes), (files, favail), "{name}");
        }
    }

    #[test]
    fn amounts_to_reach_low_watermark() {
        // (frsize, blocks, bavail, files, favail, low %) -> (bytes, inodes)
        let cases = [
            ("already below", (1, 1000, 250, 100, 90, 80.0), (0, 0)),
            // Usage exactly at low is not below it: one more byte, one more inode.
            ("exactly at low", (1, 1000, 200, 100, 20, 80.0), (1, 1)),
            (
                "exactly at low, 4 KiB blocks",
                (4096, 100, 20, 10, 2, 80.0),
                (1, 1),
            ),
            (
                "90 % to below 80 %",
                (1, 1000, 100, 1000, 100, 80.0),
                (101, 101),
            ),
            ("full to below 50 %", (1, 1000, 0, 10, 0, 50.0), (501, 6)),
            (
                "btrfs: inodes never trigger",
                (1, 1000, 0, 0, 0, 50.0),
                (501, 0),
            ),
            (
                "low 0 % is unreachable: everything",
                (1, 1000, 100, 10, 4, 0.0),
                (900, 6),
            ),
            ("empty filesystem", (1, 0, 0, 0, 0, 80.0), (0, 0)),
        ];
        for (name, (frsize, blocks, bavail, files, favail, low), (bytes, inodes)) in cases {
            let u = usage(frsize, blocks, bavail, files, favail);
            assert_eq!(u.bytes_to_reach(low), bytes, "{name}: bytes");
            assert_eq!(u.inodes_to_reach(low), inodes, "{name}: inodes");
        }
    }

    #[test]
    fn bytes_to_reach_is_the_least_that_gets_below() {
        // Realistic sizes where float rounding could bite: freeing the answer gets below `low`,
        // freeing one byte less does not.
        let cases = [
            (4096, 25_000_000, 5_000_000, 80.0),
            (4096, 61_000_000, 3_123_457, 85.0),
            (1024, 7_777_777, 1, 99.9),
            (4096, 262_144_000_000, 13, 33.3),
        ];
        for (frsize, blocks, bavail, low) in cases {
            let u = usage(frsize, blocks, bavail, 0, 0);
            let freed = u.bytes_to_reach(low);
            assert!(
                used_pct(u.total_bytes, u.avail_bytes + freed) < low,
                "{u:?} {freed}"
            );
            assert!(
                used_pct(u.total_bytes, u.avail_bytes + freed - 1) >= low,
                "{u:?} {freed}"
            );
        }
    }

    #[test]
    fn statvfs_error_names_the_path() {
        let err = statvfs(Path::new("/nonexistent/usage-test")).expect_err("a missing path");
        assert_eq!(err.to_string(), "failed to statvfs /nonexistent/usage-test");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            source.is_some_and(|s| s.contains("No such file")),
            "{err:?}"
        );
        assert!(!err.is_transient());
    }
}
