//! A fake Kubernetes API server that holds one Node and records what is done to it: enough for
//! a cleaner to cordon and uncordon its node (GET and PATCH of the Node, POST of an Event) and
//! for the benchmark to count cordons and the seconds the node spent cordoned. Plain HTTP on
//! 127.0.0.1 (the kubeconfig it writes names no credential), one request per connection.
//! Must not: pretend to be more than that (any other request is a 404).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

/// What the server saw.
#[derive(Debug, Default)]
pub struct Record {
    /// Requests, in order: (seconds from the start, method, path).
    pub requests: Vec<(f64, String, String)>,
    /// PATCHes of the node.
    pub patches: u64,
    /// Times the node went from schedulable to cordoned.
    pub cordons: u64,
    /// Seconds it spent cordoned (closed spells only, plus the open one at [`Server::finish`]).
    pub cordoned_s: f64,
    /// When the open spell began.
    since: Option<Instant>,
}

/// The server: a thread accepting connections.
pub struct Server {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<Mutex<(Value, Record)>>,
}

impl Server {
    /// Starts the server holding node `name`.
    pub fn start(name: &str) -> anyhow::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the fake API")?;
        let port = listener.local_addr()?.port();
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": "bench-node-uid", "resourceVersion": "1",
                         "labels": {"kubernetes.io/hostname": name}, "annotations": {}},
            "spec": {},
            "status": {"conditions": []},
        });
        let state = Arc::new(Mutex::new((node, Record::default())));
        let started = Instant::now();
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = serve(stream, &shared, started);
                });
            }
        });
        Ok(Server { port, state })
    }

    /// Writes a kubeconfig for the server to `path`.
    pub fn kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: bench\n  user: {{}}\ncontexts:\n- name: bench\n  context:\n    cluster: bench\n    user: bench\n\
             current-context: bench\n",
            self.port
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// The record so far, an open cordon counted up to now; and whether the node is cordoned.
    pub fn finish(&self) -> (Record, bool) {
        let Ok(mut s) = self.state.lock() else {
            return (Record::default(), false);
        };
        let cordoned = unschedulable(&s.0);
        let r = &mut s.1;
        if let Some(since) = r.since.take() {
            r.cordoned_s += since.elapsed().as_secs_f64();
        }
        (
            Record {
                requests: std::mem::take(&mut r.requests),
                patches: r.patches,
                cordons: r.cordons,
                cordoned_s: r.cordoned_s,
                since: None,
            },
            cordoned,
        )
    }
}

fn unschedulable(node: &Value) -> bool {
    node["spec"]["unschedulable"].as_bool() == Some(true)
}

/// JSON merge patch (RFC 7386); for the fields a cordon touches (annotations, `unschedulable`,
/// taints replaced whole) a strategic merge patch means the same.
fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    a.remove(k);
                } else {
                    merge(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (slot, p) => *slot = p.clone(),
    }
}

fn serve(
    stream: TcpStream,
    state: &Mutex<(Value, Record)>,
    started: Instant,
) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let route = path.split('?').next().unwrap_or_default().to_string();
    let (code, answer) = {
        let mut guard = state
            .lock()
            .map_err(|_| anyhow::anyhow!("state poisoned"))?;
        let (node, record) = &mut *guard;
        record.requests.push((
            started.elapsed().as_secs_f64(),
            method.clone(),
            path.clone(),
        ));
        let name = node["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let node_path = format!("/api/v1/nodes/{name}");
        match (method.as_str(), route.as_str()) {
            ("GET", p) if p == node_path => (200, node.clone()),
            ("PATCH", p) if p == node_path => {
                record.patches += 1;
                let wanted = body.pointer("/metadata/resourceVersion").cloned();
                if wanted.is_some() && wanted.as_ref() != node.pointer("/metadata/resourceVersion")
                {
                    (409, status(409, "Conflict", "the object has been modified"))
                } else {
                    let was = unschedulable(node);
                    merge(node, &body);
                    let version = node["metadata"]["resourceVersion"]
                        .as_str()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(1);
                    node["metadata"]["resourceVersion"] = json!((version + 1).to_string());
                    let now = unschedulable(node);
                    if !was && now {
                        record.cordons += 1;
                        record.since = Some(Instant::now());
                    } else if was
                        && !now
                        && let Some(since) = record.since.take()
                    {
                        record.cordoned_s += since.elapsed().as_secs_f64();
                    }
                    (200, node.clone())
                }
            }
            ("POST", p) if p.starts_with("/api/v1/namespaces/") && p.ends_with("/events") => {
                let mut event = body.clone();
                event["metadata"]["uid"] = json!("event");
                (201, event)
            }
            _ => (
                404,
                status(404, "NotFound", "not served by the benchmark's fake"),
            ),
        }
    };
    let text = answer.to_string();
    let reason = match code {
        200 => "OK",
        201 => "Created",
        409 => "Conflict",
        _ => "Not Found",
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    out.flush()?;
    Ok(())
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}
