//! Bounded reads: the one way the program reads a file or a stream it does not control. A leaf:
//! imports nothing of the crate.
//!
//! - Files ([`read_file`], [`read_opened`], [`read_file_async`]): opened without blocking and
//!   without following into a terminal (`O_NONBLOCK`: a FIFO with no writer does not hang the
//!   open), refused unless a regular file (after following symlinks, checked on the descriptor
//!   opened, so nothing can be swapped in between), at most [`Limit::bytes`] read (`/dev/zero`
//!   or a file growing while read cannot grow the process), and within [`Limit::time`] (a file
//!   on a hung network filesystem): the read runs on a thread of its own, and the caller moves
//!   on when the time is up. The async form does that on tokio's blocking pool, so a caller that
//!   waits in `select!` with shutdown, and the watchdog's pings, are never held up.
//! - Streams: [`Lines`] splits a byte stream into lines of bounded length (an endless line is an
//!   error, not an endless buffer); [`read_capped`] reads a pipe to its end keeping a bounded
//!   head, or gives up as soon as it is too long.
//!
//! Every error names what was read and its path; none carries the bytes read.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How much of a file may be read, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The largest file read; a larger one is refused.
    pub bytes: u64,
    /// The longest a read may take (open, check, read).
    pub time: Duration,
}

impl Limit {
    /// A limit of `bytes`, within [`DEFAULT_TIME`].
    pub const fn bytes(bytes: u64) -> Limit {
        Limit {
            bytes,
            time: DEFAULT_TIME,
        }
    }
}

/// How long a local file may take to read: far more than a local disk ever needs, far less than
/// the watchdog's or systemd's stop timeout.
pub const DEFAULT_TIME: Duration = Duration::from_secs(5);

/// Why a file was not read. Each names what the file is for and its path; none carries its
/// contents.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It could not be opened (missing, no permission, a loop of symlinks, ...).
    #[error("cannot open {what} {}", path.display())]
    Open {
        /// What the file is for ("configuration file", "token file", ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It is not a regular file.
    #[error("{what} {} {kind}, not a regular file", path.display())]
    NotRegular {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What it is instead: "is a FIFO", "is a directory", ...
        kind: &'static str,
    },
    /// It is larger than the limit.
    #[error("{what} {} is larger than {limit} bytes: is it the right file?", path.display())]
    TooLarge {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
    /// Reading it failed.
    #[error("cannot read {what} {}", path.display())]
    Read {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It was not read in time (a hung filesystem).
    #[error("{what} {} was not read within {} s", path.display(), after.as_secs_f32())]
    TimedOut {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The limit.
        after: Duration,
    },
}

impl ReadError {
    /// True when the file does not exist (a path that may be absent).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Open { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        match self {
            ReadError::Open { path, .. }
            | ReadError::NotRegular { path, .. }
            | ReadError::TooLarge { path, .. }
            | ReadError::Read { path, .. }
            | ReadError::TimedOut { path, .. } => path,
        }
    }
}

/// Reads the file at `path` (symlinks followed) within `limit`; `what` says what it is for, in
/// errors. Blocks the calling thread for at most `limit.time`; the read itself runs on a thread
/// of its own, left behind (to finish or block alone) when the time is up.
pub fn read_file(what: &'static str, path: &Path, limit: Limit) -> Result<Vec<u8>, ReadError> {
    let owned = path.to_path_buf();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("bounded-read".into())
        .spawn(move || {
            // The receiver may be gone (timed out): nothing left to tell.
            let _ = tx.send(open_and_read(what, &owned, limit.bytes));
        });
    if let Err(source) = spawned {
        // No thread to spare: read here, still bounded in size and never blocking on a FIFO.
        log::debug!("no thread for reading {what} {}: {source}", path.display());
        return open_and_read(what, path, limit.bytes);
    }
    rx.recv_timeout(limit.time)
        .unwrap_or_else(|_| Err(timed_out(what, path, limit)))
}

/// [`read_file`] for async callers: the read runs on tokio's blocking pool and the future ends
/// within `limit.time`; dropped (shutdown), it stops waiting at once.
pub async fn read_file_async(
    what: &'static str,
    path: &Path,
    limit: Limit,
) -> Result<Vec<u8>, ReadError> {
    let owned = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || open_and_read(what, &owned, limit.bytes));
    match tokio::time::timeout(limit.time, read).await {
        Ok(Ok(result)) => result,
        // The blocking task panicked or the runtime is going away.
        Ok(Err(join)) => Err(ReadError::Read {
            what,
            path: path.to_path_buf(),
            source: io::Error::other(join.to_string()),
        }),
        Err(_) => Err(timed_out(what, path, limit)),
    }
}

fn timed_out(what: &'static str, path: &Path, limit: Limit) -> ReadError {
    ReadError::TimedOut {
        what,
        path: path.to_path_buf(),
        after: limit.time,
    }
}

/// Opens `path` without blocking (a FIFO with no writer), checks and reads it.
fn open_and_read(what: &'static str, path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    // O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one; it
    // changes nothing for a regular file. O_NOCTTY: a terminal named by mistake does not become
    // ours. O_CLOEXEC: the descriptor never leaks into a child.
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| ReadError::Open {
        what,
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    read_opened(what, path, File::from(fd), max_bytes)
}

/// Reads a file already opened (by the caller's own rules: `openat`, `O_NOFOLLOW`, ...): checked
/// to be a regular file on its descriptor, at most `max_bytes` read. Does not bound the time:
/// call it from [`read_file`]'s thread, or on a file of one's own directory.
pub fn read_opened(
    what: &'static str,
    path: &Path,
    file: File,
    max_bytes: u64,
) -> Result<Vec<u8>, ReadError> {
    let read_error = |source| ReadError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    // fstat of the descriptor opened: no window between checking a path and reading it.
    let meta = file.metadata().map_err(read_error)?;
    if let Some(kind) = not_regular(meta.file_type()) {
        return Err(ReadError::NotRegular {
            what,
            path: path.to_path_buf(),
            kind,
        });
    }
    let too_large = || ReadError::TooLarge {
        what,
        path: path.to_path_buf(),
        limit: max_bytes,
    };
    if meta.len() > max_bytes {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    // One byte more than the limit: a file that grew while read is refused, never cut short.
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if u64::try_from(bytes.len()).map_or(true, |n| n > max_bytes) {
        return Err(too_large());
    }
    Ok(bytes)
}

/// What a file that is not regular is, in words; `None` for a regular file.
fn not_regular(kind: std::fs::FileType) -> Option<&'static str> {
    if kind.is_file() {
        None
    } else if kind.is_fifo() {
        Some("is a FIFO")
    } else if kind.is_dir() {
        Some("is a directory")
    } else if kind.is_char_device() {
        Some("is a character device")
    } else if kind.is_block_device() {
        Some("is a block device")
    } else if kind.is_socket() {
        Some("is a socket")
    } else {
        Some("is of an unknown type")
    }
}

/// A line longer than the limit of [`Lines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a line longer than {limit} bytes")]
pub struct LineTooLong {
    /// The limit, in bytes.
    pub limit: usize,
}

/// Splits a stream of byte chunks into `\n`-terminated lines of at most `max` bytes each (the
/// terminator not counted). Holds at most `max` bytes of an unfinished line: a longer line is an
/// error, however long it goes on.
#[derive(Debug)]
pub struct Lines {
    pending: Vec<u8>,
    max: usize,
}

impl Lines {
    /// A splitter for lines of at most `max` bytes.
    pub fn new(max: usize) -> Lines {
        Lines {
            pending: Vec::new(),
            max,
        }
    }

    /// Takes `chunk`; returns the lines it completed, in order (without their `\n`, a trailing
    /// `\r` kept), or the error of a line that grew past the limit (what came before it in this
    /// chunk is lost with it: the stream is not to be trusted any more).
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut lines = Vec::new();
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            self.extend(&chunk[..end])?;
            lines.push(std::mem::take(&mut self.pending));
            chunk = &chunk[end + 1..];
        }
        self.extend(chunk)?;
        Ok(lines)
    }

    /// The unfinished line at the end of the stream, if any.
    pub fn finish(self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then_some(self.pending)
    }

    fn extend(&mut self, part: &[u8]) -> Result<(), LineTooLong> {
        if self.pending.len().saturating_add(part.len()) > self.max {
            self.pending = Vec::new();
            return Err(LineTooLong { limit: self.max });
        }
        self.pending.extend_from_slice(part);
        Ok(())
    }
}

/// What [`read_capped`] read: the head it kept and how much there was in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped {
    /// The first bytes read, at most the cap.
    pub head: Vec<u8>,
    /// Every byte read, kept or not.
    pub total: u64,
}

impl Capped {
    /// True when more was read than kept.
    pub fn truncated(&self) -> bool {
        u64::try_from(self.head.len()).map_or(true, |kept| self.total > kept)
    }
}

impl fmt::Display for Capped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.total)
    }
}

/// Reads `reader` to its end. With `stop_past` false, keeps the first `cap` bytes and discards
/// the rest (a pipe that must be drained so its writer is not blocked); with `stop_past` true,
/// returns as soon as more than `cap` bytes came (the caller gives up on the writer), with what
/// was read until then.
pub async fn read_capped(
    mut reader: impl AsyncRead + Unpin,
    cap: usize,
    stop_past: bool,
) -> io::Result<Capped> {
    let mut head = Vec::new();
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total = total.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        let room = cap.saturating_sub(head.len());
        head.extend_from_slice(&buf[..n.min(room)]);
        if stop_past && n > room {
            break;
        }
    }
    Ok(Capped { head, total })
}

#[cfg(test)]
mod tests;
