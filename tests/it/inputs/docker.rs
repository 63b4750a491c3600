//! The Docker side: a fake Engine API on a unix socket that answers like Docker 20.10 but floods
//! one answer without end (an event line that never ends, an image list that never ends). The
//! cleaner must hang up at its bound, say why, and not grow.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::util::cleaner::Cleaner;
use crate::util::daemon::Daemon;
use crate::util::wait_until;

const MIB: u64 = 1 << 20;
/// What the fake sends at most on one flooded answer: far past the cleaner's bounds (1 MiB for
/// an event line, 64 MiB for an answer); a cleaner without them reads it all.
const FLOOD_CAP: u64 = 512 * MIB;

/// Which answer the fake floods.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flood {
    /// `GET /events` without `until` (the live stream): one line that never ends.
    EventLine,
    /// `GET /images/json`: a body that never ends.
    ImageList,
}

/// A fake Docker Engine API on a unix socket in a temp dir.
struct FakeDocker {
    dir: tempfile::TempDir,
    /// The most bytes sent on one flooded answer before the client hung up (or the cap).
    most_sent: Arc<AtomicU64>,
    /// Flooded answers that ended because the client hung up.
    hung_up: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeDocker {
    fn start(flood: Flood) -> FakeDocker {
        let dir = tempfile::Builder::new()
            .prefix("dic-fake-docker-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let listener = UnixListener::bind(dir.path().join("docker.sock")).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let most_sent = Arc::new(AtomicU64::new(0));
        let hung_up = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, hung, halt) = (
            Arc::clone(&most_sent),
            Arc::clone(&hung_up),
            Arc::clone(&stop),
        );
        let acceptor = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (sent, hung, halt) =
                            (Arc::clone(&sent), Arc::clone(&hung), Arc::clone(&halt));
                        std::thread::spawn(move || serve(conn, flood, &sent, &hung, &halt));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeDocker {
            dir,
            most_sent,
            hung_up,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn most_sent(&self) -> u64 {
        self.most_sent.load(Ordering::Relaxed)
    }

    fn hung_up(&self) -> u64 {
        self.hung_up.load(Ordering::Relaxed)
    }
}

impl Drop for FakeDocker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

/// One connection: requests one after the other until the client hangs up.
fn serve(conn: UnixStream, flood: Flood, sent: &AtomicU64, hung: &AtomicU64, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        // The rest of the head (no request of the cleaner's has a body here).
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                break;
            }
        }
        let path = target.split('?').next().unwrap_or("/").to_string();
        let until = target.contains("until=");
        let json = |out: &mut UnixStream, body: &str| {
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nApi-Version: 1.41\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        };
        match path.as_str() {
            "/_ping" => json(&mut out, "OK"),
            "/version" => json(
                &mut out,
                r#"{"Version":"20.10.24","ApiVersion":"1.41","MinAPIVersion":"1.12","Components":[{"Name":"Engine","Version":"20.10.24"}]}"#,
            ),
            "/events" if until || flood != Flood::EventLine => {
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                );
            }
            "/events" => {
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                );
                // The start of an event, then a string that never ends: a decoder that waits
                // for the rest of the JSON waits for ever.
                let head = br#"{"Type":"container","Action":"start","Actor":{"ID":""#;
                let _ = write!(out, "{:x}\r\n", head.len())
                    .and_then(|()| out.write_all(head))
                    .and_then(|()| out.write_all(b"\r\n"));
                pour(&mut out, true, sent, hung, stop);
                return;
            }
            "/images/json" if flood == Flood::ImageList => {
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    FLOOD_CAP * 2
                );
                pour(&mut out, false, sent, hung, stop);
                return;
            }
            "/images/json" | "/containers/json" => json(&mut out, "[]"),
            _ => {
                let body = r#"{"message":"not in this fake"}"#;
                let _ = write!(
                    out,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        }
    }
}

/// Writes `x` without end (chunked or raw) until the client hangs up, the cap, or stop; notes how
/// much went and whether the client hung up.
fn pour(
    out: &mut UnixStream,
    chunked: bool,
    sent: &AtomicU64,
    hung: &AtomicU64,
    stop: &AtomicBool,
) {
    let block = vec![b'x'; 64 * 1024];
    let mut total: u64 = 0;
    while total < FLOOD_CAP && !stop.load(Ordering::Relaxed) {
        let written = if chunked {
            write!(out, "{:x}\r\n", block.len())
                .and_then(|()| out.write_all(&block))
                .and_then(|()| out.write_all(b"\r\n"))
        } else {
            out.write_all(&block)
        };
        if written.is_err() {
            hung.fetch_add(1, Ordering::Relaxed);
            break;
        }
        total += block.len() as u64;
        sent.fetch_max(total, Ordering::Relaxed);
    }
}

/// The cleaner's peak resident memory, from `/proc/<pid>/status` (`VmHWM`), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn cleaner(fake: &FakeDocker, extra: &str) -> Cleaner {
    Cleaner::for_host(&fake.host(), fake.dir(), extra)
}

/// An event line that never ends: the daemon hangs up after 1 MiB of it, says why, reconnects,
/// and stays small; it still stops at once on SIGTERM.
#[test]
fn an_endless_event_line_is_cut_and_does_not_grow_the_daemon() {
    let fake = FakeDocker::start(Flood::EventLine);
    let cleaner = cleaner(&fake, "threshold_high = 100\ninterval_seconds = 3600\n");
    let mut daemon = Daemon::plain(cleaner.command(&["run"]));
    let pid = daemon.pid();
    assert!(
        wait_until(Duration::from_secs(60), || fake.hung_up() >= 2
            || fake.most_sent() >= FLOOD_CAP),
        "the daemon never hung up on the endless line:\n{}",
        daemon.context()
    );
    let peak = peak_memory(pid);
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(60));
    let log = daemon.log();
    assert!(
        fake.most_sent() < 16 * MIB,
        "read {} MiB of one event line:\n{log}",
        fake.most_sent() / MIB
    );
    assert!(
        log.contains("event stream broke")
            && log.contains("a line longer than 1048576 bytes on the event stream"),
        "{log}"
    );
    assert!(peak < 200 * MIB, "peak memory {} MiB:\n{log}", peak / MIB);
    assert_eq!(status.code(), Some(0), "{log}");
}

/// An image list that never ends: the pass fails naming the bound, having read no more than it.
#[test]
fn an_endless_answer_fails_the_request_at_its_bound() {
    let fake = FakeDocker::start(Flood::ImageList);
    let root: PathBuf = fake.dir().to_path_buf();
    // Above high whatever /tmp holds; a short timeout so that a cleaner without the bound gives
    // up before it has read everything.
    let cleaner = Cleaner::for_host(
        &fake.host(),
        &root,
        "threshold_high = 0.01\nthreshold_low = 0\ntimeout_seconds = 5\n",
    );
    let out = Daemon::plain(cleaner.command(&["once"])).output(Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("list images") && err.contains("answer is larger than 64 MiB"),
        "{err}"
    );
    assert!(
        fake.most_sent() < 128 * MIB,
        "read {} MiB of one answer:\n{err}",
        fake.most_sent() / MIB
    );
}

/// A socket the cleaner's user may not connect to (root:root, mode 0660, the cleaner run as
/// nobody): the error names the socket, its owner, group and mode, and who may connect.
#[test]
fn a_socket_without_permission_names_who_may_connect() {
    use std::os::unix::fs::{PermissionsExt, chown};
    if !crate::util::require::require(crate::util::require::Service::Root) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("dic-eacces-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    mode(dir.path(), 0o755);
    let socket = dir.path().join("docker.sock");
    let _listener = UnixListener::bind(&socket).expect("bind");
    mode(&socket, 0o660);
    let own = dir.path().join("nobody");
    std::fs::create_dir(&own).expect("mkdir");
    chown(&own, Some(65534), Some(65534)).expect("chown");
    mode(&own, 0o700);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "docker_host = \"unix://{}\"\nstate_dir = \"{}\"\npath_to_check = \"{}\"\n",
            socket.display(),
            own.join("state").display(),
            dir.path().display()
        ),
    )
    .expect("config");
    mode(&config, 0o644);
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::util::cleaner::BIN)
        .arg("--config")
        .arg(&config)
        .args(["--log", "stderr", "once"])
        .env_clear();
    let out = Daemon::plain(cmd).output(Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot connect to unix://{}", socket.display()))
            && err.contains("Permission denied")
            && err.contains("owned by root:root with mode 0660, and uid 65534 runs the cleaner")
            && err.contains("or as a member of group root"),
        "{err}"
    );
}
