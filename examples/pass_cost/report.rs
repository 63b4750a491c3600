//! What the benchmark prints and writes about the passes: tables of medians (and of latencies
//! pooled over the passes of a row) on stdout and one CSV row per pass; the helpers the `status`
//! part shares. Formatting only.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::load::Latencies;
use crate::timed::Breakdown;

/// How often the probe asks dockerd for its image list.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// The pause between two image removals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `delay_seconds`.
    Fixed(Duration),
    /// `delay_seconds = "adaptive"`.
    Adaptive,
}

impl Variant {
    /// As the tables show it.
    pub fn name(&self) -> String {
        match self {
            Variant::Fixed(d) if *d == Duration::from_secs(1) => "delay 1 s (default)".into(),
            Variant::Fixed(d) => format!("delay {} s", d.as_secs_f64()),
            Variant::Adaptive => "delay \"adaptive\"".into(),
        }
    }

    /// Where it goes in a table: the fixed delays, longest first, then the adaptive one.
    fn rank(&self) -> (u8, u128) {
        match self {
            Variant::Fixed(d) => (0, u128::MAX - d.as_millis()),
            Variant::Adaptive => (1, 0),
        }
    }

    /// As the CSV has it.
    fn key(&self) -> String {
        match self {
            Variant::Fixed(d) => format!("delay_{}ms", d.as_millis()),
            Variant::Adaptive => "adaptive".into(),
        }
    }
}

/// One pass.
#[derive(Debug, Clone)]
pub struct PassRun {
    /// Its pause.
    pub variant: Variant,
    /// Under load.
    pub loaded: bool,
    /// Its repetition, from 1.
    pub rep: usize,
    /// `Pass::run`, start to end.
    pub wall: Duration,
    /// Images it removed.
    pub removed: usize,
    /// Where the time went.
    pub breakdown: Breakdown,
    /// Free space gained from before the pass (and its load) to after (load stopped, synced).
    pub freed_bytes: i64,
    /// What the pass's own report says it freed.
    pub reported_freed_bytes: i64,
    /// The probe's latencies meanwhile.
    pub probe: Latencies,
    /// The load workers' load-and-delete cycles meanwhile, when loaded.
    pub cycles: Option<Latencies>,
    /// The disk writer's flushes meanwhile, when loaded.
    pub flushes: Option<Latencies>,
}

/// The probe (and the load) with no pass running, the set present.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Under load.
    pub loaded: bool,
    /// The probe's latencies.
    pub probe: Latencies,
    /// The load workers' cycles, when loaded.
    pub cycles: Option<Latencies>,
    /// The disk writer's flushes, when loaded.
    pub flushes: Option<Latencies>,
}

impl PassRun {
    fn overhead(&self) -> Duration {
        self.wall
            .saturating_sub(self.breakdown.removal())
            .saturating_sub(self.breakdown.pauses())
    }

    fn cordoned(&self) -> Duration {
        self.breakdown.cordoned.unwrap_or_default()
    }

    /// Seconds cordoned per GiB freed; infinite when nothing was freed.
    fn cordon_per_gib(&self) -> f64 {
        let gib = self.freed_bytes as f64 / GIB;
        if gib > 0.0 {
            self.cordoned().as_secs_f64() / gib
        } else {
            f64::INFINITY
        }
    }

    fn removal_quantile(&self, q: f64) -> Duration {
        Latencies {
            samples: self.breakdown.removal_each.clone(),
            errors: 0,
        }
        .quantile(q)
    }

    /// Every column, by name, as numbers.
    fn columns(&self) -> Vec<(&'static str, f64)> {
        let b = &self.breakdown;
        let removal = b.removal().as_secs_f64();
        vec![
            ("wall_s", self.wall.as_secs_f64()),
            ("removals", self.removed as f64),
            ("removal_s", removal),
            ("removal_p50_ms", ms(self.removal_quantile(0.5))),
            ("removal_max_ms", ms(self.removal_quantile(1.0))),
            ("pauses_s", b.pauses().as_secs_f64()),
            ("overhead_s", self.overhead().as_secs_f64()),
            (
                "overhead_ratio",
                if removal > 0.0 {
                    self.overhead().as_secs_f64() / removal
                } else {
                    f64::NAN
                },
            ),
            ("measure_s", b.measure.as_secs_f64()),
            ("inventory_s", b.inventory.as_secs_f64()),
            ("cordoned_s", self.cordoned().as_secs_f64()),
            ("freed_bytes", self.freed_bytes as f64),
            ("reported_freed_bytes", self.reported_freed_bytes as f64),
            ("cordon_s_per_gib", self.cordon_per_gib()),
            ("probe_n", self.probe.samples.len() as f64),
            ("probe_p50_ms", ms(self.probe.quantile(0.5))),
            ("probe_p95_ms", ms(self.probe.quantile(0.95))),
            ("probe_max_ms", ms(self.probe.max())),
            (
                "load_cycles",
                self.cycles.as_ref().map_or(0.0, |c| c.samples.len() as f64),
            ),
            (
                "load_cycle_p50_ms",
                self.cycles.as_ref().map_or(0.0, |c| ms(c.quantile(0.5))),
            ),
            (
                "flushes",
                self.flushes
                    .as_ref()
                    .map_or(0.0, |c| c.samples.len() as f64),
            ),
            (
                "flush_p50_ms",
                self.flushes.as_ref().map_or(0.0, |c| ms(c.quantile(0.5))),
            ),
        ]
    }
}

/// A CSV number: whole numbers without a fraction, others to the microsecond.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.6}")
    }
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median of column `name` over `runs`.
fn med(runs: &[&PassRun], name: &str) -> f64 {
    let values: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.columns().into_iter().find(|(n, _)| *n == name))
        .map(|(_, v)| v)
        .collect();
    median(&values)
}

/// Prints the pass tables and writes every run to `csv`. `baselines`: the probe with no pass
/// running, idle and (when measured) under load, with the load's cycles.
pub fn passes(runs: &[PassRun], baselines: &[Baseline], csv: &Path) -> anyhow::Result<()> {
    let mut groups: Vec<(Variant, bool, Vec<&PassRun>)> = Vec::new();
    for r in runs {
        match groups
            .iter_mut()
            .find(|(v, l, _)| *v == r.variant && *l == r.loaded)
        {
            Some((_, _, g)) => g.push(r),
            None => groups.push((r.variant, r.loaded, vec![r])),
        }
    }
    groups.sort_by_key(|(v, loaded, _)| (*loaded, v.rank()));
    let label =
        |v: &Variant, loaded: bool| format!("{}{}", v.name(), if loaded { ", load" } else { "" });
    println!();
    println!(
        "== 1. Passes that remove {} images: where the time goes (medians over the n passes of each row)",
        runs.first().map_or(0, |r| r.removed),
    );
    println!(
        "{:<30} {:>2} {:>8} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "pause",
        "n",
        "pass s",
        "removals s",
        "pauses s",
        "overhead",
        "overhead/",
        "measure",
        "inventory"
    );
    println!(
        "{:<30} {:>2} {:>8} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "", "", "", "", "", "s", "removals", "s", "s"
    );
    for (v, loaded, g) in &groups {
        println!(
            "{:<30} {:>2} {:>8.2} {:>10.3} {:>8.2} {:>9.3} {:>9.3} {:>9.4} {:>9.3}",
            label(v, *loaded),
            g.len(),
            med(g, "wall_s"),
            med(g, "removal_s"),
            med(g, "pauses_s"),
            med(g, "overhead_s"),
            med(g, "overhead_ratio"),
            med(g, "measure_s"),
            med(g, "inventory_s"),
        );
    }
    println!(
        "(overhead: pass time minus removal calls minus pauses; pauses: the Course's, measured from the"
    );
    println!(" measurement after a removal to the next step)");
    println!();
    println!(
        "== 2. The cordon, and dockerd as another client sees it (probe: GET /images/json every {} ms)",
        PROBE_EVERY.as_millis()
    );
    let row = |name: &str, cells: [String; 7]| {
        println!(
            "{:<30} {:>9} {:>7} {:>8} {:>12} {:>20} {:>10} {:>9}",
            name, cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
        );
    };
    let text = |c: [&str; 7]| c.map(str::to_string);
    row(
        "pause",
        text([
            "cordoned",
            "freed",
            "cordon s",
            "removal ms",
            "probe ms",
            "load cycle",
            "flush ms",
        ]),
    );
    row(
        "",
        text([
            "s",
            "MiB",
            "per GiB",
            "p50 / max",
            "p50/p95/max (n)",
            "p50 ms",
            "p50",
        ]),
    );
    let three = |l: &Latencies| {
        format!(
            "{:.0}/{:.0}/{:.0} ({})",
            ms(l.quantile(0.5)),
            ms(l.quantile(0.95)),
            ms(l.max()),
            l.samples.len()
        )
    };
    let p50 = |l: &Option<Latencies>| {
        l.as_ref()
            .map_or("-".to_string(), |l| format!("{:.0}", ms(l.quantile(0.5))))
    };
    for b in baselines {
        row(
            &format!("(no pass{})", if b.loaded { ", load" } else { "" }),
            [
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                three(&b.probe),
                p50(&b.cycles),
                p50(&b.flushes),
            ],
        );
    }
    // Latencies pooled over the passes of a group: a short pass has few probe samples.
    let pool = |g: &[&PassRun], pick: &dyn Fn(&PassRun) -> Option<Latencies>| {
        let mut all = Latencies::default();
        for r in g {
            if let Some(l) = pick(r) {
                all.samples.extend(l.samples);
                all.errors += l.errors;
            }
        }
        all
    };
    for (v, loaded, g) in &groups {
        let removals = pool(g, &|r| {
            Some(Latencies {
                samples: r.breakdown.removal_each.clone(),
                errors: 0,
            })
        });
        let probe = pool(g, &|r| Some(r.probe.clone()));
        let cycles = loaded.then(|| pool(g, &|r| r.cycles.clone()));
        let flushes = loaded.then(|| pool(g, &|r| r.flushes.clone()));
        row(
            &label(v, *loaded),
            [
                format!("{:.2}", med(g, "cordoned_s")),
                format!("{:.1}", med(g, "freed_bytes") / MIB),
                format!("{:.1}", med(g, "cordon_s_per_gib")),
                format!(
                    "{:.0} / {:.0}",
                    ms(removals.quantile(0.5)),
                    ms(removals.max())
                ),
                three(&probe),
                p50(&cycles),
                p50(&flushes),
            ],
        );
    }
    println!(
        "(cordoned, freed: medians; removal, probe, load cycle and flush latencies: pooled over the passes of each row)"
    );
    for (v, loaded, g) in &groups {
        let default = groups
            .iter()
            .find(|(d, l, _)| l == loaded && *d == Variant::Fixed(Duration::from_secs(1)));
        if let Some((_, _, fixed)) = default.filter(|(d, _, _)| d != v) {
            println!(
                "{}: cordoned {:.0}x shorter than with the default delay",
                label(v, *loaded),
                med(fixed, "cordoned_s") / med(g, "cordoned_s")
            );
        }
    }

    let mut out = String::new();
    let header: Vec<&str> = runs
        .first()
        .map(|r| r.columns().into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    let _ = writeln!(out, "variant,loaded,rep,{}", header.join(","));
    for r in runs {
        let values: Vec<String> = r.columns().iter().map(|(_, v)| number(*v)).collect();
        let _ = writeln!(
            out,
            "{},{},{},{}",
            r.variant.key(),
            r.loaded,
            r.rep,
            values.join(",")
        );
    }
    std::fs::write(csv, out).with_context(|| format!("writing {}", csv.display()))?;
    println!("(every pass: {})", csv.display());
    Ok(())
}

/// `/proc/loadavg`'s first three fields, or `?`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// CPUs this process may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
