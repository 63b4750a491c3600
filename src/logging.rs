//! The `log` backend, chosen once at start:
//! - stderr with sd-daemon `<N>` priority prefixes when stderr is the journal (`JOURNAL_STREAM`);
//! - plain stderr in a terminal, or when asked (`--log stderr`);
//! - otherwise (a service whose stderr goes nowhere useful) syslog through `/dev/log`, reconnecting
//!   when the socket goes away (the syslog crate alone drops every message after journald or
//!   rsyslog restarts), falling back to stderr when there is no syslog.
//!
//! Messages of kube and hyper arrive through the same facade (tracing's `log` feature).

use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};
use syslog::{Facility, Formatter3164, LoggerBackend};

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The journal when stderr is connected to it, stderr in a terminal, else syslog.
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
}

impl Logger {
    fn to_stderr(&self, prefix: bool, r: &Record) {
        let line = if prefix {
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

    fn to_syslog(slot: &mut Option<Syslog>, r: &Record) -> bool {
        let msg = r.args().to_string();
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
                    Ok(mut slot) => Self::to_syslog(&mut slot, r),
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

/// Installs the logger. `RUST_LOG` (a level name) overrides `level`. Call once.
pub fn init(target: Target, level: LevelFilter) {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<LevelFilter>().ok())
        .unwrap_or(level);
    let sink = match target {
        Target::Journal => Sink::Stderr { prefix: true },
        Target::Stderr => Sink::Stderr { prefix: false },
        Target::Syslog => Sink::Syslog(Mutex::new(connect_syslog())),
        Target::Auto if stderr_is_journal() => Sink::Stderr { prefix: true },
        Target::Auto if std::io::stderr().is_terminal() => Sink::Stderr { prefix: false },
        Target::Auto => match connect_syslog() {
            Some(s) => Sink::Syslog(Mutex::new(Some(s))),
            None => Sink::Stderr { prefix: false },
        },
    };
    if log::set_boxed_logger(Box::new(Logger { sink, level })).is_ok() {
        log::set_max_level(level);
    }
}
