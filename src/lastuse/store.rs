//! The state file: the last-use tables of every engine in `state_dir/last-use.json`, read at
//! start and written atomically (temporary file, fsync, rename). A file that cannot be read never
//! stops the cleaner: it is moved aside and the tables start empty.
//!
//! Format, version 2 (times in unix milliseconds, the cursor in nanoseconds):
//! `{"version": 2, "engines": {"default": {"cursor_nanos": N, "images": {"sha256:…":
//! {"first_seen_ms": N, "last_used_ms": N}}}}}`. Version 1 (one engine, times in seconds) is
//! migrated on load.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{DEFAULT_ENGINE, Entry, LastUse};

/// The file in the state directory.
pub const FILE_NAME: &str = "last-use.json";
const VERSION: u32 = 2;

/// Errors of the state file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading failed (other than "not there yet").
    #[error("cannot read state file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing failed; the previous file is intact.
    #[error("cannot write state file {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineState {
    /// The time of the last event applied, unix nanoseconds: the next start replays the
    /// engine's buffer from there.
    cursor_nanos: Option<i64>,
    images: BTreeMap<String, Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    engines: BTreeMap<String, EngineState>,
}

/// Version 1: one engine, times in seconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFileV1 {
    #[allow(dead_code)]
    version: u32,
    cursor_nanos: Option<i64>,
    images: BTreeMap<String, EntryV1>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryV1 {
    first_seen: i64,
    last_used: i64,
}

#[derive(Debug, Deserialize)]
struct Versioned {
    version: u32,
}

/// The last-use tables of every engine, by engine name.
#[derive(Debug, Default)]
pub struct Tables {
    engines: BTreeMap<String, LastUse>,
    /// State existed but could not be used: tables created from now on are not fresh.
    had_state: bool,
}

impl Tables {
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

    fn is_dirty(&self) -> bool {
        self.engines.values().any(LastUse::is_dirty)
    }
}

/// Where the tables are kept.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The store in `state_dir`; touches nothing yet.
    pub fn new(state_dir: &Path) -> Self {
        Store {
            path: state_dir.join(FILE_NAME),
        }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the tables. A missing file starts empty tables (first start); a file that cannot
    /// be parsed, or of an unknown version, is moved aside with a warning and empty tables are
    /// used, so one bad write never stops the cleaner.
    pub fn load(&self) -> Result<Tables, Error> {
        let path = &self.path;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Tables::default()),
            Err(source) => {
                return Err(Error::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
        match parse(&text) {
            Ok(engines) => Ok(Tables {
                engines,
                had_state: true,
            }),
            Err(why) => {
                let aside = path.with_extension("json.corrupt");
                log::warn!(
                    "state file {} is unusable ({why}); moved to {} and starting new tables",
                    path.display(),
                    aside.display()
                );
                if let Err(e) = std::fs::rename(path, &aside) {
                    log::warn!("cannot move {} aside: {e}", path.display());
                }
                Ok(Tables {
                    engines: BTreeMap::new(),
                    had_state: true,
                })
            }
        }
    }

    /// Writes the tables if any changed: to a temporary file in the same directory, synced,
    /// then renamed over the old one, so a crash leaves either the old or the new file.
    pub fn save(&self, tables: &mut Tables) -> Result<(), Error> {
        if !tables.is_dirty() {
            return Ok(());
        }
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
                        },
                    )
                })
                .collect(),
        };
        let write_err = |source| Error::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(write_err)?;
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&state).map_err(|e| write_err(e.into()))?;
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(&body)?;
            f.write_all(b"\n")?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &self.path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(write_err(e));
        }
        for table in tables.engines.values_mut() {
            table.mark_saved();
        }
        Ok(())
    }
}

/// The tables in `text`, migrating version 1.
fn parse(text: &str) -> Result<BTreeMap<String, LastUse>, String> {
    let versioned: Versioned = serde_json::from_str(text).map_err(|e| e.to_string())?;
    match versioned.version {
        1 => {
            let v1: StateFileV1 = serde_json::from_str(text).map_err(|e| e.to_string())?;
            let images = v1
                .images
                .into_iter()
                .map(|(id, e)| {
                    let entry = Entry {
                        first_seen_ms: e.first_seen.saturating_mul(1000),
                        last_used_ms: e.last_used.saturating_mul(1000),
                        ..Entry::default()
                    };
                    (id, entry)
                })
                .collect();
            let mut table = LastUse::restored(images, v1.cursor_nanos);
            // Written in the new format at the next save.
            table.mark_dirty();
            Ok(BTreeMap::from([(DEFAULT_ENGINE.to_string(), table)]))
        }
        VERSION => {
            let state: StateFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
            Ok(state
                .engines
                .into_iter()
                .map(|(name, e)| (name, LastUse::restored(e.images, e.cursor_nanos)))
                .collect())
        }
        other => Err(format!("version {other}, expected {VERSION}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_file_is_moved_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
        let mut t = Store::new(dir.path()).load().unwrap();
        assert_eq!(t.default_engine().get("a"), None);
        assert!(dir.path().join("last-use.json.corrupt").exists());
    }

    #[test]
    fn save_is_atomic_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let mut t = store.load().unwrap();
        t.default_engine().touch("a", 5);
        t.default_engine().advance_cursor(7);
        store.save(&mut t).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![FILE_NAME.to_string()]);
        let mut t = store.load().unwrap();
        assert_eq!(t.default_engine().cursor_nanos(), Some(7));
        assert_eq!(t.default_engine().get("a").unwrap().last_used_ms, 5);
    }

    #[test]
    fn version_1_is_migrated_to_milliseconds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            r#"{"version": 1, "cursor_nanos": 9, "images": {"sha256:a": {"first_seen": 10, "last_used": 20}}}"#,
        )
        .unwrap();
        let store = Store::new(dir.path());
        let mut t = store.load().unwrap();
        let table = t.default_engine();
        assert_eq!(
            table.get("sha256:a"),
            Some(Entry {
                first_seen_ms: 10_000,
                last_used_ms: 20_000,
                ..Entry::default()
            })
        );
        assert_eq!(table.cursor_nanos(), Some(9));
        store.save(&mut t).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("\"version\": 2"), "{text}");
    }
}
