//! The simulated node: the layers on its disk (each stored once, however many images share it),
//! the images present, the running containers, the other files; pulls, removals, and what the
//! node's engine and `statvfs` would report. It decides nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use docker_image_cleaner::docker::{Container, ContainerState, Image, Inventory};
use docker_image_cleaner::usage::{FsUsage, Measurement};

use crate::trace::{GIB, Trace};

/// Milliseconds per bucket of the usage series (a minute).
pub const BUCKET_MS: i64 = 60_000;

/// What a removal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Removed; this many bytes freed (layers no other image holds).
    Removed(u64),
    /// A running container uses it (Docker's 409).
    InUse,
    /// Not there (Docker's 404).
    Gone,
}

/// How long a removal takes: a second, plus a second per GiB of layer files deleted.
pub fn removal_ms(freed: u64) -> i64 {
    1000 + i64::try_from(freed.saturating_mul(1000) / GIB).unwrap_or(i64::MAX)
}

/// Which size the engine reports for an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizes {
    /// What `GET /images/json` reports: shared layers counted in full.
    Reported,
    /// Size less `SharedSize` (`GET /system/df`): the bytes only this image holds, i.e. what
    /// removing it alone frees.
    Exclusive,
}

/// Counters of one run.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Uses (first attempts).
    pub uses: u64,
    /// Uses whose image was present.
    pub hits: u64,
    /// Successful pulls.
    pub pulls: u64,
    /// Bytes of layers pulled for the first time on this node.
    pub cold_bytes: u64,
    /// Bytes of layers pulled that had been on the node before (the cost of the policy).
    pub again_bytes: u64,
    /// Pull attempts that found the disk full.
    pub full: u64,
    /// Uses given up after ten minutes of failed pulls.
    pub lost: u64,
    /// Bytes the lost uses' pulls would have written (another node pulls them).
    pub lost_bytes: u64,
    /// Bytes failed pulls downloaded before the disk ran out, then threw away: each attempt
    /// writes what room there is (at most what it lacks) and fails.
    pub wasted_bytes: u64,
    /// Uses that waited for a pull the disk had no room for, and were served.
    pub waited: u64,
    /// Milliseconds those uses waited, in all.
    pub wait_ms: i64,
    /// Checks of usage against the trigger.
    pub checks: u64,
    /// Passes that removed at least one image.
    pub cleanings: u64,
    /// Passes that cordoned the node (ours and the original only).
    pub cordons: u64,
    /// Milliseconds cordoned (ours and the original), or spent removing (the others).
    pub busy_ms: i64,
    /// Images removed.
    pub removed: u64,
    /// Highest usage seen, percent of the disk.
    pub peak_pct: f64,
}

impl Stats {
    /// What the policy cost in pulls: bytes pulled again, the pulls of lost uses, and what
    /// failed pulls downloaded in vain.
    pub fn repulled(&self) -> u64 {
        self.again_bytes + self.lost_bytes + self.wasted_bytes
    }
}

/// The simulated node.
#[derive(Debug)]
pub struct Node<'t> {
    /// The trace it replays.
    pub trace: &'t Trace,
    refs: Vec<u32>,
    ever: Vec<bool>,
    layer_bytes: u64,
    present: Vec<bool>,
    in_use: Vec<u32>,
    containers: BTreeMap<u64, (usize, i64)>,
    other: u64,
    /// The counters.
    pub stats: Stats,
    /// Highest usage per minute, percent (for the plot); NaN: no change that minute.
    pub series: Vec<f32>,
}

impl<'t> Node<'t> {
    /// An empty node (no image pulled yet) for `trace`.
    pub fn new(trace: &'t Trace) -> Self {
        Node {
            trace,
            refs: vec![0; trace.layers.len()],
            ever: vec![false; trace.layers.len()],
            layer_bytes: 0,
            present: vec![false; trace.images.len()],
            in_use: vec![0; trace.images.len()],
            containers: BTreeMap::new(),
            other: trace.other_start,
            stats: Stats::default(),
            series: Vec::new(),
        }
    }

    /// Bytes used on the disk.
    pub fn used(&self) -> u64 {
        self.layer_bytes + self.other
    }

    /// Bytes of the image layers (what `docker system df` reports for images).
    pub fn image_bytes(&self) -> u64 {
        self.layer_bytes
    }

    /// Disk size.
    pub fn capacity(&self) -> u64 {
        self.trace.capacity
    }

    /// Percent of the disk used.
    pub fn used_pct(&self) -> f64 {
        100.0 * self.used() as f64 / self.capacity() as f64
    }

    /// True when `image` is on the node.
    pub fn is_present(&self, image: usize) -> bool {
        self.present[image]
    }

    /// True when a running container uses `image`.
    pub fn in_use(&self, image: usize) -> bool {
        self.in_use[image] > 0
    }

    /// The images present, in index order.
    pub fn present_images(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.present.len()).filter(|i| self.present[*i])
    }

    /// Bytes a pull of `image` would write.
    pub fn missing(&self, image: usize) -> u64 {
        self.trace.images[image]
            .layers
            .iter()
            .filter(|l| self.refs[**l] == 0)
            .map(|l| self.trace.layers[*l])
            .sum()
    }

    /// Bytes only `image` holds among the images present.
    pub fn exclusive(&self, image: usize) -> u64 {
        self.trace.images[image]
            .layers
            .iter()
            .filter(|l| self.refs[**l] == 1)
            .map(|l| self.trace.layers[*l])
            .sum()
    }

    /// The earliest time a layer only `image` holds is needed again (the next use of any image
    /// holding it, at or after `now`; `None`: never), and those layers' bytes.
    pub fn exclusive_needed(&self, image: usize, now: i64) -> (Option<i64>, u64) {
        let mut needed: Option<i64> = None;
        let mut bytes = 0;
        for l in &self.trace.images[image].layers {
            if self.refs[*l] == 1 {
                bytes += self.trace.layers[*l];
                for holder in &self.trace.holders[*l] {
                    if let Some(t) = self.trace.next_use(*holder, now) {
                        needed = Some(needed.map_or(t, |n| n.min(t)));
                    }
                }
            }
        }
        (needed, bytes)
    }

    /// Pulls `image`: `Ok(bytes written)`, or `Err(bytes missing)` when they do not fit.
    pub fn pull(&mut self, image: usize, now: i64) -> Result<u64, u64> {
        let missing = self.missing(image);
        if self.used() + missing > self.capacity() {
            return Err(missing);
        }
        for l in &self.trace.images[image].layers {
            if self.refs[*l] == 0 {
                let bytes = self.trace.layers[*l];
                if std::mem::replace(&mut self.ever[*l], true) {
                    self.stats.again_bytes += bytes;
                } else {
                    self.stats.cold_bytes += bytes;
                }
            }
            self.refs[*l] += 1;
        }
        self.layer_bytes += missing;
        self.present[image] = true;
        self.stats.pulls += 1;
        self.record(now);
        Ok(missing)
    }

    /// Removes `image` unless a running container uses it.
    pub fn remove(&mut self, image: usize, now: i64) -> Removal {
        if !self.present[image] {
            return Removal::Gone;
        }
        if self.in_use[image] > 0 {
            return Removal::InUse;
        }
        let mut freed = 0;
        for l in &self.trace.images[image].layers {
            self.refs[*l] -= 1;
            if self.refs[*l] == 0 {
                freed += self.trace.layers[*l];
            }
        }
        self.layer_bytes -= freed;
        self.present[image] = false;
        self.stats.removed += 1;
        self.record(now);
        Removal::Removed(freed)
    }

    /// A container `id` of `image` starts.
    pub fn start(&mut self, id: u64, image: usize, now: i64) {
        self.containers.insert(id, (image, now));
        self.in_use[image] += 1;
    }

    /// Container `id` is gone (the kubelet removed it); returns its image.
    pub fn stop(&mut self, id: u64) -> Option<usize> {
        let (image, _) = self.containers.remove(&id)?;
        self.in_use[image] -= 1;
        Some(image)
    }

    /// Other files now take `bytes` (as much as fits: a full disk refuses writes).
    pub fn set_other(&mut self, bytes: u64, now: i64) {
        self.other = bytes.min(self.capacity() - self.layer_bytes);
        self.record(now);
    }

    /// Notes the usage at `now` (peak and the plot's series).
    pub fn record(&mut self, now: i64) {
        let pct = self.used_pct();
        self.stats.peak_pct = self.stats.peak_pct.max(pct);
        let bucket = usize::try_from((now - crate::trace::T0_MS) / BUCKET_MS).unwrap_or(0);
        if self.series.len() <= bucket {
            self.series.resize(bucket + 1, f32::NAN);
        }
        let slot = &mut self.series[bucket];
        *slot = if slot.is_nan() {
            pct as f32
        } else {
            slot.max(pct as f32)
        };
    }

    /// What `statvfs` of the Docker root would say (inodes are not modelled: 0 %, as on btrfs).
    pub fn measurement(&self) -> Measurement {
        let block = 4096;
        Measurement::Relative(vec![FsUsage::from_counts(
            PathBuf::from("/var/lib/docker"),
            block,
            self.capacity() / block,
            (self.capacity() - self.used()) / block,
            0,
            0,
        )])
    }

    /// What the engine would list: the images present with the size of `sizes`, and the
    /// running containers (the kubelet removes a container when it ends, so none is stopped).
    pub fn inventory(&self, sizes: Sizes) -> Inventory {
        let images = self
            .present_images()
            .map(|i| {
                let spec = &self.trace.images[i];
                Image {
                    id: spec.id.clone(),
                    parent_id: None,
                    tags: vec![spec.tag.clone()],
                    created: spec.created_s,
                    size_bytes: match sizes {
                        Sizes::Reported => self.trace.image_bytes(i),
                        Sizes::Exclusive => self.exclusive(i),
                    },
                    ..Image::default()
                }
            })
            .collect();
        let containers = self
            .containers
            .iter()
            .map(|(id, (image, started))| Container {
                id: format!("{id:064x}"),
                name: format!("pod-{id}"),
                image_id: self.trace.images[*image].id.clone(),
                state: ContainerState::Running,
                created: started.div_euclid(1000),
                finished: None,
                managed: false,
            })
            .collect();
        Inventory { images, containers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{MIB, T0_MS, tiny};

    #[test]
    fn shared_layers_are_stored_once_and_counted_cold_then_again() {
        // Images 0 and 1 share layer 0 (a base of 100 MiB).
        let t = tiny(
            vec![100 * MIB, 50 * MIB, 30 * MIB],
            vec![vec![0, 1], vec![0, 2]],
            &[],
            1000 * MIB,
        );
        let mut n = Node::new(&t);
        assert_eq!(n.pull(0, T0_MS), Ok(150 * MIB));
        assert_eq!(n.missing(1), 30 * MIB, "the base is there already");
        assert_eq!(n.pull(1, T0_MS), Ok(30 * MIB));
        assert_eq!(n.image_bytes(), 180 * MIB);
        assert_eq!(n.exclusive(0), 50 * MIB);
        assert_eq!(n.remove(0, T0_MS), Removal::Removed(50 * MIB));
        assert_eq!(n.remove(1, T0_MS), Removal::Removed(130 * MIB));
        assert_eq!(n.pull(0, T0_MS), Ok(150 * MIB));
        assert_eq!(n.stats.cold_bytes, 180 * MIB);
        assert_eq!(n.stats.again_bytes, 150 * MIB);
    }

    #[test]
    fn a_pull_that_does_not_fit_fails_and_an_image_in_use_stays() {
        let t = tiny(
            vec![600 * MIB, 600 * MIB],
            vec![vec![0], vec![1]],
            &[],
            1000 * MIB,
        );
        let mut n = Node::new(&t);
        assert_eq!(n.pull(0, T0_MS), Ok(600 * MIB));
        assert_eq!(n.pull(1, T0_MS), Err(600 * MIB));
        n.start(7, 0, T0_MS);
        assert_eq!(n.remove(0, T0_MS), Removal::InUse);
        assert_eq!(n.stop(7), Some(0));
        assert_eq!(n.remove(0, T0_MS), Removal::Removed(600 * MIB));
        assert_eq!(n.remove(0, T0_MS), Removal::Gone);
        let Measurement::Relative(fs) = n.measurement() else {
            panic!("relative")
        };
        assert_eq!(fs[0].blocks_used_pct, 0.0);
    }
}
