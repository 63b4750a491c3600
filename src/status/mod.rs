//! `status`: usage against the watermarks, each engine's footprint, floor and build cache, what
//! lies outside the engines, and the eviction order (what would go first, across every engine,
//! and which rule keeps each image that stays), from a read-only look at the engines and the
//! state. Deletes and writes nothing.

use serde::Serialize;

use crate::clock::{now_ms, now_nanos};
use crate::config::{Config, Strategy};
use crate::cycle::{self, Member, Purpose, take_stock};
use crate::docker::{self, AnyEngine, Engine, Place};
use crate::error_chain;
use crate::lastuse::{self, Store};
use crate::node::Cordoner;
use crate::policy::{self, Headroom, Need, Plan, Step};
use crate::usage::{self, Measurement, Meter};

/// Why `status` could not look.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state directory is unsafe.
    #[error(transparent)]
    State(#[from] lastuse::Error),
    /// No engine can be reached, or one answered with an error.
    #[error(transparent)]
    Docker(#[from] docker::Error),
    /// A watched path cannot be measured.
    #[error(transparent)]
    Measure(#[from] usage::Error),
}

/// One engine as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EngineStatus {
    /// Its name.
    pub name: String,
    /// What it speaks: `docker` or `cri`.
    pub kind: crate::config::EngineKind,
    /// Its endpoint, whatever its kind: `docker_host` (`unix:///var/run/docker.sock` when none
    /// is set), or a CRI engine's `cri_endpoint`.
    pub endpoint: String,
    /// A Docker engine's endpoint (`unix:///var/run/docker.sock` when none is set); empty for a
    /// CRI engine.
    pub docker_host: String,
    /// Why it could not be reached or listed; `None` when it answered.
    pub error: Option<String>,
    /// Its data, `du -sx` (`None` when it could not be measured).
    pub footprint_bytes: Option<u64>,
    /// Its floor in bytes (0: none).
    pub floor_bytes: u64,
    /// Images it holds.
    pub images: usize,
    /// Containers it holds.
    pub containers: usize,
    /// How many of them are in each state (`created`, `running`, `exited`, ...): only exited
    /// and dead ones may be removed.
    pub container_states: std::collections::BTreeMap<&'static str, usize>,
    /// Its build cache; `None` when it has none that can be read (Podman, strategy `prune`).
    pub build_cache: Option<CacheStatus>,
    /// How long its last-use table has covered it, seconds (`max_unused_age` acts once it is
    /// that long).
    pub covered_secs: i64,
    /// Its image store: the driver, or `containerd (namespace moby, snapshotter overlayfs)`.
    pub store: Option<String>,
    /// Where its bytes are counted, each with what it holds and how it is counted (its
    /// configured paths, then the places the engine named that they do not hold).
    pub places: Vec<Place>,
    /// Why containerd's roots are unknown (containerd image store only).
    pub containerd_error: Option<String>,
}

/// An engine's build cache as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStatus {
    /// Its size as Docker counts it (the records not shared with an image).
    pub total_bytes: u64,
    /// Its records, all of them.
    pub records: usize,
    /// Bytes a prune may remove (not in use, not shared with an image, not BuildKit's own).
    pub reclaimable_bytes: u64,
    /// Bytes the plan's prunes would remove (reclaimable and unused for
    /// `build_cache_min_age`).
    pub would_go_bytes: u64,
    /// Records the plan's prunes would remove.
    pub would_go_records: usize,
}

/// One watched filesystem as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FilesystemStatus {
    /// A path on it.
    pub path: String,
    /// Its size.
    pub total_bytes: u64,
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes in use by none of the engines (their footprints taken away).
    pub outside_bytes: u64,
}

impl Error {
    /// True when the configuration is at fault (exit 78): the state directory is unsafe.
    pub fn is_config(&self) -> bool {
        matches!(self, Error::State(e) if e.is_config())
    }
}

/// What `status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Usage now.
    pub usage: Measurement,
    /// The figure compared with the watermarks (percent, or bytes in absolute mode).
    pub level: f64,
    /// The watermarks, as text: the ones a pass would use now (with `threshold_low = "auto"`,
    /// sized to what arrived lately).
    pub watermarks: String,
    /// With `threshold_low = "auto"`: the room those watermarks leave for pulls, and what it
    /// was sized from.
    pub headroom: Option<Headroom>,
    /// At or above the high watermark: the next pass cleans.
    pub above_high: bool,
    /// At or above the critical watermark: the next pass ignores floors.
    pub critical: bool,
    /// What must go to get below the low watermark.
    pub need: Need,
    /// Cordoning, as configured.
    pub cordon: String,
    /// Each engine.
    pub engines: Vec<EngineStatus>,
    /// Each watched filesystem.
    pub filesystems: Vec<FilesystemStatus>,
    /// The eviction order: every step a pass would take if it had to free everything, first
    /// first, and what stays and why.
    pub plan: Plan,
    /// `max_unused_age`, seconds (0: off).
    pub max_unused_age_secs: u64,
    /// When the look was taken, unix milliseconds (the ages shown are counted from it).
    pub taken_ms: i64,
    /// The critical watermark, percent.
    pub critical_pct: f64,
}

/// Looks at the engines and the state and says what a pass would do, deleting nothing.
pub async fn status(config: &Config) -> Result<Status, Error> {
    let now = now_ms();
    let mut tables = Store::read_only(&config.state_dir)?.load(now, now_nanos());
    let mut connected = Vec::new();
    let mut errors = Vec::new();
    let mut first_error = None;
    for engine in &config.engines {
        match AnyEngine::connect(engine, config.timeout).await {
            Ok(e) => {
                cycle::replay(&e, tables.engine_mut(&engine.name), now_nanos()).await?;
                connected.push((engine, e));
            }
            Err(e) => {
                errors.push((engine.name.clone(), error_chain(&e)));
                first_error.get_or_insert(e);
            }
        }
    }
    if connected.is_empty()
        && let Some(e) = first_error
    {
        return Err(e.into());
    }
    let paths = cycle::meter_for(config, connected.iter().map(|(_, e)| e.storage()));
    let meter = cycle::Counting::new(&paths, connected.iter().map(|(_, e)| e));
    let usage = meter.measure().await?;
    let filesystems = meter.filesystems().await?;
    let names: Vec<&str> = connected.iter().map(|(c, _)| c.name.as_str()).collect();
    let mut members: Vec<Member<'_, AnyEngine>> = tables
        .engines_mut(&names)
        .into_iter()
        .filter_map(|(name, last_use)| {
            let (config, engine) = connected.iter().find(|(c, _)| c.name == name)?;
            Some(Member {
                config,
                engine,
                last_use,
            })
        })
        .collect();
    // Every eligible step in order, whatever the shortfall: that is what "first" means.
    let stock = take_stock(
        &mut members,
        &meter,
        config,
        &usage,
        &filesystems,
        now,
        Purpose::Status,
    )
    .await?;
    let arrivals = policy::headroom::arrivals(members.iter().map(|m| &*m.last_use), config, now);
    let (watermarks, headroom) = policy::headroom::effective(config, &arrivals, &usage, now);
    let engines = config
        .engines
        .iter()
        .map(|e| {
            let found = stock.engines.iter().find(|s| s.name == e.name);
            let error = errors
                .iter()
                .find(|(name, _)| *name == e.name)
                .map(|(_, why)| why.clone())
                .or_else(|| found.and_then(|s| s.error.clone()));
            let inventory = found.and_then(|s| s.inventory.as_ref());
            let build_cache = found.and_then(|s| s.build_cache.as_ref()).map(|cache| {
                let (would_go_bytes, would_go_records) = stock
                    .plan
                    .steps
                    .iter()
                    .filter_map(|step| match step {
                        Step::PruneBuildCache {
                            engine,
                            size_bytes,
                            records,
                            ..
                        } if *engine == e.name => Some((*size_bytes, *records)),
                        _ => None,
                    })
                    .fold((0u64, 0usize), |(b, n), (sb, sn)| {
                        (b.saturating_add(sb), n + sn)
                    });
                CacheStatus {
                    total_bytes: cache.total_bytes(),
                    records: cache.records.len(),
                    reclaimable_bytes: cache.reclaimable_bytes(),
                    would_go_bytes,
                    would_go_records,
                }
            });
            EngineStatus {
                name: e.name.clone(),
                kind: e.kind(),
                endpoint: e.endpoint().to_string(),
                docker_host: match e.kind() {
                    crate::config::EngineKind::Docker => e.endpoint().to_string(),
                    crate::config::EngineKind::Cri => String::new(),
                },
                error,
                footprint_bytes: found.and_then(|s| s.footprint_bytes),
                floor_bytes: found.map_or(0, |s| s.floor_bytes),
                images: inventory.map_or(0, |i| i.images.len()),
                containers: inventory.map_or(0, |i| i.containers.len()),
                container_states: inventory
                    .map(|i| {
                        let mut states = std::collections::BTreeMap::new();
                        for c in &i.containers {
                            *states.entry(c.state.name()).or_insert(0) += 1;
                        }
                        states
                    })
                    .unwrap_or_default(),
                build_cache,
                covered_secs: found.map_or(0, |s| s.covered_ms.div_euclid(1000)),
                store: connected
                    .iter()
                    .find(|(c, _)| c.name == e.name)
                    .map(|(_, engine)| engine.storage().describe()),
                places: connected
                    .iter()
                    .find(|(c, _)| c.name == e.name)
                    .map(|(c, engine)| engine.storage().counted_in(&c.paths))
                    .unwrap_or_default(),
                containerd_error: connected
                    .iter()
                    .find(|(c, _)| c.name == e.name)
                    .and_then(|(_, engine)| engine.storage().containerd.as_ref())
                    .and_then(|c| c.error.clone()),
            }
        })
        .collect();
    let filesystems = filesystems
        .iter()
        .enumerate()
        .map(|(i, fs)| FilesystemStatus {
            path: fs.path.display().to_string(),
            total_bytes: fs.total_bytes,
            used_bytes: fs.used_bytes(),
            outside_bytes: stock.outside_bytes(fs, i),
        })
        .collect();
    Ok(Status {
        level: usage.level(),
        above_high: policy::above_high(&usage, &watermarks),
        critical: stock.critical,
        watermarks: watermarks.to_string(),
        headroom,
        need: policy::need(&usage, &watermarks),
        usage,
        cordon: Cordoner::new(config).describe(),
        engines,
        filesystems,
        plan: stock.plan,
        max_unused_age_secs: if config.strategy != Strategy::Prune {
            config.max_unused_age.as_secs()
        } else {
            0
        },
        taken_ms: now,
        critical_pct: config.critical_pct,
    })
}

mod display;
