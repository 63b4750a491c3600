//! The simulated node: the layers on its disk (each stored once, however many images and
//! build-cache records share it), the images present, BuildKit's build cache, the running
//! containers, the other files; pulls, builds, removals and prunes, and what the node's engine
//! and `statvfs` would report. It decides nothing.
//!
//! The build cache is the classic image store's: a record of a layer the node built holds that
//! layer, so removing the image frees nothing of it while the record stays (the record is then
//! "shared", and a prune leaves it until the image is gone); a record of its own (a cache mount,
//! an intermediate layer) holds bytes no image has. BuildKit's own garbage collection keeps the
//! cache's own bytes under a tenth of the disk, whatever the cleaner.

use std::collections::BTreeMap;
use std::path::PathBuf;

use docker_image_cleaner::docker::{
    BuildCache, CacheRecord, Container, ContainerState, Image, Inventory,
};
use docker_image_cleaner::usage::{FsUsage, Measurement};

use crate::trace::{GIB, Trace};

/// Milliseconds per bucket of the usage series (a minute).
pub const BUCKET_MS: i64 = 60_000;

/// BuildKit's own garbage collection keeps the cache's own bytes under this share of the disk.
const BUILDKIT_KEEP_SHARE: f64 = 0.10;

/// One record of the build cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The layer it holds (a built layer an image may share), or none: bytes of its own.
    pub layer: Option<usize>,
    /// Its own bytes (0 for a layer's record: the layer's bytes are counted once, as a layer).
    pub own_bytes: u64,
    /// Its last use, unix ms.
    pub last_used_ms: i64,
}

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
    /// Image removals that freed nothing (another image or the build cache held every layer).
    pub removed_nothing: u64,
    /// Bytes the cleaner's build-cache prunes freed.
    pub cache_pruned_bytes: u64,
    /// Images built on the node.
    pub builds: u64,
    /// Builds the disk had no room for.
    pub failed_builds: u64,
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
    /// Images present holding each layer.
    refs: Vec<u32>,
    /// The build cache holds the layer.
    cached: Vec<bool>,
    ever: Vec<bool>,
    layer_bytes: u64,
    /// The build cache's records.
    records: Vec<Record>,
    /// Bytes of the records of their own.
    own_cache_bytes: u64,
    present: Vec<bool>,
    /// Being loaded (its layers are written, it is not listed yet).
    loading: Vec<bool>,
    /// Bytes of loads' tmp dirs.
    transient: u64,
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
            cached: vec![false; trace.layers.len()],
            ever: vec![false; trace.layers.len()],
            layer_bytes: 0,
            records: Vec::new(),
            own_cache_bytes: 0,
            present: vec![false; trace.images.len()],
            loading: vec![false; trace.images.len()],
            transient: 0,
            in_use: vec![0; trace.images.len()],
            containers: BTreeMap::new(),
            other: trace.other_start,
            stats: Stats::default(),
            series: Vec::new(),
        }
    }

    /// Bytes used on the disk.
    pub fn used(&self) -> u64 {
        self.layer_bytes + self.own_cache_bytes + self.transient + self.other
    }

    /// True when layer `l` is on the disk (an image or the build cache holds it).
    fn stored(&self, l: usize) -> bool {
        self.refs[l] > 0 || self.cached[l]
    }

    /// Bytes of the layers the images present hold, each once (what `docker system df`
    /// reports for images, shared layers included).
    pub fn image_bytes(&self) -> u64 {
        (0..self.refs.len())
            .filter(|l| self.refs[*l] > 0)
            .map(|l| self.trace.layers[l])
            .sum()
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
            .filter(|l| !self.stored(**l))
            .map(|l| self.trace.layers[*l])
            .sum()
    }

    /// Bytes only `image` holds among the images present (what `GET /system/df` says is not
    /// shared with another image; a layer the build cache holds counts, as Docker counts it).
    pub fn exclusive(&self, image: usize) -> u64 {
        self.trace.images[image]
            .layers
            .iter()
            .filter(|l| self.refs[**l] == 1)
            .map(|l| self.trace.layers[*l])
            .sum()
    }

    /// The earliest time a layer only `image` holds is needed again (the next use of any image
    /// holding it, at or after `now`; `None`: never), and those layers' bytes (a layer the
    /// build cache also holds counts: the optimum prunes the cache after the image).
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

    /// True while `image` is being loaded.
    pub fn is_loading(&self, image: usize) -> bool {
        self.loading[image]
    }

    /// Starts loading `image` (a tarball of `tar_bytes`): `Ok(bytes written)` with its layers
    /// written and the tarball in the tmp dir, the image not listed until [`Node::loaded`]; or
    /// `Err(bytes missing)` when the tarball and the missing layers do not fit.
    pub fn load(&mut self, image: usize, tar_bytes: u64, now: i64) -> Result<u64, u64> {
        let missing = self.missing(image);
        if self.used() + tar_bytes + missing > self.capacity() {
            return Err(missing);
        }
        self.transient += tar_bytes;
        let written = self.pull(image, now)?;
        self.present[image] = false;
        self.loading[image] = true;
        Ok(written)
    }

    /// The load of `image` is over: it is listed.
    pub fn loaded(&mut self, image: usize, now: i64) {
        self.loading[image] = false;
        self.present[image] = true;
        self.record(now);
    }

    /// A load's tmp dir of `bytes` is removed.
    pub fn settled(&mut self, bytes: u64, now: i64) {
        self.transient = self.transient.saturating_sub(bytes);
        self.record(now);
    }

    /// Pulls `image`: `Ok(bytes written)`, or `Err(bytes missing)` when they do not fit.
    pub fn pull(&mut self, image: usize, now: i64) -> Result<u64, u64> {
        let missing = self.missing(image);
        if self.used() + missing > self.capacity() {
            return Err(missing);
        }
        for l in &self.trace.images[image].layers {
            if !self.stored(*l) {
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

    /// Builds `image` on the node: its missing layers are written (not pulled), the build
    /// cache gets a record of each layer above the base image (the last `built` layers) and one
    /// of its own of `own_bytes` (a cache mount); then BuildKit's garbage collection runs.
    /// False when the disk has no room (nothing changes).
    pub fn build(&mut self, image: usize, built: usize, own_bytes: u64, now: i64) -> bool {
        if self.present[image] {
            return true;
        }
        let missing = self.missing(image);
        if self.used() + missing + own_bytes > self.capacity() {
            self.stats.failed_builds += 1;
            return false;
        }
        let layers = self.trace.images[image].layers.clone();
        for l in &layers {
            if !self.stored(*l) {
                self.ever[*l] = true;
            }
            self.refs[*l] += 1;
        }
        self.layer_bytes += missing;
        self.present[image] = true;
        for l in layers.iter().skip(layers.len().saturating_sub(built)) {
            if !std::mem::replace(&mut self.cached[*l], true) {
                self.records.push(Record {
                    layer: Some(*l),
                    own_bytes: 0,
                    last_used_ms: now,
                });
            } else if let Some(r) = self.records.iter_mut().find(|r| r.layer == Some(*l)) {
                r.last_used_ms = now;
            }
        }
        if own_bytes > 0 {
            self.records.push(Record {
                layer: None,
                own_bytes,
                last_used_ms: now,
            });
            self.own_cache_bytes += own_bytes;
        }
        self.stats.builds += 1;
        let keep = (self.capacity() as f64 * BUILDKIT_KEEP_SHARE) as u64;
        self.prune_cache(keep, i64::MAX, false);
        self.record(now);
        true
    }

    /// The bytes a record frees when it goes now: its own, or its layer's when no image
    /// holds the layer; 0 for a shared record.
    fn record_frees(&self, r: &Record) -> u64 {
        match r.layer {
            None => r.own_bytes,
            Some(l) if self.refs[l] == 0 => self.trace.layers[l],
            Some(_) => 0,
        }
    }

    /// The cache's own bytes (what `docker system df` counts as build cache: the records not
    /// shared with an image).
    pub fn cache_bytes(&self) -> u64 {
        self.records.iter().map(|r| self.record_frees(r)).sum()
    }

    /// A prune, as BuildKit makes it: records last used before `before_ms` and not shared
    /// with an image (with `all`, shared ones too: they free nothing here while the image
    /// stays, as in the classic store), least recently used first, until the cache's own
    /// bytes are at most `keep_bytes`. Returns the bytes freed.
    pub fn prune_cache(&mut self, keep_bytes: u64, before_ms: i64, all: bool) -> u64 {
        let mut order: Vec<usize> = (0..self.records.len()).collect();
        order.sort_by_key(|i| self.records[*i].last_used_ms);
        let mut total = self.cache_bytes();
        let mut gone = vec![false; self.records.len()];
        let mut freed = 0;
        for i in order {
            if total <= keep_bytes {
                break;
            }
            let r = self.records[i];
            let frees = self.record_frees(&r);
            if r.last_used_ms >= before_ms || (frees == 0 && !all) {
                continue;
            }
            gone[i] = true;
            total -= frees;
            freed += frees;
            match r.layer {
                Some(l) => {
                    self.cached[l] = false;
                    if self.refs[l] == 0 {
                        self.layer_bytes -= self.trace.layers[l];
                    }
                }
                None => self.own_cache_bytes -= r.own_bytes,
            }
        }
        let mut k = 0;
        self.records.retain(|_| {
            k += 1;
            !gone[k - 1]
        });
        freed
    }

    /// The build cache as the engine lists it (`GET /system/df`), for the classic store.
    pub fn build_cache(&self) -> BuildCache {
        BuildCache {
            records: self
                .records
                .iter()
                .enumerate()
                .map(|(i, r)| CacheRecord {
                    id: format!("rec{i}-{:?}", r.layer),
                    kind: if r.layer.is_some() {
                        "regular"
                    } else {
                        "exec.cachemount"
                    }
                    .to_string(),
                    in_use: false,
                    shared: r.layer.is_some_and(|l| self.refs[l] > 0),
                    size_bytes: r.layer.map_or(r.own_bytes, |l| self.trace.layers[l]),
                    last_used: Some(r.last_used_ms.div_euclid(1000)),
                })
                .collect(),
            keep_supported: true,
            shared_are_copies: false,
        }
    }

    /// True when the node keeps a build cache.
    pub fn has_build_cache(&self) -> bool {
        !self.records.is_empty()
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
            if self.refs[*l] == 0 && !self.cached[*l] {
                freed += self.trace.layers[*l];
            }
        }
        self.layer_bytes -= freed;
        self.present[image] = false;
        self.stats.removed += 1;
        if freed == 0 {
            self.stats.removed_nothing += 1;
        }
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
        let rest = self.used() - self.other;
        self.other = bytes.min(self.capacity() - rest);
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
    fn a_built_image_frees_nothing_while_the_build_cache_holds_its_layers() {
        // Image 0: a base of 100 MiB and a built layer of 50 MiB, with a cache mount of 20.
        let t = tiny(vec![100 * MIB, 50 * MIB], vec![vec![0, 1]], &[], 1000 * MIB);
        let mut n = Node::new(&t);
        assert!(n.build(0, 1, 20 * MIB, T0_MS));
        assert_eq!(n.used(), 170 * MIB);
        // The layer's record is shared with the image: only the cache mount is the cache's.
        assert_eq!(n.cache_bytes(), 20 * MIB);
        let listed = n.build_cache();
        assert_eq!(listed.records.iter().filter(|r| r.shared).count(), 1);
        assert_eq!(listed.reclaimable_bytes(), 20 * MIB);
        // Removing the image frees its base only: the cache holds the built layer.
        assert_eq!(n.remove(0, T0_MS), Removal::Removed(100 * MIB));
        assert_eq!(n.stats.removed_nothing, 0);
        assert_eq!(
            n.cache_bytes(),
            70 * MIB,
            "the record is the cache's own now"
        );
        // A prune takes it, least recently used first, down to what it may keep.
        assert_eq!(n.prune_cache(0, i64::MAX, false), 70 * MIB);
        assert_eq!(n.used(), 0);
    }

    #[test]
    fn an_image_whose_every_layer_is_held_elsewhere_frees_nothing_and_is_counted() {
        // Two images built on one base: the second's own layer is in the build cache.
        let t = tiny(
            vec![100 * MIB, 50 * MIB, 30 * MIB],
            vec![vec![0, 1], vec![0, 2]],
            &[],
            1000 * MIB,
        );
        let mut n = Node::new(&t);
        assert_eq!(n.pull(0, T0_MS), Ok(150 * MIB));
        assert!(n.build(1, 1, 0, T0_MS));
        assert_eq!(n.remove(1, T0_MS), Removal::Removed(0));
        assert_eq!(n.stats.removed_nothing, 1);
        // A prune that keeps shared records (the classic store's) now frees the layer.
        assert_eq!(n.prune_cache(0, i64::MAX, false), 30 * MIB);
    }

    #[test]
    fn a_load_needs_room_for_its_tarball_and_its_layers_until_the_tarball_goes() {
        let t = tiny(vec![300 * MIB], vec![vec![0]], &[], 1000 * MIB);
        let mut n = Node::new(&t);
        n.set_other(500 * MIB, T0_MS);
        // 300 MiB of layers fit, but not with the 300 MiB tarball beside them.
        assert_eq!(n.load(0, 300 * MIB, T0_MS), Err(300 * MIB));
        n.set_other(300 * MIB, T0_MS);
        assert_eq!(n.load(0, 300 * MIB, T0_MS), Ok(300 * MIB));
        assert!(!n.is_present(0) && n.is_loading(0));
        assert_eq!(n.used(), 900 * MIB);
        n.loaded(0, T0_MS);
        assert!(n.is_present(0));
        n.settled(300 * MIB, T0_MS);
        assert_eq!(n.used(), 600 * MIB);
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
