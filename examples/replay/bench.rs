//! The traces of the real-binary benchmark (`scripts/bench-trace.sh`): short, time-compressed
//! traces that real programs replay on a real dockerd in minutes, generated here so that the
//! replay can run the very same traces through its models ([`generate`]), and written as JSON
//! for the benchmark's driver (`examples/trace_bench`, [`to_json`]).
//!
//! One second of such a trace stands for [`SCALE`] seconds of a node: the cleaners' intervals
//! and ages and the pods' back-off shrink by as much (`Trace::scale`). The model, one number
//! each: a catalog of `images` images, each a base layer of one of `families` families (shared,
//! as an OS and a runtime are) and a layer of its own; popularity Zipf with a rank that drifts;
//! uses a Poisson stream `gap_ms` apart, each running a container for a log-normal while; other
//! files walking between 3 % and 10 % of the disk. The catalog and the uses depend on the seed
//! only, so one seed's tarballs serve every disk size; the other files depend on the disk.

use serde_json::{Value, json};

use crate::rng::{Rng, Zipf};
use crate::trace::{ImageSpec, MIB, Parts, PullModel, T0_MS, Trace, Use};

/// Seconds of a node per second of a benchmark trace: the daemon's 300 s interval becomes 12 s,
/// its 120 s min age 4.8 s.
pub const SCALE: i64 = 25;

/// The benchmark's pulls are `docker load`s; throughput and settling measured on its runs
/// (the `load_s_mean` of the CSV, on a 2-core machine with other work).
pub const LOAD: PullModel = PullModel::Load {
    mib_per_s: 60.0,
    settle_ms: 300,
};

/// The share of a loop file's size that ext4 (4 KiB blocks, no blocks reserved) gives to data
/// (`f_blocks`): 769.8 of 800 MiB, 1538.2 of 1600 MiB.
const FS_SHARE: f64 = 0.9618;
/// What an empty such filesystem already uses (its journal's blocks): 16 MiB, counted with the
/// other files.
const JOURNAL_BYTES: u64 = 16 * MIB;

/// The knobs of a benchmark trace (the script's `IMAGES`, `USES`, `GAP_MS`).
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Images in the catalog.
    pub images: usize,
    /// Uses.
    pub uses: usize,
    /// Mean time between two uses, ms.
    pub gap_ms: f64,
    /// Disk size, MiB.
    pub disk_mib: u64,
    /// The catalog's unique bytes, MiB: the images' own layers are scaled to it, so that every
    /// seed's catalog weighs the same against a disk.
    pub catalog_mib: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            images: 40,
            uses: 120,
            gap_ms: 2500.0,
            disk_mib: 1600,
            catalog_mib: 1600,
        }
    }
}

/// Families of base layers.
const FAMILIES: usize = 4;
/// Zipf exponent of the images' popularity.
const ZIPF_S: f64 = 1.0;
/// Mean uses between two changes of popularity (an image jumps to a top rank).
const DRIFT_EVERY_USES: f64 = 15.0;

/// The benchmark trace of `seed` on a disk of `p.disk_mib`.
pub fn generate(p: &Params, seed: u64) -> Trace {
    let mut rng = Rng::new(seed, 0x0062_656e_6368);
    let mut layers: Vec<u64> = Vec::new();
    let mut layer = |rng: &mut Rng, median: f64, sigma: f64, lo: f64, hi: f64| {
        let mib = rng.lognormal(median, sigma, lo, hi);
        // Whole 4 KiB blocks; mib is at most a few hundred.
        layers.push(((mib * MIB as f64) as u64).div_ceil(4096) * 4096);
        layers.len() - 1
    };
    // A base (an OS and a runtime): 8 to 24 MiB; each image's own layer: 10 to 175 MiB, median
    // 35, so that images weigh 20 to about 190 MiB.
    let bases: Vec<usize> = (0..FAMILIES)
        .map(|_| layer(&mut rng, 14.0, 0.3, 8.0, 24.0))
        .collect();
    let family = Zipf::new(FAMILIES, 1.0);
    let images: Vec<ImageSpec> = (0..p.images)
        .map(|i| {
            let base = bases[family.sample(&mut rng)];
            let own = layer(&mut rng, 35.0, 0.75, 10.0, 175.0);
            ImageSpec {
                id: format!("sha256:{:064x}", i + 1),
                tag: format!("bench/i{i:02}:1"),
                layers: vec![base, own],
                created_s: T0_MS / 1000 - 86_400,
            }
        })
        .collect();
    // Scale the own layers so that the catalog weighs `catalog_mib` (within their bounds).
    let base_bytes: u64 = bases.iter().map(|b| layers[*b]).sum();
    let own_bytes: u64 = layers.iter().sum::<u64>() - base_bytes;
    let factor = (p.catalog_mib * MIB).saturating_sub(base_bytes) as f64 / own_bytes.max(1) as f64;
    for (l, bytes) in layers.iter_mut().enumerate() {
        if !bases.contains(&l) {
            let scaled = (*bytes as f64 * factor).clamp(10.0 * MIB as f64, 180.0 * MIB as f64);
            *bytes = (scaled as u64).div_ceil(4096) * 4096;
        }
    }
    let mut ranks: Vec<usize> = (0..p.images).collect();
    for i in (1..ranks.len()).rev() {
        ranks.swap(i, rng.below(i + 1));
    }
    let zipf = Zipf::new(p.images, ZIPF_S);
    let mut uses = Vec::with_capacity(p.uses);
    let mut t = T0_MS;
    for _ in 0..p.uses {
        t += (rng.exp(p.gap_ms) as i64).max(1);
        if rng.chance(1.0 / DRIFT_EVERY_USES) {
            let a = rng.below(p.images);
            let b = zipf.sample(&mut rng);
            ranks.swap(a, b);
        }
        // A session of 3 s to a minute, median 12 s (5 minutes of a node).
        let lifetime_ms = (rng.lognormal(12.0, 0.8, 3.0, 60.0) * 1000.0) as i64;
        uses.push(Use {
            t_ms: t,
            image: ranks[zipf.sample(&mut rng)],
            lifetime_ms,
        });
    }
    let nominal = p.disk_mib * MIB;
    // The other files: a stream of their own, so the catalog and uses do not depend on the disk.
    let mut orng = Rng::new(seed, 0x006f_7468_6572);
    let other_start = nominal / 20;
    let mut other = other_start as f64;
    let mut others = Vec::new();
    let end_ms = t + 70_000;
    let step_ms = 600_000 / SCALE;
    let mut at = T0_MS + step_ms;
    while at < end_ms {
        other = (other + orng.normal() * 0.005 * nominal as f64)
            .clamp(0.03 * nominal as f64, 0.10 * nominal as f64);
        others.push((at, (other as u64) / 4096 * 4096 + JOURNAL_BYTES));
        at += step_ms;
    }
    Trace::assemble(
        Parts {
            shape: "bench",
            seed,
            layers,
            images,
            uses,
            others,
            other_start: other_start / 4096 * 4096 + JOURNAL_BYTES,
            capacity: (nominal as f64 * FS_SHARE) as u64 / 4096 * 4096,
            end_ms,
            restarts: Vec::new(),
            builds: Vec::new(),
            pull: LOAD,
            scale: SCALE,
        },
        None,
    )
}

/// The disk a trace was made for, MiB (its capacity is what ext4 leaves of it).
fn p_disk(t: &Trace) -> u64 {
    ((t.capacity as f64 / FS_SHARE) / MIB as f64).round() as u64
}

/// One line about a trace: its catalog, the images its uses need, and the disk.
pub fn describe(t: &Trace) -> String {
    let mut used = vec![false; t.images.len()];
    for u in &t.uses {
        used[u.image] = true;
    }
    let mut held = vec![false; t.layers.len()];
    for (i, image) in t.images.iter().enumerate() {
        if used[i] {
            for l in &image.layers {
                held[*l] = true;
            }
        }
    }
    let used_bytes: u64 = (0..t.layers.len())
        .filter(|l| held[*l])
        .map(|l| t.layers[l])
        .sum();
    format!(
        "catalog {} MiB in {} images; the uses need {} images, {} MiB; disk {} MiB",
        t.catalog_bytes / MIB,
        t.images.len(),
        used.iter().filter(|u| **u).count(),
        used_bytes / MIB,
        p_disk(t)
    )
}

/// The trace as the driver reads it: times in ms from the start, sizes in bytes.
pub fn to_json(t: &Trace, p: &Params) -> Value {
    json!({
        "seed": t.seed,
        "scale": t.scale,
        "disk_mib": p.disk_mib,
        "catalog_mib": p.catalog_mib,
        "images_count": p.images,
        "uses_count": p.uses,
        "gap_ms": p.gap_ms,
        "layers": t.layers,
        "images": t.images.iter().map(|i| json!({"tag": i.tag, "layers": i.layers})).collect::<Vec<_>>(),
        "uses": t.uses.iter().map(|u| json!({
            "at_ms": u.t_ms - T0_MS, "image": u.image, "lifetime_ms": u.lifetime_ms,
        })).collect::<Vec<_>>(),
        "other_start": t.other_start - JOURNAL_BYTES,
        "others": t.others.iter().map(|(at, b)| json!({"at_ms": at - T0_MS, "bytes": b - JOURNAL_BYTES})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_and_uses_depend_on_the_seed_only() {
        let small = generate(
            &Params {
                disk_mib: 800,
                ..Params::default()
            },
            3,
        );
        let large = generate(&Params::default(), 3);
        assert_eq!(small.layers, large.layers);
        assert!(
            small
                .uses
                .iter()
                .zip(&large.uses)
                .all(|(a, b)| (a.t_ms, a.image, a.lifetime_ms) == (b.t_ms, b.image, b.lifetime_ms))
        );
        assert_ne!(small.capacity, large.capacity);
        let other = generate(&Params::default(), 4);
        assert_ne!(other.layers, large.layers);
        // Images of 20 to about 200 MiB.
        for i in 0..large.images.len() {
            let b = large.image_bytes(i);
            assert!((18 * MIB..200 * MIB).contains(&b), "image {i}: {b}");
        }
    }
}
