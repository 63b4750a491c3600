//! When each image was last used, kept from Docker's event stream and persisted atomically in the
//! state directory, so that "least recently used" survives restarts. Deletes nothing.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use futures_util::StreamExt;

use crate::docker::{self, DockerEngine, Inventory, UseEvent};

/// The file in the state directory.
pub const FILE_NAME: &str = "last-use.json";
const VERSION: u32 = 1;

/// One image's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// When it was first seen by us, unix seconds.
    pub first_seen: i64,
    /// When it was last used (pulled, tagged, a container created, started or stopped), unix
    /// seconds.
    pub last_used: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    /// The time of the last Docker event applied, unix nanoseconds: the next start replays
    /// Docker's buffer from there.
    cursor_nanos: Option<i64>,
    images: BTreeMap<String, Entry>,
}

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

/// The last-use table.
#[derive(Debug)]
pub struct LastUse {
    path: PathBuf,
    images: BTreeMap<String, Entry>,
    cursor_nanos: Option<i64>,
    /// True until the first inventory has been recorded on a machine with no state: images
    /// found then take their build time; images found later take "now".
    fresh: bool,
    dirty: bool,
}

impl LastUse {
    /// An empty table that will be saved in `state_dir` (as on a first start); reads nothing.
    pub fn new(state_dir: &Path) -> Self {
        LastUse {
            path: state_dir.join(FILE_NAME),
            images: BTreeMap::new(),
            cursor_nanos: None,
            fresh: true,
            dirty: false,
        }
    }

    /// Loads the table from `state_dir`. A missing file starts an empty table (first start); a
    /// file that cannot be parsed is moved aside to `last-use.json.corrupt` with a warning and
    /// an empty table is used, so one bad write never stops the cleaner.
    pub fn load(state_dir: &Path) -> Result<Self, Error> {
        let mut table = LastUse::new(state_dir);
        let path = table.path.clone();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(table),
            Err(source) => return Err(Error::Read { path, source }),
        };
        match serde_json::from_str::<StateFile>(&text) {
            Ok(state) if state.version == VERSION => {
                table.images = state.images;
                table.cursor_nanos = state.cursor_nanos;
                table.fresh = false;
            }
            Ok(state) => {
                log::warn!(
                    "state file {} has version {}, expected {VERSION}; starting a new table",
                    path.display(),
                    state.version
                );
                table.fresh = false;
            }
            Err(e) => {
                let aside = path.with_extension("json.corrupt");
                log::warn!(
                    "state file {} is unreadable ({e}); moved to {} and starting a new table",
                    path.display(),
                    aside.display()
                );
                if let Err(e) = std::fs::rename(&path, &aside) {
                    log::warn!("cannot move {} aside: {e}", path.display());
                }
                table.fresh = false;
            }
        }
        Ok(table)
    }

    /// Where the table is saved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The event time to replay Docker's events from, unix nanoseconds.
    pub fn cursor_nanos(&self) -> Option<i64> {
        self.cursor_nanos
    }

    /// Moves the replay cursor forward (never back).
    pub fn advance_cursor(&mut self, nanos: i64) {
        if self.cursor_nanos.is_none_or(|c| nanos > c) {
            self.cursor_nanos = Some(nanos);
            self.dirty = true;
        }
    }

    /// The record of image `id`.
    pub fn get(&self, id: &str) -> Option<Entry> {
        self.images.get(id).copied()
    }

    /// Image `id` was used at `at` (unix seconds).
    pub fn touch(&mut self, id: &str, at: i64) {
        let entry = self.images.entry(id.to_string()).or_insert(Entry {
            first_seen: at,
            last_used: at,
        });
        if at > entry.last_used {
            entry.last_used = at;
        }
        self.dirty = true;
    }

    /// Image `id` is gone.
    pub fn forget(&mut self, id: &str) {
        if self.images.remove(id).is_some() {
            self.dirty = true;
        }
    }

    /// Brings the table in line with what Docker has now: images never seen take their build
    /// time on the very first start and `now` afterwards (a pull while we were down is not
    /// old); images a container references are used now; records of deleted images go.
    pub fn reconcile(&mut self, inventory: &Inventory, now: i64) {
        let present: HashSet<&str> = inventory.images.iter().map(|i| i.id.as_str()).collect();
        let before = self.images.len();
        self.images.retain(|id, _| present.contains(id.as_str()));
        self.dirty |= self.images.len() != before;
        for image in &inventory.images {
            if !self.images.contains_key(&image.id) {
                let seen = if self.fresh {
                    image.created.min(now)
                } else {
                    now
                };
                self.images.insert(
                    image.id.clone(),
                    Entry {
                        first_seen: seen,
                        last_used: seen,
                    },
                );
                self.dirty = true;
            }
        }
        for container in &inventory.containers {
            if present.contains(container.image_id.as_str()) {
                self.touch(&container.image_id, now);
            }
        }
        self.fresh = false;
    }

    /// Writes the table if it changed: to a temporary file in the same directory, synced, then
    /// renamed over the old one, so a crash leaves either the old or the new table.
    pub fn save(&mut self) -> Result<(), Error> {
        if !self.dirty {
            return Ok(());
        }
        let state = StateFile {
            version: VERSION,
            cursor_nanos: self.cursor_nanos,
            images: self.images.clone(),
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
        self.dirty = false;
        Ok(())
    }
}

impl LastUse {
    /// Applies one Docker event: the image it names (resolved to an id) was used at the event's
    /// time, or is gone. An image that no longer exists is ignored.
    pub async fn apply(&mut self, engine: &DockerEngine, event: &UseEvent) {
        if event.deleted {
            self.forget(&event.image);
        } else {
            let id = if event.image.starts_with("sha256:") {
                Some(event.image.clone())
            } else {
                match engine.resolve_image(&event.image).await {
                    Ok(id) => id,
                    Err(e) => {
                        log::debug!(
                            "cannot resolve image {} of a {} event: {e:#}",
                            event.image,
                            event.action
                        );
                        None
                    }
                }
            };
            if let Some(id) = id {
                log::debug!("image {id} used ({} {})", event.action, event.image);
                self.touch(&id, event.time_nanos.div_euclid(1_000_000_000));
            }
        }
        self.advance_cursor(event.time_nanos);
    }

    /// Replays Docker's buffered events from the cursor up to `until_nanos` (what happened
    /// since the last run), then moves the cursor there. On a first start there is nothing to
    /// replay: the cursor starts at `until_nanos`.
    pub async fn replay(
        &mut self,
        engine: &DockerEngine,
        until_nanos: i64,
    ) -> Result<usize, docker::Error> {
        let mut applied = 0;
        // Docker refuses a `since` after `until` (a clock step back, or a cursor saved by a
        // run a moment ago): then there is nothing to replay.
        if let Some(since) = self.cursor_nanos.filter(|since| *since < until_nanos) {
            let events: Vec<_> = engine
                .use_events(Some(since), Some(until_nanos))
                .collect()
                .await;
            for event in events {
                self.apply(engine, &event?).await;
                applied += 1;
            }
        }
        self.advance_cursor(until_nanos);
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::{Container, Image};

    fn image(id: &str, created: i64) -> Image {
        Image {
            id: id.into(),
            parent_id: None,
            tags: vec![format!("{id}:latest")],
            created,
            size_bytes: 1,
        }
    }

    fn container(image_id: &str) -> Container {
        Container {
            id: "c".into(),
            name: "c".into(),
            image_id: image_id.into(),
            running: false,
            created: 0,
            finished: None,
        }
    }

    #[test]
    fn first_start_takes_build_time_later_starts_take_now() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = LastUse::load(dir.path()).unwrap();
        let inv = Inventory {
            images: vec![image("a", 100)],
            containers: vec![],
        };
        t.reconcile(&inv, 1000);
        assert_eq!(t.get("a").unwrap().last_used, 100);
        t.save().unwrap();

        let mut t = LastUse::load(dir.path()).unwrap();
        assert_eq!(
            t.get("a").unwrap().last_used,
            100,
            "the table survives a restart"
        );
        let inv = Inventory {
            images: vec![image("a", 100), image("b", 200)],
            containers: vec![container("a")],
        };
        t.reconcile(&inv, 2000);
        assert_eq!(
            t.get("b").unwrap().last_used,
            2000,
            "pulled while we were down"
        );
        assert_eq!(
            t.get("a").unwrap().last_used,
            2000,
            "a container references it"
        );
    }

    #[test]
    fn deleted_images_are_forgotten_and_touch_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = LastUse::load(dir.path()).unwrap();
        t.touch("a", 50);
        t.touch("a", 40);
        assert_eq!(t.get("a").unwrap().last_used, 50);
        t.reconcile(&Inventory::default(), 60);
        assert_eq!(t.get("a"), None);
    }

    #[test]
    fn corrupt_file_is_moved_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
        let t = LastUse::load(dir.path()).unwrap();
        assert_eq!(t.get("a"), None);
        assert!(dir.path().join("last-use.json.corrupt").exists());
    }

    #[test]
    fn save_is_atomic_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = LastUse::load(dir.path()).unwrap();
        t.touch("a", 5);
        t.advance_cursor(7);
        t.save().unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![FILE_NAME.to_string()]);
        let t = LastUse::load(dir.path()).unwrap();
        assert_eq!(t.cursor_nanos(), Some(7));
    }
}
