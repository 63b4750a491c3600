//! The environment file (`/etc/default/docker-image-cleaner`): the unit reads it as its
//! `EnvironmentFile=`, and every command reads it too, so that `status` and `check-config` in a
//! shell see the node name, the thresholds and the `KUBECONFIG` the service sees. Parsed as
//! systemd parses an environment file; reads that one file (bounded, regular files only) and
//! nothing else.
//!
//! The syntax, systemd's: one `NAME=VALUE` a line; blank lines and lines starting with `#` or
//! `;` are ignored; spaces around the name and the value are dropped; a value in double quotes
//! may hold `\"`, `\\` and `\n`-less text over several lines ending in `\`; a value in single
//! quotes is taken as written; a line ending in `\` goes on at the next. Bytes need not be
//! UTF-8: only our own variables must be (see [`Env`](super::Env)).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::Error;
use super::file;

/// The environment file read when none is named, as the shipped unit names it.
pub const DEFAULT_ENV_FILE: &str = "/etc/default/docker-image-cleaner";

/// An environment file as read: its path and its variables, in order (a later line wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvFile {
    /// The file.
    pub path: PathBuf,
    /// Its variables.
    pub vars: Vec<(OsString, OsString)>,
}

impl EnvFile {
    /// Reads `path`; `Ok(None)` when it does not exist (the unit's `EnvironmentFile=-…` may be
    /// absent too).
    pub fn read(path: &Path) -> Result<Option<EnvFile>, Error> {
        let Some(bytes) = file::read_bytes(path, false)? else {
            return Ok(None);
        };
        Ok(Some(EnvFile {
            path: path.to_path_buf(),
            vars: parse(&bytes),
        }))
    }

    /// The value the file gives `var` (the last line that sets it).
    pub fn get(&self, var: &str) -> Option<&OsString> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k.as_encoded_bytes() == var.as_bytes())
            .map(|(_, v)| v)
    }
}

/// The variables of an environment file's text, as systemd reads them.
pub fn parse(text: &[u8]) -> Vec<(OsString, OsString)> {
    let mut out = Vec::new();
    let mut lines = logical_lines(text).into_iter();
    while let Some(line) = lines.next() {
        let line = trim(&line);
        if line.is_empty() || line[0] == b'#' || line[0] == b';' {
            continue;
        }
        let Some(eq) = line.iter().position(|&b| b == b'=') else {
            continue;
        };
        let name = trim(&line[..eq]);
        if name.is_empty() || !name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let mut value = trim(&line[eq + 1..]).to_vec();
        // A double-quoted value may go on over the next lines until its closing quote.
        if value.first() == Some(&b'"') && !closes(&value) {
            for more in lines.by_ref() {
                value.push(b'\n');
                value.extend_from_slice(&more);
                if closes(&value) {
                    break;
                }
            }
        }
        out.push((
            OsString::from_vec(name.to_vec()),
            OsString::from_vec(unquote(&value)),
        ));
    }
    out
}

/// True when a value that starts with `"` has its closing, unescaped `"`.
fn closes(value: &[u8]) -> bool {
    let mut escaped = false;
    for &b in &value[1..] {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return true,
            _ => {}
        }
    }
    false
}

/// The lines of `text`, a line ending in `\` joined to the next (the backslash dropped).
fn logical_lines(text: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.strip_suffix(b"\\") {
            Some(head) => current.extend_from_slice(head),
            None => {
                current.extend_from_slice(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

/// A value without its quotes: `"…"` with `\"`, `\\` and `\$` unescaped, `'…'` as written,
/// anything else as it is.
fn unquote(value: &[u8]) -> Vec<u8> {
    match value {
        [b'\'', inner @ .., b'\''] => inner.to_vec(),
        [b'"', rest @ ..] => {
            let mut out = Vec::with_capacity(rest.len());
            let mut bytes = rest.iter();
            while let Some(&b) = bytes.next() {
                match b {
                    b'\\' => match bytes.next() {
                        Some(&n @ (b'"' | b'\\' | b'$' | b'`')) => out.push(n),
                        Some(&n) => out.extend_from_slice(&[b'\\', n]),
                        None => out.push(b'\\'),
                    },
                    b'"' => break,
                    _ => out.push(b),
                }
            }
            out
        }
        _ => value.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(text: &str) -> Vec<(String, String)> {
        parse(text.as_bytes())
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_as_systemd_reads_them() {
        let text = "# written at boot\n\
                    ; a comment too\n\
                    \n\
                    DOCKER_IMAGE_CLEANER_NODE_NAME=nc-node\n\
                    \x20 KUBECONFIG = /etc/k.conf  \n\
                    A=\"quoted \\\"x\\\" \\\\ here\"\n\
                    B='single $x'\n\
                    C=one\\\n\
                    two\n\
                    D=\"two\n\
                    lines\"\n\
                    not a variable\n\
                    =nothing\n\
                    E=\r\n";
        assert_eq!(
            vars(text),
            [
                ("DOCKER_IMAGE_CLEANER_NODE_NAME", "nc-node"),
                ("KUBECONFIG", "/etc/k.conf"),
                ("A", "quoted \"x\" \\ here"),
                ("B", "single $x"),
                ("C", "onetwo"),
                ("D", "two\nlines"),
                ("E", ""),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn latin1_values_are_kept_as_bytes_and_the_last_line_wins() {
        let f = EnvFile {
            path: "/x".into(),
            vars: parse(b"NOTE=caf\xe9\nX=1\nX=2\n"),
        };
        assert_eq!(
            f.get("NOTE").map(|v| v.as_encoded_bytes()),
            Some(&b"caf\xe9"[..])
        );
        assert_eq!(f.get("X"), Some(&OsString::from("2")));
        assert_eq!(f.get("Y"), None);
    }
}
