//! Another client's view of dockerd while a pass runs, and the load that makes dockerd busy:
//! the probe (latencies of an image list every so often), the load workers (images loaded and
//! deleted in a loop through the API, as pulls and builds do on a busy node) and the disk
//! writer (a file on the same filesystem rewritten and flushed in a loop, as logs and writable
//! layers do). Every thread stops when told and joins. Must not: touch anything but the
//! workers' own images and the writer's own file.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::api::Api;

/// Latencies of another client's requests, with their median and tail.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    /// Every sample.
    pub samples: Vec<Duration>,
    /// Requests that failed.
    pub errors: usize,
}

impl Latencies {
    /// The `q` quantile (0..=1), nearest rank; zero without samples.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        if s.is_empty() {
            return Duration::ZERO;
        }
        // Nearest rank, clamped into 1..=len whatever q is.
        let rank = ((s.len() as f64 * q).ceil() as usize).clamp(1, s.len());
        s[rank - 1]
    }

    /// The slowest sample.
    pub fn max(&self) -> Duration {
        self.samples.iter().copied().max().unwrap_or_default()
    }
}

/// A thread that asks dockerd for `GET /images/json` (the image list the kubelet's image
/// statistics and garbage collection ask for; here every `every`) until stopped, and keeps the
/// latencies: it goes through the image store the removals change.
pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Latencies>,
}

impl Probe {
    /// Starts probing.
    pub fn start(api: &Api, every: Duration) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let api = api.clone();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut l = Latencies::default();
            while !flag.load(Ordering::Relaxed) {
                let start = Instant::now();
                match api.request("GET", "/images/json", &[]) {
                    Ok((200, _)) => l.samples.push(start.elapsed()),
                    _ => l.errors += 1,
                }
                if let Some(rest) = every.checked_sub(start.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            l
        });
        Probe { stop, thread }
    }

    /// Stops and returns what it saw.
    pub fn stop(self) -> Latencies {
        self.stop.store(true, Ordering::Relaxed);
        joined(self.thread, "the probe")
    }
}

/// Threads that each load an image of their own (a tarball in docker-save format) and delete
/// it again, in a loop, and one that rewrites a file and flushes it, until stopped: the disk
/// and lock traffic of a node that pulls and builds while the cleaner works.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Latencies>>,
    writer: Option<(PathBuf, JoinHandle<Latencies>)>,
}

/// How much the disk writer writes before each flush, and the size of its file.
const WRITE_CHUNK: usize = 4 << 20;
const WRITE_FILE: u64 = 64 << 20;

/// One load worker: its tarball and the tag it holds.
#[derive(Debug, Clone)]
pub struct Worker {
    /// The tarball, in docker-save format.
    pub tar: Arc<Vec<u8>>,
    /// The one tag it loads.
    pub tag: String,
}

impl Load {
    /// Starts one thread per worker, and the disk writer on `write_to` (a file it creates and
    /// removes) when set.
    pub fn start(api: &Api, workers: &[Worker], write_to: Option<&Path>) -> anyhow::Result<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = workers
            .iter()
            .cloned()
            .map(|w| {
                let api = api.clone();
                let flag = stop.clone();
                std::thread::spawn(move || {
                    let mut l = Latencies::default();
                    while !flag.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        match api.load(&w.tar).and_then(|()| api.remove(&w.tag)) {
                            Ok(()) => l.samples.push(start.elapsed()),
                            Err(_) => l.errors += 1,
                        }
                    }
                    l
                })
            })
            .collect();
        let writer = match write_to {
            None => None,
            Some(path) => {
                let file = OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let flag = stop.clone();
                Some((
                    path.to_path_buf(),
                    std::thread::spawn(move || write_loop(file, &flag)),
                ))
            }
        };
        Ok(Load {
            stop,
            threads,
            writer,
        })
    }

    /// Stops every worker after its current load and delete, and the writer after its current
    /// flush (its file removed); returns each worker cycle's latency and each flush's.
    pub fn stop(self) -> (Latencies, Latencies) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Latencies::default();
        for t in self.threads {
            let l = joined(t, "a load worker");
            all.samples.extend(l.samples);
            all.errors += l.errors;
        }
        let flushes = match self.writer {
            None => Latencies::default(),
            Some((path, t)) => {
                let l = joined(t, "the disk writer");
                if let Err(e) = std::fs::remove_file(&path) {
                    eprintln!("pass_cost: removing {}: {e}", path.display());
                }
                l
            }
        };
        (all, flushes)
    }
}

/// What a thread measured; a thread that panicked measured nothing, and says so.
fn joined(thread: JoinHandle<Latencies>, what: &str) -> Latencies {
    thread.join().unwrap_or_else(|_| {
        eprintln!("pass_cost: {what} thread panicked: its latencies are missing");
        Latencies::default()
    })
}

/// Rewrites `file` in chunks, cycling through its first [`WRITE_FILE`] bytes (so it never
/// grows past that), with an `fdatasync` after each chunk; returns the latency of each chunk.
fn write_loop(mut file: File, stop: &AtomicBool) -> Latencies {
    let mut l = Latencies::default();
    // Not zeros: the same bytes every time are as good as any for the disk. `i % 251` fits a u8.
    let chunk: Vec<u8> = (0..WRITE_CHUNK).map(|i| (i % 251) as u8).collect();
    let mut offset = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let wrote = file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| file.write_all(&chunk))
            .and_then(|()| file.sync_data());
        match wrote {
            Ok(()) => l.samples.push(start.elapsed()),
            Err(_) => l.errors += 1,
        }
        offset = (offset + WRITE_CHUNK as u64) % WRITE_FILE;
    }
    l
}
