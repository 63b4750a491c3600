//! The decision, and nothing else: given what is measured, what Docker holds, when each image was
//! last used, the configuration and the time, which containers and images go, in which order,
//! and when to stop. Pure: no I/O, no clock (`now` is an argument), so every rule is a table test.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Serialize;

use crate::config::{Config, Strategy, Watermarks};
use crate::docker::{Image, Inventory};
use crate::lastuse::LastUse;
use crate::usage::{FsUsage, TreeUsage};

/// What was measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Measurement {
    /// `statvfs` of every watched path.
    Relative(Vec<FsUsage>),
    /// The trees added up, `du -sx` style.
    Absolute(TreeUsage),
}

impl Measurement {
    /// The figure compared with the watermarks: the fullest filesystem's percentage (blocks or
    /// inodes, whichever is higher), or bytes.
    pub fn level(&self) -> f64 {
        match self {
            Measurement::Relative(fs) => fs.iter().map(FsUsage::used_pct).fold(0.0, f64::max),
            Measurement::Absolute(t) => t.bytes as f64,
        }
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Measurement::Relative(all) => {
                for (i, fs) in all.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(
                        f,
                        "{}: blocks {:.1}%, inodes {:.1}%",
                        fs.path.display(),
                        fs.blocks_used_pct,
                        fs.inodes_used_pct
                    )?;
                }
                Ok(())
            }
            Measurement::Absolute(t) => write!(f, "{} in {} inodes", size(t.bytes), t.inodes),
        }
    }
}

/// Formats bytes for people (`12.5 MiB`).
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

/// At or above the high watermark: a pass must clean.
pub fn above_high(m: &Measurement, w: &Watermarks) -> bool {
    match (m, w) {
        (Measurement::Absolute(t), Watermarks::Absolute { high_bytes, .. }) => {
            t.bytes >= *high_bytes
        }
        (_, Watermarks::Relative { high_pct, .. }) => m.level() >= *high_pct,
        (Measurement::Relative(_), Watermarks::Absolute { .. }) => false,
    }
}

/// Below the low watermark, blocks and inodes both: a pass may stop.
pub fn below_low(m: &Measurement, w: &Watermarks) -> bool {
    match (m, w) {
        (Measurement::Absolute(t), Watermarks::Absolute { low_bytes, .. }) => t.bytes < *low_bytes,
        (_, Watermarks::Relative { low_pct, .. }) => m.level() < *low_pct,
        (Measurement::Relative(_), Watermarks::Absolute { .. }) => true,
    }
}

/// How much must go to get below the low watermark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Need {
    /// Bytes to free (on the fullest filesystem, or in the trees).
    pub bytes: u64,
    /// Inodes to free (relative mode only; 0 when inodes are not the problem).
    pub inodes: u64,
}

/// The shortfall to the low watermark.
pub fn need(m: &Measurement, w: &Watermarks) -> Need {
    match (m, w) {
        (Measurement::Relative(all), Watermarks::Relative { low_pct, .. }) => Need {
            bytes: all
                .iter()
                .map(|fs| fs.bytes_to_reach(*low_pct))
                .max()
                .unwrap_or(0),
            inodes: all
                .iter()
                .map(|fs| fs.inodes_to_reach(*low_pct))
                .max()
                .unwrap_or(0),
        },
        (Measurement::Absolute(t), Watermarks::Absolute { low_bytes, .. }) => Need {
            bytes: (t.bytes + 1).saturating_sub(*low_bytes),
            inodes: 0,
        },
        _ => Need::default(),
    }
}

/// One action of a pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    /// Remove a stopped container.
    RemoveContainer {
        /// Container id.
        id: String,
        /// Its name.
        name: String,
        /// When it stopped (or was created, if never started), unix seconds.
        stopped: i64,
    },
    /// Remove an image by id (untagging it first when it has several tags).
    RemoveImage {
        /// Image id.
        id: String,
        /// Its tags (empty: dangling).
        tags: Vec<String>,
        /// Size Docker reports.
        size_bytes: u64,
        /// Last use, unix seconds.
        last_used: i64,
    },
    /// `docker container prune` (strategy `prune`).
    PruneContainers,
    /// `docker image prune` (strategy `prune`).
    PruneDanglingImages,
    /// `docker image prune -a`, run only when no dangling image was found or usage is still
    /// above high (strategy `prune`).
    PruneAllImages,
}

/// Why an image or container stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// A remaining container uses it.
    InUse {
        /// The container's name.
        container: String,
    },
    /// A `keep` pattern matches one of its tags.
    KeepRule {
        /// The pattern.
        pattern: String,
    },
    /// Used (or first seen) less than `min_age` ago.
    TooYoung {
        /// Seconds since last use.
        age_secs: i64,
    },
    /// An image that stays depends on it.
    Parent,
    /// A stopped container that finished less than `container_min_age` ago.
    RecentlyStopped {
        /// Seconds since it stopped.
        age_secs: i64,
    },
}

/// Something that stays, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// Image or container id.
    pub id: String,
    /// Tags, or the container's name.
    pub names: Vec<String>,
    /// Why.
    pub reason: Reason,
}

/// What a pass would do, in order; plain data, logged before it runs and printed by dry-run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The strategy that made it.
    pub strategy: &'static str,
    /// What to remove, in order; the pass stops early once below the low watermark.
    pub steps: Vec<Step>,
    /// What stays, and why.
    pub kept: Vec<Kept>,
    /// How much must go.
    pub need: Need,
    /// How many steps should be enough, by the sizes Docker reports; `None` when that cannot be
    /// estimated (inodes are short, or the strategy prunes).
    pub estimated_steps: Option<usize>,
}

/// Makes the plan for `inventory` given the shortfall `need`.
pub fn plan(
    inventory: &Inventory,
    last_use: &LastUse,
    config: &Config,
    need: Need,
    now: i64,
) -> Plan {
    if config.strategy == Strategy::Prune {
        return Plan {
            strategy: "prune",
            steps: vec![
                Step::PruneContainers,
                Step::PruneDanglingImages,
                Step::PruneAllImages,
            ],
            kept: Vec::new(),
            need,
            estimated_steps: None,
        };
    }
    let mut steps = Vec::new();
    let mut kept = Vec::new();

    // Containers: every stopped one old enough goes, oldest first; the rest keep their images.
    let min_container_age = config.container_min_age.as_secs() as i64;
    let mut users: HashMap<&str, &str> = HashMap::new();
    let mut stopped = Vec::new();
    for c in &inventory.containers {
        let when = c.finished.unwrap_or(c.created);
        if c.running {
            users.insert(&c.image_id, &c.name);
        } else if now - when < min_container_age {
            users.insert(&c.image_id, &c.name);
            kept.push(Kept {
                id: c.id.clone(),
                names: vec![c.name.clone()],
                reason: Reason::RecentlyStopped {
                    age_secs: now - when,
                },
            });
        } else {
            stopped.push((when, c));
        }
    }
    stopped.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    for (when, c) in stopped {
        steps.push(Step::RemoveContainer {
            id: c.id.clone(),
            name: c.name.clone(),
            stopped: when,
        });
    }

    // Images: protect, then order the rest.
    let by_id: HashMap<&str, &Image> = inventory
        .images
        .iter()
        .map(|i| (i.id.as_str(), i))
        .collect();
    let parent_of = |id: &str| by_id.get(id).and_then(|i| i.parent_id.as_deref());
    let own_last_used = |i: &Image| {
        last_use
            .get(&i.id)
            .map(|e| e.last_used)
            .unwrap_or(i.created)
    };
    // A parent counts as used when any child is: its last use is the latest of its descendants.
    let mut last_used: HashMap<&str, i64> = HashMap::new();
    for image in &inventory.images {
        let t = own_last_used(image);
        let mut id = Some(image.id.as_str());
        let mut seen = HashSet::new();
        while let Some(cur) = id {
            if !seen.insert(cur) {
                break;
            }
            let e = last_used.entry(cur).or_insert(t);
            *e = (*e).max(t);
            id = parent_of(cur);
        }
    }
    let depth = |id: &str| {
        let mut d = 0;
        let mut cur = parent_of(id);
        while let Some(p) = cur {
            d += 1;
            if d > 1000 {
                break;
            }
            cur = parent_of(p);
        }
        d
    };

    let min_age = config.min_age.as_secs() as i64;
    let mut protected: HashSet<&str> = HashSet::new();
    let mut candidates = Vec::new();
    for image in &inventory.images {
        let reason = if let Some(container) = users.get(image.id.as_str()) {
            Some(Reason::InUse {
                container: container.to_string(),
            })
        } else if let Some(pattern) = config
            .keep
            .iter()
            .find(|re| image.tags.iter().any(|t| re.is_match(t)))
        {
            Some(Reason::KeepRule {
                pattern: pattern.as_str().to_string(),
            })
        } else {
            let age = now
                - last_used
                    .get(image.id.as_str())
                    .copied()
                    .unwrap_or(image.created);
            (age < min_age).then_some(Reason::TooYoung { age_secs: age })
        };
        match reason {
            Some(reason) => {
                protected.insert(&image.id);
                kept.push(Kept {
                    id: image.id.clone(),
                    names: image.tags.clone(),
                    reason,
                });
            }
            None => candidates.push(image),
        }
    }
    // Ancestors of what stays stay too (Docker would refuse them anyway).
    let mut ancestors: HashSet<&str> = HashSet::new();
    for id in &protected {
        let mut cur = parent_of(id);
        while let Some(p) = cur {
            if !ancestors.insert(p) {
                break;
            }
            cur = parent_of(p);
        }
    }
    let has_children: HashSet<&str> = inventory
        .images
        .iter()
        .filter_map(|i| i.parent_id.as_deref())
        .collect();
    let mut ordered = Vec::new();
    for image in candidates {
        if ancestors.contains(image.id.as_str()) {
            kept.push(Kept {
                id: image.id.clone(),
                names: image.tags.clone(),
                reason: Reason::Parent,
            });
            continue;
        }
        // Dangling images go first, unless a child must go before them.
        let group = u8::from(!image.is_dangling() || has_children.contains(image.id.as_str()));
        let used = last_used
            .get(image.id.as_str())
            .copied()
            .unwrap_or(image.created);
        ordered.push((group, used, std::cmp::Reverse(depth(&image.id)), image));
    }
    ordered.sort_by(|a, b| {
        (a.0, a.1, a.2)
            .cmp(&(b.0, b.1, b.2))
            .then_with(|| a.3.id.cmp(&b.3.id))
    });
    for (_, used, _, image) in ordered {
        steps.push(Step::RemoveImage {
            id: image.id.clone(),
            tags: image.tags.clone(),
            size_bytes: image.size_bytes,
            last_used: used,
        });
    }

    let estimated_steps = estimate(&steps, need);
    Plan {
        strategy: "lru",
        steps,
        kept,
        need,
        estimated_steps,
    }
}

/// How many steps the reported sizes say are enough (shared layers make it optimistic; the
/// pass itself re-measures).
fn estimate(steps: &[Step], need: Need) -> Option<usize> {
    if need.inodes > 0 {
        return None;
    }
    let mut freed = 0u64;
    for (i, step) in steps.iter().enumerate() {
        if freed >= need.bytes {
            return Some(i);
        }
        if let Step::RemoveImage { size_bytes, .. } = step {
            freed += size_bytes;
        }
    }
    (freed >= need.bytes).then_some(steps.len())
}

mod display;
#[cfg(test)]
mod tests;
