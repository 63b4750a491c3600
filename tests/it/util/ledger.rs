//! The ledger of real-service tests: one line per [`super::require::require`] check, ran,
//! skipped or not applicable to the engine of the run, and one line per engine started, so that
//! `scripts/test.sh` can count them per engine, name every skip and write the matrix's table.
//!
//! Owns: the file's location, its line format and appending to it safely from parallel test
//! threads. Must not: decide whether a test runs (that is [`super::require`]).
//!
//! Every check appends one line to the file named by `DIC_TEST_LEDGER` (`scripts/test.sh`
//! sets it and empties the file first), or else `real-services.ledger` in Cargo's
//! `CARGO_TARGET_TMPDIR` (appended to across plain `cargo test` runs). Five tab-separated fields:
//! ```text
//! ran<TAB>dockerd<TAB>docker-bed<TAB>clean::lru_order_follows_use_events<TAB>-
//! skipped<TAB>kubectl<TAB>-<TAB>kubectl::taint_mode_round_trips_through_kubectl<TAB>missing: kubectl (install kubectl)
//! na<TAB>podman<TAB>podman-host<TAB>podman::events::a_test<TAB>Podman 4.3 sends no build events
//! engine<TAB>dockerd<TAB>docker-bed<TAB>-<TAB>Docker Engine 28.5.2+dfsg4, API 1.51, overlay2
//! ```
//! outcome (`ran`, `skipped`, `na`: the test does not apply to this engine and says why (the
//! summary lists each), or `engine`: an engine of this flavour answered, with its version),
//! service
//! ([`super::require::Service::name`]), engine (the flavour of [`super::bed`], `-` for a service
//! that is not an engine), test (libtest's thread name), reason (`-` when it ran; tabs and
//! newlines become spaces). Each line is one `write` on a file opened with `O_APPEND`, so tests
//! on parallel threads never interleave within a line.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable naming the ledger file.
pub const LEDGER_VAR: &str = "DIC_TEST_LEDGER";

/// Whether a real-service test ran, was skipped or does not apply; or an engine's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The service was there; the test went on against it.
    Ran,
    /// The service was missing; the test returned (or, under CI, failed).
    Skipped,
    /// The test does not apply to the engine of this run (the reason says why): it returned.
    NotApplicable,
    /// Not a test: an engine of the flavour answered; the reason is its version.
    Engine,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ran => "ran",
            Outcome::Skipped => "skipped",
            Outcome::NotApplicable => "na",
            Outcome::Engine => "engine",
        }
    }

    fn parse(text: &str) -> Option<Outcome> {
        [
            Outcome::Ran,
            Outcome::Skipped,
            Outcome::NotApplicable,
            Outcome::Engine,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Ran, skipped, not applicable, or an engine's version.
    pub outcome: Outcome,
    /// [`Service::name`].
    pub service: String,
    /// The engine flavour ([`super::bed`]), `-` for other services.
    pub engine: String,
    /// The test's name (`-` for an engine's version).
    pub test: String,
    /// Why it was skipped or does not apply, or the engine's version; `-` when it ran.
    pub reason: String,
}

impl Entry {
    /// The line as written, newline included.
    pub fn to_line(&self) -> String {
        let field = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        format!(
            "{}\t{}\t{}\t{}\t{}\n",
            self.outcome.as_str(),
            field(&self.service),
            field(&self.engine),
            field(&self.test),
            field(&self.reason)
        )
    }

    /// Parses a line written by [`Entry::to_line`] (without its newline).
    pub fn parse(line: &str) -> Option<Entry> {
        let mut fields = line.splitn(5, '\t');
        let outcome = Outcome::parse(fields.next()?)?;
        let (service, engine, test, reason) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        Some(Entry {
            outcome,
            service: service.to_string(),
            engine: engine.to_string(),
            test: test.to_string(),
            reason: reason.to_string(),
        })
    }
}

/// The ledger file.
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    /// The ledger of this run: `$DIC_TEST_LEDGER`, or the default under `CARGO_TARGET_TMPDIR`.
    pub fn current() -> Ledger {
        let path = std::env::var_os(LEDGER_VAR)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("real-services.ledger"));
        Ledger { path }
    }

    /// A ledger at `path` (the harness's own tests use a temp file).
    pub fn at(path: &Path) -> Ledger {
        Ledger {
            path: path.to_path_buf(),
        }
    }

    /// Appends `entry` as one line with one `write` (`O_APPEND`: whole lines, whatever runs in
    /// parallel). Panics when the ledger cannot be written: a lost line would hide a skip.
    pub fn record(&self, entry: &Entry) {
        let line = entry.to_line();
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            let _ = fs::create_dir_all(dir);
        }
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| {
                let n = f.write(line.as_bytes())?;
                if n == line.len() {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!(
                        "short write: {n} of {} bytes",
                        line.len()
                    )))
                }
            });
        if let Err(e) = written {
            panic!(
                "recording {line:?} in the ledger {}: {e}",
                self.path.display()
            );
        }
    }

    /// Every entry so far; lines that do not parse are returned as errors.
    pub fn entries(&self) -> Vec<Result<Entry, String>> {
        let text = fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .map(|l| Entry::parse(l).ok_or_else(|| l.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_stay_whole_under_parallel_appends() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A dir that does not exist yet: the first record makes it.
        let ledger = Ledger::at(&dir.path().join("sub").join("ledger"));
        let threads = 8;
        let per_thread = 300;
        // Longer than a pipe buffer's atomic size would matter for; a regular file takes it whole.
        let reason = format!("x\ty\n{}", "r".repeat(600));
        std::thread::scope(|s| {
            for t in 0..threads {
                let (ledger, reason) = (&ledger, &reason);
                s.spawn(move || {
                    for i in 0..per_thread {
                        ledger.record(&Entry {
                            outcome: Outcome::Skipped,
                            service: format!("svc-{t}"),
                            engine: "-".to_string(),
                            test: format!("test-{i}"),
                            reason: reason.clone(),
                        });
                    }
                });
            }
        });
        let entries = ledger.entries();
        assert_eq!(entries.len(), threads * per_thread);
        for t in 0..threads {
            let svc = format!("svc-{t}");
            let mine: Vec<&Entry> = entries
                .iter()
                .map(|e| e.as_ref().expect("every line parses"))
                .filter(|e| e.service == svc)
                .collect();
            assert_eq!(mine.len(), per_thread);
            let wanted = reason.replace(['\t', '\n'], " ");
            assert!(mine.iter().all(|e| e.reason == wanted));
        }
    }
}
