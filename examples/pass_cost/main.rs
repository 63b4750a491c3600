//! Pass cost on a real dockerd: a benchmark, not a test. Run through `scripts/bench-pass.sh`,
//! which starts a private dockerd on a loop-mounted filesystem, makes the tarballs this program
//! loads, and tears everything down; this program never starts or stops a daemon.
//!
//! 1. Passes: a real `cycle::Pass` removes a set of images (loaded fresh before each pass)
//!    through an engine wrapper that times every call, with the real `PathMeter` (timed) and a
//!    guard that records when it would cordon and release. Three pauses between removals:
//!    `delay_seconds = 1` (the default), `0`, and `"adaptive"` (none after a removal answered
//!    within 250 ms, after a slower one a pause as long as it took, at most 10 s). Idle, then under load (workers loading and deleting images, a thread
//!    rewriting and flushing a file on the same filesystem). A
//!    probe asks dockerd for its image list every 100 ms throughout, as the kubelet does now
//!    and then: its latency is what the pause is there to protect.
//! 2. `status` with thousands of images: the built binary's `status` and `status --json` against
//!    `docker image ls -q` plus `docker ps -aq` on the same daemon, and where the time goes
//!    in-process (inventory, footprint walk, `policy::plan`, rendering).
//!
//! Prints tables of medians and writes `pass-cost.csv` and `status-cost.csv` (every run) to
//! `--out-dir`. Never asserts on wall-clock time.

mod api;
mod load;
mod report;
mod status_cost;
mod timed;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use docker_image_cleaner::clock::now_ms;
use docker_image_cleaner::config::{Config, Delay, EngineConfig, Floor, Watermarks};
use docker_image_cleaner::cycle::{Member, Pass, Quiet};
use docker_image_cleaner::docker::{DockerEngine, Engine};
use docker_image_cleaner::lastuse::LastUse;
use docker_image_cleaner::usage::{PathMeter, statvfs};
use tokio_util::sync::CancellationToken;

use api::Api;
use load::{Latencies, Load, Probe, Worker};
use report::{Baseline, PassRun, Variant};
use timed::{Recorder, TimedEngine, TimedMeter, Timeline};

/// The tag prefix of the set a pass removes.
const SET_PREFIX: &str = "bench/";
/// How long the probe alone runs for a baseline.
const BASELINE: Duration = Duration::from_secs(5);
/// How long the load runs before a loaded pass starts.
const RAMP: Duration = Duration::from_secs(1);

/// Pass cost on a real dockerd (see the module docs).
#[derive(Debug, Parser)]
struct Args {
    /// The private dockerd, `unix:///…/docker.sock`.
    #[arg(long)]
    docker_host: String,
    /// Its data root (what the pass measures).
    #[arg(long)]
    data_root: PathBuf,
    /// The set a pass removes: a docker-save tarball of images tagged `bench/…`.
    #[arg(long)]
    set_tar: PathBuf,
    /// How many images the set holds.
    #[arg(long)]
    images: usize,
    /// The images `status` lists: a docker-save tarball.
    #[arg(long)]
    many_tar: Option<PathBuf>,
    /// How many images that tarball holds (0: no `status` part).
    #[arg(long, default_value_t = 0)]
    many: usize,
    /// Rounds of each `status` command and of each in-process piece.
    #[arg(long, default_value_t = 7)]
    status_rounds: usize,
    /// A load worker's tarball, one image tagged `load/w<k>:1` for the k-th (from 1); repeat
    /// for more workers.
    #[arg(long = "load-tar")]
    load_tars: Vec<PathBuf>,
    /// Under load, a file on the data root's filesystem that a thread rewrites and flushes in a
    /// loop (created and removed around each loaded pass); none when not given.
    #[arg(long)]
    disk_writer: Option<PathBuf>,
    /// The built docker-image-cleaner.
    #[arg(long)]
    binary: PathBuf,
    /// The Docker CLI matching the daemon.
    #[arg(long)]
    docker_cli: PathBuf,
    /// The CLI's `--config` directory.
    #[arg(long)]
    cli_config: PathBuf,
    /// A scratch directory for the configuration file and state of `status`.
    #[arg(long)]
    work: PathBuf,
    /// Where the CSV files go.
    #[arg(long)]
    out_dir: PathBuf,
    /// Passes of delay 0 and of the adaptive pause on an idle daemon.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Passes of delay 0 and of the adaptive pause under load (0: no passes under load).
    #[arg(long, default_value_t = 3)]
    loaded_reps: usize,
    /// Passes of `delay_seconds = 1` (49 s of sleep for 50 images), idle and under load each.
    #[arg(long, default_value_t = 1)]
    slow_reps: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(&args))
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let api = Api::new(&args.docker_host)?;
    let docker = DockerEngine::connect(Some(&args.docker_host), Duration::from_secs(300))
        .await
        .context("connecting to the private dockerd")?;
    let load_avg = report::load_average();
    eprintln!(
        "pass_cost: load average at start {load_avg}, {} CPUs",
        report::cpus()
    );

    let set = api::read_tar(&args.set_tar)?;
    let workers: Vec<Worker> = args
        .load_tars
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Ok(Worker {
                tar: Arc::new(api::read_tar(p)?),
                tag: format!("load/w{}:1", i + 1),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    if args.loaded_reps > 0 && workers.is_empty() {
        bail!(
            "--loaded-reps {} needs at least one --load-tar",
            args.loaded_reps
        );
    }

    let variants = [
        Variant::Fixed(Duration::from_secs(1)),
        Variant::Fixed(Duration::ZERO),
        Variant::Adaptive,
    ];
    let mut runs = Vec::new();
    let mut baselines = Vec::new();
    // delay_seconds = 1 runs `slow_reps` times in each condition: a minute of sleep whose
    // length does not vary, and more probe samples than all the short passes together. Each
    // kind's passes sit in the middle of the rounds, so that a drift of the machine's load
    // touches every pause alike.
    let schedule = |loaded: bool| {
        let fast = if loaded { args.loaded_reps } else { args.reps };
        let slow = if fast == 0 { 0 } else { args.slow_reps };
        let rounds = fast.max(slow);
        let within = move |r: usize, n: usize| {
            let first = (rounds - n) / 2;
            r > first && r <= first + n
        };
        (1..=rounds).flat_map(move |r| {
            variants
                .into_iter()
                .filter(move |v| within(r, if *v == variants[0] { slow } else { fast }))
                .map(move |v| (r, v))
        })
    };
    let total = schedule(false).count() + schedule(true).count();
    let mut n = 0;
    for loaded in [false, true] {
        for (rep, variant) in schedule(loaded) {
            n += 1;
            let env = Env {
                args,
                api: &api,
                docker: &docker,
                set: &set,
                workers: &workers,
            };
            // The first pass of each kind is preceded by the probe (and the load) alone.
            let first_of_kind = !runs.iter().any(|r: &PassRun| r.loaded == loaded);
            let baseline = first_of_kind.then_some(&mut baselines);
            let run = env.one_pass(variant, loaded, rep, baseline).await?;
            eprintln!(
                "pass_cost: pass {n}/{total}: {}{}: {} images in {:.2} s",
                variant.name(),
                if loaded { ", under load" } else { "" },
                run.removed,
                run.wall.as_secs_f64()
            );
            runs.push(run);
        }
    }
    report::passes(&runs, &baselines, &args.out_dir.join("pass-cost.csv"))?;

    if let Some(many_tar) = args.many_tar.as_deref().filter(|_| args.many > 0) {
        let status = status_cost::run(args, many_tar, &api, &docker).await?;
        status_cost::print(&status, args.many, &args.out_dir.join("status-cost.csv"))?;
    }
    eprintln!(
        "pass_cost: done in {:.0} s; load average at start {load_avg}, at the end {}",
        started.elapsed().as_secs_f64(),
        report::load_average()
    );
    Ok(())
}

/// What every pass works with.
struct Env<'a> {
    args: &'a Args,
    api: &'a Api,
    docker: &'a DockerEngine,
    set: &'a [u8],
    workers: &'a [Worker],
}

impl Env<'_> {
    fn start_load(&self, loaded: bool) -> anyhow::Result<Option<Load>> {
        loaded
            .then(|| Load::start(self.api, self.workers, self.args.disk_writer.as_deref()))
            .transpose()
    }

    /// Loads the set, runs one pass over it with `variant`'s pause, under load when `loaded`;
    /// with `baseline`, first probes (under the same load) with no pass running and adds that.
    async fn one_pass(
        &self,
        variant: Variant,
        loaded: bool,
        rep: usize,
        baseline: Option<&mut Vec<Baseline>>,
    ) -> anyhow::Result<PassRun> {
        let args = self.args;
        self.api.load(self.set).context("loading the set")?;
        let present = count_set(self.docker).await?;
        if present != args.images {
            bail!(
                "after loading the set, {present} images are tagged {SET_PREFIX}, not {}",
                args.images
            );
        }
        // The load's dirty pages are written now, not during the pass.
        sync_fs(&args.data_root)?;
        if let Some(baselines) = baseline {
            let load = self.start_load(loaded)?;
            if loaded {
                tokio::time::sleep(RAMP).await;
            }
            let probe = Probe::start(self.api, report::PROBE_EVERY);
            tokio::time::sleep(BASELINE).await;
            let probe = probe.stop();
            let (cycles, flushes) = load.map(Load::stop).unzip();
            baselines.push(Baseline {
                loaded,
                probe,
                cycles,
                flushes,
            });
            sync_fs(&args.data_root)?;
        }
        let before = statvfs(&args.data_root)?;

        let config = pass_config(args, variant);
        let timeline = Timeline::default();
        let engine = TimedEngine::new(self.docker.clone(), &timeline);
        let meter = TimedMeter::new(PathMeter::new(&config), &timeline);
        let mut guard = Recorder::new(&timeline);
        let mut last_use = LastUse::new();
        let mut quiet = Quiet::default();
        let shutdown = CancellationToken::new();

        let load = self.start_load(loaded)?;
        let probe = Probe::start(self.api, report::PROBE_EVERY);
        if loaded {
            tokio::time::sleep(RAMP).await;
        }
        let start = Instant::now();
        let result = Pass {
            config: &config,
            members: vec![Member {
                config: &config.engines[0],
                engine: &engine,
                last_use: &mut last_use,
            }],
            meter: &meter,
            guard: &mut guard,
            progress: &(),
            shutdown: &shutdown,
            now_ms: now_ms(),
            quiet: &mut quiet,
        }
        .run()
        .await;
        let wall = start.elapsed();
        let probe: Latencies = probe.stop();
        let (cycles, flushes) = load.map(Load::stop).unzip();
        let report = result.context("the pass failed")?;
        sync_fs(&args.data_root)?;
        let after = statvfs(&args.data_root)?;
        let left = count_set(self.docker).await?;
        if left != 0 || report.removed_images != args.images {
            bail!(
                "{}: the pass removed {} images and left {left} of the set ({:?}): it must remove the whole set",
                variant.name(),
                report.removed_images,
                report.outcome
            );
        }
        Ok(PassRun {
            variant,
            loaded,
            rep,
            wall,
            removed: report.removed_images,
            breakdown: timeline.breakdown(),
            freed_bytes: i64::try_from(after.avail_bytes).unwrap_or(i64::MAX)
                - i64::try_from(before.avail_bytes).unwrap_or(i64::MAX),
            reported_freed_bytes: report.freed_bytes,
            probe,
            cycles,
            flushes,
        })
    }
}

/// The configuration of a pass: the private daemon, a high watermark of 1 % and a low one of
/// 0.5 % (the filesystem's reserve alone is 5 %), so that the pass removes the whole set and
/// ends `Exhausted`; no min age; the load workers' images kept; `variant`'s delay.
fn pass_config(args: &Args, variant: Variant) -> Config {
    let engine = EngineConfig {
        name: "default".to_string(),
        docker_host: Some(args.docker_host.clone()),
        cri_endpoint: None,
        paths: vec![args.data_root.clone()],
        floor: Floor::NONE,
    };
    Config {
        paths: vec![args.data_root.clone()],
        docker_host: Some(args.docker_host.clone()),
        watermarks: Watermarks::Relative {
            high_pct: 1.0,
            low_pct: 0.5,
        },
        min_age: Duration::ZERO,
        // The pattern is a constant that compiles.
        keep: regex::Regex::new("^load/").into_iter().collect(),
        state_dir: args.work.join("pass-state"),
        delay: match variant {
            Variant::Fixed(d) => Delay::Fixed(d),
            Variant::Adaptive => Delay::Adaptive,
        },
        engines: vec![engine],
        ..Config::default()
    }
}

/// How many images carry a tag of the set.
async fn count_set(docker: &DockerEngine) -> anyhow::Result<usize> {
    let inventory = docker.inventory(false).await.context("listing images")?;
    Ok(inventory
        .images
        .iter()
        // Podman names a loaded `bench/x` `localhost/bench/x`.
        .filter(|i| {
            i.tags.iter().any(|t| {
                t.strip_prefix("localhost/")
                    .unwrap_or(t)
                    .starts_with(SET_PREFIX)
            })
        })
        .count())
}

/// `syncfs` of the filesystem holding `path`.
fn sync_fs(path: &std::path::Path) -> anyhow::Result<()> {
    let dir = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    rustix::fs::syncfs(&dir).with_context(|| format!("syncfs of {}", path.display()))
}
