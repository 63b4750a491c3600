//! Every metric family: its name (after [`super::PREFIX`]), help and labels, and how it is fed.
//! [`Families::record`] is the one place a pass's [`Report`] is read; [`Families::configure`]
//! shows the configuration; the cordon state is read from the [`CordonClock`] at every scrape
//! (`live`).
//!
//! Over 400 lines on purpose: this file is the catalogue of the families a pass and the
//! configuration feed, each name and help text beside the code that feeds it, read top to bottom
//! to check the names against the README; split, a family's name and its feeding would sit in
//! two files.
//!
//! Names follow the Prometheus conventions: base units in the name (`_seconds`, `_bytes`,
//! `_ratio` for 0..1), `_total` on counters (added by the encoder), `_info` on build info.
//! Per-engine families carry `engine` (the configured name; `default` without `[[engine]]`
//! tables), per-filesystem ones `path` (the watched path that names the filesystem).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::config::{Config, Watermarks};
use crate::cycle::{self, Report};
use crate::node::CordonClock;
use crate::policy::Outcome;
use crate::usage::Measurement;

use super::live::Live;

/// A gauge of a fraction or a timestamp.
type FloatGauge = Gauge<f64, AtomicU64>;

/// The values of `kind` on `removals_total`.
pub const KINDS: [&str; 3] = ["container", "image", "build_cache"];
/// The values of `reason` on `removals_total`: `space` (above the high watermark), `age`
/// (unused for too long, whatever the usage).
pub const REASONS: [&str; 2] = ["space", "age"];
/// The values of `outcome` on `passes_total`: every [`Outcome`], and `failed` for a pass that
/// ended in an error.
pub const OUTCOMES: [&str; 10] = [
    "below_high",
    "dry_run",
    "skipped",
    "reached_low",
    "exhausted",
    "floors_reached",
    "aged",
    "no_slot",
    "interrupted",
    "failed",
];

/// Upper bounds of the pass duration buckets, in seconds: a pass below the high watermark takes
/// milliseconds, one that cleans minutes (a prune up to `timeout_seconds`).
const DURATION_BUCKETS: [f64; 13] = [
    0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabel {
    engine: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemovalLabels {
    engine: String,
    kind: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FsLabels {
    path: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatermarkLabel {
    watermark: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// The label set of a family that has one series or none (the trees of absolute mode).
type NoLabels = Vec<(String, String)>;

/// The handles of every family registered (each a shared handle: the registry encodes the same
/// values).
#[derive(Debug)]
pub struct Families {
    filesystem_used: Family<FsLabels, FloatGauge>,
    tree_bytes: Family<NoLabels, Gauge>,
    tree_inodes: Family<NoLabels, Gauge>,
    watermark_ratio: Family<WatermarkLabel, FloatGauge>,
    watermark_bytes: Family<WatermarkLabel, Gauge>,
    passes: Family<OutcomeLabel, Counter>,
    removals: Family<RemovalLabels, Counter>,
    skipped: Family<EngineLabel, Counter>,
    build_cache_freed: Family<EngineLabel, Counter>,
    freed_bytes: Counter,
    freed_inodes: Counter,
    duration: Histogram,
    last_success: FloatGauge,
    reconnects: Family<EngineLabel, Counter>,
    /// The filesystems shown by the last pass, so that one no longer watched disappears.
    shown: Vec<FsLabels>,
}

/// One engine's event-stream reconnects, counted by its follower task.
#[derive(Debug, Clone)]
pub struct Reconnects(Counter);

impl Reconnects {
    /// The stream ended and is opened again.
    pub fn inc(&self) {
        self.0.inc();
    }
}

impl Families {
    /// Registers every family in `registry`; the cordon state is read from `clock`.
    pub fn register(registry: &mut Registry, clock: CordonClock) -> Families {
        let f = Families {
            filesystem_used: Family::default(),
            tree_bytes: Family::default(),
            tree_inodes: Family::default(),
            watermark_ratio: Family::default(),
            watermark_bytes: Family::default(),
            passes: Family::default(),
            removals: Family::default(),
            skipped: Family::default(),
            build_cache_freed: Family::default(),
            freed_bytes: Counter::default(),
            freed_inodes: Counter::default(),
            duration: Histogram::new(DURATION_BUCKETS),
            last_success: FloatGauge::default(),
            reconnects: Family::default(),
            shown: Vec::new(),
        };
        registry.register(
            "build",
            "The version of docker-image-cleaner running (always 1)",
            Info::new(VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        registry.register(
            "filesystem_used_ratio",
            "How full each watched filesystem was at the end of the last pass, 0 to 1, in blocks or inodes (the watermarks compare the larger); relative mode",
            f.filesystem_used.clone(),
        );
        registry.register(
            "tree_used_bytes",
            "Bytes the watched trees took at the end of the last pass, counted like du -sx; absolute mode",
            f.tree_bytes.clone(),
        );
        registry.register(
            "tree_used_inodes",
            "Inodes the watched trees took at the end of the last pass; absolute mode",
            f.tree_inodes.clone(),
        );
        registry.register(
            "watermark_ratio",
            "The watermarks as fractions of a filesystem: high starts a pass, low ends it, critical ignores floors (relative mode: all three; absolute mode: critical)",
            f.watermark_ratio.clone(),
        );
        registry.register(
            "watermark_bytes",
            "The watermarks in bytes of the watched trees: high starts a pass, low ends it (absolute mode)",
            f.watermark_bytes.clone(),
        );
        registry.register(
            "passes",
            "Passes by how they ended (failed: an error, such as Docker or a watched path out of reach)",
            f.passes.clone(),
        );
        registry.register(
            "removals",
            "What the passes removed, by engine, kind (container, image, build_cache) and reason (space: above the high watermark; age: unused for too long)",
            f.removals.clone(),
        );
        registry.register(
            "removals_skipped",
            "Removals not done: refused by the engine (in use), found done already, or left because the image changed since the plan",
            f.skipped.clone(),
        );
        registry.register(
            "build_cache_reclaimed_bytes",
            "Bytes the build-cache prunes reclaimed, by engine, as the engine reports them",
            f.build_cache_freed.clone(),
        );
        registry.register(
            "freed_bytes",
            "Bytes freed by the passes, measured before and after each (a pass during which something else wrote more adds nothing)",
            f.freed_bytes.clone(),
        );
        registry.register(
            "freed_inodes",
            "Inodes freed by the passes, measured before and after each",
            f.freed_inodes.clone(),
        );
        registry.register(
            "pass_duration_seconds",
            "How long each pass took, failed passes aside",
            f.duration.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When the last pass that ran to its end finished (not failed, skipped or interrupted), Unix time; 0 before the first",
            f.last_success.clone(),
        );
        registry.register(
            "event_stream_reconnects",
            "Times an engine's event stream ended (the engine restarted) and was opened again",
            f.reconnects.clone(),
        );
        registry.register_collector(Box::new(Live::new(clock)));
        for outcome in OUTCOMES {
            f.passes.get_or_create_owned(&OutcomeLabel { outcome });
        }
        f
    }

    /// Shows `config`: the watermarks, and a zero series of every per-engine counter for each
    /// engine (a counter that appears at 1 hides its first increase from `rate()`).
    pub fn configure(&self, config: &Config) {
        let ratio = |w: &'static str, pct: f64| {
            self.watermark_ratio
                .get_or_create(&WatermarkLabel { watermark: w })
                .set(pct / 100.0);
        };
        match config.watermarks {
            Watermarks::Relative { high_pct, low_pct } => {
                ratio("high", high_pct);
                ratio("low", low_pct);
                self.watermark_bytes.clear();
            }
            Watermarks::Absolute {
                high_bytes,
                low_bytes,
            } => {
                for (w, b) in [("high", high_bytes), ("low", low_bytes)] {
                    self.watermark_bytes
                        .get_or_create(&WatermarkLabel { watermark: w })
                        .set(gauge_value(b));
                    self.watermark_ratio
                        .remove(&WatermarkLabel { watermark: w });
                }
            }
        }
        ratio("critical", config.critical_pct);
        for e in &config.engines {
            for kind in KINDS {
                for reason in REASONS {
                    self.removals.get_or_create_owned(&RemovalLabels {
                        engine: e.name.clone(),
                        kind,
                        reason,
                    });
                }
            }
            let engine = EngineLabel {
                engine: e.name.clone(),
            };
            self.skipped.get_or_create_owned(&engine);
            self.build_cache_freed.get_or_create_owned(&engine);
            self.reconnects.get_or_create_owned(&engine);
        }
    }

    /// The counter of `engine`'s event-stream reconnects.
    pub fn reconnects(&self, engine: &str) -> Reconnects {
        Reconnects(self.reconnects.get_or_create_owned(&EngineLabel {
            engine: engine.to_string(),
        }))
    }

    /// Counts a pass and shows its figures: the one place a [`Report`] is read. `now_ms` is the
    /// wall clock at its end.
    pub fn record(&mut self, pass: &Result<Report, cycle::Error>, now_ms: i64) {
        let report = match pass {
            Ok(r) => r,
            Err(_) => {
                self.passes
                    .get_or_create(&OutcomeLabel { outcome: "failed" })
                    .inc();
                return;
            }
        };
        self.passes
            .get_or_create(&OutcomeLabel {
                outcome: outcome_label(report.outcome),
            })
            .inc();
        for (engine, tally) in &report.engines.0 {
            // Images unused for too long go for age, everything else for space; build-cache
            // records count as their own kind.
            for (kind, reason, n) in [
                ("container", "space", tally.containers),
                (
                    "image",
                    "space",
                    tally.images.saturating_sub(tally.aged_images),
                ),
                ("image", "age", tally.aged_images),
                ("build_cache", "space", tally.cache_records),
            ] {
                self.removals
                    .get_or_create(&RemovalLabels {
                        engine: engine.clone(),
                        kind,
                        reason,
                    })
                    .inc_by(count(n));
            }
            self.build_cache_freed
                .get_or_create(&EngineLabel {
                    engine: engine.clone(),
                })
                .inc_by(tally.cache_bytes);
            self.skipped
                .get_or_create(&EngineLabel {
                    engine: engine.clone(),
                })
                .inc_by(count(tally.skipped));
        }
        // Negative when something else wrote more meanwhile: nothing was freed, net.
        self.freed_bytes
            .inc_by(u64::try_from(report.freed_bytes).unwrap_or(0));
        self.freed_inodes
            .inc_by(u64::try_from(report.freed_inodes).unwrap_or(0));
        self.duration.observe(report.duration.as_secs_f64());
        self.usage(&report.after);
        if ran_to_its_end(report.outcome) {
            // Milliseconds since 1970 are far below 2^53: exact as a float.
            self.last_success.set(now_ms as f64 / 1000.0);
        }
    }

    /// Shows `m`, the usage at the end of a pass; a filesystem no longer measured disappears.
    fn usage(&mut self, m: &Measurement) {
        let mut shown = Vec::new();
        match m {
            Measurement::Relative(all) => {
                for fs in all {
                    let path = fs.path.display().to_string();
                    for (kind, total, avail) in [
                        ("blocks", fs.total_bytes, fs.avail_bytes),
                        ("inodes", fs.total_inodes, fs.avail_inodes),
                    ] {
                        let labels = FsLabels {
                            path: path.clone(),
                            kind,
                        };
                        self.filesystem_used
                            .get_or_create(&labels)
                            .set(used_ratio(total, avail));
                        shown.push(labels);
                    }
                }
                self.tree_bytes.clear();
                self.tree_inodes.clear();
            }
            Measurement::Absolute(t) => {
                self.tree_bytes
                    .get_or_create(&NoLabels::new())
                    .set(gauge_value(t.bytes));
                self.tree_inodes
                    .get_or_create(&NoLabels::new())
                    .set(gauge_value(t.inodes));
            }
        }
        for gone in self.shown.iter().filter(|l| !shown.contains(l)) {
            self.filesystem_used.remove(gone);
        }
        self.shown = shown;
    }
}

/// The `outcome` label of `o` (one of [`OUTCOMES`]).
fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::BelowHigh => "below_high",
        Outcome::DryRun => "dry_run",
        Outcome::Skipped => "skipped",
        Outcome::ReachedLow => "reached_low",
        Outcome::Exhausted => "exhausted",
        Outcome::FloorsReached => "floors_reached",
        Outcome::Aged => "aged",
        Outcome::NoSlot => "no_slot",
        Outcome::Interrupted => "interrupted",
    }
}

/// Whether a pass that ended so ran to its end (the last-success timestamp).
fn ran_to_its_end(o: Outcome) -> bool {
    match o {
        Outcome::BelowHigh
        | Outcome::DryRun
        | Outcome::ReachedLow
        | Outcome::Exhausted
        | Outcome::FloorsReached
        | Outcome::Aged => true,
        Outcome::Skipped | Outcome::Interrupted | Outcome::NoSlot => false,
    }
}

/// `1 - avail / total` (the kubelet's formula, as `FsUsage`'s percentages), computed as
/// `(total - avail) / total` so that 200 of 1000 reads 0.2, not 0.19999999999999996; 0 when
/// `total` is 0 (btrfs has no inode count).
fn used_ratio(total: u64, avail: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    // Rounded to the nearest float above 2^53, for display only.
    total.saturating_sub(avail) as f64 / total as f64
}

/// A count as a counter increment (a `usize` always fits a `u64` here; saturated otherwise).
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A byte or inode count as an integer gauge (saturated at 8 EiB).
fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `registry` in the Prometheus text format (none of our families fails to encode: an error
/// can only be a bug, and nothing half-encoded is shown).
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}
