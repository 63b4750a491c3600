//! The configuration file on disk, read through [`crate::bounded`] (regular files only, after
//! following symlinks; a FIFO named by mistake neither hangs the open nor the read; at most
//! [`MAX_FILE_BYTES`], within [`crate::bounded::DEFAULT_TIME`]) and required to be UTF-8; plus
//! finding where in the text a key's value sits, for error messages. Reads that one file;
//! writes nothing.

use std::path::Path;

use super::Error;
use crate::bounded::{self, Limit, ReadError};

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

/// Reads `path` as bytes, the same way (the environment file too): a regular file, opened
/// without blocking, at most [`MAX_FILE_BYTES`], within the bound. `Ok(None)` when it does not
/// exist and `required` is false.
pub(crate) fn read_bytes(path: &Path, required: bool) -> Result<Option<Vec<u8>>, Error> {
    match bounded::read_file("configuration file", path, Limit::bytes(MAX_FILE_BYTES)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if !required && e.is_not_found() => Ok(None),
        Err(e) => Err(from_read(e)),
    }
}

/// The configuration's own words for a file that could not be read.
fn from_read(e: ReadError) -> Error {
    match e {
        ReadError::Open { path, source, .. } | ReadError::Read { path, source, .. } => {
            Error::Read { path, source }
        }
        ReadError::NotRegular { path, kind, .. } => Error::NotRegular { path, what: kind },
        ReadError::TooLarge { path, limit, .. } => Error::TooLarge { path, limit },
        ReadError::TimedOut { path, after, .. } => Error::Read {
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("not read within {} s", after.as_secs_f32()),
            ),
        },
    }
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
