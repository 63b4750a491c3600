//! The HTTP endpoint: `GET /metrics` on its own listener, in its own task, never in the daemon's
//! loop. Bounded against hostile clients: a few connections at a time (more wait in the kernel's
//! backlog), the request head read within a few seconds and at most 8 KiB, one request per
//! connection, every connection closed after a bound, no request body ever read. Answers 404 for
//! any other path and 405 for any other method. Stops when its token is cancelled or its
//! [`Server`] dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Error, families};

/// The bounds of the endpoint. Tests shorten them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Time to send the request head.
    pub header_read: Duration,
    /// Longest life of a connection, the answer's writing included.
    pub connection: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 8,
            header_read: Duration::from_secs(5),
            connection: Duration::from_secs(30),
        }
    }
}

/// The request head's limit (hyper's smallest buffer).
const MAX_HEAD_BYTES: usize = 8192;
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The running endpoint; dropped, it stops.
#[derive(Debug)]
pub(super) struct Server {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// Binds `addr` now, so that an address in use fails the start, naming it.
pub(super) fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
    let listen = |source| Error::Listen { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(listen)?;
    listener.set_nonblocking(true).map_err(listen)?;
    Ok(listener)
}

/// Serves `registry` on `listener` (bound to `addr`) until `stop`, with the default limits.
/// Needs the tokio runtime.
pub(super) fn spawn(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    registry: Arc<Registry>,
    stop: CancellationToken,
) -> Result<Server, Error> {
    spawn_with(listener, addr, registry, stop, Limits::default())
}

/// [`spawn`] with explicit limits.
pub(super) fn spawn_with(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    registry: Arc<Registry>,
    stop: CancellationToken,
    limits: Limits,
) -> Result<Server, Error> {
    let listener =
        TcpListener::from_std(listener).map_err(|source| Error::Listen { addr, source })?;
    let task = tokio::spawn(accept(listener, registry, stop.clone(), limits));
    Ok(Server { stop, task })
}

/// Accepts connections while fewer than `limits.connections` are open; each in a task.
async fn accept(
    listener: TcpListener,
    registry: Arc<Registry>,
    stop: CancellationToken,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(limits.connections));
    loop {
        let slot = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                // Never closed.
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log::debug!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let registry = Arc::clone(&registry);
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(false);
            let connection = http.serve_connection(
                TokioIo::new(stream),
                service_fn(|request| {
                    let response = answer(&request, &registry);
                    async move { Ok::<_, Infallible>(response) }
                }),
            );
            tokio::select! {
                () = stop.cancelled() => {}
                _ = tokio::time::timeout(limits.connection, connection) => {}
            }
        });
    }
}

/// The answer to `request`: the metrics for `GET /metrics`, 404 or 405 otherwise.
fn answer(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: GET /metrics\n",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    match families::render(registry) {
        Ok(text) => {
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ),
            );
            r
        }
        Err(e) => {
            log::warn!("metrics endpoint: cannot encode the metrics: {e}");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the metrics could not be encoded\n",
            )
        }
    }
}

/// A short plain-text answer.
fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
