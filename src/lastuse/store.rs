//! The state file: the last-use tables of every engine in `state_dir/last-use.json`, read at
//! start and written atomically. A state file that cannot be read or written never stops the
//! cleaner: an unusable one is moved aside and the tables start empty; a failed save is one
//! warning and the tables live on in memory.
//!
//! Every operation goes through the state directory's descriptor ([`super::dir`]), never a
//! path: the file is read with `O_NOFOLLOW` (a symlink or anything but a regular file is not
//! read, and left as it is), at most [`MAX_BYTES`]; it is written to `last-use.json.tmp`,
//! created `O_EXCL|O_NOFOLLOW` and mode 0600 whatever the umask (a stale one left by a crash is
//! unlinked, never followed, and the creation retried once), synced, renamed over the state
//! file, and the directory synced.
//!
//! Format, version 2 (times in unix milliseconds, the cursor in nanoseconds):
//! `{"version": 2, "engines": {"default": {"cursor_nanos": N, "covering_since_ms": N,
//! "images": {"sha256:…": {"first_seen_ms": N, "last_used_ms": N}}}}}`; `covering_since_ms`
//! (since when the table has covered the engine) is optional, so files written before it
//! existed read as before. Version 1 (one engine, times in seconds) is
//! migrated on load; a newer version is kept aside as `last-use.json.v<N>` for the version that
//! wrote it. Times are clamped on load to what can be true: not before 1970, not after now, first
//! seen not after last used. The clock is read by the callers and passed in.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use self::format::{EngineState, StateFile, Unusable, VERSION, parse};
use super::dir::{self, Opened, StateDir};
use super::{DEFAULT_ENGINE, Error, LastUse};
use crate::bounded::{self, ReadError};
use crate::error_chain;

/// The file in the state directory.
pub const FILE_NAME: &str = "last-use.json";
/// Where a save is written before it is renamed over [`FILE_NAME`].
const TMP_NAME: &str = "last-use.json.tmp";
/// Where an unparsable state file is moved.
const CORRUPT_NAME: &str = "last-use.json.corrupt";
/// The largest state file read: at about 150 bytes an image, some 400,000 images, where a node
/// holds a few thousand. Anything larger is not ours and is moved aside.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Mode of the files we write, whatever the umask.
const FILE_MODE: u32 = 0o600;

/// The last-use tables of every engine, by engine name.
#[derive(Debug, Default)]
pub struct Tables {
    engines: BTreeMap<String, LastUse>,
    /// State existed but could not be used: tables created from now on are not fresh.
    had_state: bool,
}

impl Tables {
    /// Empty tables although state existed (it could not be used): images found take "now",
    /// not their build time.
    fn lost() -> Self {
        Tables {
            engines: BTreeMap::new(),
            had_state: true,
        }
    }

    /// The table of `engine`, created empty when there is none yet.
    pub fn engine_mut(&mut self, engine: &str) -> &mut LastUse {
        let had_state = self.had_state;
        self.engines.entry(engine.to_string()).or_insert_with(|| {
            if had_state {
                LastUse::not_fresh()
            } else {
                LastUse::new()
            }
        })
    }

    /// The table of `engine`, if there is one.
    pub fn engine(&self, engine: &str) -> Option<&LastUse> {
        self.engines.get(engine)
    }

    /// The table of the engine configured without `[[engine]]` tables.
    pub fn default_engine(&mut self) -> &mut LastUse {
        self.engine_mut(DEFAULT_ENGINE)
    }

    /// The tables of `names` (created empty where missing), each with its name, in name order.
    pub fn engines_mut(&mut self, names: &[&str]) -> Vec<(&str, &mut LastUse)> {
        for name in names {
            self.engine_mut(name);
        }
        self.engines
            .iter_mut()
            .filter(|(k, _)| names.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v))
            .collect()
    }

    fn is_dirty(&self) -> bool {
        self.engines.values().any(LastUse::is_dirty)
    }
}

/// Where the tables are kept: the state file in an open state directory.
#[derive(Debug)]
pub struct Store {
    /// The state file's path, for messages.
    path: PathBuf,
    /// The state directory; `None` when it does not exist (and could not be created).
    dir: Option<StateDir>,
    /// Whether this store may change the directory (the lock holder's); a read-only store
    /// (`status`, a dry run) reads and never writes, renames or removes anything.
    writable: bool,
    /// A save failed and was warned about; the next warning comes after a save succeeded.
    failing: bool,
}

impl Store {
    /// The store of `status` and of a dry run: opens `state_dir` without creating it and never
    /// changes anything in it. Fails only when the directory is unsafe ([`Error::Unsafe`]); one
    /// that is missing or cannot be opened reads as empty.
    pub fn read_only(state_dir: &Path) -> Result<Store, Error> {
        let dir = match dir::open(state_dir, false)? {
            Opened::Dir(d) => Some(d),
            Opened::Missing { why: None, .. } => None,
            Opened::Missing { why: Some(e), .. } => {
                log::warn!(
                    "cannot open the state directory {} ({e}): last use starts empty",
                    state_dir.display()
                );
                None
            }
        };
        Ok(Store {
            path: state_dir.join(FILE_NAME),
            dir,
            writable: false,
            failing: false,
        })
    }

    /// The store that writes, in the state directory `dir` opened by the lock; `None` when it
    /// could not be created, which the lock has already warned about: the tables then live in
    /// memory only.
    pub(crate) fn writable(state_dir: &Path, dir: Option<StateDir>) -> Store {
        Store {
            path: state_dir.join(FILE_NAME),
            failing: dir.is_none(),
            dir,
            writable: true,
        }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the tables, clamping their times to `now_ms` and the cursor to `now_nanos`. A
    /// missing file starts empty tables (first start). A file that cannot be used starts empty
    /// tables too, with a warning: one that does not parse is moved to `last-use.json.corrupt`,
    /// one of a newer version to `last-use.json.v<N>`, a symlink or anything but a regular file
    /// is left as it is (and replaced by the next save, never followed). A read-only store
    /// moves nothing.
    pub fn load(&mut self, now_ms: i64, now_nanos: i64) -> Tables {
        let Some(dir) = &self.dir else {
            return Tables::default();
        };
        let bytes = match read(dir) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Tables::default(),
            Err(Unreadable::Odd(what)) => {
                log::warn!(
                    "state file {} is {what}: not read, left as it is; starting new tables",
                    self.path.display()
                );
                return Tables::lost();
            }
            Err(Unreadable::TooLarge(bytes)) => {
                let why = format!("unusable ({bytes} bytes, more than {MAX_BYTES})");
                self.set_aside(CORRUPT_NAME, &why, now_ms);
                return Tables::lost();
            }
            Err(Unreadable::Io(e)) => {
                log::warn!(
                    "cannot read state file {} ({e}); starting new tables",
                    self.path.display()
                );
                return Tables::lost();
            }
        };
        match parse(&bytes, now_ms, now_nanos) {
            Ok((engines, clamped)) => {
                if clamped.times > 0 {
                    log::warn!(
                        "state file {}: {} time(s) out of range (before 1970, in the \
                         future, or first seen after last used) clamped",
                        self.path.display(),
                        clamped.times
                    );
                }
                for (engine, ahead) in &clamped.cursors_ahead {
                    log::warn!(
                        "state file {}: engine {engine}'s event cursor is {} s ahead of the \
                         clock (it was saved while the clock was ahead): replaying the engine's \
                         events from {} h back instead, so that no use made while the cleaner \
                         was down is lost",
                        self.path.display(),
                        ahead.div_euclid(1_000_000_000),
                        format::AHEAD_CURSOR_REPLAY_NANOS / 3_600_000_000_000
                    );
                }
                Tables {
                    engines,
                    had_state: true,
                }
            }
            Err(Unusable::Newer(version)) => {
                let aside = format!("{FILE_NAME}.v{version}");
                let why = format!("written by a newer version (format {version}, ours {VERSION})");
                self.set_aside(&aside, &why, now_ms);
                Tables::lost()
            }
            Err(Unusable::Corrupt(why)) => {
                self.set_aside(CORRUPT_NAME, &format!("unusable ({why})"), now_ms);
                Tables::lost()
            }
        }
    }

    /// Moves the state file to `aside` in the state directory, with a warning. When that name
    /// cannot take it (a directory is there), to `<aside>.<now_ms>` (never replacing anything
    /// there). When it stays where it is (read-only, or both renames failed), this store writes
    /// nothing more: the file is not ours to overwrite, and the tables live in memory.
    fn set_aside(&mut self, aside: &str, why: &str, now_ms: i64) {
        let Some(dir) = self.dir.as_ref().filter(|_| self.writable) else {
            log::warn!(
                "state file {} is {why}; left in place, starting new tables",
                self.path.display()
            );
            return;
        };
        let unique = format!("{aside}.{now_ms}");
        let first = rustix::fs::renameat(dir.fd(), FILE_NAME, dir.fd(), aside);
        let moved = first.as_ref().map(|()| aside).or_else(|_| {
            rustix::fs::renameat_with(
                dir.fd(),
                FILE_NAME,
                dir.fd(),
                unique.as_str(),
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map(|()| unique.as_str())
        });
        match moved {
            Ok(to) => log::warn!(
                "state file {} is {why}; moved to {} and starting new tables",
                self.path.display(),
                dir.path().join(to).display()
            ),
            Err(e) => {
                log::warn!(
                    "state file {} is {why}; cannot move it to {} ({}) nor to {unique} ({e}): \
                     it is left as it is and never overwritten; last use is kept in memory \
                     until it is moved away by hand",
                    self.path.display(),
                    dir.path().join(aside).display(),
                    first.err().map(|e| e.to_string()).unwrap_or_default()
                );
                self.dir = None;
                self.failing = true;
            }
        }
    }

    /// Writes the tables if any changed, atomically (see the module docs), so a crash leaves
    /// either the old or the new file. A read-only store writes nothing and returns `Ok`.
    pub fn save(&self, tables: &mut Tables) -> Result<(), Error> {
        if !tables.is_dirty() || !self.writable {
            return Ok(());
        }
        let Some(dir) = &self.dir else {
            return Err(Error::Write {
                step: "open",
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the state directory could not be created or the state file moved aside",
                ),
            });
        };
        let state = StateFile {
            version: VERSION,
            engines: tables
                .engines
                .iter()
                .map(|(name, t)| {
                    (
                        name.clone(),
                        EngineState {
                            cursor_nanos: t.cursor_nanos(),
                            images: t.images().clone(),
                            covering_since_ms: t.covering_since_ms(),
                        },
                    )
                })
                .collect(),
        };
        let tmp_path = dir.path().join(TMP_NAME);
        let mut body = serde_json::to_vec_pretty(&state).map_err(|e| Error::Write {
            step: "encode",
            path: tmp_path.clone(),
            source: e.into(),
        })?;
        body.push(b'\n');
        write_atomically(dir, &body)?;
        for table in tables.engines.values_mut() {
            table.mark_saved();
        }
        Ok(())
    }

    /// [`Store::save`], a failure logged as one warning until a save succeeds again (then once
    /// more at info): a state directory that cannot be written (read-only, full of blocks or
    /// inodes) costs one line, not one per save, and the tables live on in memory meanwhile.
    pub fn save_or_warn(&mut self, tables: &mut Tables) {
        let dirty = tables.is_dirty();
        match self.save(tables) {
            Ok(()) if dirty && self.failing && self.writable => {
                log::info!("state file {} saved again", self.path.display());
                self.failing = false;
            }
            Ok(()) => {}
            Err(e) if self.failing => log::debug!("{}", error_chain(&e)),
            Err(e) => {
                log::warn!(
                    "{}; last use is kept in memory and saved when possible (warned again only \
                     after a save has succeeded)",
                    error_chain(&e)
                );
                self.failing = true;
            }
        }
    }
}

/// Why the state file was not read.
enum Unreadable {
    /// A symlink, a directory, a FIFO…: what it is.
    Odd(String),
    /// Larger than [`MAX_BYTES`]: its size.
    TooLarge(i64),
    /// Reading failed.
    Io(std::io::Error),
}

/// The state file's bytes, `None` when there is none; at most [`MAX_BYTES`] + 1 should it grow
/// while read (then [`parse`] refuses it).
fn read(dir: &StateDir) -> Result<Option<Vec<u8>>, Unreadable> {
    // NONBLOCK: opening a FIFO planted there must not hang; it has no effect on a regular file.
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd = match rustix::fs::openat(dir.fd(), FILE_NAME, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err(Unreadable::Odd("a symbolic link".into())),
        Err(e) => return Err(Unreadable::Io(e.into())),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| Unreadable::Io(e.into()))?;
    // The checks and the read are the program's one bounded read (crate::bounded); only the
    // open is this directory's own (`openat`, `O_NOFOLLOW`).
    let path = dir.path().join(FILE_NAME);
    match bounded::read_opened("state file", &path, std::fs::File::from(fd), MAX_BYTES) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(ReadError::NotRegular { kind, .. }) => {
            Err(Unreadable::Odd(kind.trim_start_matches("is ").to_string()))
        }
        Err(ReadError::TooLarge { .. }) => Err(Unreadable::TooLarge(stat.st_size)),
        Err(ReadError::Open { source, .. } | ReadError::Read { source, .. }) => {
            Err(Unreadable::Io(source))
        }
        Err(e @ ReadError::TimedOut { .. }) => Err(Unreadable::Io(std::io::Error::other(e))),
    }
}

/// Writes `body` to the temporary file and renames it over the state file (module docs).
fn write_atomically(dir: &StateDir, body: &[u8]) -> Result<(), Error> {
    let tmp_path = dir.path().join(TMP_NAME);
    let err = |step, path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| Error::Write {
            step,
            path,
            source: e,
        }
    };
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(FILE_MODE);
    let fd = match rustix::fs::openat(dir.fd(), TMP_NAME, flags, mode) {
        Err(Errno::EXIST) => {
            // Left by a crash (or planted): unlinkat removes the name, never what a symlink
            // points at.
            log::info!("removing the stale {}", tmp_path.display());
            rustix::fs::unlinkat(dir.fd(), TMP_NAME, AtFlags::empty())
                .map_err(|e| err("remove the stale", &tmp_path)(e.into()))?;
            rustix::fs::openat(dir.fd(), TMP_NAME, flags, mode)
        }
        other => other,
    }
    .map_err(|e| err("create", &tmp_path)(e.into()))?;
    let mut file = std::fs::File::from(fd);
    let written = rustix::fs::fchmod(&file, mode)
        .map_err(|e| err("chmod", &tmp_path)(e.into()))
        .and_then(|()| file.write_all(body).map_err(err("write", &tmp_path)))
        .and_then(|()| file.sync_all().map_err(err("sync", &tmp_path)))
        .and_then(|()| {
            rustix::fs::renameat(dir.fd(), TMP_NAME, dir.fd(), FILE_NAME)
                .map_err(|e| err("rename over the state file", &tmp_path)(e.into()))
        });
    if let Err(e) = written {
        // Ours, just created: the name goes, whatever it is now.
        let _ = rustix::fs::unlinkat(dir.fd(), TMP_NAME, AtFlags::empty());
        return Err(e);
    }
    rustix::fs::fsync(dir.fd()).map_err(|e| err("sync", dir.path())(e.into()))
}

mod format;
#[cfg(test)]
mod tests;
