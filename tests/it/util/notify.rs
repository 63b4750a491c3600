//! A fake systemd notification socket: a `UnixDatagram` bound in a temp dir, handed to a child
//! process through `NOTIFY_SOCKET`, and every datagram it receives kept with its arrival time.
//!
//! Tests synchronise on these messages (`READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`)
//! instead of sleeping or reading log text.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// One datagram as received: its lines (`KEY=value`) and when it arrived.
#[derive(Debug, Clone)]
pub struct Message {
    /// Arrival time.
    pub at: Instant,
    /// The assignments, one per line, in order.
    pub lines: Vec<String>,
}

impl Message {
    /// Whether the message carries exactly the assignment `line` (e.g. `READY=1`).
    pub fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }

    /// The value of `STATUS=`, if the message carries one.
    pub fn status(&self) -> Option<&str> {
        self.lines.iter().find_map(|l| l.strip_prefix("STATUS="))
    }

    /// Whether it is a bare watchdog ping.
    pub fn is_ping(&self) -> bool {
        self.has("WATCHDOG=1")
    }
}

/// The socket and everything received on it so far.
pub struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
    received: Vec<Message>,
}

impl Default for NotifySocket {
    fn default() -> Self {
        Self::new()
    }
}

impl NotifySocket {
    /// Binds a fresh socket in a temp dir (short path: `sun_path` is 108 bytes).
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dic-notify-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Self {
            _dir: dir,
            path,
            socket,
            received: Vec::new(),
        }
    }

    /// Points `cmd` at this socket, with a watchdog of `watchdog` when `Some`. Clears what the
    /// test process itself may have inherited from a service manager (`WATCHDOG_PID` would name
    /// the wrong process and turn the watchdog off).
    pub fn apply(&self, cmd: &mut Command, watchdog: Option<Duration>) {
        for var in [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "JOURNAL_STREAM",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("NOTIFY_SOCKET", &self.path);
        if let Some(w) = watchdog {
            cmd.env("WATCHDOG_USEC", w.as_micros().to_string());
        }
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> &[Message] {
        &self.received
    }

    /// The next datagram, or `None` when none arrives within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Message> {
        let timeout = timeout.max(Duration::from_millis(1));
        self.socket
            .set_read_timeout(Some(timeout))
            .expect("set read timeout");
        let mut buf = vec![0u8; 64 * 1024];
        match self.socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                let message = Message {
                    at: Instant::now(),
                    lines: text
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .collect(),
                };
                self.received.push(message.clone());
                Some(message)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                None
            }
            Err(e) => panic!("receiving on {}: {e}", self.path.display()),
        }
    }

    /// Receives until a message satisfies `want` and returns it, or `None` after `bound`.
    pub fn try_wait_for(
        &mut self,
        bound: Duration,
        want: impl Fn(&Message) -> bool,
    ) -> Option<Message> {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if let Some(m) = self.recv(left)
                && want(&m)
            {
                return Some(m);
            }
        }
    }

    /// Whether `m` carries a `STATUS=` starting with `prefix`.
    pub fn status_starts(m: &Message, prefix: &str) -> bool {
        m.status().is_some_and(|s| s.starts_with(prefix))
    }

    /// Receives everything that arrives during `window`.
    pub fn collect_for(&mut self, window: Duration) -> Vec<Message> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return got;
            }
            if let Some(m) = self.recv(left) {
                got.push(m);
            }
        }
    }

    /// Every message received so far, one per line with its time since the first, for failure
    /// messages.
    pub fn transcript(&self) -> String {
        let Some(first) = self.received.first().map(|m| m.at) else {
            return "(nothing)".to_string();
        };
        self.received
            .iter()
            .map(|m| {
                format!(
                    "  +{:>6} ms  {}",
                    m.at.duration_since(first).as_millis(),
                    m.lines.join(" | ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
