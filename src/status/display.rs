//! `status` as people read it: a few lines of state, then aligned tables (engines, filesystems,
//! the eviction order, what stays and why), sizes and ages for people ("3 h ago"), counted from
//! the moment the look was taken. The JSON form is the [`Status`] struct itself.

use std::fmt;

use super::Status;
use crate::policy::{Kept, Reason, Step, short};
use crate::usage::{Measurement, size};

/// An age for people: `45 s`, `12 min`, `3 h`, `2 d`.
pub fn age(ms: i64) -> String {
    let s = ms.max(0).div_euclid(1000);
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// `age` of the time `at_ms`, seen from `now_ms`, as "… ago".
fn ago(now_ms: i64, at_ms: i64) -> String {
    format!("{} ago", age(now_ms.saturating_sub(at_ms)))
}

/// Rows under a header, each column as wide as its widest cell, two spaces apart, every line
/// indented by two. The last column is not padded.
fn table(f: &mut fmt::Formatter, header: &[&str], rows: &[Vec<String>]) -> fmt::Result {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |f: &mut fmt::Formatter, cells: &mut dyn Iterator<Item = &str>| -> fmt::Result {
        let mut out = String::from("  ");
        let cells: Vec<&str> = cells.collect();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(f, "{}", out.trim_end())
    };
    line(f, &mut header.iter().copied())?;
    for row in rows {
        line(f, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

fn names(names: &[String]) -> String {
    if names.is_empty() {
        "<none>".into()
    } else {
        names.join(", ")
    }
}

/// Why something stays, in words, with ages counted from now.
fn why(reason: &Reason) -> String {
    match reason {
        Reason::Pinned { why } => why.clone(),
        Reason::InUse { container, state } => {
            format!("in use by container {container} ({state})")
        }
        Reason::Building { age_secs } => format!(
            "untagged step image made {} ago: a build may use it next",
            age(age_secs.saturating_mul(1000))
        ),
        Reason::BuildStep { image_age_secs } => format!(
            "stopped step of a build (its image made {} ago): the build commits it next",
            age(image_age_secs.saturating_mul(1000))
        ),
        Reason::KeepRule { pattern } => format!("keep rule {pattern:?}"),
        Reason::KeepLabel { rule, label } => format!("label {label} (keep_labels {rule:?})"),
        Reason::TooYoung { age_secs } => format!(
            "used {} ago, younger than min_age",
            age(age_secs.saturating_mul(1000))
        ),
        Reason::Parent { child } => format!("parent of {}, which stays", short(child)),
        Reason::Floor {
            footprint_bytes,
            floor_bytes,
        } => format!(
            "its engine's floor ({} of {} in use)",
            size(*floor_bytes),
            size(*footprint_bytes)
        ),
        Reason::RecentlyStopped { age_secs } => format!(
            "stopped {} ago, younger than container_min_age",
            age(age_secs.saturating_mul(1000))
        ),
    }
}

impl Status {
    fn several_engines(&self) -> bool {
        self.engines.len() > 1
    }

    /// One row of the eviction order.
    fn step_row(&self, i: usize, step: &Step) -> Vec<String> {
        let (what, id, name, bytes, when) = match step {
            Step::RemoveContainer {
                id, name, stopped, ..
            } => (
                "container",
                short(id).to_string(),
                name.clone(),
                String::new(),
                format!(
                    "stopped {}",
                    ago(self.taken_ms, stopped.saturating_mul(1000))
                ),
            ),
            Step::RemoveImage {
                id,
                tags,
                size_bytes,
                last_used_ms,
                aged,
                ..
            } => (
                if *aged { "image (age)" } else { "image" },
                short(id).to_string(),
                names(tags),
                size(*size_bytes),
                ago(self.taken_ms, *last_used_ms),
            ),
            Step::PruneBuildCache {
                size_bytes,
                records,
                unused_for_secs,
                keep_bytes,
                ..
            } => (
                "build cache",
                String::new(),
                format!("{records} records"),
                size(*size_bytes),
                if *keep_bytes > 0 {
                    format!(
                        "unused for {}, down to {}",
                        age(i64::try_from(*unused_for_secs)
                            .unwrap_or(i64::MAX)
                            .saturating_mul(1000)),
                        size(*keep_bytes)
                    )
                } else {
                    format!(
                        "unused for {}",
                        age(i64::try_from(*unused_for_secs)
                            .unwrap_or(i64::MAX)
                            .saturating_mul(1000))
                    )
                },
            ),
            other => (
                "prune",
                String::new(),
                other.to_string(),
                String::new(),
                String::new(),
            ),
        };
        let mut row = vec![(i + 1).to_string(), what.to_string()];
        if self.several_engines() {
            row.push(step.engine().to_string());
        }
        row.extend([id, name, bytes, when]);
        row
    }

    fn kept_row(&self, k: &Kept) -> Vec<String> {
        let mut row = Vec::new();
        if self.several_engines() {
            row.push(k.engine.clone());
        }
        row.extend([short(&k.id).to_string(), names(&k.names), why(&k.reason)]);
        row
    }

    /// The line that says what the next pass does.
    fn verdict(&self) -> String {
        let need = if self.need.bytes > 0 || self.need.inodes > 0 {
            let inodes = if self.need.inodes > 0 {
                format!(" and {} inodes", self.need.inodes)
            } else {
                String::new()
            };
            format!("; {}{inodes} to free to reach low", size(self.need.bytes))
        } else {
            String::new()
        };
        match (self.above_high, self.critical) {
            (_, true) => format!(
                "at or above critical ({}%): the next pass cleans and ignores the floors{need}",
                self.critical_pct
            ),
            (true, false) => format!("at or above high: the next pass cleans{need}"),
            (false, false) if self.plan.steps.is_empty() => "below high: nothing to do".to_string(),
            (false, false) if !self.plan.pressure => {
                "below high: the next pass removes images unused for too long".to_string()
            }
            (false, false) => "below high: nothing to do until high".to_string(),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let level = match &self.usage {
            Measurement::Relative(_) => format!("{:.1}%", self.level),
            Measurement::Absolute(t) => size(t.bytes),
        };
        writeln!(f, "usage:      {}", self.usage)?;
        writeln!(
            f,
            "level:      {level} against {}, critical {}%",
            self.watermarks, self.critical_pct
        )?;
        if let Some(h) = &self.headroom {
            writeln!(
                f,
                "headroom:   {} kept free for pulls (threshold_low = \"auto\"): {} arrived lately, the largest {}, the most within one interval {}",
                size(h.room_bytes),
                h.arrivals,
                size(h.largest_bytes),
                size(h.busiest_bytes)
            )?;
        }
        writeln!(f, "next pass:  {}", self.verdict())?;
        writeln!(f, "cordon:     {}", self.cordon)?;

        // Two narrow tables rather than one wide one: where each engine is (and why it is
        // down), then what it holds. Together they fit 100 columns with the usual values.
        writeln!(f, "\nengines")?;
        let rows: Vec<Vec<String>> = self
            .engines
            .iter()
            .map(|e| {
                let mut row = vec![e.name.clone(), e.endpoint.clone()];
                if let Some(why) = &e.error {
                    row.push(format!("down: {why}"));
                }
                row
            })
            .collect();
        table(f, &["NAME", "ENDPOINT"], &rows)?;
        writeln!(f)?;
        let rows: Vec<Vec<String>> = self
            .engines
            .iter()
            .map(|e| {
                if e.error.is_some() {
                    return vec![e.name.clone(), "-".into()];
                }
                let (cache, reclaimable, would_go) = match &e.build_cache {
                    Some(c) => (
                        size(c.total_bytes),
                        size(c.reclaimable_bytes),
                        size(c.would_go_bytes),
                    ),
                    None => ("none".into(), "-".into(), "-".into()),
                };
                let max = i64::try_from(self.max_unused_age_secs).unwrap_or(i64::MAX);
                let aged = if max == 0 {
                    "off".to_string()
                } else if e.covered_secs < max {
                    format!(
                        "waits {}",
                        age(max.saturating_sub(e.covered_secs).saturating_mul(1000))
                    )
                } else {
                    format!("after {}", age(max.saturating_mul(1000)))
                };
                vec![
                    e.name.clone(),
                    e.images.to_string(),
                    e.containers.to_string(),
                    e.footprint_bytes.map_or("?".into(), size),
                    if e.floor_bytes == 0 {
                        "none".into()
                    } else {
                        size(e.floor_bytes)
                    },
                    cache,
                    reclaimable,
                    would_go,
                    aged,
                ]
            })
            .collect();
        table(
            f,
            &[
                "NAME",
                "IMAGES",
                "CONTAINERS",
                "FOOTPRINT",
                "FLOOR",
                "BUILD CACHE",
                "RECLAIMABLE",
                "WOULD GO",
                "UNUSED-AGE",
            ],
            &rows,
        )?;

        // Containers by state: only exited and dead ones may be removed.
        for e in self
            .engines
            .iter()
            .filter(|e| !e.container_states.is_empty())
        {
            writeln!(f, "  {}: containers{}", e.name, states(&e.container_states))?;
        }

        writeln!(f, "\nwhere the engines' bytes are counted")?;
        for e in self.engines.iter().filter(|e| e.error.is_none()) {
            writeln!(
                f,
                "  {}: {}",
                e.name,
                e.store.as_deref().unwrap_or("unknown")
            )?;
            for p in &e.places {
                let how = if p.walked {
                    "walked"
                } else {
                    "counted by containerd"
                };
                writeln!(f, "    {}\n      {how}: {}", p.path.display(), p.holds)?;
            }
            if let Some(why) = &e.containerd_error {
                writeln!(f, "    containerd's roots are unknown: {why}")?;
            }
        }

        writeln!(f, "\nfilesystems")?;
        let rows: Vec<Vec<String>> = self
            .filesystems
            .iter()
            .map(|fs| {
                vec![
                    fs.path.clone(),
                    size(fs.total_bytes),
                    size(fs.used_bytes),
                    size(fs.outside_bytes),
                ]
            })
            .collect();
        table(f, &["PATH", "SIZE", "USED", "OUTSIDE THE ENGINES"], &rows)?;

        let enough = match self.plan.estimated_steps {
            Some(n) if self.plan.pressure && self.need.bytes > 0 => {
                format!(", about {n} should be enough")
            }
            _ => String::new(),
        };
        writeln!(
            f,
            "\neviction order ({}): {} step(s){enough}; a pass stops once below low",
            self.plan.strategy,
            self.plan.steps.len()
        )?;
        if !self.plan.steps.is_empty() {
            let rows: Vec<Vec<String>> = self
                .plan
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| self.step_row(i, s))
                .collect();
            let mut header = vec!["#", "WHAT"];
            if self.several_engines() {
                header.push("ENGINE");
            }
            header.extend(["ID", "NAME", "SIZE", "LAST USED"]);
            table(f, &header, &rows)?;
        }
        if !self.plan.kept.is_empty() {
            writeln!(f, "\nkept")?;
            let rows: Vec<Vec<String>> = self.plan.kept.iter().map(|k| self.kept_row(k)).collect();
            let mut header = Vec::new();
            if self.several_engines() {
                header.push("ENGINE");
            }
            header.extend(["ID", "NAME", "WHY"]);
            table(f, &header, &rows)?;
        }
        Ok(())
    }
}

/// ` (2 running, 1 created)`: the containers by state, most first; empty without containers.
fn states(by_state: &std::collections::BTreeMap<&'static str, usize>) -> String {
    let mut counts: Vec<(&str, usize)> = by_state.iter().map(|(s, n)| (*s, *n)).collect();
    if counts.is_empty() {
        return String::new();
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    format!(" ({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_for_people() {
        let cases = [
            (0, "0 s"),
            (45_000, "45 s"),
            (119_999, "119 s"),
            (120_000, "2 min"),
            (3_600_000, "60 min"),
            (7_200_000, "2 h"),
            (3 * 86_400_000, "3 d"),
            (-5, "0 s"),
        ];
        for (ms, want) in cases {
            assert_eq!(age(ms), want, "{ms}");
        }
        assert_eq!(ago(10_000_000, 10_000_000 - 10_800_000), "3 h ago");
    }

    /// The README's example: one engine on the local socket, a build cache, a few images.
    fn example() -> Status {
        use crate::policy::{Need, Plan};
        use crate::status::{CacheStatus, EngineStatus, FilesystemStatus};
        use crate::usage::FsUsage;
        let now = 1_800_000_000_000;
        let fs = FsUsage {
            path: "/var/lib/docker".into(),
            total_bytes: 223 << 20,
            avail_bytes: 29 << 20,
            blocks_used_pct: 87.0,
            total_inodes: 65536,
            avail_inodes: 65336,
            inodes_used_pct: 0.3,
            dev: 1,
        };
        let image = |id: &str, tag: &str, hours: i64| Step::RemoveImage {
            engine: "default".into(),
            id: format!("sha256:{id}"),
            tags: vec![tag.into()],
            size_bytes: 26_109_542,
            last_used_ms: now - hours * 3_600_000,
            aged: false,
        };
        // Docker's containerd image store, the longest lines there are.
        let storage = crate::docker::Storage {
            root: Some("/var/lib/docker".into()),
            driver: "overlayfs".into(),
            cri: None,
            containerd: Some(crate::docker::ContainerdStore {
                address: "/run/containerd/containerd.sock".into(),
                namespace: "moby".into(),
                snapshotter: "overlayfs".into(),
                content_root: Some("/var/lib/containerd/io.containerd.content.v1.content".into()),
                snapshots_root: Some(
                    "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs".into(),
                ),
                error: None,
            }),
        };
        Status {
            usage: Measurement::Relative(vec![fs]),
            level: 87.0,
            watermarks: "high 82%, low 78%".into(),
            headroom: None,
            above_high: true,
            critical: false,
            need: Need {
                bytes: 60 << 20,
                inodes: 0,
            },
            cordon: "node node-1: cordon ready (kubeconfig /etc/kubernetes/kubelet.conf)".into(),
            engines: vec![EngineStatus {
                name: "default".into(),
                kind: crate::config::EngineKind::Docker,
                endpoint: "unix:///var/run/docker.sock".into(),
                docker_host: "unix:///var/run/docker.sock".into(),
                error: None,
                footprint_bytes: Some(194 << 20),
                floor_bytes: 0,
                images: 6,
                containers: 2,
                build_cache: Some(CacheStatus {
                    total_bytes: 98 << 20,
                    records: 12,
                    reclaimable_bytes: 98 << 20,
                    would_go_bytes: 0,
                    would_go_records: 0,
                }),
                covered_secs: 3600,
                container_states: std::collections::BTreeMap::from([("exited", 1), ("running", 1)]),
                store: Some(storage.describe()),
                places: storage.counted_in(&["/var/lib/docker".into()]),
                containerd_error: None,
            }],
            filesystems: vec![FilesystemStatus {
                path: "/var/lib/docker".into(),
                total_bytes: 223 << 20,
                used_bytes: 194 << 20,
                outside_bytes: 0,
            }],
            plan: Plan {
                strategy: "lru2",
                pressure: true,
                steps: vec![
                    Step::RemoveContainer {
                        engine: "default".into(),
                        id: "731efb1fbdbe0000".into(),
                        name: "batch-job".into(),
                        stopped: (now - 3 * 3_600_000) / 1000,
                    },
                    image("1969eef554280000", "demo/delta:1", 3),
                    image("f336868238490000", "demo/alpha:1", 3),
                ],
                kept: vec![Kept {
                    engine: "default".into(),
                    id: "sha256:b780b76ad0eb0000".into(),
                    names: vec!["demo/pause:3.9".into()],
                    reason: Reason::KeepRule {
                        pattern: "^demo/pause:".into(),
                    },
                }],
                need: Need {
                    bytes: 60 << 20,
                    inodes: 0,
                },
                estimated_steps: Some(3),
            },
            max_unused_age_secs: 30 * 86_400,
            taken_ms: now,
            critical_pct: 95.0,
        }
    }

    #[test]
    fn the_table_fits_100_columns() {
        let text = example().to_string();
        for line in text.lines() {
            assert!(
                line.chars().count() <= 100,
                "{} columns: {line}\n{text}",
                line.chars().count()
            );
        }
        assert!(
            text.contains("RECLAIMABLE") && text.contains("waits 29 d"),
            "{text}"
        );
        eprintln!("{text}");
    }

    #[test]
    fn containers_are_counted_by_state_most_first() {
        let by_state = std::collections::BTreeMap::from([("created", 1), ("running", 2)]);
        assert_eq!(states(&by_state), " (2 running, 1 created)");
        assert_eq!(states(&std::collections::BTreeMap::new()), "");
    }
}
