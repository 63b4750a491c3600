//! The one process runner for the binary under test: spawned from [`super::cleaner::Cleaner`]'s
//! command (its configuration, an environment cleaned of stray `DOCKER_IMAGE_CLEANER_*`,
//! `DOCKER_HOST`, `RUST_LOG` and notify variables), stdout and stderr captured, every wait
//! bounded, SIGKILLed on drop so a failing test never leaves a daemon behind.
//!
//! Two ways to start it: [`Daemon::service`] as systemd runs it (a fresh fake `NOTIFY_SOCKET`,
//! `WATCHDOG_USEC` when asked), and [`Daemon::plain`] as a shell runs it (no notify socket).
//! Tests synchronise on the notify messages, on its exit, or on what a fake server recorded; never
//! on log text or sleeps. Must not: know what the tests assert.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::host;
use super::notify::{Message, NotifySocket};
use super::wait_until;

/// One run of the binary. Dropped while still running (a failed test), it is SIGKILLed.
pub struct Daemon {
    child: Child,
    /// The fake notification socket handed to it ([`Daemon::service`]); unused by [`Daemon::plain`].
    pub notify: NotifySocket,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Spawns `cmd` (from [`super::cleaner::Cleaner::command`]) as a systemd service: with a
    /// fresh notify socket, and a watchdog of `watchdog` when `Some`.
    pub fn service(mut cmd: Command, watchdog: Option<Duration>) -> Daemon {
        let notify = NotifySocket::new();
        notify.apply(&mut cmd, watchdog);
        Daemon::spawn(cmd, notify)
    }

    /// Spawns `cmd` as from a shell: no `NOTIFY_SOCKET`.
    pub fn plain(cmd: Command) -> Daemon {
        Daemon::spawn(cmd, NotifySocket::new())
    }

    fn spawn(mut cmd: Command, notify: NotifySocket) -> Daemon {
        let shown = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {shown}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take(), Arc::clone(&stdout)),
            collect(child.stderr.take(), Arc::clone(&stderr)),
        ];
        Daemon {
            child,
            notify,
            stdout,
            stderr,
            readers,
            status: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -<sig>` (`"TERM"`, `"HUP"`, `"KILL"`).
    pub fn signal(&self, sig: &str) {
        host::signal(sig, &[self.pid()]);
    }

    /// Whether it is still running (reaps it when it has exited).
    pub fn running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap_or_else(|e| {
                panic!("waiting for pid {}: {e}", self.child.id());
            });
        }
        self.status.is_none()
    }

    /// Receives until a message satisfies `want`; panics after `bound` with `what`, the
    /// transcript, the output and whether the process is still alive.
    pub fn wait_for(
        &mut self,
        what: &str,
        bound: Duration,
        want: impl Fn(&Message) -> bool,
    ) -> Message {
        if let Some(m) = self.notify.try_wait_for(bound, want) {
            return m;
        }
        let alive = if self.running() {
            "still running".to_string()
        } else {
            self.join_readers();
            format!("exited: {:?}", self.status)
        };
        panic!("no {what} within {bound:?} ({alive}):\n{}", self.context());
    }

    /// Waits for a message carrying the assignment `line` (`READY=1`).
    pub fn wait_line(&mut self, line: &str, bound: Duration) -> Message {
        self.wait_for(line, bound, |m| m.has(line))
    }

    /// Waits for a `STATUS=` starting with `prefix`.
    pub fn wait_status(&mut self, prefix: &str, bound: Duration) -> Message {
        self.wait_for(&format!("STATUS={prefix}…"), bound, |m| {
            NotifySocket::status_starts(m, prefix)
        })
    }

    /// Waits (`bound`) for the first message, which must be `READY=1` with a status.
    pub fn ready(&mut self, bound: Duration) -> Message {
        let first = self.wait_for("first message", bound, |_| true);
        assert!(
            first.has("READY=1") && first.status().is_some(),
            "the first message must be READY=1 with a STATUS=:\n{}",
            self.context()
        );
        first
    }

    /// Waits (bounded) for the process to exit and its output to be read to the end. After
    /// `bound` it is SIGKILLed and the test panics.
    pub fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        if !wait_until(bound, || !self.running()) {
            self.signal("KILL");
            let _ = self.child.wait();
            self.join_readers();
            panic!("still running {bound:?} later; killed:\n{}", self.context());
        }
        self.join_readers();
        self.status
            .expect("running() returned false, so it stored the exit status")
    }

    /// Runs to the end (bounded, as [`Daemon::wait_exit`]) and returns status, stdout, stderr.
    pub fn output(mut self, bound: Duration) -> Output {
        let status = self.wait_exit(bound);
        Output {
            status,
            stdout: take(&self.stdout),
            stderr: take(&self.stderr),
        }
    }

    /// SIGTERM: `STOPPING=1`, then exit 0 within `bound`. Returns how long that took.
    pub fn terminate(&mut self, bound: Duration) -> Duration {
        let sent = Instant::now();
        self.signal("TERM");
        self.expect_clean_stop(bound);
        sent.elapsed()
    }

    /// After a SIGTERM: `STOPPING=1` and exit 0, both within `bound`.
    pub fn expect_clean_stop(&mut self, bound: Duration) {
        self.wait_line("STOPPING=1", bound);
        let status = self.wait_exit(bound);
        assert_eq!(
            status.code(),
            Some(0),
            "a SIGTERM must end in exit 0, got {status}:\n{}",
            self.context()
        );
    }

    /// Everything it wrote to stderr so far (its log, with `--log stderr`).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&take(&self.stderr)).into_owned()
    }

    /// Everything it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&take(&self.stdout)).into_owned()
    }

    /// Notify transcript, stdout and stderr, for assertion messages.
    pub fn context(&self) -> String {
        format!(
            "notify messages:\n{}\nstdout:\n{}\nstderr:\n{}",
            self.notify.transcript(),
            self.stdout(),
            self.log()
        )
    }

    /// The `STATUS=` values received so far, in order.
    pub fn statuses(&self) -> Vec<String> {
        self.notify
            .received()
            .iter()
            .filter_map(|m| m.status().map(String::from))
            .collect()
    }

    /// Once the process has exited: waits for the pipes to be read to the end.
    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Nothing here may panic: this runs while a failed test unwinds.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal("KILL");
            let _ = self.child.wait();
        }
    }
}

/// Reads `pipe` to its end into `sink`, on a thread of its own.
fn collect(pipe: Option<impl Read + Send + 'static>, sink: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let Some(mut pipe) = pipe else { return };
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => return,
                Ok(n) => sink
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]),
            }
        }
    })
}

fn take(buf: &Arc<Mutex<Vec<u8>>>) -> Vec<u8> {
    buf.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
