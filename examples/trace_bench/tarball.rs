//! The benchmark's "registry": one `docker save` tarball per image of a trace, made by hand (no
//! image can be pulled here). A layer is a tar of files of random bytes (a base layer also holds
//! the static busybox that the containers run); an image's tarball holds its config, its
//! manifest and every layer, as `docker save` writes them. Layer contents come from a PRNG
//! seeded by the trace's seed and the layer's number, so a tarball is the same on every run and
//! need not be stored: [`prepare`] computes each layer's digest once (a small file per seed),
//! and [`Registry::tarball`] makes an image's tarball in memory when a pod loads it (the
//! machine's disk is shared; gigabytes of tarballs would crowd it).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::trace::Trace;

/// A minimal ustar writer: regular files and directories, names under 100 bytes.
struct Tar<W: Write> {
    out: W,
}

impl<W: Write> Tar<W> {
    fn header(&mut self, name: &str, size: u64, dir: bool) -> io::Result<()> {
        let mut h = [0u8; 512];
        let name = name.as_bytes();
        if name.len() >= 100 {
            return Err(io::Error::other("tar member name too long"));
        }
        h[..name.len()].copy_from_slice(name);
        let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
            let s = format!("{v:0w$o}", w = width - 1);
            h[at..at + width - 1].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, 0o755);
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, size);
        octal(&mut h, 136, 12, 0);
        h[156] = if dir { b'5' } else { b'0' };
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.out.write_all(&h)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rest = (512 - size % 512) % 512;
        // rest < 512: the cast cannot truncate.
        self.out.write_all(&vec![0u8; rest as usize])
    }

    fn dir(&mut self, name: &str) -> io::Result<()> {
        self.header(name, 0, true)
    }

    fn file_from(&mut self, name: &str, size: u64, data: &mut impl Read) -> io::Result<()> {
        self.header(name, size, false)?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::other(format!(
                "{name}: {copied} of {size} bytes"
            )));
        }
        self.pad(size)
    }

    fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        Ok(self.out)
    }
}

/// Random bytes from SplitMix64 (incompressible, as image layers mostly are).
struct Noise {
    state: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        for chunk in buf.chunks_mut(8) {
            self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(buf.len())
    }
}

fn sha256(bytes: &[u8]) -> anyhow::Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running sha256sum")?;
    child
        .stdin
        .take()
        .context("sha256sum's stdin")?
        .write_all(bytes)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("sha256sum failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    if hex.len() != 64 {
        bail!("sha256sum: {text:?}");
    }
    Ok(hex.to_string())
}

/// The daemon's architecture as an image config names it (the daemon runs on this machine).
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The tarballs of one trace's catalog: the layers' digests and what makes their bytes.
pub struct Registry {
    trace: Trace,
    busybox: Vec<u8>,
    diff_ids: Vec<String>,
}

/// The file holding the digests of a trace's layers, in `dir`.
fn digests_path(dir: &Path, trace: &Trace) -> PathBuf {
    dir.join(format!("s{}-digests.json", trace.seed))
}

impl Registry {
    /// Layer `l`'s tar.
    fn layer(&self, l: usize) -> io::Result<Vec<u8>> {
        let bytes = self.trace.layers[l];
        let mut tar = Tar {
            out: Vec::with_capacity(usize::try_from(bytes).unwrap_or(0) + 65536),
        };
        let mut noise = Noise {
            state: self.trace.seed.wrapping_mul(0x1000_0000_01b3) ^ (l as u64 + 1),
        };
        let mut left = bytes;
        if self.trace.images.iter().any(|i| i.layers[0] == l) {
            let size = self.busybox.len() as u64;
            tar.file_from("busybox", size, &mut self.busybox.as_slice())?;
            left = left.saturating_sub(size);
        }
        tar.dir("data/")?;
        // Files of at most 8 MiB, as an image's files are many.
        let mut n = 0;
        while left > 0 {
            let size = left.min(8 << 20);
            tar.file_from(&format!("data/l{l}-{n}.bin"), size, &mut noise)?;
            left -= size;
            n += 1;
        }
        tar.finish()
    }

    /// Image `i`'s `docker save` tarball.
    pub fn tarball(&self, i: usize) -> anyhow::Result<Vec<u8>> {
        let image = &self.trace.images[i];
        let config = serde_json::json!({
            "architecture": arch(),
            "os": "linux",
            "created": "2025-12-31T00:00:00Z",
            "config": {"Cmd": ["/busybox", "sleep", "3600"], "Labels": {"bench.image": image.tag}},
            "rootfs": {"type": "layers", "diff_ids": image.layers.iter().map(|l| format!("sha256:{}", self.diff_ids[*l])).collect::<Vec<_>>()},
            "history": image.layers.iter().map(|l| serde_json::json!({"created": "2025-12-31T00:00:00Z", "created_by": format!("layer {l}")})).collect::<Vec<_>>(),
        })
        .to_string();
        let members: Vec<String> = image
            .layers
            .iter()
            .map(|l| format!("{}/layer.tar", self.diff_ids[*l]))
            .collect();
        let manifest = serde_json::json!([{
            "Config": "config.json",
            "RepoTags": [image.tag],
            "Layers": members,
        }])
        .to_string();
        let mut tar = Tar { out: Vec::new() };
        for l in &image.layers {
            let layer = self.layer(*l)?;
            tar.dir(&format!("{}/", self.diff_ids[*l]))?;
            tar.file_from(
                &format!("{}/layer.tar", self.diff_ids[*l]),
                layer.len() as u64,
                &mut layer.as_slice(),
            )?;
        }
        tar.file_from("config.json", config.len() as u64, &mut config.as_bytes())?;
        tar.file_from(
            "manifest.json",
            manifest.len() as u64,
            &mut manifest.as_bytes(),
        )?;
        Ok(tar.finish()?)
    }

    /// The registry of `trace`, its digests read from `dir` (written by [`prepare`]).
    pub fn open(trace: &Trace, dir: &Path, busybox: &Path) -> anyhow::Result<Registry> {
        let path = digests_path(dir, trace);
        let text = fs::read_to_string(&path)
            .with_context(|| format!("reading {} (run `prepare` first)", path.display()))?;
        let (layers, diff_ids): (Vec<u64>, Vec<String>) =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if layers != trace.layers {
            bail!(
                "{} was made for another catalog: run `prepare`",
                path.display()
            );
        }
        Ok(Registry {
            trace: trace.clone(),
            busybox: fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?,
            diff_ids,
        })
    }
}

/// Computes the digest of every layer of `trace` into `dir` unless it is there already for
/// this catalog.
pub fn prepare(trace: &Trace, dir: &Path, busybox: &Path) -> anyhow::Result<()> {
    if Registry::open(trace, dir, busybox).is_ok() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    let mut registry = Registry {
        trace: trace.clone(),
        busybox: fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?,
        diff_ids: Vec::new(),
    };
    for l in 0..trace.layers.len() {
        let digest = sha256(&registry.layer(l)?)?;
        registry.diff_ids.push(digest);
    }
    let text = serde_json::to_string(&(&trace.layers, &registry.diff_ids))?;
    fs::write(digests_path(dir, trace), text)?;
    Ok(())
}
