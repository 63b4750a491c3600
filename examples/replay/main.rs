//! The trace replay: the project's own plan and stopping rules (`policy::plan`,
//! `policy::next::Course`, `lastuse::LastUse`) drive a simulated node through generated traces,
//! side by side with the peers' rules (the original tool, the kubelet's image GC, docuum) and
//! Belady's offline optimum. Prints a table per trace shape, a sweep of watermarks and min ages,
//! writes `target/replay/results.csv` and `target/replay/usage-<shape>.png`, and exits non-zero
//! when a sanity rule fails (the optimum re-pulls no more than any policy, on every trace).
//!
//! ```text
//! scripts/replay.sh            # the full replay (release build)
//! scripts/replay.sh --short    # one seed, fewer uses: the CI form
//! ```
//!
//! An example rather than a `harness = false` bench: it is a program with options that writes
//! files and exits non-zero on a failed check, not a timing; and `cargo test` builds examples,
//! so it cannot rot unnoticed.
//!
//! - `rng`: the PRNG and distributions; `trace`: catalogs and uses;
//! - `node`: the simulated disk and engine; `sim`: the event loop;
//! - `ours`: our cleaner through the library; `peers`: kubelet, ours beside the kubelet (a CRI
//!   engine), docuum, Belady;
//! - `report`: tables, CSV, sanity; `plot`: the PNGs.

mod bench;
mod calibrate;
mod node;
mod ours;
mod peers;
mod plot;
mod report;
mod rng;
mod sim;
mod trace;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use docker_image_cleaner::config::Strategy;
use rayon::prelude::*;

use node::Sizes;
use report::{Run, Settings};
use sim::Cleaner;

/// Replays generated traces through our policy and its peers.
#[derive(Debug, Parser)]
#[command(name = "replay")]
struct Args {
    /// The CI form: one seed, 2,000 uses, no sweep.
    #[arg(long)]
    short: bool,
    /// Seeds per shape (default 5; 1 with --short).
    #[arg(long)]
    seeds: Option<u64>,
    /// Uses per trace (default 20,000; 2,000 with --short).
    #[arg(long)]
    uses: Option<usize>,
    /// Skip the sweep of watermarks and min ages.
    #[arg(long)]
    no_sweep: bool,
    /// Where the CSV and the PNGs go.
    #[arg(long, default_value = "target/replay")]
    out: PathBuf,
    /// Watermarks the orderings are compared at in the main table, HIGH/LOW percent (default
    /// 85/75).
    #[arg(long, value_parser = parse_band)]
    band: Option<(f64, f64)>,
    /// Min age the orderings are compared at in the main table, seconds (default 120).
    #[arg(long)]
    min_age: Option<u64>,
    /// The real-binary benchmark's traces instead of the fortnight shapes: write them
    /// (`--emit`) or replay them through the models and compare with a real run (`--real`).
    #[arg(long)]
    bench: bool,
    /// With --bench: the seeds, comma-separated.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    bench_seeds: Vec<u64>,
    /// With --bench: the disk sizes, MiB, comma-separated.
    #[arg(long, default_value = "1600,800", value_delimiter = ',')]
    bench_disks: Vec<u64>,
    /// With --bench: images in the catalog.
    #[arg(long, default_value_t = 40)]
    bench_images: usize,
    /// With --bench: uses per trace.
    #[arg(long, default_value_t = 120)]
    bench_uses: usize,
    /// With --bench: mean ms between two uses.
    #[arg(long, default_value_t = 2500.0)]
    bench_gap_ms: f64,
    /// With --bench: the catalog's unique bytes, MiB.
    #[arg(long, default_value_t = 1600)]
    bench_catalog_mib: u64,
    /// With --bench: write each trace's JSON (`trace-s<seed>-d<disk>.json`) here and stop.
    #[arg(long)]
    emit: Option<PathBuf>,
    /// With --bench: the real runs' CSV (`scripts/bench-trace.sh`) to compare with.
    #[arg(long)]
    real: Option<PathBuf>,
    /// TrueType font for the plots.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
}

fn parse_band(s: &str) -> Result<(f64, f64), String> {
    let (h, l) = s
        .split_once('/')
        .ok_or("expected HIGH/LOW, such as 85/75")?;
    let h: f64 = h.parse().map_err(|_| format!("bad high {h:?}"))?;
    let l: f64 = l.parse().map_err(|_| format!("bad low {l:?}"))?;
    if !(0.0 < l && l < h && h <= 100.0) {
        return Err(format!("need 0 < low < high <= 100, got {s}"));
    }
    Ok((h, l))
}

/// A policy under test.
#[derive(Debug, Clone)]
enum Policy {
    Ours {
        strategy: Strategy,
        band: (f64, f64),
        min_age_s: u64,
        react: bool,
        sizes: Sizes,
    },
    Original,
    Kubelet,
    /// Ours at today's defaults in front of the kubelet's GC at its own (a CRI engine).
    BesideKubelet,
    Docuum,
    Belady,
}

/// Our earlier defaults (before this replay): 80/60, min age 1 h, lru, a pass every 5 min.
const DEFAULT_BAND: (f64, f64) = (80.0, 60.0);
const DEFAULT_MIN_AGE_S: u64 = 3600;

fn strategy_name(s: Strategy) -> String {
    s.name().to_string()
}

fn minutes(s: u64) -> String {
    if s.is_multiple_of(3600) && s > 0 {
        format!("{}h", s / 3600)
    } else {
        format!("{}m", s / 60)
    }
}

impl Policy {
    /// The label: defaults left out in the main table, every setting in the sweep.
    fn label(&self, full: bool) -> String {
        match self {
            Policy::Ours {
                strategy,
                band,
                min_age_s,
                react,
                sizes,
            } => {
                let mut l = format!("ours {}", strategy_name(*strategy));
                if *sizes == Sizes::Exclusive {
                    l.push_str("+shared");
                }
                if full || *band != DEFAULT_BAND {
                    l.push_str(&format!(" {}/{}", band.0, band.1));
                }
                if full || *min_age_s != DEFAULT_MIN_AGE_S {
                    l.push_str(&format!(" min {}", minutes(*min_age_s)));
                }
                if *react {
                    l.push_str(" react");
                }
                l
            }
            Policy::Original => "original (prune)".into(),
            Policy::Kubelet => "kubelet 85/80".into(),
            Policy::BesideKubelet => "ours defaults + kubelet 85/80".into(),
            Policy::Docuum => "docuum 80%".into(),
            Policy::Belady => "belady (optimum)".into(),
        }
    }

    fn settings(&self) -> Settings {
        match self {
            Policy::Ours {
                strategy,
                band,
                min_age_s,
                react,
                sizes,
            } => Settings {
                strategy: strategy_name(*strategy),
                high: band.0,
                low: band.1,
                min_age_s: *min_age_s,
                react: *react,
                sizes: match sizes {
                    Sizes::Reported => "reported",
                    Sizes::Exclusive => "exclusive",
                },
            },
            Policy::Original => Settings {
                strategy: "prune".into(),
                high: 80.0,
                sizes: "reported",
                ..Settings::default()
            },
            Policy::Kubelet => Settings {
                strategy: "kubelet".into(),
                high: 85.0,
                low: 80.0,
                min_age_s: 120,
                sizes: "reported",
                ..Settings::default()
            },
            Policy::BesideKubelet => Settings {
                strategy: "lru2+kubelet".into(),
                high: OUR_DEFAULT_BAND.0,
                low: OUR_DEFAULT_BAND.1,
                min_age_s: CANDIDATE_MIN_AGE_S,
                react: true,
                sizes: "reported",
            },
            Policy::Docuum => Settings {
                strategy: "docuum".into(),
                high: 80.0,
                sizes: "exclusive",
                ..Settings::default()
            },
            Policy::Belady => Settings {
                strategy: "belady".into(),
                sizes: "exclusive",
                ..Settings::default()
            },
        }
    }

    /// The cleaner, on a trace compressed by `scale`.
    fn cleaner(&self, scale: i64) -> Box<dyn Cleaner> {
        match self {
            Policy::Ours {
                strategy,
                band,
                min_age_s,
                react,
                sizes,
            } => Box::new(ours::Ours::new(
                *strategy,
                *band,
                Duration::from_secs(*min_age_s),
                *react,
                *sizes,
                scale,
            )),
            Policy::Original => Box::new(ours::Ours::new(
                Strategy::Prune,
                (80.0, 60.0),
                Duration::ZERO,
                false,
                Sizes::Reported,
                scale,
            )),
            Policy::Kubelet => Box::new(peers::Kubelet::new(scale)),
            Policy::BesideKubelet => Box::new(peers::BesideKubelet::new(
                ours::Ours::new(
                    Strategy::Lru2,
                    OUR_DEFAULT_BAND,
                    Duration::from_secs(CANDIDATE_MIN_AGE_S),
                    true,
                    Sizes::Reported,
                    scale,
                ),
                scale,
            )),
            Policy::Docuum => Box::new(peers::Docuum::new(80)),
            Policy::Belady => Box::new(peers::Belady),
        }
    }
}

/// The settings the orderings are compared at in the main table: today's defaults
/// (`config::Config::default`, chosen from this replay: README "Choosing the defaults"). With the
/// earlier min age of an hour nearly every image was protected, each pass removed every
/// candidate, and the order did not matter.
const CANDIDATE_BAND: (f64, f64) = (82.0, 78.0);
/// Today's defaults (`threshold_high` 82, `threshold_low` 4 below), whatever `--band` says: the
/// cleaner beside the kubelet runs at them.
const OUR_DEFAULT_BAND: (f64, f64) = (82.0, 78.0);
const CANDIDATE_MIN_AGE_S: u64 = 120;

/// The policies of the main table: lru at the earlier defaults; at `band` and `min_age_s`
/// lru, the candidate orderings (part B), gdsf fed the exclusive sizes `/system/df` would give,
/// and lru reacting at once; then the peers and the optimum.
fn main_policies(band: (f64, f64), min_age_s: u64) -> Vec<Policy> {
    let ours = |strategy, react, sizes| Policy::Ours {
        strategy,
        band,
        min_age_s,
        react,
        sizes,
    };
    vec![
        Policy::Ours {
            strategy: Strategy::Lru,
            band: DEFAULT_BAND,
            min_age_s: DEFAULT_MIN_AGE_S,
            react: false,
            sizes: Sizes::Reported,
        },
        ours(Strategy::Lru, false, Sizes::Reported),
        ours(Strategy::Lru2, false, Sizes::Reported),
        ours(Strategy::Lfu, false, Sizes::Reported),
        ours(Strategy::Gdsf, false, Sizes::Reported),
        ours(Strategy::Gdsf, false, Sizes::Exclusive),
        ours(Strategy::Lru, true, Sizes::Reported),
        ours(Strategy::Lru2, true, Sizes::Reported),
        Policy::Original,
        Policy::Kubelet,
        Policy::BesideKubelet,
        Policy::Docuum,
        Policy::Belady,
    ]
}

/// The sweep: bands x min ages, with and without reacting at once, for today's lru and the
/// winner of the orderings, lru2 (lfu is level with it: the CSV of an earlier run had it).
fn sweep_policies() -> Vec<Policy> {
    let mut out = Vec::new();
    for (strategy, react) in [
        (Strategy::Lru, false),
        (Strategy::Lru, true),
        (Strategy::Lru2, false),
        (Strategy::Lru2, true),
    ] {
        for band in [(80.0, 60.0), (82.0, 78.0), (85.0, 75.0), (90.0, 85.0)] {
            for min_age_s in [0, 120, 600, 3600] {
                out.push(Policy::Ours {
                    strategy,
                    band,
                    min_age_s,
                    react,
                    sizes: Sizes::Reported,
                });
            }
        }
    }
    out
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.bench {
        return bench_main(&args);
    }
    let started = Instant::now();
    let seeds = args.seeds.unwrap_or(if args.short { 1 } else { 5 });
    let uses = args.uses.unwrap_or(if args.short { 2000 } else { 20_000 });
    let sweep = !args.short && !args.no_sweep;
    let band = args.band.unwrap_or(CANDIDATE_BAND);
    let min_age_s = args.min_age.unwrap_or(CANDIDATE_MIN_AGE_S);
    if let Err(e) = plot::use_font(&args.font) {
        eprintln!("replay: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("replay: cannot create {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }

    let shapes = trace::shapes();
    let traces: Vec<trace::Trace> = shapes
        .par_iter()
        .flat_map_iter(|shape| (0..seeds).map(move |seed| trace::generate(shape, seed, uses)))
        .collect();
    let mut jobs: Vec<(&trace::Trace, &'static str, Policy)> = Vec::new();
    for t in &traces {
        for p in main_policies(band, min_age_s) {
            jobs.push((t, "main", p));
        }
        if sweep {
            for p in sweep_policies() {
                jobs.push((t, "sweep", p));
            }
        }
    }
    println!(
        "replaying {} traces ({} shapes x {seeds} seeds, {uses} uses each) with {} policies: {} runs",
        traces.len(),
        shapes.len(),
        main_policies(band, min_age_s).len() + if sweep { sweep_policies().len() } else { 0 },
        jobs.len()
    );
    let runs: Vec<Run> = jobs
        .par_iter()
        .map(|(t, group, policy)| {
            let mut cleaner = policy.cleaner(t.scale);
            let node = sim::run(t, cleaner.as_mut());
            Run {
                shape: t.shape,
                seed: t.seed,
                group,
                policy: policy.label(*group == "sweep"),
                settings: policy.settings(),
                capacity: t.capacity,
                catalog: t.catalog_bytes,
                stats: node.stats,
                // Only the plotted seed's series are kept (a minute each, some 80 KiB a run).
                series: if t.seed == 0 && *group == "main" {
                    node.series
                } else {
                    Vec::new()
                },
            }
        })
        .collect();

    let order: Vec<&str> = shapes.iter().map(|s| s.name).collect();
    let about: BTreeMap<&str, &str> = shapes.iter().map(|s| (s.name, s.about)).collect();
    print!("{}", report::table(&runs, &order, &about));
    print!("{}", report::sweep(&runs, &order));

    let csv = args.out.join("results.csv");
    if let Err(e) = report::csv(&runs, &csv) {
        eprintln!("replay: cannot write {}: {e}", csv.display());
        return ExitCode::FAILURE;
    }
    println!("\nwrote {}", csv.display());
    for shape in &shapes {
        let Some(t) = traces.iter().find(|t| t.shape == shape.name) else {
            continue;
        };
        let shown: Vec<&Run> = runs
            .iter()
            .filter(|r| r.shape == shape.name && r.seed == t.seed && r.group == "main")
            .collect();
        let days = (t.end_ms - trace::T0_MS) as f64 / 86_400_000.0;
        // One day in close-up: around the base-image update, or the fourth day.
        let from = if shape.base_update {
            (days * 0.4 - 0.25).max(0.0)
        } else {
            3.0_f64.min((days - 1.0).max(0.0))
        };
        let path = args.out.join(format!("usage-{}.png", shape.name));
        let title = format!(
            "{}, seed {}: % of the disk used; left the whole trace (highest each hour), right one day \
             from day {from:.1} (each minute); red: high, green: low",
            shape.name, t.seed
        );
        if let Err(e) = plot::usage(&shown, (from, from + 1.0), &title, &path) {
            eprintln!("replay: cannot draw {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }

    let failures = report::sanity(&runs);
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    if failures.is_empty() {
        println!("sanity: ok (Belady re-pulls no more than any policy on every trace)");
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            eprintln!("sanity: FAILED: {f}");
        }
        ExitCode::FAILURE
    }
}

/// `--bench`: the benchmark's traces, written for the driver or replayed through the models.
fn bench_main(args: &Args) -> ExitCode {
    let mut traces = Vec::new();
    for &seed in &args.bench_seeds {
        for &disk_mib in &args.bench_disks {
            let p = bench::Params {
                images: args.bench_images,
                uses: args.bench_uses,
                gap_ms: args.bench_gap_ms,
                disk_mib,
                catalog_mib: args.bench_catalog_mib,
            };
            traces.push((p, bench::generate(&p, seed)));
        }
    }
    if let Some(dir) = &args.emit {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("replay: cannot create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        for (p, t) in &traces {
            let path = dir.join(format!("trace-s{}-d{}.json", t.seed, p.disk_mib));
            if let Err(e) = std::fs::write(&path, bench::to_json(t, p).to_string()) {
                eprintln!("replay: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            println!("wrote {} ({})", path.display(), bench::describe(t));
        }
        return ExitCode::SUCCESS;
    }
    let by_disk: Vec<(u64, trace::Trace)> =
        traces.into_iter().map(|(p, t)| (p.disk_mib, t)).collect();
    match calibrate::table(&by_disk, args.real.as_deref(), args.band) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("replay: {e}");
            ExitCode::FAILURE
        }
    }
}
