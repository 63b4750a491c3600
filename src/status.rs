//! `status`: usage against the watermarks and the eviction order (what would go first), from a
//! read-only look at Docker and the state. Deletes and writes nothing.

use std::fmt;

use serde::Serialize;

use crate::config::Config;
use crate::cycle::{self, now_nanos, now_secs};
use crate::daemon::Error;
use crate::docker::{DockerEngine, Engine};
use crate::lastuse::LastUse;
use crate::node::Cordoner;
use crate::policy::{self, Measurement, Need, Plan};

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
    let mut last_use = LastUse::load(&config.state_dir)?;
    let engine = DockerEngine::connect(config.docker_host.as_deref(), config.timeout).await?;
    last_use.replay(&engine, now_nanos()).await?;
    let usage = cycle::measure(config).await?;
    let inventory = engine
        .inventory(!config.container_min_age.is_zero())
        .await?;
    last_use.reconcile(&inventory, now_secs());
    let need = policy::need(&usage, &config.watermarks);
    // Every eligible step in order, whatever the shortfall: that is what "first" means.
    let plan = policy::plan(&inventory, &last_use, config, need, now_secs());
    Ok(Status {
        level: usage.level(),
        above_high: policy::above_high(&usage, &config.watermarks),
        watermarks: config.watermarks.to_string(),
        usage,
        need,
        cordon: Cordoner::new(config).describe(),
        plan,
    })
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "usage: {}", self.usage)?;
        let level = match self.usage {
            Measurement::Relative(_) => format!("{:.1}%", self.level),
            Measurement::Absolute(_) => policy::size(self.level as u64),
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
