//! A tiny HTTP/1.0 client over a unix socket, std and `serde_json` only: how the harness and the
//! probe tests talk to an engine's API without going through the library under test.
//!
//! Owns: one request per connection (HTTP/1.0, so the server closes the connection after the
//! body and never uses chunked encoding), the status code, the body as text and as JSON (one
//! document, or one per line for `/events`). Must not: retry, follow redirects, or know about
//! any endpoint (that is the callers').

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use serde_json::Value;

use super::wait_until;

/// How long a request may take unless told otherwise; streams must end by themselves (`until`).
pub const REQUEST_BOUND: Duration = Duration::from_secs(60);

/// An answer: the status and as much of the body as arrived.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The body as received (lossy UTF-8).
    pub text: String,
    /// Whether the server ended the body (closed the connection) within the bound; false for a
    /// stream still open when [`request_within`] stopped waiting.
    pub ended: bool,
}

impl Reply {
    /// The body as one JSON document; `Value::Null` when it is empty or not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// The body as one JSON document per line (the `/events` stream); lines that are not JSON are
    /// left out.
    pub fn json_lines(&self) -> Vec<Value> {
        self.text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The `message` of an error body (Docker's and Podman's both have one), or "".
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// `method path` on the API at `socket`, with an empty body; panics when the socket does not
/// answer, or does not end its answer within [`REQUEST_BOUND`].
pub fn request(socket: &Path, method: &str, path: &str) -> Reply {
    let reply = request_within(socket, method, path, REQUEST_BOUND);
    assert!(
        reply.ended,
        "{method} {path} on {}: no end of the answer within {REQUEST_BOUND:?}",
        socket.display()
    );
    reply
}

/// [`request`] that stops waiting when nothing arrives for `bound` and returns what came
/// (`ended: false`): for streams. Panics when the socket refuses or sends no HTTP reply.
pub fn request_within(socket: &Path, method: &str, path: &str, bound: Duration) -> Reply {
    let shown = format!("{method} {path} on {}", socket.display());
    let (raw, ended) =
        exchange(socket, method, path, bound).unwrap_or_else(|e| panic!("{shown}: {e}"));
    parse(&raw, ended).unwrap_or_else(|| panic!("{shown}: not an HTTP reply: {raw:?}"))
}

/// Percent-encodes a query value (`filters={"type":["image"]}`).
pub fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// True when something accepts connections on `socket` (a gRPC socket, which speaks no
/// HTTP/1: containerd's). Never panics.
pub fn socket_answers(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// `GET /_ping`; true on `200`. Never panics (used while waiting for a daemon to come up).
pub fn ping(socket: &Path) -> bool {
    exchange(socket, "GET", "/_ping", Duration::from_secs(2))
        .ok()
        .and_then(|(raw, ended)| parse(&raw, ended))
        .is_some_and(|r| r.status == 200)
}

/// Waits up to `bound` for the service that `child` runs to answer [`ping`] on `socket`. `Err`
/// says why not: it exited first (with its status), or it did not answer in time.
pub fn wait_for_ping(
    child: &mut Option<Child>,
    socket: &Path,
    bound: Duration,
) -> Result<(), String> {
    let mut exited = None;
    let answered = wait_until(bound, || {
        if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
            exited = Some(status);
            return true;
        }
        ping(socket)
    });
    match (exited, answered) {
        (Some(status), _) => Err(format!("exited with {status} before answering")),
        (None, false) => Err(format!("did not answer within {bound:?}")),
        (None, true) => Ok(()),
    }
}

/// Sends the request and reads until the server closes (`true`) or `bound` passes without a
/// byte (`false`, with what came so far).
fn exchange(
    socket: &Path,
    method: &str,
    path: &str,
    bound: Duration,
) -> std::io::Result<(String, bool)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(bound))?;
    s.set_write_timeout(Some(bound))?;
    // Content-Length: 0 because Docker refuses some POSTs without a length (411).
    let head = format!("{method} {path} HTTP/1.0\r\nHost: engine\r\nContent-Length: 0\r\n\r\n");
    s.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let ended = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    Ok((String::from_utf8_lossy(&raw).into_owned(), ended))
}

fn parse(raw: &str, ended: bool) -> Option<Reply> {
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some(Reply {
        status,
        text: body.to_string(),
        ended,
    })
}
