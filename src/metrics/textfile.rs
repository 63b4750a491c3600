//! The node_exporter textfile: written atomically (a temporary file beside it, then a rename), so
//! the collector never reads half a file. A failure is one warning until a write succeeds again;
//! it never stops cleaning. Touches nothing in the directory but the file and its temporary file
//! (`<name>.tmp`, which the collector ignores: it reads `*.prom` only).

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Error;
use crate::error_chain;

/// The file's mode: the node_exporter runs as another user (`prometheus`), and the unit's umask
/// is 0077.
const MODE: u32 = 0o644;

/// The textfile and whether writing it fails.
#[derive(Debug)]
pub(super) struct Textfile {
    path: PathBuf,
    failing: bool,
}

impl Textfile {
    /// The textfile at `path` (an absolute path ending in `.prom`, as the configuration checks).
    pub(super) fn new(path: PathBuf) -> Textfile {
        Textfile {
            path,
            failing: false,
        }
    }

    /// The file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file with `text`; warns once while that fails.
    pub(super) fn write(&mut self, text: &str) {
        match write_atomically(&self.path, text.as_bytes()) {
            Ok(()) if self.failing => {
                self.failing = false;
                log::info!("metrics textfile {} written again", self.path.display());
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                log::warn!(
                    "{}; cleaning goes on, and this is not logged again until a write succeeds",
                    error_chain(&e)
                );
            }
            Err(e) => log::debug!("{}", error_chain(&e)),
        }
    }
}

/// The temporary file of `path`: `<name>.tmp` beside it.
pub(super) fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` through its temporary file: a leftover one (a crash, or a symlink
/// planted there) is removed, never followed; the new one is created exclusively, mode 0644,
/// written, synced and renamed over `path`. On failure the temporary file is removed.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = temporary(path);
    let failed = |what: &'static str, file: &Path| {
        let (path, file) = (path.to_path_buf(), file.to_path_buf());
        move |source: io::Error| Error::Textfile {
            path,
            what,
            file,
            source,
        }
    };
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(failed("remove the leftover", &tmp)(e));
        }
        _ => {}
    }
    // create_new is O_CREAT|O_EXCL: a symlink put there since is refused, not followed.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .open(&tmp)
        .map_err(failed("create", &tmp))?;
    let written = file
        .write_all(bytes)
        .map_err(failed("write", &tmp))
        // The mode given to open is cut by the umask.
        .and_then(|()| {
            file.set_permissions(Permissions::from_mode(MODE))
                .map_err(failed("set the mode of", &tmp))
        })
        .and_then(|()| file.sync_all().map_err(failed("sync", &tmp)))
        .and_then(|()| fs::rename(&tmp, path).map_err(failed("rename into place", &tmp)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn the_file_is_replaced_whole_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dic.prom");
        let other = dir.path().join("other.prom");
        fs::write(&other, "other 1\n").unwrap();
        write_atomically(&path, b"a 1\n").unwrap();
        write_atomically(&path, b"a 2\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a 2\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["dic.prom", "other.prom"]);
        assert_eq!(fs::read_to_string(&other).unwrap(), "other 1\n");
    }

    #[test]
    fn a_planted_symlink_is_removed_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dic.prom");
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep me").unwrap();
        symlink(&victim, temporary(&path)).unwrap();
        write_atomically(&path, b"a 1\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
        assert_eq!(fs::read_to_string(&path).unwrap(), "a 1\n");
        assert!(!temporary(&path).exists());
    }

    #[test]
    fn a_failure_names_the_file_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("dic.prom");
        let e = write_atomically(&path, b"a 1\n").unwrap_err();
        let text = error_chain(&e);
        assert!(
            text.contains("cannot write the metrics textfile")
                && text.contains("create")
                && text.contains("missing-dir/dic.prom.tmp"),
            "{text}"
        );
        let mut t = Textfile::new(path);
        t.write("a 1\n");
        assert!(t.failing);
        fs::create_dir(dir.path().join("missing-dir")).unwrap();
        t.write("a 2\n");
        assert!(!t.failing);
        assert_eq!(fs::read_to_string(t.path()).unwrap(), "a 2\n");
    }
}
