//! The `log` backend, chosen once at start: stderr with sd-daemon `<N>` priority prefixes when
//! stderr is the journal (`JOURNAL_STREAM`), plain stderr otherwise. Messages of kube and hyper
//! arrive through the same facade (tracing's `log` feature).

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The journal when stderr is connected to it, else stderr.
    Auto,
    /// Plain stderr.
    Stderr,
    /// stderr with `<N>` priority prefixes for journald.
    Journal,
}

/// True when stderr is the journal stream systemd gave us.
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => m.dev().to_string() == dev && m.ino().to_string() == ino,
        Err(_) => false,
    }
}

struct Stderr {
    prefix: bool,
    level: LevelFilter,
}

impl Log for Stderr {
    fn enabled(&self, m: &Metadata) -> bool {
        // Our own lines at the configured level; the libraries' only when asked for everything
        // (their debug output is per request) and always from warnings up.
        let ours = m.target().starts_with("docker_image_cleaner");
        let limit = if ours || self.level >= LevelFilter::Trace {
            self.level
        } else {
            self.level.min(LevelFilter::Warn)
        };
        m.level() <= limit
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = if self.prefix {
            let n = match r.level() {
                Level::Error => 3,
                Level::Warn => 4,
                Level::Info => 6,
                Level::Debug | Level::Trace => 7,
            };
            format!("<{n}>{}\n", r.args())
        } else {
            format!("{:<5} {}\n", r.level(), r.args())
        };
        // Nowhere to report a failed write to stderr.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the logger. `RUST_LOG` (a level name) overrides `level`. Call once.
pub fn init(target: Target, level: LevelFilter) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<LevelFilter>().ok())
        .unwrap_or(level);
    let prefix = match target {
        Target::Journal => true,
        Target::Stderr => false,
        Target::Auto => stderr_is_journal(),
    };
    if log::set_boxed_logger(Box::new(Stderr { prefix, level })).is_ok() {
        log::set_max_level(level);
    }
}
