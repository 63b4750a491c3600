//! The `log` backend, chosen once at start:
//! - stderr with sd-daemon `<N>` priority prefixes when stderr is the journal (`JOURNAL_STREAM`
//!   names it: a systemd service);
//! - plain stderr otherwise: a terminal, ssh, Ansible, cron, `docker exec`. Whoever started the
//!   command sees its errors; nothing goes to syslog unless asked;
//! - syslog through `/dev/log` only with `--log syslog`, reconnecting when the socket goes away
//!   (the syslog crate alone drops every message after journald or rsyslog restarts), falling
//!   back to stderr when there is no syslog.
//!
//! Each line is text, or with `--log-format json` one JSON object (`timestamp`, `level`,
//! `target`, `message`) for log shippers.
//!
//! Messages of kube and hyper arrive through the same facade (tracing's `log` feature).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};
use syslog::{Facility, Formatter3164, LoggerBackend};

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The journal when stderr is connected to it (under systemd), else plain stderr.
    Auto,
    /// Plain stderr.
    Stderr,
    /// stderr with `<N>` priority prefixes for journald.
    Journal,
    /// The local syslog socket.
    Syslog,
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

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// `LEVEL message` (the journal adds its own time and priority).
    #[default]
    Text,
    /// One JSON object a line: `timestamp` (RFC 3339, UTC), `level`, `target`, `message`.
    Json,
}

type Syslog = syslog::Logger<LoggerBackend, Formatter3164>;

fn connect_syslog() -> Option<Syslog> {
    syslog::unix(Formatter3164 {
        facility: Facility::LOG_DAEMON,
        hostname: None,
        process: "docker-image-cleaner".into(),
        pid: std::process::id(),
    })
    .ok()
}

enum Sink {
    Stderr { prefix: bool },
    Syslog(Mutex<Option<Syslog>>),
}

struct Logger {
    sink: Sink,
    level: LevelFilter,
    format: Format,
}

/// One record as a JSON object, at `timestamp`.
fn json_line(r: &Record, timestamp: &str) -> String {
    serde_json::json!({
        "timestamp": timestamp,
        "level": r.level().as_str(),
        "target": r.target(),
        "message": r.args().to_string(),
    })
    .to_string()
}

impl Logger {
    /// The message part of a line: the text, or the whole record as JSON.
    fn message(&self, r: &Record) -> String {
        match self.format {
            Format::Text => r.args().to_string(),
            Format::Json => json_line(r, &jiff::Timestamp::now().to_string()),
        }
    }

    fn to_stderr(&self, prefix: bool, r: &Record) {
        let message = self.message(r);
        let line = if prefix {
            let n = match r.level() {
                Level::Error => 3,
                Level::Warn => 4,
                Level::Info => 6,
                Level::Debug | Level::Trace => 7,
            };
            format!("<{n}>{message}\n")
        } else if self.format == Format::Json {
            format!("{message}\n")
        } else {
            format!("{:<5} {message}\n", r.level())
        };
        // Nowhere to report a failed write to stderr.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn to_syslog(&self, slot: &mut Option<Syslog>, r: &Record) -> bool {
        let msg = self.message(r);
        // One retry on a fresh connection: the socket is recreated when journald or rsyslog
        // restarts, and the old connection then refuses every write.
        for _ in 0..2 {
            if slot.is_none() {
                *slot = connect_syslog();
            }
            let Some(logger) = slot.as_mut() else {
                return false;
            };
            let sent = match r.level() {
                Level::Error => logger.err(&msg),
                Level::Warn => logger.warning(&msg),
                Level::Info => logger.info(&msg),
                Level::Debug | Level::Trace => logger.debug(&msg),
            };
            if sent.is_ok() {
                return true;
            }
            *slot = None;
        }
        false
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        // Our own lines at the configured level. The libraries' lines repeat what our own error
        // lines already say with their causes (kube logs every failed request at ERROR), so
        // they come only when debugging, and all of them only at trace.
        if m.target().starts_with("docker_image_cleaner") {
            return m.level() <= self.level;
        }
        match self.level {
            LevelFilter::Trace => true,
            LevelFilter::Debug => m.level() <= Level::Info,
            _ => false,
        }
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        match &self.sink {
            Sink::Stderr { prefix } => self.to_stderr(*prefix, r),
            Sink::Syslog(slot) => {
                let sent = match slot.lock() {
                    Ok(mut slot) => self.to_syslog(&mut slot, r),
                    Err(_) => false,
                };
                if !sent {
                    self.to_stderr(false, r);
                }
            }
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Where lines go, as decided from the target asked for and whether stderr is the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    /// stderr with `<N>` priority prefixes.
    Journal,
    /// Plain stderr.
    Stderr,
    /// The syslog socket.
    Syslog,
}

/// The sink for `target`: never syslog unless asked, so that a command run over ssh, Ansible
/// or `docker exec` shows its errors to whoever ran it.
fn choose(target: Target, stderr_is_journal: bool) -> Choice {
    match target {
        Target::Journal => Choice::Journal,
        Target::Stderr => Choice::Stderr,
        Target::Syslog => Choice::Syslog,
        Target::Auto if stderr_is_journal => Choice::Journal,
        Target::Auto => Choice::Stderr,
    }
}

/// Installs the logger. `RUST_LOG` (a level name) overrides `level`. Call once.
pub fn init(target: Target, format: Format, level: LevelFilter) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<LevelFilter>().ok())
        .unwrap_or(level);
    let journal = target == Target::Auto && stderr_is_journal();
    let sink = match choose(target, journal) {
        Choice::Journal => Sink::Stderr { prefix: true },
        Choice::Stderr => Sink::Stderr { prefix: false },
        Choice::Syslog => Sink::Syslog(Mutex::new(connect_syslog())),
    };
    if log::set_boxed_logger(Box::new(Logger {
        sink,
        level,
        format,
    }))
    .is_ok()
    {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_journal_lines_go_to_stderr_never_silently_to_syslog() {
        assert_eq!(choose(Target::Auto, false), Choice::Stderr);
        assert_eq!(choose(Target::Auto, true), Choice::Journal);
        assert_eq!(choose(Target::Syslog, true), Choice::Syslog);
        assert_eq!(choose(Target::Stderr, true), Choice::Stderr);
        assert_eq!(choose(Target::Journal, false), Choice::Journal);
    }

    #[test]
    fn json_lines_are_one_object_with_the_message_escaped() {
        let line = json_line(
            &Record::builder()
                .level(Level::Warn)
                .target("docker_image_cleaner::daemon")
                .args(format_args!("engine \"a\"\nbroke"))
                .build(),
            "2026-12-07T02:00:00Z",
        );
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "docker_image_cleaner::daemon");
        assert_eq!(v["message"], "engine \"a\"\nbroke");
        assert_eq!(v["timestamp"], "2026-12-07T02:00:00Z");
    }
}
