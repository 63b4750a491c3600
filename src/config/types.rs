//! The small value types of the configuration: how usage is measured and compared
//! ([`ThresholdType`], [`Watermarks`]), what a pass removes ([`Strategy`]), how the node is
//! cordoned ([`CordonMode`], [`OnCordonFailure`]), the log level, the `keep_labels` rules,
//! floors and engines. Each knows its own name and display; none reads input or checks a
//! range (that is `validate`'s).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The pause between two image removals (`delay_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// The same pause after every image removal (the original's setting; zero: none).
    Fixed(Duration),
    /// `"adaptive"`: no pause after a removal Docker answered within [`Delay::ADAPTIVE_QUICK`];
    /// after a slower one, a pause as long as that removal took, at most
    /// [`Delay::ADAPTIVE_MAX`]. Docker then spends at most about half its time on our removals
    /// when it is slow, and the node is not held cordoned for pauses when it is fast.
    Adaptive,
}

impl Delay {
    /// A removal answered within this is followed by no pause under [`Delay::Adaptive`].
    pub const ADAPTIVE_QUICK: Duration = Duration::from_millis(250);
    /// The longest pause [`Delay::Adaptive`] makes, however slow the removal was.
    pub const ADAPTIVE_MAX: Duration = Duration::from_secs(10);

    /// The pause after an image removal that took `took`.
    pub fn after(self, took: Duration) -> Duration {
        match self {
            Delay::Fixed(d) => d,
            Delay::Adaptive if took < Self::ADAPTIVE_QUICK => Duration::ZERO,
            Delay::Adaptive => took.min(Self::ADAPTIVE_MAX),
        }
    }
}

/// How usage is measured and compared with the watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdType {
    /// Percent of the filesystem used (`statvfs`), blocks or inodes, whichever is fuller.
    Relative,
    /// Bytes the trees occupy, counted like `du -sxB1`.
    Absolute,
}

/// The validated watermarks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Watermarks {
    /// Percentages of the fullest filesystem: clean at or above `high_pct` until below `low_pct`.
    Relative {
        /// Start cleaning at or above this percentage.
        high_pct: f64,
        /// Stop once below this percentage.
        low_pct: f64,
    },
    /// Byte counts of the trees added up.
    Absolute {
        /// Start cleaning at or above this many bytes.
        high_bytes: u64,
        /// Stop once below this many bytes.
        low_bytes: u64,
    },
}

impl fmt::Display for Watermarks {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Watermarks::Relative { high_pct, low_pct } => {
                write!(f, "high {high_pct}%, low {low_pct}%")
            }
            Watermarks::Absolute {
                high_bytes,
                low_bytes,
            } => write!(
                f,
                "high {}, low {}",
                bytesize::ByteSize(*high_bytes).display().iec(),
                bytesize::ByteSize(*low_bytes).display().iec()
            ),
        }
    }
}

/// What a pass removes, and in which order. Every strategy but `prune` removes stopped
/// containers, dangling images, then unused images one by one until usage is below the low
/// watermark, with every protection; they differ in the order of the unused images
/// (`policy::rank`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Least recently used first.
    Lru,
    /// LRU-2: by the second-latest container start; images started fewer than twice first.
    Lru2,
    /// LFU with ageing: fewest container starts first, each start counting half as much six
    /// hours later.
    Lfu,
    /// GreedyDual-Size-Frequency: as `lfu`, weighed by (size + 1 GiB) / size, so a big image
    /// used rarely goes before a small one used as rarely.
    Gdsf,
    /// Exactly the original tool: container prune, dangling image prune, then prune every unused
    /// image when no dangling image was found or usage is still above high.
    Prune,
}

impl Strategy {
    /// The name in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Lru => "lru",
            Strategy::Lru2 => "lru2",
            Strategy::Lfu => "lfu",
            Strategy::Gdsf => "gdsf",
            Strategy::Prune => "prune",
        }
    }
}

/// How the node is kept free of new pods while a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CordonMode {
    /// Set `spec.unschedulable`, as `kubectl cordon` does.
    Cordon,
    /// Add a NoSchedule taint of our own (for load balancers that drop cordoned nodes).
    Taint,
    /// Never touch the node.
    None,
}

/// What to do when the node cannot be cordoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnCordonFailure {
    /// Clean uncordoned, with a warning: a full disk is worse.
    Clean,
    /// Wait for the next tick.
    Skip,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// One line per decision (the default).
    Info,
    /// Every request.
    Debug,
    /// Everything, including the libraries' chatter.
    Trace,
}

impl LogLevel {
    /// The `log` crate's filter for this level.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// A `keep_labels` rule: `key` (the label is present, whatever its value) or `key=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepLabel {
    /// The label's key: not empty, no surrounding whitespace.
    pub key: String,
    /// The value it must have; `None`: any value.
    pub value: Option<String>,
}

impl KeepLabel {
    /// Reads a rule as written (`key` or `key=value`, split at the first `=`); `None` when the
    /// key is empty or has whitespace around it.
    pub fn parse(rule: &str) -> Option<KeepLabel> {
        let (key, value) = match rule.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (rule, None),
        };
        (!key.is_empty() && key.trim() == key).then(|| KeepLabel {
            key: key.to_string(),
            value,
        })
    }

    /// The label of `labels` this rule matches, as `key=value`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> Option<String> {
        let value = labels.get(&self.key)?;
        match &self.value {
            Some(wanted) if wanted != value => None,
            _ => Some(format!("{}={value}", self.key)),
        }
    }
}

impl fmt::Display for KeepLabel {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

/// How much of an engine's data pressure from outside never removes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Floor {
    /// A percentage of the size of the filesystem holding the engine's data (0: no floor).
    Percent(f64),
    /// A size.
    Bytes(u64),
}

impl Floor {
    /// No floor.
    pub const NONE: Floor = Floor::Percent(0.0);

    /// The floor in bytes on a filesystem of `fs_total_bytes`.
    pub fn bytes(&self, fs_total_bytes: u64) -> u64 {
        match *self {
            Floor::Bytes(b) => b,
            // The percentage is in 0..=100, so the product is within 0..=fs_total_bytes.
            Floor::Percent(p) => (fs_total_bytes as f64 * p / 100.0) as u64,
        }
    }

    /// True when there is no floor.
    pub fn is_none(&self) -> bool {
        matches!(*self, Floor::Bytes(0)) || matches!(*self, Floor::Percent(p) if p <= 0.0)
    }
}

impl fmt::Display for Floor {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            Floor::Percent(p) => write!(f, "{p}%"),
            Floor::Bytes(b) => write!(f, "{}", bytesize::ByteSize(b).display().iec()),
        }
    }
}

/// One container engine to clean.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Its name, in logs, status, metrics and the state file: lowercase letters, digits, `-`,
    /// `_` and `.`, at most 63 characters.
    pub name: String,
    /// Its endpoint, as [`Config::docker_host`](super::Config::docker_host); `None` for the local
    /// socket. Always `None` for a CRI engine.
    pub docker_host: Option<String>,
    /// For an engine of kind `cri` (the kubelet's runtime: containerd, CRI-O), its CRI socket,
    /// `unix:///absolute/path`; `None` for a Docker Engine API endpoint (Docker, Podman).
    pub cri_endpoint: Option<String>,
    /// Its data, measured for its footprint (at least one absolute path).
    pub paths: Vec<PathBuf>,
    /// What pressure from outside never removes.
    pub floor: Floor,
}

/// What an engine speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// The Docker Engine API (Docker, docker-in-docker, Podman's compatible service).
    Docker,
    /// The Kubernetes CRI (the kubelet's containerd or CRI-O).
    Cri,
}

impl EngineKind {
    /// Its name in the configuration (`kind = "…"`).
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Docker => "docker",
            EngineKind::Cri => "cri",
        }
    }
}

impl EngineConfig {
    /// What it speaks: CRI when it has a CRI endpoint.
    pub fn kind(&self) -> EngineKind {
        if self.cri_endpoint.is_some() {
            EngineKind::Cri
        } else {
            EngineKind::Docker
        }
    }

    /// Its endpoint as people read it: the CRI socket, the Docker endpoint, or Docker's
    /// default socket.
    pub fn endpoint(&self) -> &str {
        self.cri_endpoint
            .as_deref()
            .or(self.docker_host.as_deref())
            .unwrap_or("unix:///var/run/docker.sock")
    }
}
