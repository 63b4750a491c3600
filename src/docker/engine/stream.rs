//! The engine's event stream read by us ([`DockerEngine::event_messages`]): `GET /events` through
//! the transport with no total bound (the stream is endless by design), split into lines of at
//! most [`MAX_EVENT_LINE_BYTES`] ([`crate::bounded::Lines`]): bollard's decoder buffers a line
//! without end, so an endless line would grow the process without limit. Each line is parsed
//! as one event; what each event means is `events`'.

use std::collections::VecDeque;
use std::sync::Arc;

use bollard::errors::Error as BollardError;
use bollard::models::EventMessage;
use futures_util::{Stream, TryStreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::transport::Endpoint;
use super::{DockerEngine, error};
use crate::bounded::{Lines, read_capped};
use crate::docker::Error;

/// The longest event line read: an event is a few hundred bytes, a container with many labels
/// a few KiB.
pub const MAX_EVENT_LINE_BYTES: usize = 1 << 20;
/// How much of an error answer's body is read for its message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
const OP: &str = "follow events";

enum Phase {
    Start(String),
    Body {
        body: Incoming,
        lines: Lines,
        ready: VecDeque<Vec<u8>>,
    },
    Done,
}

impl DockerEngine {
    /// The engine's events for `query` (name and raw value pairs, percent-encoded here), each
    /// parsed; ends with an error at the first failure (a connection that broke, an answer that
    /// is not an event stream, a line longer than [`MAX_EVENT_LINE_BYTES`]).
    pub(super) fn event_messages(
        &self,
        query: &[(&str, String)],
    ) -> impl Stream<Item = Result<EventMessage, Error>> + Send + 'static + use<> {
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        let target = format!("/events?{}", query.join("&"));
        let endpoint = Arc::clone(&self.endpoint);
        futures_util::stream::unfold(Phase::Start(target), move |phase| {
            let endpoint = Arc::clone(&endpoint);
            async move { next(&endpoint, phase).await }
        })
    }
}

/// The next event and what follows it, or the end.
async fn next(
    endpoint: &Endpoint,
    mut phase: Phase,
) -> Option<(Result<EventMessage, Error>, Phase)> {
    loop {
        phase = match phase {
            Phase::Done => return None,
            Phase::Start(target) => match open(endpoint, &target).await {
                Ok(body) => Phase::Body {
                    body,
                    lines: Lines::new(MAX_EVENT_LINE_BYTES),
                    ready: VecDeque::new(),
                },
                Err(e) => return Some((Err(e), Phase::Done)),
            },
            Phase::Body {
                mut body,
                mut lines,
                mut ready,
            } => {
                if let Some(line) = ready.pop_front() {
                    let parsed = parse(&line);
                    let then = if parsed.is_ok() {
                        Phase::Body { body, lines, ready }
                    } else {
                        Phase::Done
                    };
                    return Some((parsed, then));
                }
                match body.frame().await {
                    None => match lines.finish() {
                        Some(last) => return Some((parse(&last), Phase::Done)),
                        None => return None,
                    },
                    Some(Err(e)) => return Some((Err(error(OP.into(), e.into())), Phase::Done)),
                    Some(Ok(frame)) => {
                        // A trailers frame holds nothing of ours.
                        if let Ok(data) = frame.into_data() {
                            match lines.push(&data) {
                                Ok(done) => {
                                    ready.extend(done.into_iter().filter(|l| !is_blank(l)));
                                }
                                Err(too_long) => {
                                    let err = std::io::Error::other(format!(
                                        "{too_long} on the event stream: not read further"
                                    ));
                                    return Some((
                                        Err(error(OP.into(), BollardError::IOError { err })),
                                        Phase::Done,
                                    ));
                                }
                            }
                        }
                        Phase::Body { body, lines, ready }
                    }
                }
            }
        };
    }
}

/// Sends `GET target`; the body of a 200, or the error the engine answered.
async fn open(endpoint: &Endpoint, target: &str) -> Result<Incoming, Error> {
    let request = http::Request::get(format!("http://docker{target}"))
        .body(http_body_util::Either::Left(http_body_util::Full::new(
            bytes::Bytes::new(),
        )))
        .map_err(|e| error(OP.into(), e.into()))?;
    let response = endpoint
        .send(request, None)
        .await
        .map_err(|e| error(OP.into(), e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response.into_body());
    }
    // The engine's message, from a body read bounded (a JSON `message`, or the text itself).
    let head = read_capped(
        tokio_util::io::StreamReader::new(
            response
                .into_body()
                .into_data_stream()
                .map_err(std::io::Error::other),
        ),
        MAX_ERROR_BODY_BYTES,
        true,
    )
    .await
    .map(|c| c.head)
    .unwrap_or_default();
    let text = String::from_utf8_lossy(&head);
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(String::from))
        .unwrap_or_else(|| text.trim().to_string());
    Err(Error::Status {
        op: OP.into(),
        status: status.as_u16(),
        message,
    })
}

fn parse(line: &[u8]) -> Result<EventMessage, Error> {
    serde_json::from_slice(line)
        .map_err(|err| error(OP.into(), BollardError::JsonSerdeError { err }))
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// `value` percent-encoded for a query (everything but RFC 3986's unreserved characters).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            percent_encode(r#"{"type":["container"]}"#),
            "%7B%22type%22%3A%5B%22container%22%5D%7D"
        );
        assert_eq!(
            percent_encode("1700000000.000000001"),
            "1700000000.000000001"
        );
    }
}
