//! The driver's own client of the private dockerd: what a node's pods do to it (load an image
//! when it is missing, run a container, remove it when the pod ends) and what the driver asks to
//! count (which images are there). One HTTP/1.0 request per connection on the unix socket, std
//! only, so every pod is a plain thread. Must not: remove an image (that is the cleaner's).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// Longest any one request may take (a load on a loaded machine included).
const BOUND: Duration = Duration::from_secs(300);

/// The API of the private dockerd.
#[derive(Debug, Clone)]
pub struct Engine {
    socket: PathBuf,
}

/// How a load ended.
#[derive(Debug)]
pub enum Loaded {
    /// The image is there.
    Ok,
    /// The disk was full ("no space left on device").
    Full,
    /// Something else went wrong.
    Failed(String),
}

impl Engine {
    /// The API at `unix://PATH`.
    pub fn new(docker_host: &str) -> anyhow::Result<Engine> {
        let Some(path) = docker_host.strip_prefix("unix://") else {
            bail!("--docker-host {docker_host}: only unix:// sockets are supported");
        };
        Ok(Engine {
            socket: PathBuf::from(path),
        })
    }

    /// `method path`, with a JSON body or a tar; returns the status and body.
    fn request(
        &self,
        method: &str,
        path: &str,
        json: Option<&Value>,
        tar: Option<&[u8]>,
    ) -> anyhow::Result<(u16, String)> {
        let what = || format!("{method} {path}");
        let mut s = UnixStream::connect(&self.socket).with_context(what)?;
        s.set_read_timeout(Some(BOUND)).with_context(what)?;
        s.set_write_timeout(Some(BOUND)).with_context(what)?;
        let body = json.map(Value::to_string).unwrap_or_default();
        let (kind, length) = match tar {
            Some(t) => ("application/x-tar", t.len()),
            None => ("application/json", body.len()),
        };
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: engine\r\nContent-Type: {kind}\r\nContent-Length: {length}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).with_context(what)?;
        match tar {
            // The daemon may answer (an error) before it has read everything.
            Some(t) => match s.write_all(t) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::BrokenPipe => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                Err(e) => return Err(e).with_context(what),
            },
            None => s.write_all(body.as_bytes()).with_context(what)?,
        }
        let mut raw = Vec::new();
        loop {
            let mut buf = [0u8; 65536];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset && !raw.is_empty() => break,
                Err(e) => return Err(e).with_context(what),
            }
        }
        let text = String::from_utf8_lossy(&raw);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .with_context(|| format!("{}: not an HTTP reply: {:.200}", what(), text))?;
        let body = text
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_string());
        Ok((status, body))
    }

    /// `docker load` of a tarball.
    pub fn load(&self, tar: &[u8]) -> Loaded {
        match self.request("POST", "/images/load?quiet=1", None, Some(tar)) {
            // A failed load can still answer 200, with the error in the stream.
            Ok((200, body)) if !body.contains("errorDetail") => Loaded::Ok,
            Ok((status, body)) => classify(format!("{status} {}", body.trim())),
            Err(e) => classify(format!("{e:#}")),
        }
    }

    /// The tags of every image present.
    pub fn tags(&self) -> anyhow::Result<Vec<String>> {
        let (status, body) = self.request("GET", "/images/json", None, None)?;
        if status != 200 {
            bail!("GET /images/json: {status} {:.200}", body.trim());
        }
        let list: Value = serde_json::from_str(&body).context("GET /images/json: not JSON")?;
        Ok(list
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|i| i["RepoTags"].as_array().into_iter().flatten())
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect())
    }

    /// True when `tag` names an image.
    pub fn has(&self, tag: &str) -> anyhow::Result<bool> {
        let (status, body) = self.request("GET", &format!("/images/{tag}/json"), None, None)?;
        match status {
            200 => Ok(true),
            404 => Ok(false),
            _ => bail!("GET /images/{tag}/json: {status} {:.200}", body.trim()),
        }
    }

    /// Creates and starts a container of `tag` that sleeps; `Ok(None)` when the image is gone.
    pub fn run(&self, tag: &str, name: &str) -> anyhow::Result<Option<String>> {
        let spec = serde_json::json!({
            "Image": tag,
            "Cmd": ["/busybox", "sleep", "3600"],
            "HostConfig": {"NetworkMode": "none"},
        });
        let (status, body) = self.request(
            "POST",
            &format!("/containers/create?name={name}"),
            Some(&spec),
            None,
        )?;
        if status == 404 {
            return Ok(None);
        }
        if status != 201 {
            bail!("create {name} of {tag}: {status} {:.300}", body.trim());
        }
        let id = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["Id"].as_str().map(str::to_string))
            .with_context(|| format!("create {name}: no Id in {body:.200}"))?;
        let (status, body) =
            self.request("POST", &format!("/containers/{id}/start"), None, None)?;
        if status != 204 && status != 304 {
            // Not left behind: the pod tries again with a new container.
            let _ = self.remove_container(&id);
            bail!("start {name}: {status} {:.300}", body.trim());
        }
        Ok(Some(id))
    }

    /// Kills and removes container `id` (the pod ended; the kubelet removes its containers).
    pub fn remove_container(&self, id: &str) -> anyhow::Result<()> {
        let (status, body) = self.request(
            "DELETE",
            &format!("/containers/{id}?force=1&v=1"),
            None,
            None,
        )?;
        if status != 204 && status != 404 {
            bail!("remove container {id}: {status} {:.300}", body.trim());
        }
        Ok(())
    }
}

fn classify(message: String) -> Loaded {
    if message.contains("no space left on device") {
        Loaded::Full
    } else {
        Loaded::Failed(message)
    }
}
