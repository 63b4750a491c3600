//! A benchmark trace as the replay writes it (`replay --bench --emit DIR`, examples/replay/
//! bench.rs): the catalog (layers, and images made of them), the uses and the other files.
//! Times are ms from the start, sizes bytes.

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// One image: its tag and its layers, base first.
#[derive(Debug, Clone, Deserialize)]
pub struct Image {
    /// `bench/iNN:1`.
    pub tag: String,
    /// Indexes into [`Trace::layers`].
    pub layers: Vec<usize>,
}

/// One use: a container of `image` starts at `at_ms` and runs `lifetime_ms`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Use {
    /// When the pod asks for the image, ms from the start.
    pub at_ms: i64,
    /// Index into [`Trace::images`].
    pub image: usize,
    /// How long its container runs.
    pub lifetime_ms: i64,
}

/// The other files' size from `at_ms` on.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Other {
    /// ms from the start.
    pub at_ms: i64,
    /// Bytes.
    pub bytes: u64,
}

/// A benchmark trace.
#[derive(Debug, Clone, Deserialize)]
pub struct Trace {
    /// Its seed.
    pub seed: u64,
    /// Seconds of a node per second of the trace.
    pub scale: i64,
    /// The disk it was made for, MiB.
    pub disk_mib: u64,
    /// Bytes of each layer.
    pub layers: Vec<u64>,
    /// The catalog.
    pub images: Vec<Image>,
    /// The uses, in time order.
    pub uses: Vec<Use>,
    /// Other files at the start.
    pub other_start: u64,
    /// Their changes.
    pub others: Vec<Other>,
}

impl Trace {
    /// Reads the JSON the replay wrote.
    pub fn read(path: &Path) -> anyhow::Result<Trace> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}
