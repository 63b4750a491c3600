//! The traces: a catalog of images made of layers (shared base layers, notebook-like sizes), and
//! the stream of uses one node sees, generated from a seed. A trace is data only; every policy
//! replays the same one.
//!
//! The model, one number each (why each is so is said where it is set):
//! - families of base images: an OS layer (two OS versions, shared across families), an
//!   environment layer (conda, R, ...), a Jupyter layer; each repository builds on one family
//!   and adds a dependencies layer and a code layer;
//! - repositories are ranked by a Zipf-like popularity; the ranks drift (a repository becomes
//!   popular, another falls back);
//! - uses arrive as a Poisson stream; a use runs a container for a log-normal while;
//! - new builds: a repository gets a new image (a new code layer, sometimes new dependencies)
//!   that takes over its popularity; the builder launches it at once (one use); older versions
//!   are still used now and then (old links);
//! - a base-image update (the burst shape): one family gets a new environment layer and all its
//!   repositories are rebuilt within an hour, every layer above the OS new;
//! - "other" files on the disk (logs, emptyDir volumes) walk between 3 % and 15 % of it.

use std::collections::HashMap;

use crate::rng::{Rng, Zipf};

/// 1 MiB.
pub const MIB: u64 = 1 << 20;
/// 1 GiB.
pub const GIB: u64 = 1 << 30;
/// The start of every trace: 2026-01-01T00:00:00Z, unix ms.
pub const T0_MS: i64 = 1_767_225_600_000;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Mean share of the disk taken by files other than images.
const OTHER_MEAN: f64 = 0.08;

/// The shape of a trace.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Name in the table, the CSV and the plot's file name.
    pub name: &'static str,
    /// One line for the table's heading.
    pub about: &'static str,
    /// Repositories in the catalog at the start.
    pub repos: usize,
    /// Zipf exponent of their popularity.
    pub zipf_s: f64,
    /// Share of the catalog's bytes (unique layers) that fits on the disk next to the mean
    /// "other" files.
    pub disk_fraction: f64,
    /// Mean seconds between two uses.
    pub mean_gap_s: f64,
    /// Mean seconds between two new builds (each adds a use).
    pub build_every_s: f64,
    /// Mean seconds between two popularity changes.
    pub drift_every_s: f64,
    /// A base-image update that rebuilds one family, at 40 % of the trace.
    pub base_update: bool,
    /// The node builds the new images itself (BuildKit, the classic store): each build writes
    /// its image and leaves build-cache records of its layers; otherwise they are pulled.
    pub builds_here: bool,
}

/// The three shapes.
pub fn shapes() -> Vec<Shape> {
    vec![
        Shape {
            name: "steady",
            about: "200 repositories, Zipf 1.0, the disk holds 30 % of the catalog, a use a minute",
            repos: 200,
            zipf_s: 1.0,
            disk_fraction: 0.30,
            mean_gap_s: 60.0,
            build_every_s: 2.0 * 3600.0,
            drift_every_s: 2.0 * 3600.0,
            base_update: false,
            builds_here: false,
        },
        Shape {
            name: "burst",
            about: "steady, plus a base-image update at 40 %: one family rebuilt within an hour",
            repos: 200,
            zipf_s: 1.0,
            disk_fraction: 0.30,
            mean_gap_s: 60.0,
            build_every_s: 2.0 * 3600.0,
            drift_every_s: 2.0 * 3600.0,
            base_update: true,
            builds_here: false,
        },
        Shape {
            name: "large",
            about: "working set larger than the disk: Zipf 0.6, the disk holds 15 % of the catalog",
            repos: 200,
            zipf_s: 0.6,
            disk_fraction: 0.15,
            mean_gap_s: 60.0,
            build_every_s: 2.0 * 3600.0,
            drift_every_s: 2.0 * 3600.0,
            base_update: false,
            builds_here: false,
        },
        Shape {
            name: "builder",
            about: "steady, and the node builds every new image itself (a build every 20 min), with BuildKit's cache",
            repos: 200,
            zipf_s: 1.0,
            disk_fraction: 0.30,
            mean_gap_s: 60.0,
            build_every_s: 20.0 * 60.0,
            drift_every_s: 2.0 * 3600.0,
            base_update: false,
            builds_here: true,
        },
    ]
}

/// How a pull writes to the disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PullModel {
    /// At once, the layers the node lacks and nothing else (the fortnight shapes).
    Instant,
    /// As `docker load` does (the real-binary benchmark's pulls): the whole tarball is first
    /// unpacked into the data root's tmp dir, then the missing layers are applied from it; the
    /// load takes (tarball + missing layers) / `mib_per_s`, the image appears and its event is
    /// sent at the end, and the tmp dir goes `settle_ms` after that event. A load needs room
    /// for the tarball and the missing layers at once.
    Load {
        /// Throughput, MiB/s.
        mib_per_s: f64,
        /// From the event to the tmp dir's removal, ms.
        settle_ms: i64,
    },
}

/// A build on the node.
#[derive(Debug, Clone, Copy)]
pub struct Build {
    /// When.
    pub t_ms: i64,
    /// Index into [`Trace::images`].
    pub image: usize,
    /// The layers it built, from the top (the code, and the dependencies).
    pub built_layers: usize,
    /// Bytes of its cache mount (the package manager's cache), kept in the build cache.
    pub own_bytes: u64,
}

/// One image of the catalog.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// `sha256:…`, unique.
    pub id: String,
    /// `repository:tag`.
    pub tag: String,
    /// Layer indices, base first.
    pub layers: Vec<usize>,
    /// Build time, unix seconds.
    pub created_s: i64,
}

/// One use: a container of `image` starts at `t_ms` and runs for `lifetime_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Use {
    /// When the pod asks for the image.
    pub t_ms: i64,
    /// Index into [`Trace::images`].
    pub image: usize,
    /// How long the container runs once started.
    pub lifetime_ms: i64,
}

/// A generated trace.
#[derive(Debug)]
pub struct Trace {
    /// The shape's name.
    pub shape: &'static str,
    /// The seed.
    pub seed: u64,
    /// Bytes of each layer.
    pub layers: Vec<u64>,
    /// Every image that ever exists, in creation order.
    pub images: Vec<ImageSpec>,
    /// Image index by id.
    pub by_id: HashMap<String, usize>,
    /// Uses, in time order.
    pub uses: Vec<Use>,
    /// Changes of the bytes of other files: (time, new value), in time order.
    pub others: Vec<(i64, u64)>,
    /// Other files at the start.
    pub other_start: u64,
    /// Disk size, bytes (a multiple of 4096).
    pub capacity: u64,
    /// Unique bytes of the catalog at the start.
    pub catalog_bytes: u64,
    /// The end of the trace (the last use, plus the longest container).
    pub end_ms: i64,
    /// When the kubelet restarts (it loses its image records).
    pub restarts: Vec<i64>,
    /// The times each image is used, sorted (Belady's oracle).
    pub next_uses: Vec<Vec<i64>>,
    /// The images holding each layer.
    pub holders: Vec<Vec<usize>>,
    /// The builds made on the node, in time order (none unless the shape builds there).
    pub builds: Vec<Build>,
    /// How pulls write to the disk.
    pub pull: PullModel,
    /// Time compression: how many seconds of a real node one second of the trace stands for (1
    /// for the fortnight shapes; the real-binary benchmark's traces are compressed, and the
    /// cleaners' periods and ages, and the pods' back-off, shrink by as much).
    pub scale: i64,
}

impl Trace {
    /// Bytes of an image, shared layers counted in full (what Docker reports as its size).
    pub fn image_bytes(&self, image: usize) -> u64 {
        self.images[image]
            .layers
            .iter()
            .map(|l| self.layers[*l])
            .sum()
    }

    /// The first use of `image` at or after `t_ms`, if any.
    pub fn next_use(&self, image: usize, t_ms: i64) -> Option<i64> {
        let times = &self.next_uses[image];
        times.get(times.partition_point(|t| *t < t_ms)).copied()
    }
}

struct Family {
    os: usize,
    env: usize,
    jupyter: usize,
}

struct Repo {
    family: usize,
    /// Image indices, oldest first.
    versions: Vec<usize>,
}

struct Builder<'a> {
    rng: Rng,
    layers: Vec<u64>,
    images: Vec<ImageSpec>,
    families: Vec<Family>,
    repos: Vec<Repo>,
    uses: Vec<Use>,
    builds: Vec<Build>,
    shape: &'a Shape,
}

impl Builder<'_> {
    fn layer(&mut self, median_mib: f64, sigma: f64, lo_mib: f64, hi_mib: f64) -> usize {
        let mib = self.rng.lognormal(median_mib, sigma, lo_mib, hi_mib);
        // Whole 4 KiB blocks, as a filesystem allocates; mib is at most a few thousand.
        let bytes = ((mib * MIB as f64) as u64).div_ceil(4096) * 4096;
        self.layers.push(bytes);
        self.layers.len() - 1
    }

    /// A family's environment and Jupyter layers (a new base image).
    fn base(&mut self) -> (usize, usize) {
        // conda or R environments: a few hundred MiB to 1.5 GiB.
        let env = self.layer(450.0, 0.5, 150.0, 1500.0);
        let jupyter = self.layer(150.0, 0.5, 50.0, 600.0);
        (env, jupyter)
    }

    /// A new image of `repo` built at `t_ms`; `new_deps`: its dependencies layer is rebuilt.
    fn build(&mut self, repo: usize, t_ms: i64, new_deps: bool) -> usize {
        let f = &self.families[self.repos[repo].family];
        let (os, env, jupyter) = (f.os, f.env, f.jupyter);
        let previous = self.repos[repo].versions.last().copied();
        let deps = match previous {
            Some(p) if !new_deps && self.images[p].layers[1] == env => self.images[p].layers[3],
            // Per-repository packages: median 500 MiB, up to 5 GiB (notebook images with
            // TensorFlow or CUDA libraries).
            _ => self.layer(500.0, 0.9, 10.0, 5120.0),
        };
        let code = self.layer(20.0, 1.2, 1.0, 1024.0);
        let idx = self.images.len();
        let version = self.repos[repo].versions.len();
        self.images.push(ImageSpec {
            id: format!("sha256:{:064x}", idx + 1),
            tag: format!("repo{repo:03}:v{version}"),
            layers: vec![os, env, jupyter, deps, code],
            created_s: t_ms.div_euclid(1000),
        });
        self.repos[repo].versions.push(idx);
        if self.shape.builds_here && t_ms >= T0_MS {
            // A cache mount of about a third of the packages when they are installed again.
            let own_bytes = if new_deps || previous.is_none() {
                self.layers[deps] / 3 / 4096 * 4096
            } else {
                0
            };
            self.builds.push(Build {
                t_ms,
                image: idx,
                built_layers: 2,
                own_bytes,
            });
        }
        idx
    }

    fn lifetime_ms(&mut self) -> i64 {
        // A notebook session: median 10 minutes, from one minute to three hours.
        (self.rng.lognormal(10.0, 1.0, 1.0, 180.0) * MINUTE_MS as f64) as i64
    }

    fn use_at(&mut self, t_ms: i64, image: usize) {
        let lifetime_ms = self.lifetime_ms();
        self.uses.push(Use {
            t_ms,
            image,
            lifetime_ms,
        });
    }
}

/// Generates the trace of `shape` for `seed` with `uses` uses.
pub fn generate(shape: &Shape, seed: u64, uses: usize) -> Trace {
    let mut b = Builder {
        rng: Rng::new(seed, 0x0074_7261_6365),
        layers: Vec::new(),
        images: Vec::new(),
        families: Vec::new(),
        repos: Vec::new(),
        uses: Vec::new(),
        builds: Vec::new(),
        shape,
    };
    // Two OS versions (ubuntu 22.04 and 24.04 sized), shared by all families.
    let oses = [
        b.layer(75.0, 0.1, 60.0, 90.0),
        b.layer(80.0, 0.1, 60.0, 90.0),
    ];
    for f in 0..6 {
        let (env, jupyter) = b.base();
        b.families.push(Family {
            os: oses[f % 2],
            env,
            jupyter,
        });
    }
    // Families by popularity too: most repositories use the default base.
    let family_zipf = Zipf::new(b.families.len(), 1.0);
    for _ in 0..shape.repos {
        let family = family_zipf.sample(&mut b.rng);
        b.repos.push(Repo {
            family,
            versions: Vec::new(),
        });
    }
    for r in 0..shape.repos {
        // Built up to 60 days before the trace starts.
        let built = T0_MS - (b.rng.between(1.0, 60.0) * DAY_MS as f64) as i64;
        b.build(r, built, true);
    }
    let catalog_bytes = unique_bytes(&b.layers, &b.images);
    let capacity = ((shape.disk_fraction * catalog_bytes as f64 / (1.0 - OTHER_MEAN)) as u64)
        .div_euclid(4096)
        * 4096;

    // rank -> repository; a shuffle first.
    let mut ranks: Vec<usize> = (0..shape.repos).collect();
    for i in (1..ranks.len()).rev() {
        let j = b.rng.below(i + 1);
        ranks.swap(i, j);
    }
    let zipf = Zipf::new(shape.repos, shape.zipf_s);
    let duration_ms = (uses as f64 * shape.mean_gap_s * 1000.0) as i64;
    let burst_at = shape.base_update.then_some(T0_MS + duration_ms * 2 / 5);
    let mut burst_done = false;

    let mut t = T0_MS;
    let mut next_build = T0_MS + (b.rng.exp(shape.build_every_s) * 1000.0) as i64;
    let mut next_drift = T0_MS + (b.rng.exp(shape.drift_every_s) * 1000.0) as i64;
    let mut others = Vec::new();
    let other_start = (OTHER_MEAN * capacity as f64) as u64;
    let mut other = other_start as f64;
    let mut next_other = T0_MS + 10 * MINUTE_MS;
    let mut planned = 0usize;
    while planned < uses {
        t += (b.rng.exp(shape.mean_gap_s) * 1000.0) as i64 + 1;
        while next_build <= t {
            let repo = ranks[zipf.sample(&mut b.rng)];
            // A third of new builds change the dependencies; the rest only the code.
            let new_deps = b.rng.chance(0.3);
            let img = b.build(repo, next_build, new_deps);
            let launch = next_build + (b.rng.between(1.0, 5.0) * MINUTE_MS as f64) as i64;
            b.use_at(launch, img);
            planned += 1;
            next_build += (b.rng.exp(shape.build_every_s) * 1000.0) as i64 + 1;
        }
        while next_drift <= t {
            // A repository anywhere jumps to a popular rank, and the one there falls back.
            let a = b.rng.below(shape.repos);
            let c = zipf.sample(&mut b.rng);
            ranks.swap(a, c);
            next_drift += (b.rng.exp(shape.drift_every_s) * 1000.0) as i64 + 1;
        }
        while next_other <= t {
            other = (other + b.rng.normal() * 0.005 * capacity as f64)
                .clamp(0.03 * capacity as f64, 0.15 * capacity as f64);
            others.push((next_other, other as u64));
            next_other += 10 * MINUTE_MS;
        }
        if let Some(at) = burst_at
            && !burst_done
            && t >= at
        {
            burst_done = true;
            // The default base (family 0) is updated: every repository on it is rebuilt within
            // the hour, each layer above the OS new; half of them are launched right after.
            let (env, jupyter) = b.base();
            b.families[0].env = env;
            b.families[0].jupyter = jupyter;
            for repo in 0..shape.repos {
                if b.repos[repo].family == 0 {
                    let when = at + (b.rng.unit() * HOUR_MS as f64) as i64;
                    let img = b.build(repo, when, true);
                    if b.rng.chance(0.5) {
                        let launch = when + (b.rng.between(1.0, 5.0) * MINUTE_MS as f64) as i64;
                        b.use_at(launch, img);
                        planned += 1;
                    }
                }
            }
        }
        let repo = ranks[zipf.sample(&mut b.rng)];
        // Built images only: a version whose build is still in the future is not there yet.
        let versions: Vec<usize> = b.repos[repo]
            .versions
            .iter()
            .copied()
            .filter(|v| b.images[*v].created_s * 1000 <= t)
            .collect();
        let latest = versions.len() - 1;
        // One use in ten is an old link to an older version, when there is one.
        let pick = if latest > 0 && b.rng.chance(0.1) {
            versions[b.rng.below(latest)]
        } else {
            versions[latest]
        };
        b.use_at(t, pick);
        planned += 1;
    }
    let mut uses = b.uses;
    uses.sort_by_key(|u| (u.t_ms, u.image));
    let mut builds = b.builds;
    builds.sort_by_key(|x| (x.t_ms, x.image));
    let end_ms = uses.last().map_or(T0_MS, |u| u.t_ms) + 3 * HOUR_MS;
    let span = end_ms - T0_MS;
    Trace::assemble(
        Parts {
            shape: b.shape.name,
            seed,
            layers: b.layers,
            images: b.images,
            uses,
            others,
            other_start,
            capacity,
            end_ms,
            // The kubelet restarts twice (an upgrade, a node reboot).
            restarts: vec![T0_MS + span / 3, T0_MS + 2 * span / 3],
            builds,
            pull: PullModel::Instant,
            scale: 1,
        },
        Some(catalog_bytes),
    )
}

/// What a generator makes; [`Trace::assemble`] adds the indexes.
pub struct Parts {
    /// The shape's name.
    pub shape: &'static str,
    /// The seed.
    pub seed: u64,
    /// Bytes of each layer.
    pub layers: Vec<u64>,
    /// Every image, in creation order.
    pub images: Vec<ImageSpec>,
    /// Uses, in time order.
    pub uses: Vec<Use>,
    /// Changes of the other files.
    pub others: Vec<(i64, u64)>,
    /// Other files at the start.
    pub other_start: u64,
    /// Disk size.
    pub capacity: u64,
    /// The end of the trace.
    pub end_ms: i64,
    /// When the kubelet restarts.
    pub restarts: Vec<i64>,
    /// The builds on the node.
    pub builds: Vec<Build>,
    /// How pulls write.
    pub pull: PullModel,
    /// Time compression ([`Trace::scale`]).
    pub scale: i64,
}

impl Trace {
    /// The trace of `parts`, with its indexes (by id, next uses, holders); `catalog`: the
    /// unique bytes of the catalog at the start (default: every layer).
    pub fn assemble(parts: Parts, catalog: Option<u64>) -> Trace {
        let Parts {
            shape,
            seed,
            layers,
            images,
            uses,
            others,
            other_start,
            capacity,
            end_ms,
            restarts,
            builds,
            pull,
            scale,
        } = parts;
        let mut next_uses = vec![Vec::new(); images.len()];
        for u in &uses {
            next_uses[u.image].push(u.t_ms);
        }
        let mut holders = vec![Vec::new(); layers.len()];
        for (i, image) in images.iter().enumerate() {
            for l in &image.layers {
                holders[*l].push(i);
            }
        }
        let by_id = images
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        Trace {
            shape,
            seed,
            catalog_bytes: catalog.unwrap_or_else(|| layers.iter().sum()),
            layers,
            images,
            by_id,
            uses,
            others,
            other_start,
            capacity,
            end_ms,
            restarts,
            next_uses,
            holders,
            builds,
            pull,
            scale,
        }
    }
}

fn unique_bytes(layers: &[u64], images: &[ImageSpec]) -> u64 {
    let mut seen = vec![false; layers.len()];
    let mut total = 0;
    for image in images {
        for l in &image.layers {
            if !std::mem::replace(&mut seen[*l], true) {
                total += layers[*l];
            }
        }
    }
    total
}

/// A hand-made trace for tests: `images` as layer lists, `uses` as (ms after the start, image,
/// lifetime ms); no other files, no restarts.
#[cfg(test)]
pub fn tiny(
    layers: Vec<u64>,
    images: Vec<Vec<usize>>,
    uses: &[(i64, usize, i64)],
    capacity: u64,
) -> Trace {
    let images: Vec<ImageSpec> = images
        .into_iter()
        .enumerate()
        .map(|(i, layers)| ImageSpec {
            id: format!("sha256:{:064x}", i + 1),
            tag: format!("img{i}:1"),
            layers,
            created_s: T0_MS / 1000 - 86_400,
        })
        .collect();
    let uses: Vec<Use> = uses
        .iter()
        .map(|(at, image, lifetime_ms)| Use {
            t_ms: T0_MS + at,
            image: *image,
            lifetime_ms: *lifetime_ms,
        })
        .collect();
    let end_ms = uses.last().map_or(T0_MS, |u| u.t_ms) + HOUR_MS;
    Trace::assemble(
        Parts {
            shape: "tiny",
            seed: 0,
            layers,
            images,
            uses,
            others: Vec::new(),
            other_start: 0,
            capacity,
            end_ms,
            restarts: Vec::new(),
            builds: Vec::new(),
            pull: PullModel::Instant,
            scale: 1,
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_deterministic_and_sized_like_notebooks() {
        let shape = &shapes()[1];
        let a = generate(shape, 3, 3000);
        let b = generate(shape, 3, 3000);
        assert_eq!(a.uses.len(), b.uses.len());
        assert!(
            a.uses
                .iter()
                .zip(&b.uses)
                .all(|(x, y)| x.t_ms == y.t_ms && x.image == y.image)
        );
        assert!(a.uses.len() >= 3000);
        assert!(a.uses.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
        let sizes: Vec<u64> = (0..a.images.len()).map(|i| a.image_bytes(i)).collect();
        let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(*lo >= 300 * MIB && *lo < GIB, "smallest {lo}");
        assert!(*hi > 3 * GIB, "largest {hi}");
        // Shared layers: the catalog's unique bytes are well below the sum of image sizes.
        let initial: u64 = sizes[..200].iter().sum();
        assert!(a.catalog_bytes * 10 < initial * 8);
        // The base-image update added rebuilds.
        assert!(a.images.len() > 230, "{}", a.images.len());
        // No use of an image before it is built.
        assert!(
            a.uses
                .iter()
                .all(|u| a.images[u.image].created_s * 1000 <= u.t_ms)
        );
    }
}
