//! A Docker API interposer for race tests: a unix-socket proxy that the cleaner uses as its
//! `DOCKER_HOST` and that forwards to a [`PrivateDockerd`]'s socket, running a test's hook (real
//! `docker` commands against the daemon) just before it forwards a chosen request, so that "a
//! pull or a `docker run` during the pass" happens at an exact point of the cleaner's sequence,
//! with no sleeps.
//!
//! Owns: its socket (in a temp dir of its own), the acceptor and connection threads, the log of
//! every request it saw, and the [`Trap`]s. All threads are scoped: [`Interposer::serve`] joins
//! them before it returns, after shutting every socket it opened, so nothing outlives a test.
//! Must not: change a byte in either direction (the client-to-daemon direction is parsed only to
//! find where each request starts; the daemon-to-client direction is copied as it is), or talk
//! to the daemon itself except through a hook.
//!
//! HTTP/1.1 in the client-to-daemon direction: a request line, headers, then a body framed by
//! `Content-Length`, or by `Transfer-Encoding: chunked` (passed through chunk by chunk), or none.
//! Several requests per connection (keep-alive) are parsed one after the other; after a request
//! asking for `Upgrade` (attach, exec) the rest of the connection is copied raw. Anything it
//! cannot parse is recorded and closes that connection, and `serve` then panics naming it: a
//! test never passes over a request the interposer misread.
//!
//! Bounds: a hook runs on the connection thread of the request it traps (the cleaner's request
//! waits, which is the point); its `docker` commands are bounded by [`PrivateDockerd::docker`].
//! A trap that never matches costs nothing: the cleaner's run ends on its own bound, and the
//! test asserts the trap fired ([`Served::assert_fired`]). A hook that panics is caught, the
//! request still goes on, and `assert_fired` reports the panic.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::dockerd::PrivateDockerd;

/// Longest request head (request line and headers) accepted; Docker's clients send a few hundred
/// bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// One request as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `DELETE`, …
    pub method: String,
    /// The request target as sent: `/v1.41/images/app:1?force=false`.
    pub target: String,
}

impl Request {
    /// The path: without the query, without an API version prefix (`/v1.41`), percent-decoded.
    pub fn path(&self) -> String {
        let path = self.target.split('?').next().unwrap_or_default();
        let unversioned = match path.strip_prefix("/v") {
            Some(rest) => match rest.find('/') {
                Some(slash) if is_version(&rest[..slash]) => &rest[slash..],
                _ => path,
            },
            None => path,
        };
        percent_decode(unversioned)
    }

    /// `DELETE /images/{name}`: the name (an id `sha256:…` or a reference `app:1`).
    pub fn image_delete(&self) -> Option<String> {
        if self.method != "DELETE" {
            return None;
        }
        self.path().strip_prefix("/images/").map(str::to_string)
    }

    /// `GET /images/{name}/json` (an inspect; not the list `GET /images/json`): the name.
    pub fn image_inspect(&self) -> Option<String> {
        if self.method != "GET" {
            return None;
        }
        let path = self.path();
        let name = path.strip_prefix("/images/")?.strip_suffix("/json")?;
        (!name.is_empty()).then(|| name.to_string())
    }

    /// `METHOD /path` (unversioned, decoded, no query), for assertions and messages.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path())
    }
}

/// `1.41`: digits, one dot, digits.
fn is_version(s: &str) -> bool {
    let mut parts = s.split('.');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
}

/// `%3A` → `:`; a malformed escape is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

type Matcher<'d> = Box<dyn FnMut(&Request) -> bool + Send + 'd>;
type Hook<'d> = Box<dyn FnOnce(&PrivateDockerd) + Send + 'd>;

/// A hook run once, just before the first request that `matches` is forwarded.
pub struct Trap<'d> {
    name: String,
    matches: Matcher<'d>,
    hook: Option<Hook<'d>>,
}

impl<'d> Trap<'d> {
    /// A trap called `name` (for [`Served::assert_fired`]). `matches` sees every request in
    /// order until it returns true once (it may count); `hook` then runs before that request
    /// goes on.
    pub fn new(
        name: &str,
        matches: impl FnMut(&Request) -> bool + Send + 'd,
        hook: impl FnOnce(&PrivateDockerd) + Send + 'd,
    ) -> Trap<'d> {
        Trap {
            name: name.to_string(),
            matches: Box::new(matches),
            hook: Some(Box::new(hook)),
        }
    }
}

/// What a trap did.
#[derive(Debug, Clone)]
pub struct Fired {
    /// The trap's name.
    pub name: String,
    /// Index in [`Served::requests`] of the request it held.
    pub at: usize,
    /// `Err` with the panic message when the hook panicked.
    pub outcome: Result<(), String>,
}

/// What [`Interposer::serve`] saw.
#[derive(Debug)]
pub struct Served<T> {
    /// What the body returned.
    pub value: T,
    /// Every request forwarded, in the order they were forwarded (a trapped request after its
    /// hook ran).
    pub requests: Vec<Request>,
    /// The traps that fired.
    pub fired: Vec<Fired>,
}

impl<T> Served<T> {
    /// Panics unless the trap `name` fired and its hook succeeded; returns the request it held.
    pub fn assert_fired(&self, name: &str) -> &Request {
        let Some(f) = self.fired.iter().find(|f| f.name == name) else {
            panic!(
                "trap {name:?} never fired; the requests were:\n{}",
                self.request_lines()
            );
        };
        if let Err(why) = &f.outcome {
            panic!(
                "the hook of trap {name:?} failed at request {} ({}): {why}\nthe requests were:\n{}",
                f.at,
                self.requests[f.at].line(),
                self.request_lines()
            );
        }
        &self.requests[f.at]
    }

    /// The requests as `METHOD /path` lines, numbered, for messages.
    pub fn request_lines(&self) -> String {
        self.requests
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{i:3} {}\n", r.target_line()))
            .collect()
    }

    /// The `DELETE /images/…` requests, in order, as the names they deleted.
    pub fn image_deletes(&self) -> Vec<String> {
        self.requests
            .iter()
            .filter_map(Request::image_delete)
            .collect()
    }
}

impl Request {
    fn target_line(&self) -> String {
        format!("{} {}", self.method, self.target)
    }
}

/// The proxy, bound and not yet serving.
pub struct Interposer<'d> {
    daemon: &'d PrivateDockerd,
    upstream: PathBuf,
    dir: tempfile::TempDir,
    listener: UnixListener,
    traps: Vec<Trap<'d>>,
}

/// State shared by the threads of one [`Interposer::serve`].
struct Shared<'d> {
    daemon: &'d PrivateDockerd,
    upstream: PathBuf,
    stop: AtomicBool,
    traps: Mutex<Vec<Trap<'d>>>,
    log: Mutex<Log>,
    /// Every socket opened, so that stopping can shut them all (which unblocks their threads).
    sockets: Mutex<Vec<UnixStream>>,
}

#[derive(Default)]
struct Log {
    requests: Vec<Request>,
    fired: Vec<Fired>,
    errors: Vec<String>,
}

impl<'d> Interposer<'d> {
    /// Binds a socket in a fresh temp dir that will forward to `daemon`'s API socket.
    pub fn new(daemon: &'d PrivateDockerd) -> Interposer<'d> {
        let host = daemon.host();
        let upstream =
            PathBuf::from(host.strip_prefix("unix://").unwrap_or_else(|| {
                panic!("the private dockerd listens on {host}, not a unix socket")
            }));
        // Short: the socket path must stay below the 108-byte `sun_path` limit.
        let dir = tempfile::Builder::new()
            .prefix("dic-proxy-")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("creating the interposer's temp dir: {e}"));
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket)
            .unwrap_or_else(|e| panic!("binding {}: {e}", socket.display()));
        Interposer {
            daemon,
            upstream,
            dir,
            listener,
            traps: Vec::new(),
        }
    }

    /// `unix:///tmp/dic-proxy-…/docker.sock`, for the cleaner's `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// Adds a trap; traps are tried in the order they were added, and a request fires at most
    /// one of them.
    pub fn trap(mut self, trap: Trap<'d>) -> Interposer<'d> {
        self.traps.push(trap);
        self
    }

    /// Forwards connections while `body` runs (the cleaner's pass), then shuts every socket and
    /// joins every thread. Panics (after the body) when a request could not be parsed.
    pub fn serve<T>(self, body: impl FnOnce() -> T) -> Served<T> {
        let socket = self.socket();
        let shared = Shared {
            daemon: self.daemon,
            upstream: self.upstream,
            stop: AtomicBool::new(false),
            traps: Mutex::new(self.traps),
            log: Mutex::new(Log::default()),
            sockets: Mutex::new(Vec::new()),
        };
        let listener = self.listener;
        let value = std::thread::scope(|s| {
            let shared = &shared;
            s.spawn(move || accept(s, shared, &listener));
            // Whatever the body does (a panic included), the threads are stopped before the
            // scope joins them.
            let stopper = Stopper {
                shared,
                socket: &socket,
            };
            let value = body();
            drop(stopper);
            value
        });
        drop(self.dir);
        let log = shared.log.into_inner().unwrap_or_else(|p| p.into_inner());
        if !log.errors.is_empty() {
            panic!(
                "the interposer refused requests it could not parse:\n{}",
                log.errors.join("\n")
            );
        }
        Served {
            value,
            requests: log.requests,
            fired: log.fired,
        }
    }
}

/// Stops the acceptor and shuts every socket when dropped (also while a test unwinds).
struct Stopper<'a, 'd> {
    shared: &'a Shared<'d>,
    socket: &'a Path,
}

impl Drop for Stopper<'_, '_> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor, which sees `stop` and returns.
        let _ = UnixStream::connect(self.socket);
        for s in lock(&self.shared.sockets).iter() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking hook is caught outside any lock; a poisoned lock still holds good data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn accept<'scope, 'd>(
    s: &'scope std::thread::Scope<'scope, '_>,
    shared: &'scope Shared<'d>,
    listener: &UnixListener,
) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                lock(&shared.log).errors.push(format!("accept: {e}"));
                return;
            }
        };
        let upstream = match UnixStream::connect(&shared.upstream) {
            Ok(u) => u,
            Err(e) => {
                lock(&shared.log)
                    .errors
                    .push(format!("connecting to {}: {e}", shared.upstream.display()));
                continue;
            }
        };
        {
            let mut sockets = lock(&shared.sockets);
            for sock in [&client, &upstream] {
                match sock.try_clone() {
                    Ok(c) => sockets.push(c),
                    Err(e) => lock(&shared.log)
                        .errors
                        .push(format!("dup of a socket: {e}")),
                }
            }
        }
        // A stop that raced the registration above: shut this pair too.
        if shared.stop.load(Ordering::SeqCst) {
            let _ = client.shutdown(std::net::Shutdown::Both);
            let _ = upstream.shutdown(std::net::Shutdown::Both);
        }
        match (client.try_clone(), upstream.try_clone()) {
            (Ok(client_w), Ok(upstream_r)) => {
                s.spawn(move || copy_responses(upstream_r, client_w));
                s.spawn(move || forward_requests(shared, client, upstream));
            }
            (Err(e), _) | (_, Err(e)) => {
                lock(&shared.log)
                    .errors
                    .push(format!("dup of a socket: {e}"));
            }
        }
    }
}

/// The daemon-to-client direction, byte for byte.
fn copy_responses(mut upstream: UnixStream, mut client: UnixStream) {
    let _ = io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Write);
}

/// The client-to-daemon direction: request by request, each after its trap's hook if any.
fn forward_requests(shared: &Shared<'_>, client: UnixStream, mut upstream: UnixStream) {
    let mut reader = BufReader::new(client);
    if let Err(e) = forward_all(shared, &mut reader, &mut upstream) {
        lock(&shared.log).errors.push(e);
    }
    let _ = upstream.shutdown(std::net::Shutdown::Write);
}

fn forward_all(
    shared: &Shared<'_>,
    reader: &mut BufReader<UnixStream>,
    upstream: &mut UnixStream,
) -> Result<(), String> {
    loop {
        let Some(head) = read_head(reader)? else {
            return Ok(());
        };
        let request = head.request.clone();
        hold(shared, &request);
        upstream
            .write_all(&head.raw)
            .map_err(|e| format!("forwarding {}: {e}", request.target_line()))?;
        let body = match &head.framing {
            Framing::None => Ok(()),
            Framing::Length(n) => copy_exact(reader, upstream, *n),
            Framing::Chunked => copy_chunked(reader, upstream),
            Framing::Upgrade => {
                // Raw from here on (a hijacked attach or exec stream).
                return io::copy(reader, upstream)
                    .map(|_| ())
                    .map_err(|e| format!("copying the upgraded {}: {e}", request.target_line()));
            }
        };
        body.map_err(|e| format!("body of {}: {e}", request.target_line()))?;
    }
}

/// Runs the first matching trap's hook (if any), then records the request as forwarded.
fn hold(shared: &Shared<'_>, request: &Request) {
    let hook = {
        let mut traps = lock(&shared.traps);
        traps
            .iter_mut()
            .filter(|t| t.hook.is_some())
            .find_map(|t| (t.matches)(request).then(|| (t.name.clone(), t.hook.take())))
    };
    let fired = hook.map(|(name, hook)| {
        let outcome = match hook {
            Some(hook) => catch_unwind(AssertUnwindSafe(|| hook(shared.daemon)))
                .map_err(|p| panic_message(p.as_ref())),
            None => Ok(()),
        };
        (name, outcome)
    });
    let mut log = lock(&shared.log);
    let at = log.requests.len();
    log.requests.push(request.clone());
    if let Some((name, outcome)) = fired {
        log.fired.push(Fired { name, at, outcome });
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(a panic without a message)".to_string())
}

/// How a request's body is delimited.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    Upgrade,
}

struct Head {
    raw: Vec<u8>,
    request: Request,
    framing: Framing,
}

/// One request head, verbatim; `None` at a clean end of the connection (between requests).
fn read_head(reader: &mut impl BufRead) -> Result<Option<Head>, String> {
    let mut raw = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    loop {
        let start = raw.len();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| format!("reading a request head: {e}"))?;
        if n == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(format!(
                    "connection closed inside a request head: {:?}",
                    String::from_utf8_lossy(&raw)
                ))
            };
        }
        if raw.len() > MAX_HEAD_BYTES {
            return Err(format!("request head over {MAX_HEAD_BYTES} bytes"));
        }
        let line = String::from_utf8_lossy(&raw[start..]);
        let line = line.trim_end_matches(['\r', '\n']);
        // Blank lines before a request line are allowed (RFC 9112 §2.2).
        if line.is_empty() && lines.is_empty() {
            raw.clear();
            continue;
        }
        if line.is_empty() {
            break;
        }
        lines.push(line.to_string());
    }
    let mut words = lines[0].split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(format!("not an HTTP request line: {:?}", lines[0]));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not HTTP/1.x: {:?}", lines[0]));
    }
    let request = Request {
        method: method.to_string(),
        target: target.to_string(),
    };
    let mut length = None;
    let mut chunked = false;
    let mut upgrade = false;
    for header in &lines[1..] {
        let Some((name, value)) = header.split_once(':') else {
            return Err(format!(
                "bad header {header:?} in {}",
                request.target_line()
            ));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = value.parse::<u64>().map_err(|_| {
                    format!("bad Content-Length {value:?} in {}", request.target_line())
                })?;
                if length.is_some_and(|l| l != n) {
                    return Err(format!("two Content-Lengths in {}", request.target_line()));
                }
                length = Some(n);
            }
            "transfer-encoding" => {
                if value.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else {
                    return Err(format!(
                        "Transfer-Encoding {value:?} in {}: only chunked is passed through",
                        request.target_line()
                    ));
                }
            }
            "connection" => {
                upgrade |= value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
            }
            _ => {}
        }
    }
    let framing = match (chunked, length) {
        (true, Some(_)) => {
            return Err(format!(
                "both chunked and Content-Length in {}",
                request.target_line()
            ));
        }
        _ if upgrade => Framing::Upgrade,
        (true, None) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::None,
    };
    Ok(Some(Head {
        raw,
        request,
        framing,
    }))
}

fn copy_exact(reader: &mut impl Read, to: &mut impl Write, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(n), to)?;
    if copied < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("body ended after {copied} of {n} bytes"),
        ));
    }
    Ok(())
}

/// Passes a chunked body through: each size line, its data and CRLF, the last chunk and the
/// trailers up to the blank line.
fn copy_chunked(reader: &mut impl BufRead, to: &mut impl Write) -> io::Result<()> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    loop {
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line)?;
        to.write_all(&line)?;
        let text = String::from_utf8_lossy(&line);
        let size = text.trim_end().split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| bad(format!("bad chunk size line {text:?}")))?;
        if size == 0 {
            break;
        }
        // The data and its CRLF.
        copy_exact(
            reader,
            to,
            size.checked_add(2)
                .ok_or_else(|| bad("chunk too large".into()))?,
        )?;
    }
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Err(bad("connection closed inside the trailers".into()));
        }
        to.write_all(&line)?;
        if line == b"\r\n" || line == b"\n" {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str) -> Request {
        Request {
            method: "DELETE".into(),
            target: target.into(),
        }
    }

    #[test]
    fn paths_lose_their_version_and_query_and_are_decoded() {
        let r = request("/v1.41/images/sha256%3Aabc?force=false&noprune=false");
        assert_eq!(r.path(), "/images/sha256:abc");
        assert_eq!(r.image_delete().as_deref(), Some("sha256:abc"));
        assert_eq!(request("/images/app:1").path(), "/images/app:1");
        assert_eq!(request("/version").path(), "/version");
        assert_eq!(request("/vendor/x").path(), "/vendor/x");
        let inspect = Request {
            method: "GET".into(),
            target: "/images/registry:5000/app:1/json".into(),
        };
        assert_eq!(
            inspect.image_inspect().as_deref(),
            Some("registry:5000/app:1")
        );
        let list = Request {
            method: "GET".into(),
            target: "/v1.41/images/json?all=false".into(),
        };
        assert_eq!(list.image_inspect(), None);
    }

    #[test]
    fn heads_bodies_and_chunks_are_framed_and_kept_verbatim() {
        let wire: &[u8] = b"POST /images/x/tag?repo=a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
DELETE /images/app:1 HTTP/1.1\r\nHost: docker\r\n\r\n\
POST /build HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n";
        let mut reader = io::BufReader::new(wire);
        let mut out = Vec::new();
        let mut seen = Vec::new();
        while let Some(head) = read_head(&mut reader).expect("parses") {
            out.extend_from_slice(&head.raw);
            seen.push(head.request.line());
            match head.framing {
                Framing::Length(n) => copy_exact(&mut reader, &mut out, n).expect("body"),
                Framing::Chunked => copy_chunked(&mut reader, &mut out).expect("chunks"),
                Framing::None => {}
                Framing::Upgrade => unreachable!("no upgrade here"),
            }
        }
        assert_eq!(out, wire, "forwarded byte for byte");
        assert_eq!(
            seen,
            ["POST /images/x/tag", "DELETE /images/app:1", "POST /build"]
        );
    }

    #[test]
    fn what_cannot_be_framed_is_refused() {
        for wire in [
            &b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost",
        ] {
            let mut reader = io::BufReader::new(wire);
            assert!(
                read_head(&mut reader).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }
}
