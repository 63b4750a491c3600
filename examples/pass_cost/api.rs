//! The benchmark's own client of the private dockerd, beside the library's: one HTTP/1.0
//! request per connection on the unix socket (std only, so it runs in plain threads and adds
//! no async work to the pass being timed): `docker load` and `docker rmi`, and the raw requests
//! of the probe. Must not: retry, or remove anything but what its caller names.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

/// Longest any one request may take (a load of hundreds of MiB included).
const BOUND: Duration = Duration::from_secs(600);

/// The API socket of the private dockerd.
#[derive(Debug, Clone)]
pub struct Api {
    socket: PathBuf,
}

impl Api {
    /// The API at `unix://PATH`.
    pub fn new(docker_host: &str) -> anyhow::Result<Api> {
        let Some(path) = docker_host.strip_prefix("unix://") else {
            bail!("--docker-host {docker_host}: only unix:// sockets are supported");
        };
        Ok(Api {
            socket: PathBuf::from(path),
        })
    }

    /// `method path` with `body` (sent as `application/x-tar` when not empty); returns the
    /// status and the body.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
        let what = || format!("{method} {path} on {}", self.socket.display());
        let mut s = UnixStream::connect(&self.socket).with_context(what)?;
        s.set_read_timeout(Some(BOUND)).with_context(what)?;
        s.set_write_timeout(Some(BOUND)).with_context(what)?;
        let kind = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/x-tar\r\n"
        };
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: engine\r\n{kind}Content-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).with_context(what)?;
        s.write_all(body).with_context(what)?;
        let mut raw = Vec::new();
        loop {
            let mut buf = [0u8; 65536];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
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

    /// `docker load` of the tarball `tar` (docker-save format).
    pub fn load(&self, tar: &[u8]) -> anyhow::Result<()> {
        let (status, body) = self.request("POST", "/images/load?quiet=1", tar)?;
        // A failed load can still answer 200, with the error in the stream.
        if status != 200 || body.contains("errorDetail") {
            bail!("docker load: {status} {:.300}", body.trim());
        }
        Ok(())
    }

    /// `docker rmi NAME` (never forced); a missing image is fine.
    pub fn remove(&self, name: &str) -> anyhow::Result<()> {
        let (status, body) = self.request("DELETE", &format!("/images/{name}"), &[])?;
        if status != 200 && status != 404 {
            bail!("docker rmi {name}: {status} {:.300}", body.trim());
        }
        Ok(())
    }
}

/// Reads a tarball the script made.
pub fn read_tar(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
