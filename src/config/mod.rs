//! Configuration: built-in defaults < `/etc/docker-image-cleaner.toml` < `DOCKER_IMAGE_CLEANER_*`
//! environment < command-line flags, validated into one typed [`Config`] whose every value is in
//! a documented range. Reads the file and the environment it is given; touches nothing else (no
//! network, no other file, not the process environment).
//!
//! - `load`: the layers in order and where each value came from;
//! - `file`: reading the file safely (regular files only, bounded, UTF-8), positions of keys;
//! - `env`: [`Env`] and each variable read as one value of its key;
//! - `envfile`: the environment file the unit reads (`/etc/default/docker-image-cleaner`),
//!   read by every command too;
//! - `raw`: the file format (every key optional, unknown keys rejected);
//! - `validate`: every rule, in the order the keys are checked (thresholds, engines, metrics and
//!   fleet keys in files of their own);
//! - `render`: the way back to text for `check-config`;
//! - `types`: the small value types (watermarks, strategy, cordon mode, floors, engines);
//! - `units`: sizes and durations, exact and range-checked;
//! - `checks`: node names and Docker endpoints.

mod checks;
mod env;
mod envfile;
mod file;
mod load;
mod raw;
mod render;
mod types;
mod units;
mod validate;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

pub use checks::{
    DEFAULT_CRI_ENDPOINT, DEFAULT_DOCKER_TCP_PORT, check_cri_endpoint, check_docker_host,
    check_node_name,
};
pub use env::{CONFIG_ENV, Env};

/// Every key of the file, in its order (what `check-config` prints).
pub const KEYS: &[&str] = raw::Raw::KEYS;

/// The environment variable that overrides `key` (`DOCKER_HOST` for `docker_host`).
pub fn env_var(key: &str) -> String {
    env::env_var(key)
}
pub use envfile::{DEFAULT_ENV_FILE, EnvFile};
pub use file::MAX_FILE_BYTES;
pub use load::{DEFAULT_PATH, Flags, Loaded, Source, load};
pub use types::{
    CordonMode, Delay, EngineConfig, EngineKind, Floor, KeepLabel, LogLevel, OnCordonFailure,
    Strategy, ThresholdType, Watermarks,
};
pub use units::{MAX_DURATION, MAX_DURATION_SECS, SizeError, parse_size};

/// Exit code for a configuration error (EX_CONFIG), so that systemd's
/// `RestartPreventExitStatus=78` stops a crash loop.
pub const EXIT_CONFIG: u8 = 78;

/// Smallest high watermark accepted in absolute mode, as the original tool required.
pub const MIN_ABSOLUTE_HIGH_BYTES: u64 = 1 << 30;

/// Shortest `interval_seconds`: a pass a second at most (a shorter tick only burns CPU and logs).
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Shortest `timeout_seconds`: Docker's client (bollard) counts whole seconds.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The validated configuration; the rest of the program sees only this.
///
/// Every [`Duration`] field is below [`MAX_DURATION`] (10 years), so its `as_secs()` fits an
/// `i64` (`i64::try_from(d.as_secs())` cannot fail) with room to add it to a Unix timestamp; the
/// lower bound of each is on the field. A `Config` built by hand (tests) is trusted as it is.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Kubernetes node to cordon; `None` turns cordoning off. Always a valid node name
    /// ([`check_node_name`]: an RFC 1123 DNS subdomain, no `/`, `?`, space or upper case).
    pub node_name: Option<String>,
    /// The trees to measure (`path_to_check`).
    pub paths: Vec<PathBuf>,
    /// Time between two passes: at least [`MIN_INTERVAL`] (never zero), below [`MAX_DURATION`].
    pub interval: Duration,
    /// Pause between two image removals: fixed (zero or more, below [`MAX_DURATION`]) or
    /// adaptive.
    pub delay: Delay,
    /// When to start and stop cleaning, as configured (`threshold_low` at its default band
    /// below high when left `"auto"`).
    pub watermarks: Watermarks,
    /// `threshold_low = "auto"` (the default, relative mode): each pass lowers the low
    /// watermark to leave room for what arrives on the node, and keeps it below the kubelet's
    /// eviction threshold (`policy::headroom`).
    pub low_auto: bool,
    /// `threshold_high = "auto"` (the default, relative mode): each pass lowers the high
    /// watermark (at most the default, 82) so that the next pull fits; a number keeps the
    /// original's meaning, cleaning starts there.
    pub high_auto: bool,
    /// Timeout of every Docker request: at least [`MIN_TIMEOUT`], below [`MAX_DURATION`].
    pub timeout: Duration,
    /// What a pass removes.
    pub strategy: Strategy,
    /// An image first seen or last used more recently than this is kept: zero or more, below
    /// [`MAX_DURATION`].
    pub min_age: Duration,
    /// A stopped container that finished more recently than this is kept: zero or more, below
    /// [`MAX_DURATION`].
    pub container_min_age: Duration,
    /// An image with a `repository:tag` matching any of these is kept.
    pub keep: Vec<Regex>,
    /// Remove nothing; print the plan.
    pub dry_run: bool,
    /// Where the last-use table and the lock live.
    pub state_dir: PathBuf,
    /// The Docker endpoint, checked by [`check_docker_host`]: `unix:///absolute/path`, or
    /// `tcp://host:port` / `http://host:port` with the port always present (Docker's 2375 added
    /// when none was given); `None` for the local socket.
    pub docker_host: Option<String>,
    /// The kubeconfig setting; `None` means the fallback chain (see `node`).
    pub kubeconfig: Option<PathBuf>,
    /// `KUBECONFIG` as the process's environment, else the environment file, gives it: the
    /// second link of that chain. Read here, with the other settings, so that `status` in a
    /// shell looks where the service looks.
    pub kubeconfig_env: Option<OsString>,
    /// How the node is cordoned.
    pub cordon_mode: CordonMode,
    /// Longest time a pass keeps the node cordoned; it then goes on uncordoned. More than zero,
    /// below [`MAX_DURATION`].
    pub max_cordon: Duration,
    /// What to do when cordoning fails.
    pub on_cordon_failure: OnCordonFailure,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// The floor of the engine configured without `[[engine]]` tables (`floor`).
    pub floor: Floor,
    /// At or above this percentage of a filesystem (blocks or inodes), floors are ignored and
    /// the min age falls to `critical_min_age` for the pass: above 0, at most 100, at least the
    /// high watermark in relative mode.
    pub critical_pct: f64,
    /// The min age at or above the critical watermark: zero or more, below [`MAX_DURATION`].
    pub critical_min_age: Duration,
    /// The engines to clean, in the order configured: the `[[engine]]` tables, or one engine
    /// named [`DEFAULT_ENGINE`] from `docker_host`, `path_to_check` and `floor`. Never empty;
    /// names are unique.
    pub engines: Vec<EngineConfig>,
    /// The node_exporter textfile the metrics are written to; `None`: none. An absolute path
    /// whose file name ends in `.prom` (what the textfile collector reads).
    pub metrics_textfile: Option<PathBuf>,
    /// Where the metrics are served over HTTP (`GET /metrics`); `None`: nowhere. An IP address
    /// and a port from 1 to 65535.
    pub metrics_listen: Option<SocketAddr>,
    /// Build-cache records used more recently than this stay when a pass reclaims the build
    /// cache: zero or more, below [`MAX_DURATION`]. At or above the critical watermark the
    /// shorter of this and `critical_min_age` applies.
    pub build_cache_min_age: Duration,
    /// Unused images whose last use is older than this are removed at every pass, even below
    /// the high watermark, once the last-use table has covered the engine that long; zero: off.
    /// Zero, or at least `min_age`, and below [`MAX_DURATION`].
    pub max_unused_age: Duration,
    /// Cordon the node for a pass below the high watermark that only removes images for age
    /// (by default such a pass runs uncordoned).
    pub max_unused_age_cordon: bool,
    /// An image with a label matching any of these is kept.
    pub keep_labels: Vec<KeepLabel>,
    /// Fleet slots: at most this many nodes of the cluster hold a cleaning cordon at once, each
    /// through a Lease of its own (`node::lease`); 0 (the default) turns coordination off. At
    /// most [`MAX_FLEET_SLOTS`].
    pub fleet_max_cordoned: u32,
    /// The namespace of the slot Leases: an RFC 1123 label (a namespace name).
    pub fleet_namespace: String,
    /// The `leaseDurationSeconds` of a slot: a holder renews it every third of this, and a slot
    /// not renewed for this long (plus a margin for clock skew) is free. Whole seconds, from
    /// [`MIN_FLEET_LEASE`] to [`MAX_FLEET_LEASE`].
    pub fleet_lease: Duration,
}

/// Most slots `fleet_max_cordoned` may name: a waiting node reads every slot at each try.
pub const MAX_FLEET_SLOTS: u32 = 100;

/// Shortest `fleet_lease_seconds`: renewed every third of it, so once a second at most.
pub const MIN_FLEET_LEASE: Duration = Duration::from_secs(3);

/// Longest `fleet_lease_seconds`: how long a crashed holder's slot stays taken.
pub const MAX_FLEET_LEASE: Duration = Duration::from_secs(3600);

/// The default high watermark, percent. Re-derived with the trace replay (`scripts/replay.sh`,
/// README "Choosing the defaults"): below the kubelet's image GC and its image-filesystem
/// eviction threshold (85), and with a narrow band a pass throws away little of the cache.
pub const DEFAULT_HIGH_PCT: f64 = 82.0;
/// The default distance of the low watermark below the high one, in percentage points.
pub const DEFAULT_BAND_PCT: f64 = 4.0;

/// The name of the engine configured without `[[engine]]` tables.
pub const DEFAULT_ENGINE: &str = "default";

impl Default for Config {
    /// The built-in defaults, as documented in `conf/docker-image-cleaner.toml`.
    fn default() -> Self {
        Config {
            node_name: None,
            paths: vec![PathBuf::from("/var/lib/docker")],
            interval: Duration::from_secs(300),
            delay: Delay::Adaptive,
            watermarks: Watermarks::Relative {
                high_pct: DEFAULT_HIGH_PCT,
                low_pct: DEFAULT_HIGH_PCT - DEFAULT_BAND_PCT,
            },
            low_auto: true,
            high_auto: true,
            timeout: Duration::from_secs(300),
            strategy: Strategy::Lru2,
            min_age: Duration::from_secs(120),
            container_min_age: Duration::ZERO,
            keep: Vec::new(),
            dry_run: false,
            state_dir: PathBuf::from("/var/lib/docker-image-cleaner"),
            docker_host: None,
            kubeconfig: None,
            kubeconfig_env: None,
            cordon_mode: CordonMode::Cordon,
            max_cordon: Duration::from_secs(1800),
            on_cordon_failure: OnCordonFailure::Clean,
            log_level: LogLevel::Info,
            floor: Floor::NONE,
            critical_pct: 95.0,
            critical_min_age: Duration::from_secs(120),
            engines: vec![EngineConfig {
                name: DEFAULT_ENGINE.to_string(),
                docker_host: None,
                cri_endpoint: None,
                paths: vec![PathBuf::from("/var/lib/docker")],
                floor: Floor::NONE,
            }],
            metrics_textfile: None,
            metrics_listen: None,
            build_cache_min_age: Duration::from_secs(3600),
            max_unused_age: Duration::ZERO,
            max_unused_age_cordon: false,
            keep_labels: Vec::new(),
            fleet_max_cordoned: 0,
            fleet_namespace: "kube-system".to_string(),
            fleet_lease: Duration::from_secs(60),
        }
    }
}

/// A configuration error. Every variant names where the bad input came from.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file named explicitly is missing or unreadable.
    #[error("cannot read configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Syntax, unknown key or wrong type in the file (the message has line and column).
    #[error("configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message, with line, column and the offending line.
        message: String,
    },
    /// The file named is not a regular file (a FIFO would block the read forever).
    #[error("configuration file {path} {what}, not a regular file")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead: "is a FIFO", "is a directory", ...
        what: &'static str,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("configuration file {path} is larger than {limit} bytes: is it the right file?")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The file is named by an empty string (`DOCKER_IMAGE_CLEANER_CONFIG=` set to nothing).
    #[error(
        "{origin} is empty: it must name the configuration file (unset it to read {})",
        load::DEFAULT_PATH
    )]
    EmptyPath {
        /// Where the empty name came from: "environment variable …" or "flag --config".
        origin: String,
    },
    /// One of our environment variables is not UTF-8.
    #[error("environment variable {var} = {value}: not valid UTF-8 (bytes shown as \\x escapes)")]
    NotUtf8 {
        /// The variable.
        var: String,
        /// Its value, quoted, every byte but printable ASCII as `\xNN`.
        value: String,
    },
    /// A value that parses but makes no sense.
    #[error("{origin}: {key} = {value}: {message}")]
    Invalid {
        /// Where the value came from: "file F, line L, column C", "environment variable V", ...
        origin: String,
        /// The key.
        key: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        message: String,
    },
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
