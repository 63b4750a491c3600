//! Native measurement of the storage: what a pass compares with the watermarks. Knows nothing
//! about Docker; never shells out, follows a symlink, crosses into another filesystem or deletes.
//!
//! Two measurements, for two purposes:
//! - [`statvfs()`] is cheap and relative: how full the filesystem holding a path is, in blocks
//!   and in inodes. The relative trigger and stop condition use it ([`FsUsage::used_pct`]).
//! - [`tree_usage`] is expensive and absolute: the allocated bytes and inodes of one or more
//!   directory trees, with `du -sxB1` semantics (absolute mode).
//!
//! [`Measurement`] is one reading of all the watched paths; a [`Meter`] takes one (the real one is
//! [`PathMeter`]; tests measure a simulated disk).
//!
//! - `statvfs`: [`FsUsage`] and its arithmetic.
//! - `walk`: [`tree_usage`], a parallel walk.

mod statvfs;
mod walk;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::{Config, Watermarks};

pub use statvfs::{FsUsage, statvfs};
pub use walk::{TreeUsage, tree_usage, tree_usage_excluding};

/// Errors of the measurements. Each names the operation and the path; the cause is the source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A watched path is missing or inaccessible.
    #[error("cannot access watched path {}", path.display())]
    Access {
        /// The path.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
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
    /// Bytes counted by another component than a walk (containerd's count of an engine's
    /// namespace, in absolute mode) could not be had.
    #[error("cannot count {what}: {message}")]
    Counted {
        /// What was to be counted.
        what: String,
        /// Why not.
        message: String,
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
            Error::Access { .. } => false,
            Error::Statvfs { source, .. } | Error::StatRoot { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::OutOfMemory
            ),
            Error::ThreadPool { .. } | Error::Counted { .. } => true,
        }
    }
}

/// One reading of the watched paths.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Measurement {
    /// `statvfs` of every watched filesystem (two paths on one filesystem count once).
    Relative(Vec<FsUsage>),
    /// The trees added up, `du -sx` style.
    Absolute(TreeUsage),
}

impl Measurement {
    /// The figure compared with the watermarks: the fullest filesystem's percentage (blocks or
    /// inodes, whichever is higher), or bytes.
    pub fn level(&self) -> f64 {
        match self {
            Measurement::Relative(fs) => fs.iter().map(FsUsage::used_pct).fold(0.0, f64::max),
            // Precision is lost only above 2^53 bytes (8 PiB), for display and comparison.
            Measurement::Absolute(t) => t.bytes as f64,
        }
    }

    /// Bytes and inodes freed between `self` (before) and `after`; negative when something else
    /// wrote meanwhile.
    pub fn freed_since(&self, after: &Measurement) -> (i64, i64) {
        let diff = |more: u64, less: u64| -> i64 {
            if more >= less {
                i64::try_from(more - less).unwrap_or(i64::MAX)
            } else {
                i64::try_from(less - more).map_or(i64::MIN, |d| -d)
            }
        };
        match (self, after) {
            (Measurement::Relative(b), Measurement::Relative(a)) => {
                b.iter().zip(a).fold((0i64, 0i64), |acc, (b, a)| {
                    (
                        acc.0.saturating_add(diff(a.avail_bytes, b.avail_bytes)),
                        acc.1.saturating_add(diff(a.avail_inodes, b.avail_inodes)),
                    )
                })
            }
            (Measurement::Absolute(b), Measurement::Absolute(a)) => {
                (diff(b.bytes, a.bytes), diff(b.inodes, a.inodes))
            }
            _ => (0, 0),
        }
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Measurement::Relative(all) => {
                for (i, fs) in all.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(
                        f,
                        "{}: blocks {:.1}%, inodes {:.1}%",
                        fs.path.display(),
                        fs.blocks_used_pct,
                        fs.inodes_used_pct
                    )?;
                }
                Ok(())
            }
            Measurement::Absolute(t) => write!(f, "{} in {} inodes", size(t.bytes), t.inodes),
        }
    }
}

/// Formats bytes for people (`12.5 MiB`).
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

/// Formats a signed byte count for people (`-3.0 MiB` when something grew).
pub fn signed_size(bytes: i64) -> String {
    if bytes < 0 {
        format!("-{}", size(bytes.unsigned_abs()))
    } else {
        size(bytes.unsigned_abs())
    }
}

/// Takes one [`Measurement`].
pub trait Meter: Sync {
    /// Measures now.
    fn measure(&self) -> impl Future<Output = Result<Measurement, Error>> + Send;

    /// `statvfs` of every watched filesystem (what the critical watermark and the floors are
    /// judged on, in both modes).
    fn filesystems(&self) -> impl Future<Output = Result<Vec<FsUsage>, Error>> + Send;

    /// The bytes `paths` take, `du -sx` style, neither counting nor entering `skip` (an
    /// engine's footprint, without the directories counted another way).
    fn footprint(
        &self,
        paths: &[PathBuf],
        skip: &[PathBuf],
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// The device `path` lives on (to find the filesystems of an engine), `None` when it cannot
    /// be found.
    fn device(&self, path: &std::path::Path) -> Option<u64>;
}

impl Measurement {
    /// The filesystems of a relative measurement (empty in absolute mode).
    pub fn filesystems(&self) -> &[FsUsage] {
        match self {
            Measurement::Relative(all) => all,
            Measurement::Absolute(_) => &[],
        }
    }
}

/// The real meter: the configured paths, by `statvfs` in relative mode or walked in absolute
/// mode (off the async threads).
#[derive(Debug)]
pub struct PathMeter {
    paths: Vec<PathBuf>,
    /// Measured by `statvfs` (relative mode), never walked: places of the engines' bytes
    /// beyond the configured paths.
    also: Vec<PathBuf>,
    /// Never walked: directories whose bytes are counted another way.
    skip: Vec<PathBuf>,
    absolute: bool,
    /// The last absolute measurement's walk, until a footprint of the same trees takes it: one
    /// walk per tree per step (`status`, and a pass taking stock right after measuring).
    last_walk: std::sync::Mutex<Option<TreeUsage>>,
}

impl PathMeter {
    /// The meter for `config`'s paths and threshold type.
    pub fn new(config: &Config) -> Self {
        PathMeter {
            paths: config.paths.clone(),
            also: Vec::new(),
            skip: Vec::new(),
            absolute: matches!(config.watermarks, Watermarks::Absolute { .. }),
            last_walk: std::sync::Mutex::default(),
        }
    }

    /// Also watches the filesystems of `also` (relative mode), and never walks `skip`.
    pub fn with_places(mut self, also: Vec<PathBuf>, skip: Vec<PathBuf>) -> Self {
        for path in also {
            if !self.paths.contains(&path) && !self.also.contains(&path) {
                self.also.push(path);
            }
        }
        self.skip = skip;
        self
    }

    /// Every path whose filesystem is watched: the configured ones, then the others. A place
    /// an engine named that does not exist yet (containerd makes its content store with the
    /// first image) is watched through its nearest existing parent, on the filesystem that
    /// will hold it.
    fn watched(&self) -> Vec<PathBuf> {
        self.paths
            .iter()
            .cloned()
            .chain(self.also.iter().filter_map(|p| existing_ancestor(p)))
            .collect()
    }
}

/// The device `path` lives on.
pub fn device_of(path: &std::path::Path) -> Result<u64, Error> {
    std::fs::metadata(path)
        .map(|m| m.dev())
        .map_err(|source| Error::Access {
            path: path.to_path_buf(),
            source,
        })
}

/// `path`, or its nearest parent that exists; `None` when none does (a relative path).
fn existing_ancestor(path: &std::path::Path) -> Option<PathBuf> {
    path.ancestors()
        .find(|p| std::fs::symlink_metadata(p).is_ok())
        .map(std::path::Path::to_path_buf)
}

/// `statvfs` of every filesystem holding one of `paths`, each once, in the order of the paths.
pub fn filesystems(paths: &[PathBuf]) -> Result<Vec<FsUsage>, Error> {
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    for path in paths {
        let dev = device_of(path)?;
        if seen.insert(dev) {
            let mut fs = statvfs(path)?;
            fs.dev = dev;
            all.push(fs);
        }
    }
    Ok(all)
}

impl Meter for PathMeter {
    async fn filesystems(&self) -> Result<Vec<FsUsage>, Error> {
        filesystems(&self.watched())
    }

    async fn footprint(&self, paths: &[PathBuf], skip: &[PathBuf]) -> Result<u64, Error> {
        if paths == self.paths.as_slice() && skip == self.skip.as_slice() {
            let walked = self
                .last_walk
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(tree) = walked {
                return Ok(tree.bytes);
            }
        }
        let paths = paths.to_vec();
        let skip = skip.to_vec();
        match tokio::task::spawn_blocking(move || tree_usage_excluding(&paths, &skip)).await {
            Ok(tree) => Ok(tree?.bytes),
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    fn device(&self, path: &std::path::Path) -> Option<u64> {
        device_of(path).ok()
    }

    async fn measure(&self) -> Result<Measurement, Error> {
        if !self.absolute {
            return Ok(Measurement::Relative(filesystems(&self.watched())?));
        }
        let paths = self.paths.clone();
        let skip = self.skip.clone();
        let tree =
            match tokio::task::spawn_blocking(move || tree_usage_excluding(&paths, &skip)).await {
                Ok(tree) => tree?,
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            };
        if tree.unreadable > 0 {
            log::warn!(
                "{} entries could not be read while measuring",
                tree.unreadable
            );
        }
        *self
            .last_walk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tree);
        Ok(Measurement::Absolute(tree))
    }
}
