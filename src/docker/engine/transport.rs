//! The connection to an engine's API, made here rather than by bollard, for two things bollard
//! cannot do: bound what an answer may hold, and say which endpoint failed and why.
//!
//! Each request gets a connection of its own (a unix socket is cheap to connect to; nothing
//! pooled can outlive an engine restart), read through [`Budget`]: an answer larger than
//! [`MAX_ANSWER_BYTES`] (headers and body) fails the request instead of growing the process (bollard
//! collects bodies whole). The event stream has no total bound (it is endless by design); its
//! lines are bounded instead (`events`). A connection that fails names the endpoint, and for a
//! permission denied on a socket the owner, group and mode that would grant it (`hint`).

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bollard::errors::Error as BollardError;
use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use http::header::{HOST, HeaderValue};
use hyper::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

mod hint;

/// The largest answer read from an engine, headers and body: the image or container list of a
/// node with ten thousand of each is some 15 MiB.
pub const MAX_ANSWER_BYTES: u64 = 64 << 20;

/// Where an engine's API is.
#[derive(Debug)]
pub(in crate::docker) struct Endpoint {
    target: Target,
    /// As configured (`unix:///var/run/docker.sock`, `tcp://host:2375`), for messages.
    shown: String,
}

#[derive(Debug)]
enum Target {
    Unix(PathBuf),
    /// `host:port`, the host without IPv6 brackets.
    Tcp(String, u16),
}

impl Endpoint {
    /// The endpoint `host` names (`unix://`, `tcp://`, `http://`); the message says why not.
    pub(in crate::docker) fn parse(host: &str) -> Result<Endpoint, String> {
        let target = if let Some(path) = host.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!("{host}: the socket path must be absolute"));
            }
            Target::Unix(PathBuf::from(path))
        } else if let Some(rest) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            let authority = rest.strip_suffix('/').unwrap_or(rest);
            let (name, port) = authority
                .rsplit_once(':')
                .and_then(|(n, p)| Some((n, p.parse::<u16>().ok()?)))
                .ok_or_else(|| format!("{host}: a host and a port are needed"))?;
            let name = name.trim_start_matches('[').trim_end_matches(']');
            Target::Tcp(name.to_string(), port)
        } else {
            return Err(format!(
                "{host}: use unix://, tcp:// or http:// (no TLS or SSH transport)"
            ));
        };
        Ok(Endpoint {
            target,
            shown: host.to_string(),
        })
    }

    /// A bollard client whose every request goes through [`Endpoint::send`], bounded by
    /// [`MAX_ANSWER_BYTES`], with bollard's own timeout of `timeout_secs` for the headers.
    pub(in crate::docker) fn client(
        self: &Arc<Self>,
        timeout_secs: u64,
    ) -> Result<Docker, BollardError> {
        let endpoint = Arc::clone(self);
        Docker::connect_with_custom_transport(
            move |req: BollardRequest| {
                let endpoint = Arc::clone(&endpoint);
                async move { endpoint.send(req, Some(MAX_ANSWER_BYTES)).await }
            },
            // Only the scheme and authority of bollard's URIs; `send` keeps the path alone.
            Some("http://docker"),
            timeout_secs,
            API_DEFAULT_VERSION,
        )
    }

    /// Sends `req` on a connection of its own, reading at most `limit` bytes of answer (none:
    /// the event stream, endless by design).
    pub(in crate::docker) async fn send(
        &self,
        mut req: BollardRequest,
        limit: Option<u64>,
    ) -> Result<Response<Incoming>, BollardError> {
        // Origin form on the wire: the path and query alone, the host in its header.
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        *req.uri_mut() = target.parse()?;
        let host = match &self.target {
            Target::Unix(_) => HeaderValue::from_static("docker"),
            Target::Tcp(name, port) => HeaderValue::from_str(&format!("{name}:{port}"))
                .unwrap_or_else(|_| HeaderValue::from_static("docker")),
        };
        req.headers_mut().insert(HOST, host);
        let stream = self
            .connect()
            .await
            .map_err(|err| BollardError::IOError { err })?;
        let io = TokioIo::new(Budget::new(stream, limit));
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        // Drives the connection until the answer has been read (or dropped).
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("engine connection ended: {}", crate::error_chain(&e));
            }
        });
        Ok(sender.send_request(req).await?)
    }

    async fn connect(&self) -> io::Result<Stream> {
        let connected = match &self.target {
            Target::Unix(path) => UnixStream::connect(path).await.map(Stream::Unix),
            Target::Tcp(name, port) => TcpStream::connect((name.as_str(), *port))
                .await
                .map(Stream::Tcp),
        };
        connected.map_err(|source| {
            let hint = match &self.target {
                Target::Unix(path) => hint::socket(path, &source),
                Target::Tcp(..) => String::new(),
            };
            io::Error::new(
                source.kind(),
                ConnectError {
                    endpoint: self.shown.clone(),
                    source,
                    hint,
                },
            )
        })
    }
}

/// A connection that failed, naming the endpoint and, where it can, what would make it work.
/// Prints its cause itself (and has no `source`), so that the cause comes before the hint.
#[derive(Debug)]
struct ConnectError {
    endpoint: String,
    source: io::Error,
    hint: String,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot connect to {}: {}{}",
            self.endpoint, self.source, self.hint
        )
    }
}

impl std::error::Error for ConnectError {}

/// A unix or TCP stream.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A stream that fails its reads once more than its budget has been read: the answer of one
/// request on a connection of its own, bounded.
struct Budget<S> {
    inner: S,
    /// Bytes that may still be read; `None`: unbounded.
    left: Option<u64>,
    limit: u64,
}

impl<S> Budget<S> {
    fn new(inner: S, limit: Option<u64>) -> Self {
        Budget {
            inner,
            left: limit,
            limit: limit.unwrap_or(u64::MAX),
        }
    }
}

/// An answer larger than the budget.
#[derive(Debug)]
struct TooLarge(u64);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the engine's answer is larger than {} MiB: not read further",
            self.0 >> 20
        )
    }
}

impl std::error::Error for TooLarge {}

impl<S: AsyncRead + Unpin> AsyncRead for Budget<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.left == Some(0) {
            return Poll::Ready(Err(io::Error::other(TooLarge(this.limit))));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(left)) = (&polled, this.left.as_mut()) {
            let n = u64::try_from(buf.filled().len().saturating_sub(before)).unwrap_or(u64::MAX);
            *left = left.saturating_sub(n);
            if *left == 0 && n > 0 {
                // What was read reaches the limit (no answer is that large): the read fails,
                // and what it brought is taken back (a failed read fills nothing).
                buf.set_filled(before);
                return Poll::Ready(Err(io::Error::other(TooLarge(this.limit))));
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budget<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The path of a unix endpoint, for tests.
#[cfg(test)]
fn socket_path(e: &Endpoint) -> Option<&std::path::Path> {
    match &e.target {
        Target::Unix(p) => Some(p),
        Target::Tcp(..) => None,
    }
}

#[cfg(test)]
mod tests;
