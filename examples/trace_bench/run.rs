//! One run: a cleaner under test beside the pods of a trace, on a private dockerd. Each use is a
//! thread (a pod): at its time it looks for its image, loads the image's tarball when it is
//! missing (the pull), runs a container for the use's lifetime and removes it. A load that
//! fails is retried with the kubelet's image-pull back-off, scaled as the trace is, and the use
//! is lost after ten (scaled) minutes. Meanwhile a thread samples the filesystem's usage and
//! another sets the size of the other files. Only the cleaner removes images.
//!
//! Bytes are counted per layer, as the replay counts them: a pull writes the layers no image
//! on the node holds; a layer written before (and removed since) counts as re-pulled, one that
//! another pod's load wrote meanwhile counts for that load only. A pull that found the disk
//! full is charged what there was room for (at most what the image lacked), which a real pull
//! would have downloaded and thrown away; a lost use is charged its pull (another node makes
//! it).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use docker_image_cleaner::policy::headroom::KUBELET_EVICTION_PCT;
use docker_image_cleaner::usage::statvfs;

use crate::engine::{Engine, Loaded};
use crate::kube;
use crate::tarball::Registry;
use crate::trace::Trace;

/// What a run counted.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Uses (first attempts).
    pub uses: u64,
    /// Uses whose image was there.
    pub hits: u64,
    /// Uses whose container started.
    pub served: u64,
    /// Uses given up after ten scaled minutes of failed pulls.
    pub lost: u64,
    /// Loads that succeeded.
    pub pulls: u64,
    /// Bytes of layers loaded for the first time.
    pub cold_bytes: u64,
    /// Bytes of layers loaded again.
    pub again_bytes: u64,
    /// What failed loads would have downloaded before the disk ran out.
    pub wasted_bytes: u64,
    /// The pulls of lost uses.
    pub lost_bytes: u64,
    /// Loads that found the disk full.
    pub full: u64,
    /// Loads that failed otherwise.
    pub load_errors: u64,
    /// Containers that could not be created or started (the image present).
    pub run_errors: u64,
    /// Served uses that waited for a retry.
    pub waited: u64,
    /// Milliseconds they waited, in all.
    pub wait_ms: u64,
    /// Milliseconds the successful loads took, in all.
    pub load_ms: u64,
}

impl Stats {
    /// Bytes re-pulled, as the replay counts them.
    pub fn repulled(&self) -> u64 {
        self.again_bytes + self.wasted_bytes + self.lost_bytes
    }
}

/// A run's result.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The pods' counters.
    pub stats: Stats,
    /// Highest usage sampled, percent.
    pub peak_pct: f64,
    /// Time-weighted mean usage over the run, percent.
    pub mean_pct: f64,
    /// Share of the run the usage was above the kubelet's default image-filesystem eviction
    /// threshold (`imagefs.available<15%`), percent: on a node, time its pods may be evicted.
    pub above_eviction_pct: f64,
    /// Cordons, cordon seconds and node PATCHes seen by the fake API.
    pub cordons: u64,
    /// Seconds cordoned.
    pub cordon_s: f64,
    /// PATCHes of the node.
    pub patches: u64,
    /// The node was still cordoned when the cleaner had stopped.
    pub left_cordoned: bool,
    /// Images present at the end.
    pub images_end: u64,
    /// The cleaner was still running when the trace ended.
    pub cleaner_alive: bool,
    /// Seconds from the first use to the last container's end.
    pub run_s: f64,
}

/// What a run needs.
pub struct Setup {
    /// The dockerd.
    pub engine: Engine,
    /// The trace.
    pub trace: Trace,
    /// Its tarballs.
    pub registry: Registry,
    /// A path on the filesystem to measure (the data root).
    pub measure: PathBuf,
    /// The other files (on the same filesystem, outside the data root).
    pub filler: PathBuf,
    /// The cleaner, ready to spawn (its environment set).
    pub cleaner: Command,
    /// Where its output goes.
    pub log: PathBuf,
    /// The fake API server.
    pub api: kube::Server,
    /// Seconds the cleaner runs before the first use.
    pub head_start: Duration,
}

struct Shared {
    measure: PathBuf,
    stats: Mutex<Stats>,
    /// The loads that succeeded so far (an epoch), and per layer the epoch of the load that
    /// last wrote it: a layer written by another pod's load after this pod looked is not
    /// re-pulled (two pods of one family loading at once both found the base layer missing).
    written: Mutex<(u64, Vec<Option<u64>>)>,
    locks: Vec<Mutex<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A pod thread that panicked leaves its counts as they were.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the trace with the cleaner of `setup`.
pub fn run(setup: Setup) -> anyhow::Result<Outcome> {
    let mut setup = setup;
    let trace = Arc::new(setup.trace.clone());
    let registry = Arc::new(setup.registry);
    let log = File::create(&setup.log)?;
    let mut child = setup
        .cleaner
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the cleaner")?;
    std::thread::sleep(setup.head_start);
    let shared = Arc::new(Shared {
        measure: setup.measure.clone(),
        stats: Mutex::new(Stats::default()),
        written: Mutex::new((0, vec![None; trace.layers.len()])),
        locks: trace.images.iter().map(|_| Mutex::new(())).collect(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let sampler = {
        let (stop, path) = (Arc::clone(&stop), setup.measure.clone());
        std::thread::spawn(move || sample(&path, &stop))
    };
    let others = {
        let (stop, trace, filler, measure) = (
            Arc::clone(&stop),
            Arc::clone(&trace),
            setup.filler.clone(),
            setup.measure.clone(),
        );
        std::thread::spawn(move || set_others(&trace, &filler, &measure, t0, &stop))
    };
    let pods: Vec<_> = (0..trace.uses.len())
        .map(|k| {
            let (trace, shared, engine, registry) = (
                Arc::clone(&trace),
                Arc::clone(&shared),
                setup.engine.clone(),
                Arc::clone(&registry),
            );
            std::thread::spawn(move || pod(&trace, k, &shared, &engine, &registry, t0))
        })
        .collect();
    for p in pods {
        let _ = p.join();
    }
    let run_s = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (peak_pct, mean_pct, above_eviction_pct) = sampler.join().unwrap_or((0.0, 0.0, 0.0));
    let _ = others.join();
    let cleaner_alive = matches!(child.try_wait(), Ok(None));
    stop_cleaner(&mut child);
    let (record, left_cordoned) = setup.api.finish();
    let images_end = setup.engine.tags().map_or(0, |t| t.len() as u64);
    let stats = lock(&shared.stats).clone();
    Ok(Outcome {
        stats,
        peak_pct,
        mean_pct,
        above_eviction_pct,
        cordons: record.cordons,
        cordon_s: record.cordoned_s,
        patches: record.patches,
        left_cordoned,
        images_end,
        cleaner_alive,
        run_s,
    })
}

/// SIGTERM, then SIGKILL after 30 s.
fn stop_cleaner(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        if let Some(pid) = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// The pod of use `k`.
fn pod(
    trace: &Trace,
    k: usize,
    shared: &Shared,
    engine: &Engine,
    registry: &Registry,
    t0: Instant,
) {
    let u = trace.uses[k];
    let image = &trace.images[u.image];
    let scale = trace.scale.max(1);
    let backoff_start = 10_000 / scale;
    let backoff_max = 300_000 / scale;
    let give_up = 600_000 / scale;
    sleep_until(t0, u.at_ms);
    let first = Instant::now();
    let mut attempt: u32 = 0;
    let mut counted = false;
    loop {
        let guard = lock(&shared.locks[u.image]);
        let present = engine.has(&image.tag).unwrap_or(false);
        if !counted {
            counted = true;
            let mut s = lock(&shared.stats);
            s.uses += 1;
            s.hits += u64::from(present);
        }
        let mut failed = None;
        if !present {
            let seen = lock(&shared.written).0;
            let (missing, room) = missing(trace, engine, u.image, &shared.measure);
            let (loaded, took) = match registry.tarball(u.image) {
                Ok(tar) => {
                    let at = Instant::now();
                    (engine.load(&tar), at.elapsed())
                }
                Err(e) => (
                    Loaded::Failed(format!("making the tarball: {e:#}")),
                    Duration::ZERO,
                ),
            };
            match loaded {
                Loaded::Ok => {
                    let mut s = lock(&shared.stats);
                    let mut written = lock(&shared.written);
                    s.pulls += 1;
                    s.load_ms += u64::try_from(took.as_millis()).unwrap_or(0);
                    written.0 += 1;
                    let epoch = written.0;
                    for l in &missing {
                        let bytes = trace.layers[*l];
                        match written.1[*l].replace(epoch) {
                            None => s.cold_bytes += bytes,
                            // Written before this pod looked, and missing when it did: removed
                            // since, so loaded again.
                            Some(at) if at <= seen => s.again_bytes += bytes,
                            // Written by a load that finished after this pod looked: that load
                            // wrote it (and counted it), not this one.
                            Some(_) => {}
                        }
                    }
                }
                Loaded::Full => {
                    let lacking: u64 = missing.iter().map(|l| trace.layers[*l]).sum();
                    let mut s = lock(&shared.stats);
                    s.full += 1;
                    s.wasted_bytes += room.min(lacking);
                    failed = Some(lacking);
                }
                Loaded::Failed(why) => {
                    eprintln!("use {k}: load of {} failed: {why:.300}", image.tag);
                    lock(&shared.stats).load_errors += 1;
                    failed = Some(missing.iter().map(|l| trace.layers[*l]).sum());
                }
            }
        }
        drop(guard);
        if failed.is_none() {
            match engine.run(&image.tag, &format!("use-{k}-{attempt}")) {
                Ok(Some(id)) => {
                    {
                        let mut s = lock(&shared.stats);
                        s.served += 1;
                        if attempt > 0 {
                            s.waited += 1;
                            s.wait_ms += u64::try_from(first.elapsed().as_millis()).unwrap_or(0);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(
                        u64::try_from(u.lifetime_ms).unwrap_or(0),
                    ));
                    if let Err(e) = engine.remove_container(&id) {
                        eprintln!("use {k}: {e:#}");
                    }
                    return;
                }
                // Removed between the look and the start: look again at once.
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("use {k}: {e:#}");
                    lock(&shared.stats).run_errors += 1;
                    failed = Some(0);
                }
            }
        }
        let backoff = (backoff_start << attempt.min(10)).min(backoff_max);
        let waited = i64::try_from(first.elapsed().as_millis()).unwrap_or(i64::MAX);
        if waited + backoff > give_up {
            let mut s = lock(&shared.stats);
            s.lost += 1;
            s.lost_bytes += failed.unwrap_or(0);
            return;
        }
        std::thread::sleep(Duration::from_millis(u64::try_from(backoff).unwrap_or(0)));
        attempt += 1;
    }
}

/// The layers of `image` that no image present holds, and the bytes free on the disk now.
fn missing(trace: &Trace, engine: &Engine, image: usize, measure: &Path) -> (Vec<usize>, u64) {
    let tags: HashSet<String> = engine.tags().unwrap_or_default().into_iter().collect();
    let held: HashSet<usize> = trace
        .images
        .iter()
        .filter(|i| tags.contains(&i.tag))
        .flat_map(|i| i.layers.iter().copied())
        .collect();
    let missing = trace.images[image]
        .layers
        .iter()
        .copied()
        .filter(|l| !held.contains(l))
        .collect();
    (missing, free_bytes(measure))
}

fn free_bytes(path: &Path) -> u64 {
    statvfs(path).map_or(0, |u| u.avail_bytes)
}

fn sleep_until(t0: Instant, at_ms: i64) {
    let at = t0 + Duration::from_millis(u64::try_from(at_ms).unwrap_or(0));
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// Samples usage every 200 ms until `stop`; returns the peak, the time-weighted mean and the
/// share of the samples above the kubelet's image-filesystem eviction threshold, percent.
fn sample(path: &Path, stop: &AtomicBool) -> (f64, f64, f64) {
    let (mut peak, mut sum, mut n, mut above) = (0f64, 0f64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        if let Ok(u) = statvfs(path) {
            peak = peak.max(u.blocks_used_pct);
            sum += u.blocks_used_pct;
            n += 1;
            above += u64::from(u.blocks_used_pct > KUBELET_EVICTION_PCT);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let n = n.max(1) as f64;
    (peak, sum / n, 100.0 * above as f64 / n)
}

/// Keeps the filler at the trace's size of other files (as much as fits).
fn set_others(trace: &Trace, filler: &Path, measure: &Path, t0: Instant, stop: &AtomicBool) {
    let Ok(file) = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(filler)
    else {
        eprintln!("cannot create {}", filler.display());
        return;
    };
    let mut changes = vec![(0, trace.other_start)];
    changes.extend(trace.others.iter().map(|o| (o.at_ms, o.bytes)));
    for (at_ms, bytes) in changes {
        while !stop.load(Ordering::Relaxed) && t0.elapsed().as_millis() < at_ms.max(0) as u128 {
            std::thread::sleep(Duration::from_millis(100));
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        resize(&file, bytes, measure);
    }
}

fn resize(file: &File, bytes: u64, measure: &Path) {
    let current = file.metadata().map_or(0, |m| m.len());
    if bytes <= current {
        let _ = file.set_len(bytes);
        return;
    }
    let grow =
        |len: u64| rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len).is_ok();
    if !grow(bytes) {
        // A full disk refuses writes: as much as fits.
        let room = free_bytes(measure).saturating_sub(1 << 20);
        let _ = grow(current + room);
    }
}
