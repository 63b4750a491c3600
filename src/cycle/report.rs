//! What a pass did: the [`Report`] (one line in the log, `STATUS=`, the exit of `once`) and the
//! Event posted on the Node. Formatting only.

use std::time::Duration;

use serde::Serialize;

use crate::config::Watermarks;
use crate::node::NodeEvent;
use crate::policy::{self, Outcome, Plan};
use crate::usage::{Measurement, signed_size, size};

/// Counts of what the execution did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Containers removed.
    pub containers: usize,
    /// Images removed.
    pub images: usize,
    /// Removals refused (409), found done (404) or left because the image changed.
    pub skipped: usize,
}

/// What a pass did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// Usage when it started.
    pub before: Measurement,
    /// Usage when it ended (measured again).
    pub after: Measurement,
    /// The plan, when one was made.
    pub plan: Option<Plan>,
    /// Containers removed.
    pub removed_containers: usize,
    /// Images removed.
    pub removed_images: usize,
    /// Removals Docker refused (409), found already done (404), or left alone because the
    /// image changed since the plan.
    pub skipped: usize,
    /// Bytes freed, measured (negative when something else wrote meanwhile).
    pub freed_bytes: i64,
    /// Inodes freed, measured (relative mode).
    pub freed_inodes: i64,
    /// How long it took.
    pub duration: Duration,
}

impl Report {
    /// The report of a pass that went from `before` to `after`.
    pub fn new(
        outcome: Outcome,
        before: Measurement,
        after: Measurement,
        plan: Option<Plan>,
        tally: Tally,
        duration: Duration,
    ) -> Self {
        let (freed_bytes, freed_inodes) = before.freed_since(&after);
        Report {
            outcome,
            before,
            after,
            plan,
            removed_containers: tally.containers,
            removed_images: tally.images,
            skipped: tally.skipped,
            freed_bytes,
            freed_inodes,
            duration,
        }
    }

    /// How the pass ended, in words.
    pub fn outcome_text(&self) -> &'static str {
        outcome_text(self.outcome)
    }

    /// The one line logged at the end of a pass.
    pub fn summary(&self) -> String {
        format!(
            "{}: removed {} containers and {} images ({} skipped), freed {} and {} inodes in {:.1}s; before {}; after {}",
            self.outcome_text(),
            self.removed_containers,
            self.removed_images,
            self.skipped,
            signed_size(self.freed_bytes),
            self.freed_inodes,
            self.duration.as_secs_f64(),
            self.before,
            self.after
        )
    }
}

/// How a pass ended, in words.
pub fn outcome_text(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::BelowHigh => "below the high watermark, nothing to do",
        Outcome::DryRun => "dry run, nothing removed",
        Outcome::Skipped => "skipped: the node could not be cordoned",
        Outcome::ReachedLow => "below the low watermark",
        Outcome::Exhausted => "nothing left to remove, still above the low watermark",
        Outcome::Interrupted => "interrupted by shutdown",
    }
}

/// The Node Event for a pass that removed something or could not reach the low watermark.
pub fn node_event(
    outcome: Outcome,
    t: &Tally,
    before: &Measurement,
    after: &Measurement,
    w: &Watermarks,
) -> Option<NodeEvent> {
    let (bytes, inodes) = before.freed_since(after);
    match outcome {
        Outcome::Exhausted => {
            let need = policy::need(after, w);
            Some(NodeEvent {
                warning: true,
                reason: "FreeDiskSpaceFailed",
                message: format!(
                    "removed {} containers and {} images, freed {}, but usage is still above the low watermark ({w}): {} and {} inodes short; now {after}",
                    t.containers,
                    t.images,
                    signed_size(bytes),
                    size(need.bytes),
                    need.inodes
                ),
            })
        }
        _ if t.containers + t.images > 0 => Some(NodeEvent {
            warning: false,
            reason: "ImagesRemoved",
            message: format!(
                "removed {} containers and {} images, freed {} and {inodes} inodes; now {after}",
                t.containers,
                t.images,
                signed_size(bytes)
            ),
        }),
        _ => None,
    }
}
