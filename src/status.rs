//! `status`: usage against the watermarks and the eviction order (what would go first), from a
//! read-only look at Docker and the state. Deletes and writes nothing.

use std::fmt;

use serde::Serialize;

use crate::clock::{now_ms, now_nanos};
use crate::config::Config;
use crate::cycle::{self, take_stock};
use crate::docker::{self, DockerEngine};
use crate::lastuse::{self, Store};
use crate::node::Cordoner;
use crate::policy::{self, Need, Plan};
use crate::usage::{self, Measurement, Meter, PathMeter};

/// Why `status` could not look.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state directory is unsafe.
    #[error(transparent)]
    State(#[from] lastuse::Error),
    /// Docker cannot be reached or answered with an error.
    #[error(transparent)]
    Docker(#[from] docker::Error),
    /// A watched path cannot be measured.
    #[error(transparent)]
    Measure(#[from] usage::Error),
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
    /// What must go to get below the low watermark.
    pub need: Need,
    /// Cordoning, as configured.
    pub cordon: String,
    /// The eviction order: every step a pass would take if it had to free everything, first
    /// first, and what stays and why.
    pub plan: Plan,
}

/// Looks at Docker and the state and says what a pass would do, deleting nothing.
pub async fn status(config: &Config) -> Result<Status, Error> {
    let mut tables = Store::read_only(&config.state_dir)?.load(now_ms(), now_nanos());
    let last_use = tables.default_engine();
    let engine = DockerEngine::connect(config.docker_host.as_deref(), config.timeout).await?;
    cycle::replay(&engine, last_use, now_nanos()).await?;
    let usage = PathMeter::new(config).measure().await?;
    // Every eligible step in order, whatever the shortfall: that is what "first" means.
    let stock = take_stock(&engine, last_use, config, &usage, now_ms()).await?;
    Ok(Status {
        level: usage.level(),
        above_high: policy::above_high(&usage, &config.watermarks),
        watermarks: config.watermarks.to_string(),
        need: stock.plan.need,
        usage,
        cordon: Cordoner::new(config).describe(),
        plan: stock.plan,
    })
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "usage: {}", self.usage)?;
        let level = match &self.usage {
            Measurement::Relative(_) => format!("{:.1}%", self.level),
            Measurement::Absolute(t) => usage::size(t.bytes),
        };
        let state = if self.above_high {
            "at or above high: the next pass cleans"
        } else {
            "below high"
        };
        writeln!(f, "level: {level} against {} ({state})", self.watermarks)?;
        writeln!(f, "cordon: {}", self.cordon)?;
        write!(f, "eviction order: {}", self.plan)
    }
}
