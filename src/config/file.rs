//! The configuration file on disk: opened without blocking (a FIFO named by mistake must not
//! hang the daemon), refused unless it is a regular file (after following symlinks), read up to
//! [`MAX_FILE_BYTES`], and required to be UTF-8; plus finding where in the text a key's value
//! sits, for error messages. Reads that one file; writes nothing.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::Error;

/// The largest configuration file read (1 MiB); the shipped file is about 4 KiB.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads the configuration file `path`. `Ok(None)` when it does not exist and `required` is
/// false (the default path may be absent).
pub(crate) fn read(path: &Path, required: bool) -> Result<Option<String>, Error> {
    let Some(bytes) = read_bytes(path, required)? else {
        return Ok(None);
    };
    String::from_utf8(bytes).map(Some).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        // The prefix is valid UTF-8 by definition of `valid_up_to`.
        let prefix = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
        let (line, column) = line_column(prefix, valid);
        Error::Parse {
            path: path.to_path_buf(),
            message: format!(
                "not UTF-8 at line {line}, column {column} (byte 0x{:02x}): the file must be UTF-8 text",
                bytes[valid]
            ),
        }
    })
}

/// Reads `path` as bytes, the same way: a regular file (symlinks followed), opened without
/// blocking, at most [`MAX_FILE_BYTES`]. `Ok(None)` when it does not exist and `required` is
/// false.
pub(crate) fn read_bytes(path: &Path, required: bool) -> Result<Option<Vec<u8>>, Error> {
    let read_error = |source: std::io::Error| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one.
    // O_CLOEXEC: the descriptor never leaks into a child. Symlinks are followed.
    let fd = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            let e = std::io::Error::from(e);
            if !required && e.kind() == std::io::ErrorKind::NotFound {
                return Ok(None);
            }
            return Err(read_error(e));
        }
    };
    let file = File::from(fd);
    // fstat of the descriptor opened: no window between checking a path and reading it.
    let kind = file.metadata().map_err(read_error)?.file_type();
    let what = if kind.is_file() {
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
    };
    if let Some(what) = what {
        return Err(Error::NotRegular {
            path: path.to_path_buf(),
            what,
        });
    }

    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if u64::try_from(bytes.len()).map_or(true, |n| n > MAX_FILE_BYTES) {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(Some(bytes))
}

/// The 1-based line and column (in characters) of byte offset `at` of `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The 1-based line and column of the value assigned to the top-level `key` in `text`, which
/// has already been parsed successfully (so this parse succeeds too).
pub(crate) fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let (_, value) = doc.get_ref().iter().find(|(k, _)| k.get_ref() == key)?;
    Some(line_column(text, value.span().start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_found_for_any_spelling_of_the_key() {
        let text = "# x\ninterval_seconds = 5\n\"delay_seconds\"=1\n  keep = [\n\"a\"]\n";
        assert_eq!(locate(text, "interval_seconds"), Some((2, 20)));
        assert_eq!(locate(text, "delay_seconds"), Some((3, 17)));
        assert_eq!(locate(text, "keep"), Some((4, 10)));
        assert_eq!(locate(text, "strategy"), None);
        assert_eq!(line_column("é\nab", 5), (2, 3));
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        assert!(read(&missing, false).unwrap().is_none());
        assert!(matches!(read(&missing, true), Err(Error::Read { .. })));

        let e = read(dir.path(), true).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "configuration file {} is a directory, not a regular file",
                dir.path().display()
            )
        );
        let e = read(Path::new("/dev/null"), true).unwrap_err();
        assert!(e.to_string().contains("is a character device"), "{e}");

        let big = dir.path().join("big.toml");
        let limit = usize::try_from(MAX_FILE_BYTES).unwrap();
        std::fs::write(&big, "#".repeat(limit)).unwrap();
        assert_eq!(read(&big, true).unwrap().map(|t| t.len()), Some(limit));
        std::fs::write(&big, "#".repeat(limit + 1)).unwrap();
        let e = read(&big, true).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains(&big.display().to_string()), "{e}");

        let latin1 = dir.path().join("latin1.toml");
        std::fs::write(&latin1, b"node_name = \"n1\"\n# caf\xe9\n").unwrap();
        let e = read(&latin1, true).unwrap_err();
        assert!(
            e.to_string().contains("line 2, column 6") && e.to_string().contains("0xe9"),
            "{e}"
        );
    }
}
