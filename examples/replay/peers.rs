//! The peers' rules, as `/work/shared/reference/peers.md` documents them (each rule says where it
//! comes from there), and Belady's offline optimum.

use std::collections::HashMap;

use crate::node::Removal;
use crate::ours::Ours;
use crate::sim::{Cleaner, Notice, World};

/// The kubelet's image garbage collector (peers.md §5, "The kubelet's image GC
/// (pkg/kubelet/images/image_gc_manager.go)", and the feature table's rows).
pub struct Kubelet {
    /// image -> (first detected, last seen in use; `None`: never).
    records: HashMap<usize, (i64, Option<i64>)>,
    /// The trace's time compression: its period and min age shrink by it.
    scale: i64,
}

/// `imageGCHighThresholdPercent` default 85.
const KUBELET_HIGH_PCT: u64 = 85;
/// `imageGCLowThresholdPercent` default 80.
const KUBELET_LOW_PCT: u64 = 80;
/// `imageMinimumGCAge` default 2m, counted from firstDetected.
const KUBELET_MIN_AGE_MS: i64 = 120_000;
/// "GC every 5 min (`ImageGCPeriod`); detectImages every 5 min".
const KUBELET_PERIOD_MS: i64 = 300_000;

impl Kubelet {
    /// A kubelet that has just started, on a trace compressed by `scale`.
    pub fn new(scale: i64) -> Self {
        Kubelet {
            records: HashMap::new(),
            scale: scale.max(1),
        }
    }

    /// detectImages: new images get firstDetected = now; images a container uses get
    /// lastUsed = now. Images used only between two detections are never seen in use.
    fn detect(&mut self, w: &World<'_>) {
        let present: Vec<usize> = w.node.present_images().collect();
        self.records.retain(|i, _| w.node.is_present(*i));
        for i in present {
            let r = self.records.entry(i).or_insert((w.now, None));
            if w.node.in_use(i) {
                r.1 = Some(w.now);
            }
        }
    }

    fn garbage_collect(&mut self, w: &mut World<'_>) {
        w.node.stats.checks += 1;
        self.detect(w);
        // Integer percent of capacity, as cadvisor's figures are used.
        let capacity = w.node.capacity();
        let available = capacity - w.node.used();
        let usage_pct = 100 - available * 100 / capacity;
        if usage_pct < KUBELET_HIGH_PCT {
            return;
        }
        // "frees `capacity*(100-low)/100 - available`".
        let to_free = (capacity * (100 - KUBELET_LOW_PCT) / 100).saturating_sub(available);
        if to_free == 0 {
            return;
        }
        // "in order of `lastUsed` then `firstDetected`, skipping images younger than MinAge
        // and images any pod's container uses".
        let mut order: Vec<(Option<i64>, i64, usize)> = self
            .records
            .iter()
            .filter(|(i, _)| !w.node.in_use(**i))
            .map(|(i, (first, last))| (*last, *first, *i))
            .collect();
        order.sort();
        let started = w.now;
        let mut freed = 0u64;
        let mut removed_any = false;
        for (_, first, image) in order {
            if w.now - first < KUBELET_MIN_AGE_MS / self.scale {
                continue;
            }
            if let Removal::Removed(_) = w.remove(image) {
                removed_any = true;
                self.records.remove(&image);
                // "adding up runtime-reported sizes without re-measuring": shared layers
                // counted in full, so it stops before the disk has freed that much.
                freed += w.trace().image_bytes(image);
                if freed >= to_free {
                    break;
                }
            }
        }
        w.node.stats.busy_ms += w.now - started;
        if removed_any {
            w.node.stats.cleanings += 1;
        }
    }
}

impl Cleaner for Kubelet {
    fn interval_ms(&self) -> Option<i64> {
        Some(KUBELET_PERIOD_MS / self.scale)
    }

    fn notice(&mut self, w: &mut World<'_>, notice: Notice) {
        match notice {
            Notice::Tick => self.garbage_collect(w),
            // "`lastUsed` lives in memory only" / "after a restart `firstDetected=now` and
            // `lastUsed` is lost".
            Notice::Restart => self.records.clear(),
            _ => {}
        }
    }
}

/// Our cleaner in front of the kubelet's image GC on the same node, each at its own settings: a
/// CRI engine (`kind = "cri"`) beside the kubelet, both removing through the one runtime. Both
/// run every 5 minutes (our `interval_seconds` and the kubelet's `ImageGCPeriod`), ours first
/// at each tick; ours also reacts to pulls. A restart restarts both: the kubelet forgets its
/// last uses, ours keeps them (the state file).
pub struct BesideKubelet {
    ours: Ours,
    kubelet: Kubelet,
}

impl BesideKubelet {
    /// `ours` in front of a kubelet that has just started.
    pub fn new(ours: Ours, scale: i64) -> Self {
        BesideKubelet {
            ours,
            kubelet: Kubelet::new(scale),
        }
    }
}

impl Cleaner for BesideKubelet {
    fn interval_ms(&self) -> Option<i64> {
        // One tick drives both: the world has one interval, and both periods are 5 minutes.
        debug_assert_eq!(self.ours.interval_ms(), Some(KUBELET_PERIOD_MS));
        Some(KUBELET_PERIOD_MS)
    }

    fn notice(&mut self, w: &mut World<'_>, notice: Notice) {
        self.ours.notice(w, notice);
        if matches!(notice, Notice::Tick | Notice::Restart) {
            self.kubelet.notice(w, notice);
        }
    }
}

/// docuum 0.27 (peers.md §5 "docuum's rule (src/run.rs)" and the feature table; the details
/// from its source, `src/run.rs`).
pub struct Docuum {
    /// image -> last use, as its state file holds it.
    state: HashMap<usize, i64>,
    /// `--threshold` as a share of the filesystem (its `N%` form).
    threshold_pct: u64,
}

/// docuum's `LAST_USED_GRANULARITY`: a last use is written at most once a minute per image.
/// A constant of the program, so not scaled with the trace.
const DOCUUM_GRANULARITY_MS: i64 = 60_000;
/// What a vacuum costs in time: it runs `docker image ls`, `container ls`, `container inspect`
/// and `system df` (measured on the real-binary benchmark: about 0.4 s on a loaded machine),
/// and per deletion `docker image rm` and `system df` again.
const DOCUUM_VACUUM_MS: i64 = 400;
const DOCUUM_DELETION_MS: i64 = 400;

impl Docuum {
    /// docuum with `--threshold <pct>%`.
    pub fn new(threshold_pct: u64) -> Self {
        Docuum {
            state: HashMap::new(),
            threshold_pct,
        }
    }

    /// `touch_image`: a new image gets an entry (and the caller vacuums); a known one is
    /// updated when its last use is a minute old or more.
    fn touch(&mut self, image: usize, now: i64) -> bool {
        match self.state.get_mut(&image) {
            None => {
                self.state.insert(image, now);
                true
            }
            Some(t) => {
                if now - *t >= DOCUUM_GRANULARITY_MS {
                    *t = now;
                }
                false
            }
        }
    }

    /// `vacuum`: every image present is ranked by its last use (an image in use counts as used
    /// now, one not in the state as used now); in-use images are skipped; the least recently
    /// used go one at a time (`--deletion-chunk-size` 1), `docker system df` measured after
    /// each, until the images' bytes (shared layers once, not the filesystem) are at or below
    /// the threshold, which is a share of the filesystem's size. No min age by default. The
    /// state becomes the images left, with those last uses.
    fn vacuum(&mut self, w: &mut World<'_>) {
        w.node.stats.checks += 1;
        let threshold = w.node.capacity() / 100 * self.threshold_pct;
        let started = w.now;
        let now = w.now;
        let present: Vec<usize> = w.node.present_images().collect();
        let mut ranked: Vec<(i64, usize)> = present
            .iter()
            .map(|i| {
                let t = self.state.get(i).copied().unwrap_or(now);
                (if w.node.in_use(*i) { now.max(t) } else { t }, *i)
            })
            .collect();
        ranked.sort();
        self.state = ranked.iter().map(|(t, i)| (*i, *t)).collect();
        w.advance(DOCUUM_VACUUM_MS / w.trace().scale.max(1));
        let mut removed_any = false;
        for (_, image) in ranked {
            if w.node.image_bytes() <= threshold {
                break;
            }
            if w.node.in_use(image) {
                continue;
            }
            if let Removal::Removed(_) = w.remove(image) {
                removed_any = true;
                self.state.remove(&image);
            }
            w.advance(DOCUUM_DELETION_MS / w.trace().scale.max(1));
        }
        w.node.stats.busy_ms += w.now - started;
        if removed_any {
            w.node.stats.cleanings += 1;
        }
    }
}

impl Cleaner for Docuum {
    fn interval_ms(&self) -> Option<i64> {
        // "vacuums at start and whenever an event names an image it has not seen before": no
        // interval.
        None
    }

    fn notice(&mut self, w: &mut World<'_>, notice: Notice) {
        let (Notice::Started(image) | Notice::Ended(image) | Notice::Pulled(image)) = notice else {
            return;
        };
        // Every event naming an image it has not seen starts a vacuum.
        if w.node.is_present(image) && self.touch(image, w.now) {
            self.vacuum(w);
        }
    }
}

/// Belady's offline optimum: no passes; the world evicts for it, on demand, the images used
/// farthest in the future ([`World`]'s `evict_for`), with the whole disk to use.
pub struct Belady;

impl Cleaner for Belady {
    fn interval_ms(&self) -> Option<i64> {
        None
    }

    fn notice(&mut self, _: &mut World<'_>, _: Notice) {}

    fn is_oracle(&self) -> bool {
        true
    }
}
