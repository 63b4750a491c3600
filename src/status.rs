//! `status`: usage against the watermarks, each engine's footprint and floor, what lies outside
//! the engines, and the eviction order (what would go first, across every engine), from a
//! read-only look at the engines and the state. Deletes and writes nothing.

use std::fmt;

use serde::Serialize;

use crate::clock::{now_ms, now_nanos};
use crate::config::Config;
use crate::cycle::{self, Footprints, Member, take_stock};
use crate::docker::{self, DockerEngine};
use crate::error_chain;
use crate::lastuse::{self, Store};
use crate::node::Cordoner;
use crate::policy::{self, Need, Plan};
use crate::usage::{self, Measurement, Meter, PathMeter, size};

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
    /// Its endpoint (`unix:///var/run/docker.sock` when none is set).
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
    /// The watermarks, as text.
    pub watermarks: String,
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
}

/// Looks at the engines and the state and says what a pass would do, deleting nothing.
pub async fn status(config: &Config) -> Result<Status, Error> {
    let mut tables = Store::read_only(&config.state_dir)?.load(now_ms(), now_nanos());
    let mut connected = Vec::new();
    let mut errors = Vec::new();
    let mut first_error = None;
    for engine in &config.engines {
        match DockerEngine::connect(engine.docker_host.as_deref(), config.timeout).await {
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
    let meter = PathMeter::new(config);
    let usage = meter.measure().await?;
    let filesystems = meter.filesystems().await?;
    let names: Vec<&str> = connected.iter().map(|(c, _)| c.name.as_str()).collect();
    let mut members: Vec<Member<'_, DockerEngine>> = tables
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
        now_ms(),
        Footprints::Always,
    )
    .await?;
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
            EngineStatus {
                name: e.name.clone(),
                docker_host: e
                    .docker_host
                    .clone()
                    .unwrap_or_else(|| "unix:///var/run/docker.sock".into()),
                error,
                footprint_bytes: found.and_then(|s| s.footprint_bytes),
                floor_bytes: found.map_or(0, |s| s.floor_bytes),
                images: inventory.map_or(0, |i| i.images.len()),
                containers: inventory.map_or(0, |i| i.containers.len()),
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
        above_high: policy::above_high(&usage, &config.watermarks),
        critical: stock.critical,
        watermarks: config.watermarks.to_string(),
        need: stock.plan.need,
        usage,
        cordon: Cordoner::new(config).describe(),
        engines,
        filesystems,
        plan: stock.plan,
    })
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "usage: {}", self.usage)?;
        let level = match &self.usage {
            Measurement::Relative(_) => format!("{:.1}%", self.level),
            Measurement::Absolute(t) => size(t.bytes),
        };
        let state = match (self.above_high, self.critical) {
            (_, true) => "at or above critical: the next pass ignores floors",
            (true, false) => "at or above high: the next pass cleans",
            (false, false) => "below high",
        };
        writeln!(f, "level: {level} against {} ({state})", self.watermarks)?;
        writeln!(f, "cordon: {}", self.cordon)?;
        for e in &self.engines {
            let footprint = e.footprint_bytes.map_or("?".to_string(), size);
            let floor = if e.floor_bytes == 0 {
                "no floor".to_string()
            } else {
                format!("floor {}", size(e.floor_bytes))
            };
            match &e.error {
                Some(why) => writeln!(f, "engine {} ({}): down: {why}", e.name, e.docker_host)?,
                None => writeln!(
                    f,
                    "engine {} ({}): {} images, {} containers, footprint {footprint}, {floor}",
                    e.name, e.docker_host, e.images, e.containers
                )?,
            }
        }
        for fs in &self.filesystems {
            writeln!(
                f,
                "filesystem {}: {} of {} in use, {} outside the engines",
                fs.path,
                size(fs.used_bytes),
                size(fs.total_bytes),
                size(fs.outside_bytes)
            )?;
        }
        write!(f, "eviction order: {}", self.plan)
    }
}
