//! The plan as people read it: the same lines in the log before a pass and on stdout for a dry
//! run, so that what a dry run shows is what a pass would do.

use std::fmt;

use super::{Kept, Plan, Reason, Step};
use crate::usage::size;

/// Unix seconds as an RFC 3339 UTC time, to the second (deterministic: no clock involved). A
/// time outside what a calendar can show is printed as the number.
pub fn timestamp(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| secs.to_string())
}

/// The first 12 hex digits of an id, as `docker` prints them.
pub fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

fn names(names: &[String]) -> String {
    if names.is_empty() {
        "<none>".to_string()
    } else {
        names.join(", ")
    }
}

/// ` on ENGINE` for an engine other than the one configured without tables.
fn on(engine: &str) -> String {
    if engine == crate::config::DEFAULT_ENGINE {
        String::new()
    } else {
        format!(" on {engine}")
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Step::RemoveContainer {
                engine,
                id,
                name,
                stopped,
            } => write!(
                f,
                "remove container {} ({name}){}, stopped {}",
                short(id),
                on(engine),
                timestamp(*stopped)
            ),
            Step::RemoveImage {
                engine,
                id,
                tags,
                size_bytes,
                last_used_ms,
                aged,
            } => write!(
                f,
                "remove image {} [{}]{}, {}, last used {}{}",
                short(id),
                names(tags),
                on(engine),
                size(*size_bytes),
                timestamp(last_used_ms.div_euclid(1000)),
                if *aged {
                    ", unused for longer than max_unused_age"
                } else {
                    ""
                }
            ),
            Step::PruneBuildCache {
                engine,
                keep_bytes,
                size_bytes,
                records,
                unused_for_secs,
                all,
            } => {
                write!(
                    f,
                    "prune build cache{}: {records} record(s), {} unused for {unused_for_secs} s or more{}, least recently used first",
                    on(engine),
                    size(*size_bytes),
                    if *all {
                        " (shared records too: copies of their own)"
                    } else {
                        ""
                    }
                )?;
                if *keep_bytes > 0 {
                    write!(f, ", keeping the cache at {}", size(*keep_bytes))
                } else {
                    f.write_str(", all of them")
                }
            }
            Step::PruneContainers { engine } => {
                write!(f, "prune stopped containers{}", on(engine))
            }
            Step::PruneDanglingImages { engine } => {
                write!(f, "prune dangling images{}", on(engine))
            }
            Step::PruneAllImages { engine } => write!(
                f,
                "prune all unused images{} (if no dangling image was pruned or usage is still above high)",
                on(engine)
            ),
        }
    }
}

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "keep {} [{}]{}: ",
            short(&self.id),
            names(&self.names),
            on(&self.engine)
        )?;
        match &self.reason {
            Reason::Pinned { why } => f.write_str(why),
            Reason::InUse { container, state } => {
                write!(f, "in use by container {container} ({state})")
            }
            Reason::Building { age_secs } => write!(
                f,
                "untagged step image made {age_secs} s ago: a build in progress may use it next"
            ),
            Reason::BuildStep { image_age_secs } => write!(
                f,
                "stopped step of a build in progress (its image made {image_age_secs} s ago): the build commits it next"
            ),
            Reason::KeepRule { pattern } => write!(f, "matches keep rule {pattern:?}"),
            Reason::KeepLabel { rule, label } => {
                write!(f, "has label {label}, matches keep_labels rule {rule:?}")
            }
            Reason::TooYoung { age_secs } => write!(f, "used {age_secs}s ago, below min_age"),
            Reason::Parent { child } => {
                write!(f, "parent of {}, which stays", short(child))
            }
            Reason::Floor {
                footprint_bytes,
                floor_bytes,
            } => write!(
                f,
                "its engine's floor ({} of {} in use)",
                size(*floor_bytes),
                size(*footprint_bytes)
            ),
            Reason::RecentlyStopped { age_secs } => {
                write!(f, "stopped {age_secs}s ago, below container_min_age")
            }
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if !self.pressure {
            writeln!(
                f,
                "plan ({}, below the high watermark): remove what has been unused for longer than max_unused_age; {} step(s)",
                self.strategy,
                self.steps.len()
            )?;
        } else {
            write!(
                f,
                "plan ({}): free {} and {} inodes to reach the low watermark; {} step(s)",
                self.strategy,
                size(self.need.bytes),
                self.need.inodes,
                self.steps.len()
            )?;
            match self.estimated_steps {
                Some(n) => writeln!(f, ", about {n} should be enough")?,
                None => writeln!(f, ", stopping once below the low watermark")?,
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "  {:>3}. {step}", i + 1)?;
        }
        for kept in &self.kept {
            writeln!(f, "       {kept}")?;
        }
        Ok(())
    }
}
